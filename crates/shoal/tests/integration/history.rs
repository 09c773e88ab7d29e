//! Ordering by history: with `order = "duration"`, a second run starts the
//! tests the first run measured slowest; by default a pytest suite keeps
//! collection order (each runner sees its tests as pytest-xdist's would).

use crate::events::Events;
use crate::support::Project;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The tests of the fixture matching `patterns`, in the order a one-slot
/// run started them (its events go to `name` in the project's out dir).
fn started_order(project: &Project, name: &str, patterns: &[&str]) -> Vec<String> {
    let json = project.out(name);
    project
        .shoal(["run", "-j", "1", "--json"])
        .arg(&json)
        .args(patterns)
        .run()
        .assert_code(1);
    Events::read(&json).started()
}

#[test]
fn history_puts_the_slowest_tests_first() {
    let project = Project::pytest();
    // pytest suites keep collection order unless told otherwise.
    project.write(
        "shoal.toml",
        "[suites.pytest]\nadapter = \"pytest\"\norder = \"duration\"\n",
    );
    // test_slow's file sorts after test_params', so without history (every
    // estimate equal, ties broken by id) the slow tests would not lead.
    let patterns = ["test_slow", "test_numbers", "test_pairs"];
    // One slot: the order of attempt_started is the dispatch order.
    let first = started_order(&project, "first.jsonl", &patterns);
    let second = started_order(&project, "second.jsonl", &patterns);
    assert_eq!(
        sorted(first.clone()),
        sorted(second.clone()),
        "same tests both times"
    );

    // The slow tests' durations as the first run measured them, slowest first.
    let events = Events::read(&project.out("first.jsonl"));
    let mut slow: Vec<(f64, String)> = events
        .attempts()
        .into_iter()
        .filter(|a| a.test.contains("test_slow"))
        .map(|a| (a.end - a.start, a.test))
        .collect();
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest: Vec<String> = slow.into_iter().map(|s| s.1).collect();
    assert_eq!(slowest.len(), 2, "{slowest:?}");
    assert!(
        slowest[0].contains("1500ms"),
        "the 1.5 s test measured slowest: {slowest:?}"
    );

    assert_ne!(
        first[..2],
        slowest[..],
        "without history the slow tests did not lead, so the check below means something"
    );
    assert_eq!(
        second[..2],
        slowest[..],
        "the second run started the slowest tests first: {second:?}"
    );
}

#[test]
fn a_pytest_suite_keeps_collection_order_by_default() {
    let project = Project::pytest();
    let patterns = ["test_slow", "test_numbers", "test_pairs"];
    let listed = project.shoal(["list"]).args(patterns).run();
    listed.assert_code(0);
    let collection: Vec<String> = crate::support::listed_names(&listed, "pytest");
    let first = started_order(&project, "first.jsonl", &patterns);
    // History now says test_slow.py's tests are the slowest; the order stays.
    let second = started_order(&project, "second.jsonl", &patterns);
    assert_eq!(first, collection, "one slot runs the collection order");
    assert_eq!(
        second, collection,
        "history does not reorder a pytest suite by default"
    );
}
