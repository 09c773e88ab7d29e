//! What flaky statistics read from a store: [`HistoryQuery`] and its
//! [`HistoryRow`]s (one per observation of a test), [`RunHealthRow`] (how a
//! whole run went) and [`SlotOrder`] (what a slot ran before a failure).

use shoal_core::{FinalStatus, Outcome, TestId};

/// Which attempts [`Store::history`](crate::Store::history) returns. Every
/// filter that is set must match (they combine with AND); the default
/// matches every attempt ever recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    /// Only these tests (unknown ones match nothing); `None` for all.
    /// `Some(vec![])` matches nothing.
    pub tests: Option<Vec<TestId>>,
    /// Only tests of this suite.
    pub suite: Option<String>,
    /// Only tests whose name contains this text (case-sensitive).
    pub name_contains: Option<String>,
    /// Only attempts that started at or after this time (seconds since the
    /// Unix epoch).
    pub since: Option<f64>,
    /// Only attempts of runs of these kinds ([`RunRecord::kind`](crate::RunRecord::kind));
    /// `Some(vec![])` matches nothing.
    pub kinds: Option<Vec<String>>,
    /// At most this many rows: the newest ones (still returned oldest
    /// first).
    pub limit: Option<usize>,
}

/// One observation of a test: an attempt, with what its run says about
/// where and why it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The run the attempt belongs to.
    pub run_id: String,
    /// The test's suite.
    pub suite: String,
    /// The test's name within its suite.
    pub test: String,
    /// The commit the attempt tested, when the root was in a git repository.
    pub commit: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub dirty: bool,
    /// The run's [`RunRecord::environment`](crate::RunRecord::environment)
    /// (`""` for runs recorded before the store kept it).
    pub environment: String,
    /// The run's [`RunRecord::kind`](crate::RunRecord::kind).
    pub kind: String,
    /// How the attempt went.
    pub outcome: Outcome,
    /// Set on the last attempt of a (test, repetition).
    pub final_status: Option<FinalStatus>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Which repetition (0-based) of `--repeat N`.
    pub repeat: u32,
    /// The slot (of its worker) that ran the attempt.
    pub slot: u32,
    /// The worker (the host name, in local mode) that ran the attempt.
    pub worker: String,
    /// When the attempt started, in seconds since the Unix epoch.
    pub start: f64,
    /// When it ended, in seconds since the Unix epoch.
    pub end: f64,
}

impl HistoryRow {
    /// The test this row observed.
    pub fn test_id(&self) -> TestId {
        TestId::new(self.suite.clone(), self.test.clone())
    }
}

/// How a whole run went, from [`Store::run_health`](crate::Store::run_health):
/// lets statistics set aside runs that broke for reasons other than a test
/// (most of their tests failed: the infrastructure did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHealthRow {
    /// The run.
    pub run_id: String,
    /// Test executions that finished: attempts with a final status (one per
    /// test and repetition).
    pub executions: u64,
    /// Executions whose final status is failed.
    pub failed: u64,
}

/// What one slot ran, in order, up to the first failure of a test in a run,
/// from [`Store::slot_order`](crate::Store::slot_order): the candidates for
/// a test the failure depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotOrder {
    /// The worker whose slot ran the failing attempt.
    pub worker: String,
    /// The slot of that worker.
    pub slot: u32,
    /// The test's first failing attempt in the run (outcome other than
    /// pass or skip).
    pub failed: HistoryRow,
    /// Every attempt that ran before it on the same worker and slot in that
    /// run, by start (oldest first).
    pub before: Vec<HistoryRow>,
}
