//! The errors the engine answers with.

use crate::store::StoreError;
use crate::types::JobId;

/// Errors the engine answers with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No job has that id (or it was forgotten).
    #[error("no job {0}")]
    UnknownJob(JobId),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A limit was reached.
    #[error("{0}")]
    Limit(String),
    /// The engine is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The history store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}
