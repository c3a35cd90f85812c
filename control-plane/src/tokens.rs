//! The admin and join tokens the control plane accepts, and their rotation.
//!
//! Each kind has a current token and, during a rotation, a previous one that stays valid
//! until its grace time ends or it is retired: two valid at once, so clients and data
//! planes move over one by one without downtime. Only SHA-256 hashes are kept, in memory
//! and (once a kind has been rotated) in the store's `meta` tree, which then decides what
//! is valid across restarts. A token that came from the token file in the data directory is
//! written back there on rotation, so `fulcrumctl up` and scripts reading the file keep
//! working.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fulcrum_proto::model::Secret;
use fulcrum_proto::pb;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::store::{Store, TreeId, now_unix_ms, random_hex};

/// Grace time of a replaced token when the caller gives none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Longest grace time a rotation may ask for.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

type Hash = [u8; 32];

/// Which token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Admin,
    Join,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Join => "join",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Admin => "fca_",
            Kind::Join => "fcj_",
        }
    }

    fn meta_key(self) -> &'static str {
        match self {
            Kind::Admin => "token/admin",
            Kind::Join => "token/join",
        }
    }

    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::TokenKind::try_from(value) {
            Ok(pb::TokenKind::Admin) => Some(Kind::Admin),
            Ok(pb::TokenKind::Join) => Some(Kind::Join),
            _ => None,
        }
    }

    pub fn to_pb(self) -> pb::TokenKind {
        match self {
            Kind::Admin => pb::TokenKind::Admin,
            Kind::Join => pb::TokenKind::Join,
        }
    }
}

/// What is valid now for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Accepted {
    current: Hash,
    /// When the current token became current by a rotation; 0 if never rotated.
    rotated_unix_ms: i64,
    /// The replaced token and the end of its grace time.
    previous: Option<(Hash, i64)>,
}

impl Accepted {
    const LEN: usize = 1 + 32 + 8 + 1 + 32 + 8;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(1); // format version
        out.extend_from_slice(&self.current);
        out.extend_from_slice(&self.rotated_unix_ms.to_be_bytes());
        let (hash, until) = self.previous.unwrap_or(([0; 32], 0));
        out.push(u8::from(self.previous.is_some()));
        out.extend_from_slice(&hash);
        out.extend_from_slice(&until.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN || bytes[0] != 1 {
            return None;
        }
        let hash = |at: usize| -> Option<Hash> { bytes.get(at..at + 32)?.try_into().ok() };
        let int = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let previous = match bytes[41] {
            0 => None,
            _ => Some((hash(42)?, int(74)?)),
        };
        Some(Self {
            current: hash(1)?,
            rotated_unix_ms: int(33)?,
            previous,
        })
    }

    /// Constant time in the token: both hashes are always compared.
    fn accepts(&self, given: &Hash, now_unix_ms: i64) -> bool {
        let current = given.ct_eq(&self.current);
        let previous = match self.previous {
            Some((hash, until)) => {
                given.ct_eq(&hash) & subtle::Choice::from(u8::from(now_unix_ms < until))
            }
            None => subtle::Choice::from(0),
        };
        bool::from(current | previous)
    }
}

