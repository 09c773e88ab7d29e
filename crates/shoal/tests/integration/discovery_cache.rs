//! A repeated run reuses the suite's cached test list while its inputs are
//! unchanged, and discovers afresh when a test file changes.

use crate::support::{Project, require_pytest};
use serde_json::Value;

/// The `suite_discovered` event of a run's JSON events.
fn discovered(path: &std::path::Path) -> Value {
    std::fs::read_to_string(path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|e| e["type"] == "suite_discovered")
        .expect("a suite_discovered event")
}

#[test]
fn unchanged_inputs_skip_discovery_and_edits_are_seen() {
    require_pytest();
    let project = Project::pytest();
    let run = |name: &str, extra: &[&str]| {
        let json = project.out(name);
        project
            .shoal(["run", "-j", "2", "--json"])
            .arg(&json)
            .args(extra)
            .arg("test_numbers")
            .run();
        discovered(&json)
    };
    let first = run("1.jsonl", &[]);
    let second = run("2.jsonl", &[]);
    assert_eq!(first["discovered"], second["discovered"]);
    let (fresh, cached) = (
        first["duration"].as_f64().unwrap(),
        second["duration"].as_f64().unwrap(),
    );
    assert!(
        cached < fresh / 4.0,
        "cached listing took {cached}s, fresh {fresh}s"
    );

    // A new test file changes the inputs: discovery runs and finds it.
    project.write(
        "tests/test_added.py",
        "def test_numbers_added():\n    pass\n",
    );
    let third = run("3.jsonl", &[]);
    assert_eq!(
        third["discovered"].as_u64(),
        first["discovered"].as_u64().map(|n| n + 1)
    );
    assert_eq!(
        third["selected"].as_u64(),
        first["selected"].as_u64().map(|n| n + 1)
    );

    // --no-discovery-cache always collects.
    let forced = run("4.jsonl", &["--no-discovery-cache"]);
    assert!(
        forced["duration"].as_f64().unwrap() > cached * 4.0,
        "{forced}"
    );
}
