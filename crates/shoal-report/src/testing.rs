//! A scripted run shared by the reporters' tests: one of every kind of
//! result, with fixed times so rendered output is deterministic.

use FinalStatus::{Failed, Flaky, Passed, Skipped};
use shoal_core::event::{
    AttemptFinished, AttemptStarted, Notice, NoticeLevel, RunFinished, RunStarted, SuiteDiscovered,
};
use shoal_core::{CapturedOutput, Event, FinalStatus, Outcome, QuarantinedCounts, RunCounts};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// The run's start, seconds since the epoch (2023-11-14T22:13:20Z).
pub(crate) const T0: f64 = 1_700_000_000.0;

/// One attempt of a test, as the events describe it.
pub(crate) struct Attempt<'a> {
    pub suite: &'a str,
    pub test: &'a str,
    pub outcome: Outcome,
    pub attempt: u32,
    pub repeat: u32,
    /// Start, seconds after [`T0`].
    pub at: f64,
    pub duration: f64,
    pub message: Option<&'a str>,
    pub output: &'a str,
    pub truncated: u64,
    pub will_retry: bool,
    pub final_status: Option<FinalStatus>,
    pub quarantined: bool,
}

impl Attempt<'_> {
    /// A first attempt that is also the final one.
    pub(crate) fn once<'a>(
        suite: &'a str,
        test: &'a str,
        outcome: Outcome,
        final_status: FinalStatus,
        at: f64,
        duration: f64,
    ) -> Attempt<'a> {
        Attempt {
            suite,
            test,
            outcome,
            attempt: 1,
            repeat: 0,
            at,
            duration,
            message: None,
            output: "",
            truncated: 0,
            will_retry: false,
            final_status: Some(final_status),
            quarantined: false,
        }
    }

    /// The started and finished events of this attempt.
    pub(crate) fn events(&self) -> [Event; 2] {
        let slot = self.attempt % 2 + 1;
        [
            Event::AttemptStarted(AttemptStarted {
                test: self.test.into(),
                suite: self.suite.into(),
                attempt: self.attempt,
                repeat: self.repeat,
                slot,
                worker: "local".into(),
                start: T0 + self.at,
            }),
            Event::AttemptFinished(AttemptFinished {
                test: self.test.into(),
                suite: self.suite.into(),
                outcome: self.outcome,
                attempt: self.attempt,
                repeat: self.repeat,
                slot,
                worker: "local".into(),
                start: T0 + self.at,
                end: T0 + self.at + self.duration + 0.01,
                duration: self.duration,
                message: self.message.map(Into::into),
                output: CapturedOutput {
                    text: self.output.into(),
                    truncated_bytes: self.truncated,
                },
                will_retry: self.will_retry,
                final_status: self.final_status,
                quarantined: self.quarantined,
            }),
        ]
    }
}

pub(crate) fn run_started(planned: usize, retries: u32, estimated_work: f64) -> Event {
    Event::RunStarted(RunStarted {
        run_id: "run-1".into(),
        commit: Some("0123abcd".into()),
        dirty: false,
        slots: 2,
        worker: "local".into(),
        planned,
        repeat: 2,
        retries,
        estimated_work,
        start: T0,
        seed: None,
    })
}

pub(crate) fn discovered(suite: &str, adapter: &str, discovered: usize, selected: usize) -> Event {
    Event::SuiteDiscovered(SuiteDiscovered {
        suite: suite.into(),
        adapter: adapter.into(),
        discovered,
        selected,
        duration: 0.42,
        scope: Vec::new(),
    })
}

