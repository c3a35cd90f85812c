//! The control plane's error for admin and store operations, mapped to `tonic::Status` in
//! one place.

use fulcrum_proto::model::InvalidResource;
use tonic::Status;

/// What went wrong with an admin operation or a store access.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The caller's input breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The write would leave the store inconsistent (a dangling reference).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("store error: {0}")]
    Store(#[from] sled::Error),
    /// A stored record did not decode: a bug or a damaged data directory.
    #[error("corrupt record in tree {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    /// A blocking store task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn already_exists(kind: &'static str, name: impl Into<String>) -> Self {
        Self::AlreadyExists {
            kind,
            name: name.into(),
        }
    }

    /// Whether the caller caused it (and so it is not logged as a server error).
    pub fn is_caller_fault(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::Invalid(_)
                | Error::FailedPrecondition(_)
        )
    }
}

impl From<InvalidResource> for Error {
    fn from(e: InvalidResource) -> Self {
        Error::Invalid(e.message)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        if !e.is_caller_fault() {
            tracing::error!(error = %e, "admin operation failed");
        }
        let message = e.to_string();
        match e {
            Error::NotFound { .. } => Status::not_found(message),
            Error::AlreadyExists { .. } => Status::already_exists(message),
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            // Internals stay in the server log; the caller learns only that it failed.
            Error::Store(_) | Error::Corrupt { .. } | Error::Internal(_) => {
                Status::internal("the control plane could not complete the operation; see its log")
            }
        }
    }
}
