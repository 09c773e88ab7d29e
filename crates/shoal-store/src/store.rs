//! The [`Store`] trait: what the engine and the CLI need from run history.

use crate::{AttemptRecord, RunRecord, RunSummary, StoreError};
use shoal_core::{RunCounts, TestId};
use std::collections::HashMap;
use std::time::Duration;

/// How many recent timed attempts a duration estimate looks at, unless the
/// store was configured otherwise.
pub const DEFAULT_ESTIMATE_WINDOW: usize = 10;

/// Run history: runs, their attempts, and the duration estimates derived
/// from them. Implemented by [`SqliteStore`](crate::SqliteStore); every
/// implementation must pass `conformance::run_all` (feature `conformance`).
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
}
