//! The data model: test ids, outcomes, attempts and run summaries.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A test's stable identity: the suite it belongs to plus the adapter's
/// native name (pytest node id, `binary::path` for cargo, a line of a list
/// command). Never passed through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TestId {
    pub suite: String,
    pub name: String,
}

impl TestId {
    pub fn new(suite: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            suite: suite.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.suite, self.name)
    }
}

/// A discovered test, as an adapter lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    pub id: TestId,
    /// Adapter-specific grouping key (pytest file, cargo test binary). Tests
    /// of one group can share a runner process; estimates fall back to the
    /// group's mean when a test has no history.
    pub group: String,
    /// Adapter-private data needed to run the test (e.g. a binary path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    /// The test exceeded its timeout and was killed.
    Timeout,
    /// The test's runner process died while the test was running.
    Crash,
    /// No result was produced (the runner vanished, the report lacked it).
    Lost,
}

impl Outcome {
    /// Whether this outcome counts against the run.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Fail | Outcome::Timeout | Outcome::Crash | Outcome::Lost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
            Outcome::Timeout => "timeout",
            Outcome::Crash => "crash",
            Outcome::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pass" => Outcome::Pass,
            "fail" => Outcome::Fail,
            "skip" => Outcome::Skip,
            "timeout" => Outcome::Timeout,
            "crash" => Outcome::Crash,
            "lost" => Outcome::Lost,
            _ => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final status of one (test, repetition) once retries are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    Passed,
    /// Failed at least once, then passed on a retry.
    Flaky,
    Failed,
    Skipped,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Passed => "passed",
            FinalStatus::Flaky => "flaky",
            FinalStatus::Failed => "failed",
            FinalStatus::Skipped => "skipped",
        }
    }
}

/// Output captured from a test (or its batch), capped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    pub text: String,
    /// Bytes dropped because the output exceeded the cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an adapter reports for one test in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub id: TestId,
    pub outcome: Outcome,
    pub duration: Duration,
    /// A short failure message (assertion text, signal, timeout).
    pub message: Option<String>,
    pub output: CapturedOutput,
}

/// Seconds since the Unix epoch, fractional.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn now_epoch() -> f64 {
    epoch_secs(SystemTime::now())
}

/// Totals for a run, by final status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub passed: usize,
    pub failed: usize,
    pub flaky: usize,
    pub skipped: usize,
    /// Attempts made, retries included.
    #[serde(default)]
    pub attempts: usize,
}

impl RunCounts {
    pub fn add(&mut self, status: FinalStatus) {
        match status {
            FinalStatus::Passed => self.passed += 1,
            FinalStatus::Flaky => self.flaky += 1,
            FinalStatus::Failed => self.failed += 1,
            FinalStatus::Skipped => self.skipped += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.passed + self.failed + self.flaky + self.skipped
    }
}

/// Final results of quarantined tests that would otherwise count against
/// the run. They are part of [`RunCounts`]' `failed` and `flaky` too: these
/// say how many of those the exit code excuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedCounts {
    /// Of `RunCounts::failed`, the quarantined ones.
    pub failed: usize,
    /// Of `RunCounts::flaky`, the quarantined ones.
    pub flaky: usize,
}

impl QuarantinedCounts {
    /// Counts a final status of a quarantined test.
    pub fn add(&mut self, status: FinalStatus) {
        match status {
            FinalStatus::Failed => self.failed += 1,
            FinalStatus::Flaky => self.flaky += 1,
            FinalStatus::Passed | FinalStatus::Skipped => {}
        }
    }

    pub fn is_zero(&self) -> bool {
        self.failed == 0 && self.flaky == 0
    }
}
