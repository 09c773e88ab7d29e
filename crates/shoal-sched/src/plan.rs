//! What the scheduler is given: its policy knobs and the planned tests.

use shoal_core::{TestCase, TestId};
use std::time::Duration;

/// Scheduling policy. [`Default`] matches shoal's built-in config.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// Fraction of planned executions that may fail before the build is
    /// taken to be broken; from then on failures are final at once, since
    /// retrying a broken build only wastes time.
    pub retry_threshold: f64,
    /// The build is never judged broken while at most this many attempts
    /// have failed. Without a floor a single failure in a small selection
    /// (one test run with `--retries 3`) would exceed the fraction and never
    /// be retried.
    pub broken_build_floor: usize,
    /// Times an execution may be requeued because its lease ended before it
    /// got a result (runner died before reaching it, worker vanished). The
    /// next time it is final: failed, with outcome lost.
    pub max_requeues: u32,
    /// How long a lease lives without a renewal or a report; `None` never
    /// expires (local mode, where the coordinator sees its slots die).
    pub lease_timeout: Option<Duration>,
    /// Fencing tokens are `token_base + n` for the n-th lease. A coordinator
    /// that rebuilds its scheduler (restart) passes a base above every token
    /// it issued before, so late results of the old incarnation stay stale
    /// even though lease ids start again at 1.
    pub token_base: u64,
    /// Run tests in an order shuffled with this seed instead of longest
    /// first (`--shuffle`): the same seed and tests give the same order, so
    /// an order-dependent failure can be replayed.
    pub shuffle: Option<u64>,
    /// Keep the order the tests were given in (a replay of a recorded
    /// order); takes precedence over `shuffle`.
    pub keep_order: bool,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            retry_threshold: 0.10,
            broken_build_floor: 10,
            max_requeues: 3,
            lease_timeout: None,
            token_base: 0,
            shuffle: None,
            keep_order: false,
        }
    }
}

/// One selected test, with what the scheduler needs to place it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTest {
    pub case: TestCase,
    /// Expected duration (see [`fill_estimates`](crate::fill_estimates)).
    pub estimate: Duration,
    /// Retries after a failure: a test runs at most `1 + retries` times per
    /// repetition.
    pub retries: u32,
    /// Most tests of its suite leased at once (values below 1 mean 1).
    pub max_batch: usize,
    /// What starting one batch of its suite costs (an interpreter's
    /// start-up and collection). Batches of the suite carry at least twice
    /// this much estimated work, so start-up stays a small share of a slot's
    /// time even at the tail of the queue. Zero for suites that start a
    /// process per test anyway.
    pub batch_overhead: Duration,
    /// Tests of one suite with the same locality share what their runner
    /// sets up once per group (pytest: module- and class-scoped fixtures of
    /// one file). The queue keeps such a group together, in the order the
    /// tests were given (collection order), and orders groups longest-first
    /// by their summed estimates; running them scattered by their own
    /// estimates would set the fixtures up again and again. `None`: the
    /// test is a group of its own (plain longest-first).
    pub locality: Option<String>,
}

impl PlannedTest {
    /// A test with no estimate yet, no retries and no batch limit.
    pub fn new(case: TestCase) -> Self {
        Self {
            case,
            estimate: Duration::ZERO,
            retries: 0,
            max_batch: usize::MAX,
            batch_overhead: Duration::ZERO,
            locality: None,
        }
    }
}

/// Why a plan cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    #[error("test `{0}` is listed twice")]
    DuplicateTest(TestId),
    #[error("repeat must be at least 1")]
    ZeroRepeat,
    #[error(
        "{tests} tests repeated {repeat} times is more executions than the scheduler can track"
    )]
    TooManyExecutions { tests: usize, repeat: u32 },
}
