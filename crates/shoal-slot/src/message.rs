//! What a slot tells whoever drives it: the local coordinator loop over a
//! channel, or a worker that forwards it to the coordinator over gRPC.

use shoal_core::TestResult;
use shoal_sched::{ExecId, Lease, LeaseId};
use tokio::sync::oneshot;

/// Messages from slots to the coordinator (in local mode, over a channel;
/// a remote worker forwards the ones [`SlotCtx::run_lease`] sends over gRPC).
///
/// [`SlotCtx::run_lease`]: crate::SlotCtx::run_lease
#[derive(Debug)]
pub enum ToCoord {
    Ask {
        slot: u32,
        reply: oneshot::Sender<Option<Lease>>,
    },
    Started {
        lease: LeaseId,
        exec: ExecId,
        at: f64,
    },
    Result {
        lease: LeaseId,
        token: u64,
        exec: ExecId,
        result: TestResult,
        start: f64,
        end: f64,
    },
    Done {
        lease: LeaseId,
        token: u64,
    },
    /// Something the user should know (e.g. a fallback a slot took).
    Notice(String),
    SlotFailed {
        slot: u32,
        error: String,
    },
}
