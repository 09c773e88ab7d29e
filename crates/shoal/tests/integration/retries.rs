//! Retries: a test that fails once and then passes is `flaky` (exit 0
//! unless `--fail-on-flaky`), retried on another slot and marked in JUnit;
//! a build where most tests fail stops being retried.

use crate::events::Events;
use crate::junit::{Junit, Status};
use crate::reference::pytest_truth;
use crate::support::{Output, Project, listed_names};

const FIRST_RUN_FAILS: &str = "tests/test_flaky.py::test_flaky_first_run";
/// Passing tests to run beside it (a pattern: test_pass and test_pass_prints).
const PASSING: &str = "tests/test_outcomes.py::test_pass";
/// More passing tests (the parametrized weird ids).
const MORE_PASSING: &str = "test_weird_id";
/// Passing tests that take 1.5 s and 0.5 s.
const SLOW_PASSING: &str = "tests/test_slow.py::test_slow_";

/// Runs the first-run-fails test and passing ones (`patterns`) with
/// `--retries 2` and a fresh flakiness state directory.
fn run_flaky(project: &Project, extra: &[&str], patterns: &[&str]) -> (Output, Events, Junit) {
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let state = project.out("fixture-state");
    let out = project
        .shoal(["run", "-j", "2", "--retries", "2", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .arg(FIRST_RUN_FAILS)
        .args(patterns)
        .env("SHOAL_FIXTURE_STATE", &state)
        .run();
    let events = Events::read(&json);
    let report = Junit::read(&junit);
    (out, events, report)
}

#[test]
fn failing_once_then_passing_is_flaky_and_retried_elsewhere() {
    let project = Project::pytest();
    // A retry waits for a slot where it did not fail unless nothing else is
    // left to run (docs/design/scheduler.md). With a long-lived pytest per
    // slot, the slot that failed can drain this small queue while the other
    // slot's pytest is still starting, and then rightly takes the retry
    // itself; per-batch processes start both slots alike, so the other slot
    // is free in time. The slow tests keep the failing slot busy meanwhile.
    project.write(
        "shoal.toml",
        "[suites.pytest]\nadapter = \"pytest\"\npersistent = false\n",
    );
    let (out, events, report) = run_flaky(&project, &[], &[PASSING, MORE_PASSING, SLOW_PASSING]);
    out.assert_code(0);

    let attempts = events.attempts_of(FIRST_RUN_FAILS);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (failed, passed) = (&attempts[0], &attempts[1]);
    assert_eq!((failed.attempt, failed.outcome.as_str()), (1, "fail"));
    assert!(failed.will_retry && failed.final_status.is_none());
    assert_eq!((passed.attempt, passed.outcome.as_str()), (2, "pass"));
    assert_eq!(passed.final_status.as_deref(), Some("flaky"));
    assert_ne!(
        failed.slot, passed.slot,
        "the retry ran on the slot that failed"
    );
    assert!(passed.start >= failed.end, "the retry followed the failure");

    for a in events.finals() {
        if a.test != FIRST_RUN_FAILS {
            assert_eq!(a.final_status.as_deref(), Some("passed"), "{a:?}");
        }
    }
    let counts = &events.run_finished()["counts"];
    assert_eq!(counts["flaky"], 1);
    assert_eq!(counts["failed"], 0);

    report.assert_self_consistent();
    let case = report.case(FIRST_RUN_FAILS);
    assert_eq!(case.status(), Status::Passed);
    assert_eq!(case.flaky_failures, 1, "{case:?}");
}

#[test]
fn fail_on_flaky_fails_the_run() {
    let project = Project::pytest();
    let (out, events, _) = run_flaky(&project, &["--fail-on-flaky"], &[PASSING]);
    out.assert_code(1);
    assert_eq!(
        events.final_of(FIRST_RUN_FAILS).final_status.as_deref(),
        Some("flaky")
    );
    assert_eq!(events.run_finished()["exit_code"], 1);
}

#[test]
fn retries_stop_when_the_build_looks_broken() {
    let project = Project::pytest();
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let truth = pytest_truth();
    // Every test pytest fails, plus a couple that pass: most fail.
    let failing: Vec<String> = listed_names(&list, "pytest")
        .into_iter()
        .filter(|n| truth.status_of(n) == Status::Failed)
        .collect();
    let mut patterns = failing.clone();
    patterns.push(PASSING.to_owned());
    let selected = {
        let list = project.shoal(["list"]).args(&patterns).run();
        list.assert_code(0);
        listed_names(&list, "pytest")
    };
    let (repeat, retries) = (2u64, 3u64);
    let failing_execs = failing.len() as u64 * repeat;
    let planned = selected.len() as u64 * repeat;
    // shoal judges a build broken once more than 10% of the planned
    // executions (`run.retry_threshold`), and more than 10 (the scheduler's
    // floor for small selections), have failed; repeating makes enough.
    assert!(
        failing_execs > 10 && failing_execs * 2 > planned,
        "most executions fail: {failing_execs} of {planned}"
    );

    let json = project.out("events.jsonl");
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .args(["--retries", &retries.to_string()])
        .args(["--repeat", &repeat.to_string()])
        .args(&patterns)
        .run();
    out.assert_code(1);
    let events = Events::read(&json);
    assert_eq!(events.run_started()["planned"], planned);

    let notices = events.notices();
    assert!(
        notices
            .iter()
            .any(|(level, message)| level == "warn" && message.contains("retried")),
        "a notice says retries stopped: {notices:?}"
    );
    let attempts = events.attempts().len() as u64;
    let without_threshold = planned + failing_execs * retries;
    assert!(
        attempts < 2 * planned,
        "{attempts} attempts for {planned} executions (all retries would make {without_threshold})"
    );
    assert_eq!(
        events.run_finished()["counts"]["failed"],
        failing_execs,
        "every failing execution still ends failed"
    );
}
