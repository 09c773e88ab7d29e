//! Where a run goes: this machine, or a coordinator (`--server`). Every
//! command that runs tests (`run`, `stress`, `bisect-flake`,
//! `bisect-order`) hands its [`RunRequest`] to a [`Backend`], so each of
//! them runs locally and remotely through the same run engine.

use crate::exit_code::ShoalExitCode;
use crate::remote::{self, Remote};
use shoal_report::Reporter;
use shoal_runner::{Cancel, EngineError, RunReport, RunRequest};
use std::sync::Arc;

/// Where runs go.
pub(crate) enum Backend {
    /// This machine, recording into this store.
    Local(Arc<dyn shoal_store::Store>),
    /// A coordinator (it records into its own store).
    Remote(Remote),
}

impl Backend {
    /// A coordinator if `remote` names one, else this machine.
    pub(crate) fn new(remote: Option<Remote>, store: Arc<dyn shoal_store::Store>) -> Backend {
        match remote {
            Some(r) => Backend::Remote(r),
            None => Backend::Local(store),
        }
    }

    /// Runs `req`, feeding its events to `reporter`; on failure, the exit
    /// code to leave with and what to say.
    pub(crate) async fn run(
        &self,
        req: RunRequest,
        reporter: &mut dyn Reporter,
        cancel: Cancel,
    ) -> Result<RunReport, (ShoalExitCode, String)> {
        match self {
            Backend::Local(store) => shoal_runner::run(req, store.clone(), reporter, cancel)
                .await
                .map_err(|e| crate::error::failure(crate::engine_exit(&e), &e)),
            Backend::Remote(r) => remote::run(r, &req, reporter, cancel).await.map_err(|e| {
                match e.downcast::<EngineError>() {
                    Ok(e) => crate::error::failure(crate::engine_exit(&e), &e),
                    Err(e) => (ShoalExitCode::Infrastructure, format!("{e:#}")),
                }
            }),
        }
    }
}
