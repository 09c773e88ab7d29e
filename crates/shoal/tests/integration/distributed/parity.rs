//! Local and remote runs agree (issue 12): the same scenarios run with
//! `shoal run` and with `shoal run --server` on a coordinator with two
//! workers (SQLite and, where available, PostgreSQL), and every difference
//! in final results per test, counts, the process's exit code,
//! `run_finished.exit_code` and the stored run row fails the test.

use super::{Backend, Cluster};
use crate::events::Events;
use crate::support::Output;
use std::collections::BTreeMap;

/// A stored run row: kind, seed, exit code, planned executions and
/// (passed, failed, flaky).
type Row = (
    String,
    Option<u64>,
    Option<i32>,
    usize,
    Option<(usize, usize, usize)>,
);

/// How one (test, repetition) ended: final status, outcome of its last
/// attempt, quarantined, attempts made.
type Final = (String, String, bool, usize);

/// What a run ended with, in the terms both kinds of run share.
#[derive(Debug, PartialEq)]
struct Verdict {
    /// Per test, one entry per repetition, sorted (which repetition comes
    /// first is the order's): (final status, outcome of its last attempt,
    /// quarantined, attempts made).
    finals: BTreeMap<String, Vec<Final>>,
    counts: serde_json::Value,
    quarantined: serde_json::Value,
    exit_code: i32,
    event_exit_code: i64,
    retries_reported: i64,
    seed: serde_json::Value,
    /// The stored run row.
    row: Row,
    /// Notices the run state gives (the broken-build guard's).
    notices: Vec<String>,
}

fn notices(events: &Events) -> Vec<String> {
    events
        .notices()
        .into_iter()
        .map(|(_, message)| message)
        .filter(|m| m.contains("build looks broken"))
        .collect()
}

fn verdict(events: &Events, out: &Output, store_url: &str) -> Verdict {
    let mut finals = BTreeMap::new();
    for a in events.finals() {
        let v = events
            .of_type("attempt_finished")
            .find(|e| {
                e["test"] == a.test.as_str()
                    && e["repeat"] == a.repeat
                    && e["final_status"].is_string()
            })
            .expect("the final attempt's event");
        let attempts = events
            .attempts()
            .iter()
            .filter(|b| b.test == a.test && b.repeat == a.repeat)
            .count();
        finals.entry(a.test.clone()).or_insert_with(Vec::new).push((
            a.final_status.clone().expect("final"),
            a.outcome.clone(),
            v["quarantined"].as_bool().unwrap_or(false),
            attempts,
        ));
    }
    for f in finals.values_mut() {
        f.sort();
    }
    let fin = events.run_finished();
    let run_id = fin["run_id"].as_str().expect("run id").to_owned();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let summary = rt.block_on(async {
        let store = shoal_store::open_store(store_url)
            .await
            .expect("open store");
        store
            .runs(50)
            .await
            .expect("runs")
            .into_iter()
            .find(|r| r.run.run_id == run_id)
            .expect("the run is stored")
    });
    let end = summary.end.as_ref();
    Verdict {
        finals,
        counts: strip_attempts(&fin["counts"]),
        quarantined: fin["quarantined"].clone(),
        exit_code: out.code(),
        event_exit_code: fin["exit_code"].as_i64().expect("exit code"),
        retries_reported: events.run_started()["retries"].as_i64().unwrap_or(-1),
        seed: events.run_started()["seed"].clone(),
        row: (
            summary.run.kind.clone(),
            summary.run.seed,
            end.map(|e| e.exit_code),
            summary.run.planned,
            end.map(|e| (e.counts.passed, e.counts.failed, e.counts.flaky)),
        ),
        notices: Vec::new(),
    }
}

/// Counts without `attempts`, which both report but the test compares per
/// test instead.
fn strip_attempts(counts: &serde_json::Value) -> serde_json::Value {
    let mut c = counts.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("attempts");
    }
    c
}

/// Writes the project's config for a run whose first-try marks go to a
/// fresh directory `name`.
fn configure(c: &Cluster, name: &str) {
    let marks = c.project.out(&format!("marks-{name}"));
    std::fs::create_dir_all(&marks).expect("marks dir");
    c.project.write(
        "shoal.toml",
        &format!(
            "[suites.py]\nadapter = \"pytest\"\nenv = {{ PARITY_MARKS = \"{}\" }}\n\n[quarantine]\ntests = [\"py::tests/test_parity.py::test_quarantined_failure\"]\n",
            marks.display()
        ),
    );
}

/// Runs `args` locally and on the cluster (two workers of one slot each)
/// and asserts they agree; returns the local verdict for further checks.
fn both(c: &Cluster, scenario: &str, args: &[&str]) -> Verdict {
    both_with(c, scenario, args, |_| {})
}

