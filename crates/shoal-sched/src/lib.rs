//! shoal's scheduler: a pure state machine that decides which tests run
//! where and when. No I/O, no clock, no async: the caller passes `now` in.
//!
//! The protocol, as the engine (local mode) or a coordinator (distributed
//! mode) drives it:
//!
//! 1. [`Scheduler::new`] with the selected tests and their estimates
//!    ([`fill_estimates`] fills in tests without history).
//! 2. A slot asks for work: [`Scheduler::lease`] returns a [`Lease`], a batch
//!    of tests of one suite, longest first, with a fencing token.
//! 3. Each result: [`Scheduler::report`] returns a [`Decision`]: final,
//!    retry (queued), or stale (ignored: the lease is no longer live).
//! 4. The batch ends: [`Scheduler::release`] requeues what got no result.
//!    In distributed mode, [`Scheduler::renew`] on heartbeats and
//!    [`Scheduler::expire`] on a timer reclaim the batches of dead workers.
//! 5. Repeat until [`Scheduler::is_finished`]; [`Scheduler::cancel_all`] on
//!    an interrupt.
//!
//! A restarted coordinator plans the same tests again and calls
//! [`Scheduler::restore`] (or [`Scheduler::resume`], which also takes over
//! the leases workers still hold) with what its store recorded.
//!
//! Every planned execution ends with exactly one final decision (or is
//! returned by `cancel_all`). Why the policies are what they are is in
//! `docs/design/scheduler.md`.

mod estimate;
mod ids;
mod plan;
mod scheduler;

pub use estimate::{EstimateSummary, fill_estimates};
pub use ids::{ExecId, LeaseId, SlotId};
pub use plan::{PlannedTest, SchedConfig, SchedError};
pub use scheduler::{
    Adopted, Decision, Execution, Expired, Lease, Restored, Scheduler, StaleLease,
};