/// The attempts of [`scripted_run`], in the order they finish.
pub(crate) fn scripted_attempts() -> Vec<Attempt<'static>> {
    use Outcome::*;
    vec![
        Attempt::once("py", "tests/test_a.py::test_ok", Pass, Passed, 0.0, 0.123),
        Attempt {
            message: Some("assert 1 == 2"),
            output: "def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2\n",
            will_retry: true,
            final_status: None,
            ..Attempt::once("py", "tests/test_a.py::test_fail", Fail, Failed, 0.2, 0.05)
        },
        Attempt {
            message: Some("assert 1 == 2"),
            output: "def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2\n",
            truncated: 2048,
            attempt: 2,
            ..Attempt::once("py", "tests/test_a.py::test_fail", Fail, Failed, 0.4, 0.051)
        },
        Attempt {
            message: Some("ConnectionResetError: [Errno 104]"),
            output: "connecting to 127.0.0.1:5432\nConnectionResetError: [Errno 104]\n",
            will_retry: true,
            final_status: None,
            quarantined: true,
            ..Attempt::once("py", "tests/test_b.py::test_flaky", Fail, Flaky, 0.5, 0.3)
        },
        Attempt {
            attempt: 2,
            output: "connecting to 127.0.0.1:5432\n",
            quarantined: true,
            ..Attempt::once("py", "tests/test_b.py::test_flaky", Pass, Flaky, 0.9, 0.25)
        },
        Attempt {
            message: Some("timed out after 2s"),
            output: "sleeping...\n",
            ..Attempt::once(
                "py",
                "tests/test_c.py::test_slow",
                Timeout,
                Failed,
                0.1,
                2.0,
            )
        },
        Attempt {
            message: Some("runner exited with signal 11 (SIGSEGV)"),
            quarantined: true,
            ..Attempt::once("rs", "net::tests::crashes", Crash, Failed, 1.0, 0.7)
        },
        Attempt {
            message: Some("ignored"),
            ..Attempt::once("rs", "net::tests::ignored", Skip, Skipped, 1.1, 0.0)
        },
        Attempt {
            repeat: 1,
            ..Attempt::once("py", "tests/test_a.py::test_ok", Pass, Passed, 1.2, 1.5)
        },
        Attempt::once("py", "tests/test_d.py::test_gone", Lost, Failed, 1.3, 0.0),
    ]
}

/// A whole run with a pass, a failure (retried, with truncated output), a
/// flaky test, a timeout, a crash, a skip, a repetition, a lost result and a
/// notice. The flaky test and the crash are quarantined.
pub(crate) fn scripted_run() -> Vec<Event> {
    let mut events = vec![
        run_started(8, 1, 9.5),
        discovered("py", "pytest", 6, 5),
        discovered("rs", "cargo", 2, 2),
    ];
    for (i, attempt) in scripted_attempts().iter().enumerate() {
        events.extend(attempt.events());
        if i == 5 {
            events.push(Event::Notice(Notice {
                level: NoticeLevel::Warn,
                message: "retries disabled for the rest of the run: 3 of 5 tests failed".into(),
            }));
        }
    }
    let mut counts = RunCounts {
        attempts: 10,
        ..RunCounts::default()
    };
    for status in [
        Passed, Failed, Flaky, Failed, Failed, Skipped, Passed, Failed,
    ] {
        counts.add(status);
    }
    events.push(Event::RunFinished(RunFinished {
        run_id: "run-1".into(),
        counts,
        quarantined: QuarantinedCounts {
            failed: 1,
            flaky: 1,
        },
        start: T0,
        end: T0 + 4.21,
        interrupted: false,
        not_run: 0,
        exit_code: 1,
    }));
    events
}

/// A run interrupted after one failed attempt that would have been retried.
pub(crate) fn interrupted_run() -> Vec<Event> {
    let mut events = vec![run_started(4, 2, 4.0)];
    events.extend(
        Attempt::once(
            "py",
            "tests/test_a.py::test_ok",
            Outcome::Pass,
            Passed,
            0.0,
            0.5,
        )
        .events(),
    );
    events.extend(
        Attempt {
            message: Some("assert False"),
            will_retry: true,
            final_status: None,
            ..Attempt::once(
                "py",
                "tests/test_a.py::test_fail",
                Outcome::Fail,
                Failed,
                0.1,
                0.2,
            )
        }
        .events(),
    );
    let mut counts = RunCounts {
        attempts: 2,
        ..RunCounts::default()
    };
    counts.add(Passed);
    events.push(Event::RunFinished(RunFinished {
        run_id: "run-1".into(),
        counts,
        quarantined: QuarantinedCounts::default(),
        start: T0,
        end: T0 + 1.5,
        interrupted: true,
        not_run: 3,
        exit_code: 130,
    }));
    events
}

/// A writer whose contents a test can read while a reporter owns it.
#[derive(Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
