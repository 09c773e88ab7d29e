//! `shoal run` and `shoal list` on the pytest fixture, compared with what
//! pytest itself collects and reports.

use crate::events::Events;
use crate::junit::{Junit, Status, Totals};
use crate::reference::{junit_key, pytest_truth};
use crate::support::{Project, listed_names};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Node ids from `pytest --collect-only -q` (its lines that name a test).
fn pytest_collect(project: &Project, extra: &[&str]) -> Vec<String> {
    let out = project
        .tool(
            "python3",
            [
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--collect-only",
                "-q",
            ],
        )
        .args(extra)
        .run();
    out.assert_code(0);
    out.stdout
        .lines()
        .filter(|l| l.contains("::"))
        .map(str::to_owned)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn list_prints_the_ids_pytest_collects() {
    let project = Project::pytest();
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let ours = listed_names(&list, "pytest");
    let pytest = pytest_collect(&project, &[]);
    assert!(!pytest.is_empty(), "pytest collected nothing");
    assert_eq!(sorted(ours), sorted(pytest));
}

#[test]
fn full_run_agrees_with_pytest_junit() {
    let project = Project::pytest();
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let names = listed_names(&list, "pytest");
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let run = project
        .shoal(["run", "-j", "2", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .run();
    let truth = pytest_truth();
    assert!(
        truth.totals().failed > 0,
        "the fixture has failing tests, so the run must exit 1"
    );
    run.assert_code(1);

    // The event log: every discovered test has exactly one final result,
    // and every attempt_finished carries the documented fields (checked as
    // they are parsed: test, suite, outcome, attempt, slot, worker, float
    // start and end with end >= start).
    let events = Events::read(&json);
    events.assert_one_final_each("pytest", &names);
    for a in events.attempts() {
        assert_eq!(a.worker, "local", "{a:?}");
        assert!(a.slot < 2, "slot {} with -j 2", a.slot);
        assert_eq!(a.repeat, 0, "{a:?}");
    }
    let finished = events.run_finished();
    assert_eq!(finished["exit_code"], 1);
    assert_eq!(finished["interrupted"], false);

    // The JUnit report says, test for test, what pytest's own JUnit says
    // (pytest's cases keyed and merged as `PytestTruth::statuses` explains).
    let ours = Junit::read(&junit);
    ours.assert_self_consistent();
    assert_eq!(ours.cases.len(), names.len(), "one <testcase> per test");
    let mut by_key = BTreeMap::new();
    for case in &ours.cases {
        assert_eq!(case.classname, "pytest", "classname is the suite");
        let previous = by_key.insert(junit_key(&case.name), case.status());
        assert!(previous.is_none(), "{:?} keyed twice", case.name);
    }
    assert!(
        truth.junit.cases.len() > truth.statuses.len(),
        "pytest's report counts some test twice; the comparison is per test"
    );
    assert_eq!(by_key, truth.statuses, "per-test status vs pytest's JUnit");
    assert_eq!(ours.totals(), truth.totals());

    // And the run's own counts agree with both.
    let counts = &finished["counts"];
    let t = truth.totals();
    assert_eq!(
        (counts["passed"].as_u64(), counts["failed"].as_u64()),
        (Some(t.passed as u64), Some(t.failed as u64))
    );
    assert_eq!(counts["skipped"].as_u64(), Some(t.skipped as u64));
    assert_eq!(
        Totals::of(
            events
                .finals()
                .iter()
                .map(|a| Status::from_final(a.final_status.as_deref().expect("final")))
        ),
        t
    );
}

#[test]
fn hostile_ids_run_without_a_shell() {
    let pwned = Path::new("/tmp/shoal-pwned");
    if pwned.exists() {
        std::fs::remove_file(pwned).expect("remove a stale /tmp/shoal-pwned");
    }
    let project = Project::pytest();
    let pattern = "test_weird_id";
    let expected: Vec<String> = pytest_collect(&project, &["tests/test_params.py"])
        .into_iter()
        .filter(|id| id.contains(pattern))
        .collect();
    assert!(expected.len() > 10, "the fixture's weird ids: {expected:?}");
    // pytest itself passes every one of them.
    project
        .tool(
            "python3",
            [
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-k",
                pattern,
            ],
        )
        .arg("tests/test_params.py")
        .run()
        .assert_code(0);

    let json = project.out("events.jsonl");
    let run = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .arg(pattern)
        .run();
    run.assert_code(0);
    let events = Events::read(&json);
    events.assert_one_final_each("pytest", &expected);
    for a in events.finals() {
        assert_eq!(a.final_status.as_deref(), Some("passed"), "{a:?}");
    }

    // A pattern is a plain substring too, never shell code.
    let injected = "$(touch /tmp/shoal-pwned)";
    let list = project.shoal(["list", injected]).run();
    list.assert_code(0);
    let selected = listed_names(&list, "pytest");
    let want: Vec<_> = expected
        .iter()
        .filter(|id| id.contains(injected))
        .cloned()
        .collect();
    assert_eq!(selected, want);
    assert!(
        !pwned.exists(),
        "a test id or pattern went through a shell: /tmp/shoal-pwned exists"
    );
}

#[test]
fn repeat_gives_every_repetition_a_final_result() {
    let project = Project::pytest();
    let pattern = "test_numbers";
    let list = project.shoal(["list", pattern]).run();
    list.assert_code(0);
    let names = listed_names(&list, "pytest");
    assert!(!names.is_empty());
    let (json, junit) = (project.out("events.jsonl"), project.out("junit.xml"));
    let run = project
        .shoal(["run", "-j", "2", "--repeat", "3", "--json"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .arg(pattern)
        .run();
    let truth = pytest_truth();
    let any_fails = names.iter().any(|n| truth.status_of(n) == Status::Failed);
    run.assert_code(if any_fails { 1 } else { 0 });

    let events = Events::read(&json);
    assert_eq!(events.run_started()["repeat"], 3);
    assert_eq!(events.run_started()["planned"], names.len() * 3);
    let mut repeats: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for a in events.finals() {
        assert!(
            repeats.entry(a.test.clone()).or_default().insert(a.repeat),
            "two final results for {:?} repeat {}",
            a.test,
            a.repeat
        );
        assert_eq!(
            Status::from_final(a.final_status.as_deref().expect("final")),
            truth.status_of(&a.test),
            "{a:?}"
        );
    }
    let want: BTreeMap<String, BTreeSet<u64>> = names
        .iter()
        .map(|n| (n.clone(), BTreeSet::from([0, 1, 2])))
        .collect();
    assert_eq!(repeats, want);

    let report = Junit::read(&junit);
    report.assert_self_consistent();
    assert_eq!(report.cases.len(), names.len() * 3, "a case per repetition");
}
