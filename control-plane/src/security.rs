//! `SecurityService`: token rotation and the state of the secrets at rest.

use std::sync::Arc;
use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::security_service_server::SecurityService;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::store::Store;
use crate::tokens::{self, Kind, TokenSet};

/// Serves `SecurityService`.
#[derive(Clone)]
pub struct Security {
    store: Store,
    admin: Arc<TokenSet>,
    join: Arc<TokenSet>,
}

impl Security {
    pub fn new(store: Store, admin: Arc<TokenSet>, join: Arc<TokenSet>) -> Self {
        Self { store, admin, join }
    }

    fn set(&self, kind: i32) -> Result<&Arc<TokenSet>, Error> {
        match Kind::from_pb(kind) {
            Some(Kind::Admin) => Ok(&self.admin),
            Some(Kind::Join) => Ok(&self.join),
            None => Err(Error::Invalid(
                "token kind is required: admin or join".into(),
            )),
        }
    }
}

#[tonic::async_trait]
impl SecurityService for Security {
    async fn rotate_token(
        &self,
        request: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::RotateTokenResponse>, Status> {
        let req = request.into_inner();
        let set = self.set(req.kind)?;
        let grace = match req.grace_secs {
            0 => tokens::DEFAULT_GRACE,
            secs => Duration::from_secs(secs),
        };
        if grace > tokens::MAX_GRACE {
            return Err(Error::Invalid(format!(
                "grace time {}s is longer than the most allowed, {}s (30 days)",
                grace.as_secs(),
                tokens::MAX_GRACE.as_secs()
            ))
            .into());
        }
        let rotated = set.rotate(&self.store, grace, req.retire_previous).await?;
        Ok(Response::new(pb::RotateTokenResponse {
            token: rotated.token.expose().clone(),
            previous_valid_until_unix_ms: rotated.previous_valid_until_unix_ms,
            token_file_updated: rotated.file_updated,
        }))
    }

    async fn retire_previous_token(
        &self,
        request: Request<pb::RetirePreviousTokenRequest>,
    ) -> Result<Response<pb::RetirePreviousTokenResponse>, Status> {
        let req = request.into_inner();
        self.set(req.kind)?.retire_previous(&self.store).await?;
        Ok(Response::new(pb::RetirePreviousTokenResponse {}))
    }

    async fn get_security_status(
        &self,
        _request: Request<pb::GetSecurityStatusRequest>,
    ) -> Result<Response<pb::GetSecurityStatusResponse>, Status> {
        let store = self.store.clone();
        let (keys_total, keys_pending_reseal) =
            tokio::task::spawn_blocking(move || store.seal_counts())
                .await
                .map_err(|e| Error::Internal(format!("store read task failed: {e}")))??;
        let keyring = self.store.keyring();
        Ok(Response::new(pb::GetSecurityStatusResponse {
            master_key_id: keyring
                .map(|k| k.current().id().to_string())
                .unwrap_or_default(),
            previous_master_key_id: keyring
                .and_then(|k| k.previous())
                .map(|k| k.id().to_string())
                .unwrap_or_default(),
            keys_total,
            keys_pending_reseal,
            tokens: vec![self.admin.status(), self.join.status()],
        }))
    }
}
