//! The rows a store keeps: runs and attempts, as plain values.

use shoal_core::event::AttemptFinished;
use shoal_core::{FinalStatus, Outcome, RunCounts, TestId};

/// A run as it begins.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// Seconds since the Unix epoch.
    pub started: f64,
    /// Commit under test, when the root is in a git repository.
    pub commit: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub dirty: bool,
    /// The worker (the host name, in local mode) that started the run.
    pub worker: String,
    /// Human-readable summary of the arguments and selection.
    pub selection: String,
    /// Planned test executions (selected tests × repeat).
    pub planned: usize,
    /// Where the run ran: [`default_environment`] (`"{os}-{arch}"`) unless
    /// the user named it. Runs recorded before the store had this column
    /// read back `""`.
    pub environment: String,
    /// The seed that shuffled the run's test order, if it was shuffled.
    /// Stored as the signed 64-bit integer with the same bits, so every
    /// `u64` round-trips (SQL sees values above `i64::MAX` as negative).
    pub seed: Option<u64>,
    /// Why the run happened: [`KIND_RUN`], [`KIND_STRESS`] or
    /// [`KIND_BISECT`] by convention; the store keeps any text.
    pub kind: String,
}

/// [`RunRecord::kind`] of an ordinary run (and of runs recorded before the
/// store kept kinds).
pub const KIND_RUN: &str = "run";

/// [`RunRecord::kind`] of a run that repeats tests to measure flakiness.
pub const KIND_STRESS: &str = "stress";

/// [`RunRecord::kind`] of a run that replays a slot's order to find the
/// test a failure depends on.
pub const KIND_BISECT: &str = "bisect";

/// The environment of a run on this machine: `SHOAL_ENVIRONMENT` when set
/// and not empty (e.g. `linux-py3.12-pg16`: whatever makes a test's failure
/// probability differ), else `"{os}-{arch}"` of [`std::env::consts`], e.g.
/// `"linux-x86_64"`. Flake evidence compares results only within one
/// environment.
pub fn default_environment() -> String {
    match std::env::var("SHOAL_ENVIRONMENT") {
        Ok(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// How a run ended, set by [`Store::finish_run`](crate::Store::finish_run).
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub end: f64,
    pub counts: RunCounts,
    pub interrupted: bool,
    pub exit_code: i32,
}

/// A stored run: how it began and, once finished, how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run: RunRecord,
    /// `None` while the run is in progress or if it never finished (killed).
    pub end: Option<RunEnd>,
}

/// One execution of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub run_id: String,
    pub suite: String,
    pub test: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Which repetition (0-based) of `--repeat N`.
    pub repeat: u32,
    pub outcome: Outcome,
    pub slot: u32,
    pub worker: String,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: f64,
    /// Seconds, as the test tool measured it.
    pub duration: f64,
    /// Set on the last attempt of a (test, repetition).
    pub final_status: Option<FinalStatus>,
    pub message: Option<String>,
    pub commit: Option<String>,
    pub dirty: bool,
}

impl AttemptRecord {
    /// The record of a finished attempt of run `run_id`, which tested
    /// `commit` (`dirty` if the tree had uncommitted changes). Captured
    /// output is not stored.
    pub fn from_event(
        run_id: &str,
        ev: &AttemptFinished,
        commit: Option<&str>,
        dirty: bool,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            suite: ev.suite.clone(),
            test: ev.test.clone(),
            attempt: ev.attempt,
            repeat: ev.repeat,
            outcome: ev.outcome,
            slot: ev.slot,
            worker: ev.worker.clone(),
            start: ev.start,
            end: ev.end,
            duration: ev.duration,
            final_status: ev.final_status,
            message: ev.message.clone(),
            commit: commit.map(str::to_owned),
            dirty,
        }
    }

    pub fn test_id(&self) -> TestId {
        TestId::new(self.suite.clone(), self.test.clone())
    }
}
