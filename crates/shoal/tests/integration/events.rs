//! The JSON-lines event log (`--json`) read back, with the schema's
//! required fields checked as each event is parsed.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One `attempt_finished` event, with the fields the schema requires
/// checked (present, of the documented type) as it is parsed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub test: String,
    pub suite: String,
    pub outcome: String,
    pub attempt: u64,
    pub repeat: u64,
    pub slot: u64,
    pub worker: String,
    pub start: f64,
    pub end: f64,
    pub message: Option<String>,
    pub output_text: String,
    pub truncated_bytes: u64,
    pub will_retry: bool,
    pub final_status: Option<String>,
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("event lacks `{key}`: {v}"))
}

fn string(v: &Value, key: &str) -> String {
    field(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string: {v}"))
        .to_owned()
}

fn int(v: &Value, key: &str) -> u64 {
    field(v, key)
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not an unsigned integer: {v}"))
}

/// Epoch seconds: a JSON float, after 2020.
fn time(v: &Value, key: &str) -> f64 {
    let t = field(v, key);
    assert!(t.is_f64(), "`{key}` is not a float: {v}");
    let t = t.as_f64().expect("f64");
    assert!(t > 1.5e9, "`{key}` is not epoch seconds: {v}");
    t
}

impl Attempt {
    fn parse(v: &Value) -> Attempt {
        let output = field(v, "output");
        let a = Attempt {
            test: string(v, "test"),
            suite: string(v, "suite"),
            outcome: string(v, "outcome"),
            attempt: int(v, "attempt"),
            repeat: int(v, "repeat"),
            slot: int(v, "slot"),
            worker: string(v, "worker"),
            start: time(v, "start"),
            end: time(v, "end"),
            message: v.get("message").map(|m| {
                m.as_str()
                    .unwrap_or_else(|| panic!("`message` is not a string: {v}"))
                    .to_owned()
            }),
            output_text: string(output, "text"),
            truncated_bytes: output
                .get("truncated_bytes")
                .map_or(0, |_| int(output, "truncated_bytes")),
            will_retry: field(v, "will_retry")
                .as_bool()
                .unwrap_or_else(|| panic!("`will_retry` is not a bool: {v}")),
            final_status: v.get("final_status").map(|_| string(v, "final_status")),
        };
        assert!(
            ["pass", "fail", "skip", "timeout", "crash", "lost"].contains(&a.outcome.as_str()),
            "unknown outcome: {v}"
        );
        assert!(a.attempt >= 1, "attempts count from 1: {v}");
        assert!(a.end >= a.start, "end before start: {v}");
        assert!(
            a.will_retry != a.final_status.is_some(),
            "an attempt is either retried or final: {v}"
        );
        a
    }
}

/// The JSON-lines event log of one run.
#[derive(Debug)]
pub struct Events {
    pub events: Vec<Value>,
}

impl Events {
    /// Reads and checks the log: every line a JSON object of schema version
    /// 1 with a `type`; `run_started` first.
    pub fn read(path: &Path) -> Events {
        let file = fs::File::open(path)
            .unwrap_or_else(|e| panic!("open event log {}: {e}", path.display()));
        let mut events = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.unwrap_or_else(|e| panic!("line {} is not UTF-8 text: {e}", i + 1));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
            assert_eq!(v["v"], 1, "line {}: schema version", i + 1);
            assert!(v["type"].is_string(), "line {} has no type: {line}", i + 1);
            events.push(v);
        }
        let log = Events { events };
        if let Some(first) = log.events.first() {
            assert_eq!(first["type"], "run_started", "first event");
        }
        log
    }

    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["type"] == ty)
    }

    pub fn run_started(&self) -> &Value {
        self.of_type("run_started")
            .next()
            .expect("a run_started event")
    }

    /// The last event, which must be `run_finished`.
    pub fn run_finished(&self) -> &Value {
        let last = self.events.last().expect("an event log with events");
        assert_eq!(last["type"], "run_finished", "last event: {last}");
        assert_eq!(
            self.of_type("run_finished").count(),
            1,
            "exactly one run_finished"
        );
        last
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.of_type("attempt_finished")
            .map(Attempt::parse)
            .collect()
    }

    /// Attempts that carry a final status.
    pub fn finals(&self) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.final_status.is_some())
            .collect()
    }

    /// The tests of the `attempt_started` events, in order.
    pub fn started(&self) -> Vec<String> {
        self.of_type("attempt_started")
            .map(|v| string(v, "test"))
            .collect()
    }

    /// The attempts of test `name`, in order.
    pub fn attempts_of(&self, name: &str) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.test == name)
            .collect()
    }

    /// The one final result of test `name` (repetition 0); panics unless
    /// there is exactly one.
    pub fn final_of(&self, name: &str) -> Attempt {
        let finals: Vec<_> = self
            .finals()
            .into_iter()
            .filter(|a| a.test == name)
            .collect();
        assert_eq!(finals.len(), 1, "final results of {name:?}: {finals:#?}");
        finals.into_iter().next().expect("one")
    }

    pub fn notices(&self) -> Vec<(String, String)> {
        self.of_type("notice")
            .map(|v| (string(v, "level"), string(v, "message")))
            .collect()
    }

    /// Asserts that `expected` (test names of `suite`) each have exactly one
    /// final result and that no other test has one.
    #[track_caller]
    pub fn assert_one_final_each(&self, suite: &str, expected: &[String]) {
        let finals = self.finals();
        let mut seen = BTreeSet::new();
        for a in &finals {
            assert_eq!(a.suite, suite, "suite of {a:?}");
            assert!(
                seen.insert(a.test.clone()),
                "{:?} has more than one final result",
                a.test
            );
        }
        let want: BTreeSet<_> = expected.iter().cloned().collect();
        let missing: Vec<_> = want.difference(&seen).collect();
        let extra: Vec<_> = seen.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "final results differ from the selection: missing {missing:?}, unexpected {extra:?}"
        );
    }
}
