//! `shoal stress` on the flaky fixture, whose tests fail with known
//! probabilities (0, 0.5%, 1%, 5%, 20%) decided by a seeded hash of each
//! run's number: the same seed gives the same outcomes whatever the slots
//! and order, so the verdicts below are deterministic.

use crate::support::{Project, require_pytest};
use serde_json::Value;

fn verdicts(out: &str) -> Vec<(String, String, u64, u64)> {
    let v: Value = serde_json::from_str(out).expect("stress --format json prints JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            let name = r["test"]
                .as_str()
                .expect("test")
                .rsplit("::")
                .next()
                .unwrap_or("")
                .to_owned();
            for key in ["suite", "rate", "ci_low", "ci_high"] {
                assert!(r.get(key).is_some(), "{key} missing from {r}");
            }
            (
                name,
                r["verdict"].as_str().expect("verdict").to_owned(),
                r["failures"].as_u64().expect("failures"),
                r["runs"].as_u64().expect("runs"),
            )
        })
        .collect()
}

#[test]
fn stress_flags_every_test_failing_one_percent_or_more_and_no_clean_test() {
    require_pytest();
    let project = Project::copy_of("flaky-project");
    let out = project
        .shoal([
            "stress",
            "test_rates",
            "--until-decided",
            "--max-runs",
            "3000",
            "-j",
            "2",
            "--seed",
            "1",
            "--format",
            "json",
        ])
        .run();
    // Flaky tests found: exit 1, like a run with failures.
    out.assert_code(1);
    let got = verdicts(&out.stdout);
    let verdict_of = |name: &str| {
        got.iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("{name} missing: {got:?}"))
            .clone()
    };
    for name in [
        "test_fails_one_percent",
        "test_fails_five_percent",
        "test_fails_twenty_percent",
    ] {
        let (_, verdict, failures, runs) = verdict_of(name);
        assert_eq!(
            verdict,
            "flaky",
            "{name}: {failures}/{runs}\n{}",
            out.dump()
        );
        assert!(failures > 0 && failures < runs);
    }
    for name in ["test_never_fails", "test_never_fails_either"] {
        let (_, verdict, failures, runs) = verdict_of(name);
        assert_eq!(verdict, "stable", "{name}\n{}", out.dump());
        assert_eq!(failures, 0);
        // The SPRT accepts "stable" after 326 straight passes (defaults);
        // rounds may run a few more.
        assert!((326..=700).contains(&runs), "{name}: {runs} runs");
    }
    assert!(
        out.stderr.contains("decided, after") && out.stderr.contains("runs on average"),
        "the mean runs per decision is reported:\n{}",
        out.stderr
    );
}

#[test]
fn stress_with_a_run_cap_leaves_slow_decisions_undecided() {
    require_pytest();
    let project = Project::copy_of("flaky-project");
    let out = project
        .shoal([
            "stress",
            "test_never_fails",
            "--runs",
            "50",
            "-j",
            "2",
            "--seed",
            "1",
            "--format",
            "json",
        ])
        .run();
    out.assert_code(0);
    let got = verdicts(&out.stdout);
    assert_eq!(got.len(), 2, "{got:?}");
    for (name, verdict, failures, runs) in got {
        assert_eq!(
            (verdict.as_str(), failures, runs),
            ("undecided", 0, 50),
            "{name}"
        );
    }
}
