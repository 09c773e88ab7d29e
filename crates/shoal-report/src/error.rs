//! The one error type every reporter returns.

use std::io;
use std::path::PathBuf;

/// A reporter could not produce its output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The JSON-lines event log could not be created or written.
    #[error("failed to write JSON event log to {path}: {source}")]
    JsonLines {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The JUnit report could not be serialized or written.
    #[error("failed to write JUnit report to {path}: {source}")]
    Junit {
        path: PathBuf,
        #[source]
        source: JunitWriteError,
    },
    /// The terminal (or whatever stands in for it) refused output.
    #[error("failed to write to the terminal: {source}")]
    Terminal {
        #[source]
        source: io::Error,
    },
    /// Several reporters of a [`Fanout`](crate::Fanout) failed.
    #[error("{} reporters failed: {}", .0.len(), join(.0))]
    Several(Vec<ReportError>),
}

/// Why writing a JUnit report failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JunitWriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Serialize(#[from] quick_junit::SerializeError),
}

fn join(errors: &[ReportError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ReportError {
    pub(crate) fn terminal(source: io::Error) -> Self {
        ReportError::Terminal { source }
    }
}