/// The valid tokens of one kind; shared by the auth interceptor and `SecurityService`.
pub struct TokenSet {
    kind: Kind,
    accepted: RwLock<Accepted>,
    /// The token file this kind's token came from, rewritten on rotation.
    file: Option<PathBuf>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

/// The result of a rotation.
pub struct Rotated {
    pub token: Secret<String>,
    /// 0 when the replaced token was retired at once.
    pub previous_valid_until_unix_ms: i64,
    pub file_updated: bool,
}

// === impl TokenSet ===

impl TokenSet {
    /// What is valid for `kind`, given the token from the environment or the token file
    /// (`file` is `Some` for the latter). Once a kind was rotated the store decides: the
    /// token given must be its current (or still valid previous) token.
    pub fn load(
        store: &Store,
        kind: Kind,
        token: &Secret<String>,
        file: Option<PathBuf>,
    ) -> Result<Arc<Self>, String> {
        let given = hash(token.expose());
        let stored = store
            .tree(TreeId::Meta)
            .get(kind.meta_key())
            .map_err(|e| format!("cannot read the {} token state: {e}", kind.name()))?;
        let accepted = match stored {
            None => Accepted {
                current: given,
                rotated_unix_ms: 0,
                previous: None,
            },
            Some(bytes) => {
                let accepted = Accepted::decode(&bytes)
                    .ok_or_else(|| format!("the stored {} token state is damaged", kind.name()))?;
                let now = now_unix_ms();
                if !accepted.accepts(&given, now) {
                    let from = match &file {
                        Some(path) => path.display().to_string(),
                        None => format!(
                            "FULCRUM_{}TOKEN",
                            if kind == Kind::Join { "JOIN_" } else { "" }
                        ),
                    };
                    return Err(format!(
                        "the {} token from {from} is no longer valid: it was rotated; give the current {} token (printed by the rotation)",
                        kind.name(),
                        kind.name()
                    ));
                }
                if given != accepted.current {
                    tracing::warn!(
                        token = kind.name(),
                        "the configured token is the previous one and stops working when its grace time ends; switch to the current token"
                    );
                }
                accepted
            }
        };
        Ok(Arc::new(Self {
            kind,
            accepted: RwLock::new(accepted),
            file,
            rotating: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether `token` is valid now.
    pub fn accepts(&self, token: &str) -> bool {
        self.read().accepts(&hash(token), now_unix_ms())
    }

    /// For status: when the current token was rotated in, and the end of the previous
    /// token's grace time (0 when there is none, or it ended).
    pub fn status(&self) -> pb::TokenStatus {
        let accepted = self.read();
        let now = now_unix_ms();
        pb::TokenStatus {
            kind: self.kind.to_pb() as i32,
            rotated_unix_ms: accepted.rotated_unix_ms,
            previous_valid_until_unix_ms: accepted
                .previous
                .map_or(0, |(_, until)| if until > now { until } else { 0 }),
        }
    }

    /// Makes a new token current; the old one stays valid for `grace` unless `retire`.
    pub async fn rotate(
        &self,
        store: &Store,
        grace: Duration,
        retire: bool,
    ) -> Result<Rotated, Error> {
        let _one = self.rotating.lock().await;
        let token = Secret::new(format!(
            "{}{}",
            self.kind.prefix(),
            random_hex(24).map_err(Error::Internal)?
        ));
        let now = now_unix_ms();
        let old = *self.read();
        let until = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let next = Accepted {
            current: hash(token.expose()),
            rotated_unix_ms: now,
            previous: (!retire).then_some((old.current, until)),
        };
        // Store first: if the file write below fails, the store and the caller agree on
        // the new token, and the file still holds the previous one, valid for now.
        self.persist(store, next).await?;
        *self.write() = next;
        let file_updated = match &self.file {
            Some(path) => match write_token_file(path, &token) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the rotated token to its file");
                    false
                }
            },
            None => false,
        };
        tracing::info!(token = self.kind.name(), retire, "token rotated");
        Ok(Rotated {
            token,
            previous_valid_until_unix_ms: if retire { 0 } else { until },
            file_updated,
        })
    }

    /// Ends the previous token's grace time now.
    pub async fn retire_previous(&self, store: &Store) -> Result<(), Error> {
        let _one = self.rotating.lock().await;
        let old = *self.read();
        let live = old.previous.is_some_and(|(_, until)| until > now_unix_ms());
        if !live {
            return Err(Error::NotFound {
                kind: "previous token",
                name: self.kind.name().to_string(),
            });
        }
        let next = Accepted {
            previous: None,
            ..old
        };
        self.persist(store, next).await?;
        *self.write() = next;
        tracing::info!(token = self.kind.name(), "previous token retired");
        Ok(())
    }

    async fn persist(&self, store: &Store, accepted: Accepted) -> Result<(), Error> {
        let key = self.kind.meta_key();
        let bytes = accepted.encode();
        store
            .commit(move |tx| tx.put_unlogged(TreeId::Meta, key, bytes.clone()))
            .await?;
        // Not a config change, so `commit` did not flush: the rotation must survive a crash.
        store.flush().await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Accepted> {
        // Writers replace the value whole, so a poisoned lock still holds a valid one.
        self.accepted.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Accepted> {
        self.accepted.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn hash(token: &str) -> Hash {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Replaces the token file atomically (write a sibling with mode 0600, then rename).
fn write_token_file(path: &std::path::Path, token: &Secret<String>) -> std::io::Result<()> {
    let tmp = path.with_extension("token.new");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(out, "{}", token.expose())?;
    out.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), 100).unwrap();
        (dir, store)
    }

    #[test]
    fn accepted_round_trips() {
        let a = Accepted {
            current: [7; 32],
            rotated_unix_ms: 42,
            previous: Some(([9; 32], 1_000)),
        };
        assert_eq!(Accepted::decode(&a.encode()), Some(a));
        let b = Accepted {
            previous: None,
            ..a
        };
        assert_eq!(Accepted::decode(&b.encode()), Some(b));
        assert!(a.accepts(&[9; 32], 999));
        assert!(!a.accepts(&[9; 32], 1_000), "grace time over");
        assert!(a.accepts(&[7; 32], 5_000));
        assert!(!a.accepts(&[8; 32], 0));
    }

    #[tokio::test]
    async fn rotation_keeps_two_valid_then_one() {
        let (dir, store) = store();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "fca_old\n").unwrap();
        let old = Secret::new("fca_old".to_string());
        let set = TokenSet::load(&store, Kind::Admin, &old, Some(file.clone())).unwrap();
        assert!(set.accepts("fca_old"));
        let rotated = set.rotate(&store, DEFAULT_GRACE, false).await.unwrap();
        let new = rotated.token.expose().clone();
        assert!(new.starts_with("fca_"));
        assert!(set.accepts("fca_old") && set.accepts(&new));
        assert!(rotated.file_updated);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), new);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A restart with the old token still in its grace time starts; a made-up one does not.
        assert!(TokenSet::load(&store, Kind::Admin, &old, None).is_ok());
        let err = TokenSet::load(&store, Kind::Admin, &Secret::new("x".into()), None)
            .err()
            .unwrap();
        assert!(err.contains("no longer valid"), "{err}");

        set.retire_previous(&store).await.unwrap();
        assert!(!set.accepts("fca_old") && set.accepts(&new));
        assert!(matches!(
            set.retire_previous(&store).await.unwrap_err(),
            Error::NotFound { .. }
        ));
        let err = TokenSet::load(&store, Kind::Admin, &old, None)
            .err()
            .unwrap();
        assert!(
            err.contains("admin token from FULCRUM_TOKEN is no longer valid"),
            "{err}"
        );
        let reloaded =
            TokenSet::load(&store, Kind::Admin, &Secret::new(new.clone()), None).unwrap();
        assert!(reloaded.accepts(&new) && !reloaded.accepts("fca_old"));

        // Retiring at once leaves one valid token.
        let again = set.rotate(&store, DEFAULT_GRACE, true).await.unwrap();
        assert!(set.accepts(again.token.expose()) && !set.accepts(&new));
        assert_eq!(again.previous_valid_until_unix_ms, 0);
    }
}
