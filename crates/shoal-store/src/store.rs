//! The [`Store`] trait: what the engine and the CLI need from run history.

use crate::{
    AttemptRecord, CoordinatorLock, HistoryQuery, HistoryRow, LeaseRecord, QueuedRun, RunHealthRow,
    RunRecord, RunSummary, SlotOrder, StoreError,
};
use shoal_core::{RunCounts, TestId};
use std::collections::HashMap;
use std::time::Duration;

/// How many recent timed attempts a duration estimate looks at, unless the
/// store was configured otherwise.
pub const DEFAULT_ESTIMATE_WINDOW: usize = 10;

/// Run history (runs, their attempts, and the duration estimates derived
/// from them) and a distributed coordinator's state (queued runs, leases,
/// fencing tokens, the coordinator lock). Implemented by
/// [`SqliteStore`](crate::SqliteStore) and [`PgStore`](crate::PgStore);
/// every implementation must pass `conformance::run_all` (feature
/// `conformance`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Records the start of a run. Fails with [`StoreError::DuplicateRun`]
    /// if a run with the same id exists.
    async fn begin_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Records a batch of attempts in one transaction: all or none. Every
    /// attempt's run must have begun ([`StoreError::UnknownRun`] otherwise).
    /// An attempt already recorded (same run, test, repetition and attempt
    /// number) is ignored, so a batch delivered twice is recorded once.
    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), StoreError>;

    /// Records how a run ended. Fails with [`StoreError::UnknownRun`] if it
    /// never began; finishing twice keeps the last call's values.
    async fn finish_run(
        &self,
        run_id: &str,
        end: f64,
        counts: &RunCounts,
        interrupted: bool,
        exit_code: i32,
    ) -> Result<(), StoreError>;

    /// The median duration of each asked test over its most recent timed
    /// attempts (pass or fail; skip, timeout, crash and lost attempts say
    /// nothing about how long the test takes), newest by start time, up to
    /// the store's window ([`DEFAULT_ESTIMATE_WINDOW`] by default). Tests
    /// without such attempts are absent from the map.
    async fn duration_estimates(
        &self,
        tests: &[TestId],
    ) -> Result<HashMap<TestId, Duration>, StoreError>;

    /// Up to `limit` runs, newest (by start) first.
    async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError>;

    /// Every attempt of a run, in start order. Fails with
    /// [`StoreError::UnknownRun`] if there is no such run.
    async fn attempts_of_run(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    // ---- flaky statistics ---------------------------------------------------

    /// The attempts that `query` matches, by start (oldest first; ties in
    /// the order they were recorded). With a limit, the newest `limit` of
    /// them, still oldest first. Reads one snapshot of the store.
    ///
    /// Cost follows the history of the asked tests when `tests`, `suite`
    /// or `name_contains` narrow them, and the attempts of runs that ended
    /// at `since` or later (a day earlier, for clock skew) otherwise.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRow>, StoreError>;

    /// How each of the runs `run_ids` went as a whole: its executions (attempts
    /// with a final status) and how many of them failed, counting every
    /// test of the run. In the order asked; unknown runs and repeated ids
    /// are left out.
    async fn run_health(&self, run_ids: &[String]) -> Result<Vec<RunHealthRow>, StoreError>;

    /// The first failing attempt (outcome other than pass or skip) of
    /// `test` in run `run_id`, and every attempt that ran before it on the
    /// same worker and slot in that run, by start. `None` if the test never
    /// failed in that run (or never ran in it); fails with
    /// [`StoreError::UnknownRun`] if there is no such run.
    async fn slot_order(
        &self,
        run_id: &str,
        test: &TestId,
    ) -> Result<Option<SlotOrder>, StoreError>;

    // ---- coordinator state ------------------------------------------------

    /// Saves a new queued run. Fails with [`StoreError::DuplicateRun`] if a
    /// queued run with this id exists (open or closed).
    async fn save_queued_run(&self, run: &QueuedRun) -> Result<(), StoreError>;

    /// The run is over: it leaves [`open_queued_runs`](Self::open_queued_runs)
    /// and its leases are deleted. Idempotent; an unknown id fails with
    /// [`StoreError::UnknownRun`].
    async fn close_queued_run(&self, run_id: &str) -> Result<(), StoreError>;

    /// Queued runs saved and not closed, oldest submitted first (ties by
    /// run id).
    async fn open_queued_runs(&self) -> Result<Vec<QueuedRun>, StoreError>;

    /// Inserts or replaces the lease with this `(run_id, lease_id)`. The run
    /// must have been saved ([`StoreError::UnknownRun`] otherwise); a lease
    /// of a closed run is not kept (closing deleted its leases for good).
    async fn save_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError>;

    /// Removes a lease; removing a missing one is not an error.
    async fn drop_lease(&self, run_id: &str, lease_id: u64) -> Result<(), StoreError>;

    /// The leases of open runs (of run `run_id` only, when given), by run
    /// (oldest submitted first) and then lease id.
    async fn leases(&self, run_id: Option<&str>) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Atomically reserves `n` fencing tokens and returns the first: the
    /// ranges `[base, base + n)` returned by one store never overlap, across
    /// processes and restarts, and the first base ever returned is at least 1.
    async fn reserve_tokens(&self, n: u64) -> Result<u64, StoreError>;

    /// Makes this process the store's only coordinator until the returned
    /// guard is dropped (or released, or the process dies). Fails with
    /// [`StoreError::Locked`] while another guard, in this process or
    /// another, holds it.
    async fn lock_coordinator(&self) -> Result<CoordinatorLock, StoreError>;
}
