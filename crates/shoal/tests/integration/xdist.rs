//! Drop-in for suites that keep themselves apart under pytest-xdist: each
//! slot's pytest presents itself as an xdist worker (`gw<slot>`), so a suite
//! keyed on `PYTEST_XDIST_WORKER`, the `worker_id` fixture or
//! `config.workerinput` (filled through `pytest_configure_node`) gets one
//! database or file per slot, with long-lived runners and with a pytest per
//! batch. The fixtures fail on a collision between two processes claiming
//! one identity, so sharing is detected, not assumed away.

use crate::events::Events;
use crate::support::{Project, require_pytest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The JSON records in `dir` (one file each).
fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("record");
            out.push(serde_json::from_str(&text).expect("a JSON record"));
        }
    }
    out
}

fn run_xdist_aware(persistent: bool) {
    require_pytest();
    let project = Project::copy_of("xdist-aware-project");
    if !persistent {
        project.write(
            "shoal.toml",
            "[suites.py]\nadapter = \"pytest\"\npersistent = false\n",
        );
    }
    let out_dir = project.out("xdist");
    let json = project.out("run.jsonl");
    // Two slots and a run twice as long as one test, so both slots serve.
    let run = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .env("XDIST_FIXTURE_OUT", &out_dir)
        .run();
    run.assert_code(0);
    let events = Events::read(&json);
    assert_eq!(events.finals().len(), 10, "{}", run.dump());
    let records = records(&out_dir.join("tests"));
    assert_eq!(records.len(), 10);
    let mut workers = BTreeSet::new();
    for r in &records {
        let worker = r["worker_id"].as_str().expect("worker_id").to_owned();
        assert_eq!(r["env_worker"], worker.as_str(), "{r}");
        assert_eq!(r["env_count"], "2", "{r}");
        assert_eq!(r["env_uid"], r["testrun_uid"], "{r}");
        assert!(
            r["ident"]
                .as_str()
                .is_some_and(|i| i.starts_with(&format!("ident_{worker}_"))),
            "pytest_configure_node ran for this worker: {r}"
        );
        assert!(worker == "gw0" || worker == "gw1", "{r}");
        workers.insert(worker);
    }
    let uids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["testrun_uid"].as_str())
        .collect();
    assert_eq!(uids.len(), 1, "one testrun_uid for the whole run: {uids:?}");
    assert_eq!(
        workers.len(),
        2,
        "both slots ran tests, each as its own worker: {workers:?}"
    );
}

#[test]
fn an_xdist_aware_suite_keeps_its_slots_apart_with_long_lived_runners() {
    run_xdist_aware(true);
}

#[test]
fn an_xdist_aware_suite_keeps_its_slots_apart_with_a_pytest_per_batch() {
    run_xdist_aware(false);
}

/// Fails (never skips) without Django and pytest-django: scripts/test
/// installs them (scripts/requirements-test.txt).
fn require_django() {
    require_pytest();
    let out = std::process::Command::new("python3")
        .args(["-c", "import django, pytest_django"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 cannot import django and pytest_django (install scripts/requirements-test.txt, or run scripts/test):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_django_suite_gets_one_test_database_per_slot() {
    require_django();
    let project = Project::copy_of("django-project");
    let out_dir = project.out("django");
    let json = project.out("run.jsonl");
    for round in 0..2 {
        let run = project
            .shoal(["run", "-j", "2", "--json"])
            .arg(&json)
            .env("DJANGO_FIXTURE_OUT", &out_dir)
            .run();
        run.assert_code(0);
        assert_eq!(
            Events::read(&json).finals().len(),
            7,
            "round {round}: {}",
            run.dump()
        );
    }
    let databases = records(&out_dir.join("databases"));
    let mut by_worker = std::collections::BTreeMap::new();
    for d in &databases {
        let worker = d["worker"].as_str().expect("worker").to_owned();
        let name = d["name"].as_str().expect("name").to_owned();
        assert!(
            name.ends_with(&format!("test_notes_{worker}")),
            "the test database is the slot's: {d}"
        );
        by_worker
            .entry(worker)
            .or_insert_with(BTreeSet::new)
            .insert(name);
    }
    assert_eq!(
        by_worker.len(),
        2,
        "two slots, two databases: {by_worker:?}"
    );
    assert!(
        by_worker.values().all(|names| names.len() == 1),
        "{by_worker:?}"
    );
}
