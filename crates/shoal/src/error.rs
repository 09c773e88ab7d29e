//! One error convention for the CLI: a command that fails ends with a
//! [`Failure`], the documented exit code and a message that shows the whole
//! cause chain (`failed to read TLS certificate file x.pem: No such file or
//! directory`), printed once by [`crate::fail`].

use crate::exit_code::ShoalExitCode;
use std::error::Error;

/// Why a command failed: the exit code to leave with and what to say.
pub(crate) type Failure = (ShoalExitCode, String);

/// `e` and each of its sources, joined by `: ` (a source whose text the
/// message already ends with is not repeated).
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A [`Failure`] from an error, with its cause chain.
pub(crate) fn failure(code: ShoalExitCode, e: &(dyn Error + 'static)) -> Failure {
    (code, chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read TLS certificate file {0}")]
    struct ReadCert(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start: {0}")]
    struct Wraps(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = ReadCert("x.pem", missing);
        let text = chain(&e);
        assert!(
            text.starts_with("failed to read TLS certificate file x.pem: "),
            "{text}"
        );
        assert!(text.contains("not found"), "{text}");
        // A message that already quotes its source does not repeat it.
        let quoted = Wraps(std::io::Error::other("disk full"));
        assert_eq!(chain(&quoted), "cannot start: disk full");
    }
}
