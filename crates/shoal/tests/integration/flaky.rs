//! `shoal flaky`, `shoal history` and `shoal bisect-order` on the flaky
//! fixture, reading what real runs recorded in the history store.

use crate::events::Events;
use crate::support::{Project, git, require_pytest};
use serde_json::Value;

/// The fixture as a one-commit repository, so results carry a commit.
fn committed_fixture() -> (Project, String) {
    let project = Project::copy_of("flaky-project");
    git(project.root(), &["init", "-q", "-b", "main"]);
    git(project.root(), &["add", "-A"]);
    git(project.root(), &["commit", "-q", "-m", "fixture"]);
    let head = git(project.root(), &["rev-parse", "HEAD"]);
    (project, head)
}

#[test]
fn flaky_ranks_by_contradictions_on_the_same_commit() {
    require_pytest();
    let (project, head) = committed_fixture();
    // Two runs of 30 repetitions each on the same commit.
    for _ in 0..2 {
        project
            .shoal(["run", "test_rates", "-j", "2", "--repeat", "30"])
            .run();
    }
    let out = project.shoal(["flaky", "--all", "--format", "json"]).run();
    out.assert_code(0);
    let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON array");
    let of = |name: &str| {
        list.iter()
            .find(|e| e["test"].as_str().is_some_and(|t| t.ends_with(name)))
            .unwrap_or_else(|| panic!("{name} missing:\n{}", out.stdout))
            .clone()
    };
    for key in [
        "test", "suite", "verdict", "failures", "runs", "rate", "ci_low", "ci_high",
    ] {
        assert!(list[0].get(key).is_some(), "{key} missing: {}", list[0]);
    }
    let twenty = of("test_fails_twenty_percent");
    assert_eq!(twenty["verdict"], "flaky", "{twenty}");
    assert_eq!(twenty["runs"], 60);
    assert_eq!(twenty["first_flaky_commit"], head.as_str());
    let rate = twenty["rate"].as_f64().expect("rate");
    assert!(
        twenty["ci_low"].as_f64().expect("low") <= rate
            && rate <= twenty["ci_high"].as_f64().expect("high")
    );
    assert_eq!(of("test_never_fails")["verdict"], "stable");
    // Flaky tests come first.
    assert_eq!(list[0]["verdict"], "flaky", "{}", out.stdout);

    let history = project
        .shoal(["history", "test_fails_twenty_percent"])
        .run();
    history.assert_code(0);
    assert!(
        history.stdout.contains(&head[..10]) && history.stdout.contains("/60"),
        "{}",
        history.dump()
    );
    // An ambiguous pattern is refused with the candidates.
    let ambiguous = project.shoal(["history", "test_fails"]).run();
    ambiguous.assert_code(2);
    assert!(
        ambiguous.stderr.contains("test_fails_one_percent"),
        "{}",
        ambiguous.dump()
    );
}

#[test]
fn bisect_order_names_the_polluting_test() {
    require_pytest();
    let (project, _) = committed_fixture();
    // One slot, shuffled: find a seed whose order puts the polluter before
    // the victim (about every second one does).
    let mut failed_run = None;
    for seed in 1..40 {
        let json = project.out(&format!("order-{seed}.jsonl"));
        let out = project
            .shoal(["run", "test_order", "-j", "1", "--json"])
            .arg(&json)
            .arg(format!("--shuffle={seed}"))
            .run();
        if out.status.code() == Some(1) {
            let events = Events::read(&json);
            let victim = events.final_of("tests/test_order.py::test_victim");
            assert_eq!(
                victim.final_status.as_deref(),
                Some("failed"),
                "{}",
                out.dump()
            );
            let run_id = events.run_finished()["run_id"]
                .as_str()
                .expect("id")
                .to_owned();
            failed_run = Some(run_id);
            break;
        }
        out.assert_code(0);
    }
    let run_id = failed_run.expect("some shuffled order fails test_victim");
    let out = project
        .shoal(["bisect-order", "test_victim", "--run", &run_id])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("polluter: flaky tests/test_order.py::test_polluter"),
        "{}",
        out.dump()
    );
    assert!(out.stdout.contains("passes alone"), "{}", out.stdout);
}
