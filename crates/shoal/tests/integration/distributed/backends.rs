//! `stress`, `bisect-flake` and `bisect-order` on a coordinator
//! (`--server`, issue 12): the same commands as locally, their runs made by
//! the coordinator's workers and recorded in its store with their kind.

use super::{Backend, Cluster, TOKEN};
use crate::bisect::{commit, flip};
use crate::events::Events;
use crate::support::git;

/// The kinds of the runs the coordinator's store holds, oldest first.
fn stored_kinds(c: &Cluster) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = shoal_store::open_store(&c.store_url).await.expect("store");
        let mut runs = store.runs(1000).await.expect("runs");
        runs.reverse();
        runs.into_iter().map(|r| r.run.kind).collect()
    })
}

/// Every run in the coordinator's store (at least one) is of `kind`.
#[track_caller]
fn assert_all_runs_are(c: &Cluster, kind: &str) {
    let kinds = stored_kinds(c);
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == kind),
        "{kinds:?}"
    );
}

/// `shoal ARGS --server URL` in the cluster's project.
fn remote_cmd(c: &Cluster, args: &[&str]) -> crate::support::Cmd {
    c.project
        .shoal(args.iter().copied())
        .args(["--server", &c.url()])
        .env("SHOAL_TOKEN", TOKEN)
}

per_store! {
    fn stress_on_a_coordinator_decides_flaky_and_stable(backend) {
        let mut c = Cluster::of_fixture("flaky-project", backend, "10s", "127.0.0.1");
        c.start_worker("s1", 1);
        c.start_worker("s2", 1);
        let out = remote_cmd(
            &c,
            &[
                "stress",
                "test_fails_twenty_percent",
                "test_never_fails_either",
                "--until-decided",
                "--max-runs",
                "2000",
                "--seed",
                "1",
                "--format",
                "json",
            ],
        )
        .run();
        out.assert_code(1);
        let verdicts: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.dump()));
        let verdict = |name: &str| {
            verdicts
                .as_array()
                .expect("an array")
                .iter()
                .find(|v| v["test"].as_str().is_some_and(|t| t.ends_with(name)))
                .unwrap_or_else(|| panic!("{name} missing: {verdicts}"))["verdict"]
                .clone()
        };
        assert_eq!(
            verdict("test_fails_twenty_percent"),
            "flaky",
            "{}",
            out.dump()
        );
        assert_eq!(
            verdict("test_never_fails_either"),
            "stable",
            "{}",
            out.dump()
        );
        assert_all_runs_are(&c, "stress");
    }
}

#[test]
fn bisect_flake_on_a_coordinator_names_the_culprit() {
    let mut c = Cluster::of_fixture("flaky-project", &Backend::Sqlite, "10s", "127.0.0.1");
    c.start_worker("b1", 1);
    c.start_worker("b2", 1);
    git(c.project.root(), &["init", "-q", "-b", "main"]);
    let good = commit(
        &c.project,
        "tests/test_flip.py",
        &flip("0.0"),
        "add test_flips",
    );
    commit(&c.project, "notes.txt", "one\n", "unrelated: notes");
    let culprit = commit(
        &c.project,
        "tests/test_flip.py",
        &flip("0.3"),
        "make test_flips flaky",
    );
    let bad = commit(&c.project, "notes.txt", "two\n", "unrelated: more notes");
    let out = remote_cmd(
        &c,
        &["bisect-flake", "test_flips", "--good", &good, "--bad", &bad],
    )
    .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!(
            "first flaky commit: {culprit} make test_flips flaky"
        )),
        "{}",
        out.dump()
    );
    assert_all_runs_are(&c, "bisect");
}

#[test]
fn bisect_order_on_a_coordinator_replays_in_one_runner() {
    let mut c = Cluster::of_fixture("flaky-project", &Backend::Sqlite, "10s", "127.0.0.1");
    // One slot: the shuffled runs put the polluter before the victim in
    // one runner about every second seed.
    c.start_worker("o1", 1);
    let mut failed_run = None;
    for seed in 1..40 {
        let name = format!("order-{seed}");
        let out = c
            .client(&name)
            .args(["test_order", &format!("--shuffle={seed}")])
            .run();
        if out.code() == 1 {
            let events = Events::read(&c.project.out(&format!("{name}.jsonl")));
            failed_run = Some(
                events.run_finished()["run_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            );
            break;
        }
        out.assert_code(0);
    }
    let run_id = failed_run.expect("some shuffled order fails test_victim");
    // A second worker: the replays must still run in one runner.
    c.start_worker("o2", 1);
    let out = remote_cmd(
        &c,
        &[
            "bisect-order",
            "test_victim",
            "--run",
            &run_id,
            "--store",
            &c.store_url,
        ],
    )
    .run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("polluter: flaky tests/test_order.py::test_polluter"),
        "{}",
        out.dump()
    );
}

/// `[quarantine] auto` on a `--server` run selects from the coordinator's
/// history (where the run is recorded), not from the client's: a test the
/// coordinator has seen flaky is quarantined though this machine has no
/// history at all, and the run says so.
#[test]
fn auto_quarantine_of_a_remote_run_reads_the_coordinators_history() {
    let mut c = Cluster::of_fixture("flaky-project", &Backend::Sqlite, "10s", "127.0.0.1");
    c.start_worker("q1", 2);
    // History on the coordinator: two runs of 30 repetitions on one commit.
    git(c.project.root(), &["init", "-q", "-b", "main"]);
    git(c.project.root(), &["add", "-A"]);
    git(c.project.root(), &["commit", "-q", "-m", "fixture"]);
    for i in 0..2 {
        c.client(&format!("history-{i}"))
            .args(["test_fails_twenty_percent", "--repeat", "30"])
            .run();
    }
    let _ = std::fs::remove_dir_all(c.project.root().join(".shoal"));
    c.project.write(
        "shoal.toml",
        "[suites.flaky]\nadapter = \"pytest\"\n\n[quarantine]\ntests = []\nauto = { min_runs = 20 }\n",
    );
    let out = c
        .client("auto")
        .args(["test_fails_twenty_percent", "--repeat", "20"])
        .run();
    out.assert_code(0);
    let events = c.events("auto");
    assert!(
        events
            .notices()
            .iter()
            .any(|(_, m)| m.contains("auto-quarantined") && m.contains("test_fails_twenty_percent")),
        "{}",
        out.dump()
    );
    assert!(
        events
            .of_type("attempt_finished")
            .all(|e| e["quarantined"] == true),
        "every attempt of the auto-quarantined test is marked"
    );
    let fin = events.run_finished();
    assert!(fin["counts"]["failed"].as_u64().unwrap_or(0) > 0, "{fin}");
    assert_eq!(fin["exit_code"], 0, "{fin}");
}
