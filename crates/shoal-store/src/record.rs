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
