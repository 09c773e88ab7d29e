//! The one event type. The engine reports everything it does as [`Event`]s;
//! the terminal, JUnit and JSON-lines reporters and the store all consume the
//! same stream (the JSON-lines file is this enum serialized, one per line).

use crate::model::{CapturedOutput, FinalStatus, Outcome, QuarantinedCounts, RunCounts, TestId};
use serde::{Deserialize, Serialize};

/// Version of the serialized event schema (`"v"` in every JSON line).
/// Bump on any incompatible change; adding optional fields is compatible.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Everything that happens during a run, in the order it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted(RunStarted),
    SuiteDiscovered(SuiteDiscovered),
    AttemptStarted(AttemptStarted),
    AttemptFinished(AttemptFinished),
    /// Something the user should know that is not a test result (retries
    /// disabled because the build looks broken, a hook's output, ...).
    Notice(Notice),
    RunFinished(RunFinished),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    pub run_id: String,
    /// Commit the run tested, when the root is in a git repository.
    pub commit: Option<String>,
    /// Whether the working tree had uncommitted changes.
    pub dirty: bool,
    pub slots: usize,
    pub worker: String,
    /// Number of test executions planned (selected tests × repeat).
    pub planned: usize,
    pub repeat: u32,
    pub retries: u32,
    /// Sum of the estimated durations of every planned execution, seconds.
    pub estimated_work: f64,
    pub start: f64,
    /// The seed the test order was shuffled with (`--shuffle`); absent for
    /// the usual longest-first order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteDiscovered {
    pub suite: String,
    pub adapter: String,
    /// Tests the adapter listed.
    pub discovered: usize,
    /// Tests left after selection.
    pub selected: usize,
    pub duration: f64,
    /// The paths (relative to the suite root) collection was limited to,
    /// when the selection named paths; empty: the whole suite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptStarted {
    pub test: String,
    pub suite: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Which repetition (0-based) of `--repeat N`.
    pub repeat: u32,
    pub slot: u32,
    pub worker: String,
    pub start: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFinished {
    pub test: String,
    pub suite: String,
    pub outcome: Outcome,
    pub attempt: u32,
    pub repeat: u32,
    pub slot: u32,
    pub worker: String,
    /// Seconds since the epoch, fractional.
    pub start: f64,
    pub end: f64,
    /// Duration as the test tool measured it (may be less than end - start).
    pub duration: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub output: CapturedOutput,
    /// Another attempt of this test will follow.
    pub will_retry: bool,
    /// Set on the last attempt of a (test, repetition): its final status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_status: Option<FinalStatus>,
    /// The test is quarantined in this run: it runs and is reported, but a
    /// `failed` or `flaky` final status does not fail the run. Set on every
    /// attempt of such a test; omitted (false) otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub quarantined: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AttemptFinished {
    pub fn test_id(&self) -> TestId {
        TestId::new(self.suite.clone(), self.test.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub level: NoticeLevel,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    pub run_id: String,
    pub counts: RunCounts,
    /// Of `counts`, the failed and flaky results of quarantined tests (which
    /// `exit_code` ignores). Absent in logs of older versions: zero.
    #[serde(default)]
    pub quarantined: QuarantinedCounts,
    pub start: f64,
    pub end: f64,
    /// The run was interrupted (Ctrl-C); counts cover what finished.
    pub interrupted: bool,
    /// Executions that never got a final result because of the interrupt.
    pub not_run: usize,
    pub exit_code: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_finished_serializes_required_fields() {
        let ev = Event::AttemptFinished(AttemptFinished {
            test: "tests/test_a.py::test_x[a b]".into(),
            suite: "py".into(),
            outcome: Outcome::Fail,
            attempt: 1,
            repeat: 0,
            slot: 1,
            worker: "local".into(),
            start: 1.5,
            end: 2.25,
            duration: 0.7,
            message: None,
            output: CapturedOutput::default(),
            will_retry: true,
            final_status: None,
            quarantined: false,
        });
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        for k in [
            "type", "test", "suite", "outcome", "attempt", "slot", "worker", "start", "end",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {v}");
        }
        assert_eq!(v["type"], "attempt_finished");
        assert_eq!(v["outcome"], "fail");
        assert!(v.get("quarantined").is_none(), "omitted when false: {v}");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn quarantine_fields_are_additive() {
        // A run_finished line written before quarantine existed still reads.
        let old = r#"{"type":"run_finished","run_id":"r","counts":{"passed":1,"failed":1,"flaky":0,"skipped":0,"attempts":2},"start":1.0,"end":2.0,"interrupted":false,"not_run":0,"exit_code":1}"#;
        let Event::RunFinished(f) = serde_json::from_str(old).unwrap() else {
            panic!("not run_finished");
        };
        assert_eq!(f.quarantined, QuarantinedCounts::default());
        let v = serde_json::to_value(Event::RunFinished(RunFinished {
            quarantined: QuarantinedCounts {
                failed: 1,
                flaky: 0,
            },
            ..f
        }))
        .unwrap();
        assert_eq!(
            v["quarantined"],
            serde_json::json!({"failed": 1, "flaky": 0})
        );
    }
}
