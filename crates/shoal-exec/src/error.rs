//! Errors from starting and waiting for a process.

use std::io;
use std::path::PathBuf;

/// Why a process could not be started or waited for.
///
/// The underlying I/O error is part of the message (not a `source`), so that
/// printing the whole chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run an empty command line")]
    EmptyArgv,
    #[error("working directory `{}` does not exist", dir.display())]
    MissingCwd { dir: PathBuf },
    #[error("failed to start `{program}`: {error}")]
    Spawn { program: String, error: io::Error },
    #[error("failed to wait for `{program}`: {error}")]
    Wait { program: String, error: io::Error },
}
