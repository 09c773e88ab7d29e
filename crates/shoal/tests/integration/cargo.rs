//! `shoal run` on the cargo fixture, compared with `cargo test --no-fail-fast`.

use crate::events::Events;
use crate::junit::{Junit, Status, Totals};
use crate::reference::cargo_truth;
use crate::support::{Project, listed_names};

/// The libtest path of a cargo test name (`BINARY-ID PATH`).
pub fn test_path(name: &str) -> &str {
    name.split_once(' ')
        .unwrap_or_else(|| panic!("{name:?} is not `BINARY-ID PATH`"))
        .1
}

#[test]
fn full_run_agrees_with_cargo_test() {
    let project = Project::cargo();
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let names = listed_names(&list, "cargo");
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let run = project
        .shoal(["run", "-j", "2", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .run();
    let truth = cargo_truth();
    assert!(truth.summary.failed > 0, "the fixture has failing tests");
    run.assert_code(1);

    let events = Events::read(&json);
    events.assert_one_final_each("cargo", &names);
    let finished = events.run_finished();
    assert_eq!(finished["exit_code"], 1);

    // Test for test (by libtest path), the status cargo test reports.
    let mut ours: Vec<(String, Status)> = events
        .finals()
        .into_iter()
        .map(|a| {
            let status = Status::from_final(a.final_status.as_deref().expect("final"));
            (test_path(&a.test).to_owned(), status)
        })
        .collect();
    ours.sort();
    assert_eq!(ours, truth.tests, "per-test status vs `cargo test`");

    // The JUnit totals are `cargo test`'s summary lines.
    let report = Junit::read(&junit);
    report.assert_self_consistent();
    assert_eq!(report.cases.len(), names.len());
    assert_eq!(report.totals(), truth.summary);
    let counts = &finished["counts"];
    assert_eq!(
        Totals {
            passed: counts["passed"].as_u64().expect("passed") as usize,
            failed: counts["failed"].as_u64().expect("failed") as usize,
            skipped: counts["skipped"].as_u64().expect("skipped") as usize,
        },
        truth.summary
    );
}
