//! pytest suites run on one long-lived runner per slot; when that runner
//! cannot serve, the slot falls back to a process per batch and says so.

use crate::events::Events;
use crate::support::{Project, require_pytest};

/// A project whose conftest refuses shoal's serve mode, as an incompatible
/// plugin or pytest version would.
fn project_refusing_serve_mode() -> Project {
    let project = Project::pytest();
    let conftest =
        std::fs::read_to_string(project.root().join("tests/conftest.py")).unwrap_or_default();
    project.write(
        "tests/conftest.py",
        &format!(
            "{conftest}\n\ndef pytest_configure(config):\n    if config.getoption('shoal_serve', False):\n        raise SystemExit('this project cannot be served')\n"
        ),
    );
    project
}

#[test]
fn a_runner_that_cannot_serve_falls_back_to_a_process_per_batch() {
    require_pytest();
    let project = project_refusing_serve_mode();
    let json = project.out("events.jsonl");
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .arg("test_weird_id")
        .run();
    out.assert_code(0);
    let events = Events::read(&json);
    let notices = events.notices();
    assert!(
        notices
            .iter()
            .any(|(level, m)| level == "warn" && m.contains("could not serve batches")),
        "a notice names the fallback: {notices:?}"
    );
    let listed = project.shoal(["list", "test_weird_id"]).run();
    listed.assert_code(0);
    let expected = listed
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let attempts = events.attempts();
    assert_eq!(
        attempts.len(),
        expected,
        "every test ran once after the fallback"
    );
    assert!(attempts.iter().all(|a| a.outcome == "pass"), "{attempts:?}");
}

#[test]
fn a_served_suite_gives_no_fallback_notice() {
    require_pytest();
    let project = Project::pytest();
    let json = project.out("events.jsonl");
    project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .arg("test_weird_id")
        .run()
        .assert_code(0);
    let events = Events::read(&json);
    assert!(events.notices().is_empty(), "{:?}", events.notices());
}
