//! Errors from talking to the Docker engine and from mapping paths into a container.

use std::path::PathBuf;
use std::time::Duration;

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
    /// A service's container exited, or its readiness check did not pass in
    /// time; `reason` says which, `last_logs` are its last log lines.
    #[error(
        "service `{service}` did not become ready: {reason}{}",
        render_last_logs(last_logs)
    )]
    NotReady {
        service: String,
        reason: String,
        /// How long shoal waited before giving up.
        waited: Duration,
        last_logs: Vec<String>,
    },
    /// The engine failed to build an image; `message` is its error, and
    /// `last_lines` the end of the build output (the failing step's).
    #[error(
        "failed to build an image from `{}`: {message}{}",
        dockerfile.display(),
        render_build_output(last_lines)
    )]
    Build {
        dockerfile: PathBuf,
        message: String,
        last_lines: Vec<String>,
    },
    /// Neither `docker compose` nor `docker-compose` can be run.
    #[error(
        "cannot run compose files: neither `docker compose` (the Compose v2 plugin) nor \
         `docker-compose` works here; install one of them (e.g. the `docker-compose-plugin` \
         or `docker-compose` package)"
    )]
    ComposeMissing,
    /// The compose tool failed; `message` holds what it printed on stderr.
    #[error("failed to {action} of compose project `{project}`: {message}")]
    Compose {
        project: String,
        action: String,
        message: String,
    },
}

/// The end of a build's output, one indented line each.
fn render_build_output(lines: &[String]) -> String {
    let mut out = String::new();
    if !lines.is_empty() {
        out.push_str("\nthe end of the build output:");
    }
    for line in lines {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

/// The tail of a service's log, one indented line each.
fn render_last_logs(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; it logged nothing".to_owned();
    }
    let mut out = "; the end of its log:".to_owned();
    for line in lines {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_names_the_service_the_reason_and_indents_the_logs() {
        let error = DockerError::NotReady {
            service: "db".to_owned(),
            reason: "exited with code 1 after 0.4s".to_owned(),
            waited: Duration::from_millis(400),
            last_logs: vec!["starting".to_owned(), "FATAL: no config".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "service `db` did not become ready: exited with code 1 after 0.4s; \
             the end of its log:\n    starting\n    FATAL: no config"
        );
        let silent = DockerError::NotReady {
            service: "db".to_owned(),
            reason: "r".to_owned(),
            waited: Duration::ZERO,
            last_logs: Vec::new(),
        };
        assert_eq!(
            silent.to_string(),
            "service `db` did not become ready: r; it logged nothing"
        );
    }
}
