//! How fast events reach every reporter: 100,000 finished attempts (a tenth
//! failing, with output) through `Fanout` to the terminal reporter (plain
//! lines, as in CI; and with the progress bar), JUnit and JSON lines, as
//! `shoal run --junit --json` wires them. Run by `bench/overhead.py`, or
//! `cargo bench -p shoal-report --bench fanout`.

use shoal_core::event::{AttemptFinished, RunFinished, RunStarted};
use shoal_core::{CapturedOutput, Event, FinalStatus, Outcome, RunCounts};
use shoal_report::json::JsonLinesReporter;
use shoal_report::junit::JunitReporter;
use shoal_report::terminal::{TerminalOptions, TerminalReporter};
use shoal_report::{Fanout, Reporter};
use std::time::{Duration, Instant};

const EVENTS: usize = 100_000;

fn events() -> Vec<Event> {
    let mut out = vec![Event::RunStarted(RunStarted {
        run_id: "bench".into(),
        commit: None,
        dirty: false,
        slots: 8,
        worker: "local".into(),
        planned: EVENTS,
        repeat: 1,
        retries: 0,
        estimated_work: EVENTS as f64 * 0.01,
        start: 1.8e9,
        seed: None,
    })];
    let mut counts = RunCounts::default();
    for i in 0..EVENTS {
        let fail = i % 10 == 0;
        let status = if fail {
            FinalStatus::Failed
        } else {
            FinalStatus::Passed
        };
        counts.add(status);
        out.push(Event::AttemptFinished(AttemptFinished {
            test: format!("tests/test_mod_{}.py::test_case_{i}", i / 100),
            suite: "py".into(),
            outcome: if fail { Outcome::Fail } else { Outcome::Pass },
            attempt: 1,
            repeat: 0,
            slot: (i % 8) as u32,
            worker: "local".into(),
            start: 1.8e9 + i as f64 * 0.001,
            end: 1.8e9 + i as f64 * 0.001 + 0.01,
            duration: 0.01,
            message: fail.then(|| "assert 1 == 2".to_owned()),
            output: CapturedOutput {
                text: if fail {
                    "E   assert 1 == 2\n".repeat(20)
                } else {
                    String::new()
                },
                truncated_bytes: 0,
            },
            will_retry: false,
            final_status: Some(status),
            quarantined: false,
        }));
    }
    out.push(Event::RunFinished(RunFinished {
        run_id: "bench".into(),
        counts,
        quarantined: Default::default(),
        start: 1.8e9,
        end: 1.8e9 + 100.0,
        interrupted: false,
        not_run: 0,
        exit_code: 1,
    }));
    out
}

fn time(progress_bar: bool, events: &[Event]) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fanout = Fanout::new();
    fanout.push(TerminalReporter::new(
        TerminalOptions {
            progress_bar,
            ..TerminalOptions::default()
        },
        Box::new(std::io::sink()),
    ));
    fanout.push(JunitReporter::new(dir.path().join("junit.xml")));
    fanout.push(JsonLinesReporter::create(dir.path().join("events.jsonl")).expect("json file"));
    let t0 = Instant::now();
    for ev in events {
        fanout.on_event(ev).expect("reporters accept the event");
    }
    fanout.finish().expect("reports written");
    t0.elapsed()
}

fn main() {
    let events = events();
    for progress_bar in [false, true] {
        let mut runs: Vec<Duration> = (0..5).map(|_| time(progress_bar, &events)).collect();
        runs.sort();
        let median = runs[2];
        println!(
            "terminal ({}) + JUnit + JSON lines: {EVENTS} attempts in {median:.2?} (median of 5): \
             {:.1} µs per attempt, {:.0} attempts/s",
            if progress_bar {
                "progress bar"
            } else {
                "plain lines"
            },
            median.as_secs_f64() * 1e6 / EVENTS as f64,
            EVENTS as f64 / median.as_secs_f64()
        );
    }
}