/// As [`both`], comparing the verdicts after `blur` (for what a run leaves
/// to timing, e.g. how many retries happen before the broken-build guard).
fn both_with(c: &Cluster, scenario: &str, args: &[&str], blur: fn(&mut Verdict)) -> Verdict {
    configure(c, &format!("{scenario}-local"));
    let local_log = c.project.out(&format!("{scenario}-local.jsonl"));
    let local_out = c
        .project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&local_log)
        .args(args)
        .run();
    let local_store = format!(
        "sqlite://{}",
        c.project.root().join(".shoal/history.db").display()
    );
    let mut local = verdict(&Events::read(&local_log), &local_out, &local_store);
    local.notices = notices(&Events::read(&local_log));
    blur(&mut local);

    configure(c, &format!("{scenario}-remote"));
    let name = format!("{scenario}-remote");
    let remote_out = c.client(&name).args(args).run();
    let mut remote = verdict(&c.events(&name), &remote_out, &c.store_url);
    remote.notices = notices(&c.events(&name));
    blur(&mut remote);
    assert_eq!(
        local,
        remote,
        "{scenario}: a local and a remote run disagree\n--- local\n{}\n--- remote\n{}",
        local_out.dump(),
        remote_out.dump()
    );
    local
}

fn cluster(backend: &Backend) -> Cluster {
    let mut c = Cluster::of_fixture("parity-project", backend, "10s", "127.0.0.1");
    c.start_worker("p1", 1);
    c.start_worker("p2", 1);
    c
}

per_store! {
    /// Every way a test ends, with a timeout, retries and a shuffle seed.
    fn timeouts_crashes_retries_and_quarantine_end_the_same_locally_and_remotely(backend) {
        let c = cluster(backend);
        let v = both(
            &c,
            "mixed",
            // One retry: 9 failed attempts at most, under the broken-build
            // guard's floor, so every failure gets its retry.
            &["--timeout", "2s", "--retries", "1", "--shuffle=7"],
        );
        let status = |t: &str| v.finals[&format!("tests/test_parity.py::{t}")][0].clone();
        assert_eq!(
            status("test_passes"),
            ("passed".into(), "pass".into(), false, 1)
        );
        assert_eq!(
            status("test_fails"),
            ("failed".into(), "fail".into(), false, 2)
        );
        assert_eq!(
            status("test_flaky"),
            ("flaky".into(), "pass".into(), false, 2)
        );
        assert_eq!(
            status("test_slow"),
            ("failed".into(), "timeout".into(), false, 2)
        );
        assert_eq!(
            status("test_crashes"),
            ("failed".into(), "crash".into(), false, 2)
        );
        assert_eq!(
            status("test_quarantined_failure"),
            ("failed".into(), "fail".into(), true, 2)
        );
        assert!(v.notices.is_empty(), "{v:?}");
        assert_eq!((v.exit_code, v.event_exit_code), (1, 1));
        assert_eq!(v.quarantined["failed"], 1);
        assert_eq!(v.seed, 7);
        assert_eq!(v.retries_reported, 1);
        assert_eq!(v.row.0, "run");
        assert_eq!(v.row.1, Some(7));
    }
}

per_store! {
    /// `--fail-on-flaky` with `--repeat`: a run whose only blemish is a flaky
    /// test fails, by the same verdict, in the event and in the store.
    fn fail_on_flaky_and_repeat_decide_the_same_locally_and_remotely(backend) {
        let c = cluster(backend);
        let v = both(
            &c,
            "flaky",
            &[
                "--retries",
                "1",
                "--repeat",
                "2",
                "--fail-on-flaky",
                "tests/test_parity.py::test_flaky",
                "tests/test_parity.py::test_passes",
            ],
        );
        assert_eq!(v.counts["flaky"], 1, "{v:?}");
        assert_eq!(v.counts["passed"], 3, "{v:?}");
        assert_eq!((v.exit_code, v.event_exit_code, v.row.2), (1, 1, Some(1)));
        assert_eq!(v.row.3, 4, "2 tests x 2 repetitions planned");
    }
}

per_store! {
    /// A run whose only failure is quarantined passes, locally and remotely,
    /// and says how many failures it excused.
    fn a_quarantined_failure_is_excused_the_same_locally_and_remotely(backend) {
        let c = cluster(backend);
        let v = both(
            &c,
            "quarantine",
            &[
                "tests/test_parity.py::test_quarantined_failure",
                "tests/test_parity.py::test_passes",
            ],
        );
        assert_eq!((v.exit_code, v.event_exit_code, v.row.2), (0, 0, Some(0)));
        assert_eq!(v.quarantined["failed"], 1);
        assert_eq!(v.row.0, "run");
        assert_eq!(v.row.1, None, "not shuffled: no seed");
    }
}

per_store! {
    /// The broken-build guard: with most of a run failing, retries stop and
    /// both kinds of run say so once. How many retries ran before it tripped
    /// depends on timing, so attempts are not compared; verdicts are.
    fn the_broken_build_guard_trips_the_same_locally_and_remotely(backend) {
        let c = cluster(backend);
        let v = both_with(
            &c,
            "broken",
            &[
                "--retries",
                "5",
                "tests/test_parity.py::test_fails",
                "tests/test_parity.py::test_crashes",
                "tests/test_parity.py::test_quarantined_failure",
                "tests/test_parity.py::test_passes",
            ],
            |v| {
                for f in v.finals.values_mut().flatten() {
                    f.3 = 0;
                }
            },
        );
        assert_eq!(v.notices.len(), 1, "{v:?}");
        assert_eq!(v.counts["failed"], 3, "{v:?}");
        assert_eq!((v.exit_code, v.event_exit_code), (1, 1));
    }
}
