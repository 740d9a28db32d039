//! Errors of the jobs, and the exit codes front ends turn them into (docs/CLI.md).

use disks::interlock::Refusal;

/// Documented exit codes (docs/CLI.md "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const MISMATCH: i32 = 3;
    pub const REFUSED: i32 = 4;
    pub const CANCELLED: i32 = 5;
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request itself is wrong (bad name, missing confirmation).
    #[error("{0}")]
    Usage(String),
    /// Something failed that has no more specific kind.
    #[error("{0}")]
    Failed(String),
    /// A safety rule refused the target (or the source) before anything was written.
    #[error("{0}")]
    Refused(String),
    /// An interlock refusal.
    #[error(transparent)]
    Interlock(Box<Refusal>),
    /// Opening or querying a device failed.
    #[error(transparent)]
    Device(#[from] disks::blockdev::Error),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] imaging::Error),
    /// The store ran out of space during a capture.
    #[error("the store {} is full ({source}); the unfinished capture was removed and earlier images are intact: free space on it or use a larger store", store.display())]
    StoreFull {
        store: std::path::PathBuf,
        source: imaging::Error,
    },
    /// A file operation outside the store failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<Refusal> for OpsError {
    fn from(r: Refusal) -> Self {
        OpsError::Interlock(Box::new(r))
    }
}

impl OpsError {
    /// The exit code a front end ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Usage(_) => exit::USAGE,
            OpsError::Refused(_) | OpsError::Interlock(_) => exit::REFUSED,
            OpsError::Device(disks::blockdev::Error::Busy { .. }) => exit::REFUSED,
            OpsError::Device(_)
            | OpsError::Io { .. }
            | OpsError::StoreFull { .. }
            | OpsError::Failed(_) => exit::FAILED,
            OpsError::Engine(e) => engine_exit_code(e),
        }
    }

    /// A short machine-readable kind for JSON results.
    pub fn kind(&self) -> &'static str {
        match self.exit_code() {
            exit::USAGE => "usage",
            exit::REFUSED => "refused",
            exit::MISMATCH => "mismatch",
            exit::CANCELLED => "cancelled",
            _ => "failed",
        }
    }
}

fn engine_exit_code(e: &imaging::Error) -> i32 {
    use imaging::Error as E;
    match e {
        E::BadName { .. } => exit::USAGE,
        E::TargetTooSmall { .. } => exit::REFUSED,
        E::Cancelled => exit::CANCELLED,
        E::RestoreAborted { cause, .. } if matches!(**cause, E::Cancelled) => exit::CANCELLED,
        e if e.is_mismatch() => exit::MISMATCH,
        _ => exit::FAILED,
    }
}
