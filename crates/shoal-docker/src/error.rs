//! Errors from talking to the Docker engine and from mapping paths into a container.

use std::path::PathBuf;

/// Why a Docker operation failed.
///
/// The underlying error is part of the message (not a `source`), so that
/// printing the whole chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine could not be reached, or its API version not agreed on.
    #[error("cannot reach the Docker engine: {error}")]
    Connect { error: bollard::errors::Error },
    /// An engine API call failed; `action` says which one.
    #[error("failed to {action}: {error}")]
    Api {
        action: String,
        error: bollard::errors::Error,
    },
    /// A file operation on this host failed (scratch directories, FIFOs).
    #[error("failed to {action}: {error}")]
    Io {
        action: String,
        error: std::io::Error,
    },
    /// A host path that no [`PathMap`](crate::PathMap) entry covers.
    #[error("`{}` is outside the directories mounted into the container", path.display())]
    Unmapped { path: PathBuf },
}

impl DockerError {
    /// A closure wrapping an engine error with what was being done.
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |error| DockerError::Api { action, error }
    }

    /// A closure wrapping an I/O error with what was being done.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |error| DockerError::Io { action, error }
    }
}

/// Whether the engine answered 404 (the object is already gone).
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
