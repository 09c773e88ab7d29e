//! Flake evidence from a store's history: which tests are flaky, stable or
//! broken, judged only from contradictions under the same conditions.
//!
//! The input is every recorded result ([`Observation`]), oldest first, and
//! how each run went as a whole ([`RunHealth`]). [`classify`] applies these
//! rules, in order:
//!
//! 1. **Infrastructure failures are dropped.** A run in which more than
//!    [`FlakyConfig::infra_fraction`] of its tests failed, and which had at
//!    least [`FlakyConfig::infra_min_tests`] tests (so one failure in a
//!    three-test run is not an outage), failed for a reason outside its
//!    tests (a dead database, a full disk). All its observations are
//!    ignored: they are evidence about the infrastructure, not the tests.
//!    Observations of runs missing from the health list are kept.
//! 2. **Groups.** The kept observations of a test (a test is its suite and
//!    name) fall into groups of equal conditions: the same commit and the
//!    same environment. An observation without a commit (an empty string
//!    counts as none) cannot be compared with other runs, so it is grouped
//!    by its run (and environment) instead: retries within that run still
//!    compare, other runs never do.
//! 3. **Flake evidence.** A group is *mixed* when it holds both a failure
//!    and a pass: the same code failed and passed under the same
//!    conditions. Only that counts as flakiness. Failures at different
//!    commits with no pass at the same commit may be a real breakage that
//!    was fixed, so they are not evidence of flakiness.
//! 4. **Verdict**, first match wins:
//!    - [`Undecided`](Verdict::Undecided) when fewer than
//!      [`FlakyConfig::min_runs`] observations are kept: no verdict below
//!      the minimum sample.
//!    - [`Broken`](Verdict::Broken) when the test's newest group (the group
//!      of its last kept observation) holds no pass and the test's last
//!      [`FlakyConfig::broken_streak`] kept observations all failed: it
//!      fails consistently right now. This wins over older flake evidence,
//!      so a flaky test that then broke for real is not quarantined away.
//!    - [`Flaky`](Verdict::Flaky) when any group is mixed.
//!    - [`Stable`](Verdict::Stable) when no kept observation failed.
//!    - [`Undecided`](Verdict::Undecided) otherwise: failures without a
//!      contradicting pass, and not (or no longer) failing consistently.
//! 5. **Figures.** `failures`, `runs` and `rate = failures / runs` count all
//!    kept observations; `[ci_low, ci_high]` is the
//!    [`wilson`] interval at [`FlakyConfig::confidence`].
//!    A test all of whose observations were dropped is still listed, with
//!    `runs = 0`, `rate = 0` and the interval `[0, 1]`.
//! 6. **Ranking**: flaky tests first; then by `ci_low` (the rate the test
//!    fails at least, with the configured confidence), highest first; then
//!    by failures, most first; ties by suite and test name.
//!
//! The rules assume that results on the same commit and environment are
//! independent draws from one failure probability (stationarity within a
//! commit). Tests that depend on order, time of day or each other's
//! leftovers violate that; they still show up as flaky, which is what they
//! are to the people who run them.

use crate::{StatsError, Verdict, wilson};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// One recorded result of one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub test: String,
    pub suite: String,
    /// The commit the run tested; `None` (or empty) when unknown.
    pub commit: Option<String>,
    /// Where it ran (for example an OS, image or toolchain name); compare
    /// only like with like.
    pub environment: String,
    pub run_id: String,
    pub failed: bool,
}

/// How a whole run went: `failed` of its `tests` failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHealth {
    pub run_id: String,
    pub tests: u64,
    pub failed: u64,
}

/// Thresholds of [`classify`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlakyConfig {
    /// No verdict on fewer kept observations than this (default 10).
    pub min_runs: u64,
    /// Runs in which more than this fraction of tests failed are
    /// infrastructure failures and excluded (default 0.5).
    pub infra_fraction: f64,
    /// ... but only runs with at least this many tests (default 5).
    pub infra_min_tests: u64,
    /// Consecutive failures at the end of a test's history that make it
    /// broken when its newest group holds no pass (default 2).
    pub broken_streak: u64,
    /// Confidence of the Wilson interval (default 0.95).
    pub confidence: f64,
}

impl Default for FlakyConfig {
    fn default() -> Self {
        Self {
            min_runs: 10,
            infra_fraction: 0.5,
            infra_min_tests: 5,
            broken_streak: 2,
            confidence: 0.95,
        }
    }
}

impl FlakyConfig {
    /// Checks `min_runs >= 1`, `0 < infra_fraction <= 1`,
    /// `broken_streak >= 1` and `0 < confidence < 1`.
    pub fn validate(&self) -> Result<(), StatsError> {
        if self.min_runs == 0 {
            return Err(StatsError::out_of_range(
                "flaky.min_runs",
                0.0,
                "at least 1",
            ));
        }
        if !(self.infra_fraction > 0.0 && self.infra_fraction <= 1.0) {
            return Err(StatsError::out_of_range(
                "flaky.infra_fraction",
                self.infra_fraction,
                "in (0, 1]",
            ));
        }
        if self.broken_streak == 0 {
            return Err(StatsError::out_of_range(
                "flaky.broken_streak",
                0.0,
                "at least 1",
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(StatsError::out_of_range(
                "flaky.confidence",
                self.confidence,
                "in (0, 1)",
            ));
        }
        Ok(())
    }
}

/// What the history says about one test. Serializes with these field names
/// (`shoal flaky --format json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestEvidence {
    pub test: String,
    pub suite: String,
    pub verdict: Verdict,
    /// Failed kept observations.
    pub failures: u64,
    /// Kept observations.
    pub runs: u64,
    /// `failures / runs` (0 when `runs == 0`).
    pub rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Failures inside mixed groups: the failures contradicted by a pass.
    pub flaky_failures: u64,
    /// Mixed groups (same commit and environment, both failed and passed).
    pub flaky_groups: u64,
    /// All groups of kept observations.
    pub groups: u64,
    /// The commit of the first mixed group that has one, by order of first
    /// appearance in the input (oldest first): where the flakiness was
    /// first seen.
    pub first_flaky_commit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GroupKey<'a> {
    Commit {
        commit: &'a str,
        environment: &'a str,
    },
    Run {
        run_id: &'a str,
        environment: &'a str,
    },
}

#[derive(Debug, Default)]
struct Group<'a> {
    commit: Option<&'a str>,
    passes: u64,
    failures: u64,
}

impl Group<'_> {
    fn is_mixed(&self) -> bool {
        self.passes > 0 && self.failures > 0
    }
}

#[derive(Debug)]
struct TestAcc<'a> {
    suite: &'a str,
    test: &'a str,
    runs: u64,
    failures: u64,
    /// Failures since the last pass.
    streak: u64,
    groups: Vec<Group<'a>>,
    group_index: HashMap<GroupKey<'a>, usize>,
    newest_group: Option<usize>,
}

/// Judges every test in `observations` (oldest first) by the rules in the
/// [module docs](self), ranked with the strongest flake evidence first.
///
/// # Panics
///
/// If `cfg` is invalid ([`FlakyConfig::validate`]).
pub fn classify(
    observations: &[Observation],
    runs: &[RunHealth],
    cfg: &FlakyConfig,
) -> Vec<TestEvidence> {
    if let Err(e) = cfg.validate() {
        panic!("classify: {e}");
    }
    let infra: HashSet<&str> = runs
        .iter()
        .filter(|r| {
            r.tests >= cfg.infra_min_tests
                && r.tests > 0
                && r.failed as f64 / r.tests as f64 > cfg.infra_fraction
        })
        .map(|r| r.run_id.as_str())
        .collect();

    let mut tests: Vec<TestAcc<'_>> = Vec::new();
    let mut test_index: HashMap<(&str, &str), usize> = HashMap::new();
    for obs in observations {
        let at = *test_index
            .entry((obs.suite.as_str(), obs.test.as_str()))
            .or_insert_with(|| {
                tests.push(TestAcc {
                    suite: &obs.suite,
                    test: &obs.test,
                    runs: 0,
                    failures: 0,
                    streak: 0,
                    groups: Vec::new(),
                    group_index: HashMap::new(),
                    newest_group: None,
                });
                tests.len() - 1
            });
        if infra.contains(obs.run_id.as_str()) {
            continue;
        }
        let acc = &mut tests[at];
        let commit = obs.commit.as_deref().filter(|c| !c.is_empty());
        let environment = obs.environment.as_str();
        let key = match commit {
            Some(commit) => GroupKey::Commit {
                commit,
                environment,
            },
            None => GroupKey::Run {
                run_id: &obs.run_id,
                environment,
            },
        };
        let groups = &mut acc.groups;
        let g = *acc.group_index.entry(key).or_insert_with(|| {
            groups.push(Group {
                commit,
                ..Group::default()
            });
            groups.len() - 1
        });
        let group = &mut acc.groups[g];
        acc.runs += 1;
        if obs.failed {
            acc.failures += 1;
            acc.streak += 1;
            group.failures += 1;
        } else {
            acc.streak = 0;
            group.passes += 1;
        }
        acc.newest_group = Some(g);
    }

    let mut out: Vec<TestEvidence> = tests.into_iter().map(|t| judge(t, cfg)).collect();
    out.sort_by(|a, b| {
        let flaky = |e: &TestEvidence| e.verdict == Verdict::Flaky;
        flaky(b)
            .cmp(&flaky(a))
            .then(b.ci_low.total_cmp(&a.ci_low))
            .then(b.failures.cmp(&a.failures))
            .then_with(|| a.suite.cmp(&b.suite))
            .then_with(|| a.test.cmp(&b.test))
    });
    out
}

fn judge(t: TestAcc<'_>, cfg: &FlakyConfig) -> TestEvidence {
    let mixed = || t.groups.iter().filter(|g| g.is_mixed());
    let flaky_groups = mixed().count() as u64;
    let flaky_failures = mixed().map(|g| g.failures).sum();
    let first_flaky_commit = mixed().find_map(|g| g.commit).map(str::to_owned);
    let newest_without_pass = t.newest_group.is_some_and(|g| t.groups[g].passes == 0);
    let verdict = if t.runs < cfg.min_runs {
        Verdict::Undecided
    } else if newest_without_pass && t.streak >= cfg.broken_streak {
        Verdict::Broken
    } else if flaky_groups > 0 {
        Verdict::Flaky
    } else if t.failures == 0 {
        Verdict::Stable
    } else {
        Verdict::Undecided
    };
    let ci = wilson(t.failures, t.runs, cfg.confidence);
    TestEvidence {
        test: t.test.to_owned(),
        suite: t.suite.to_owned(),
        verdict,
        failures: t.failures,
        runs: t.runs,
        rate: if t.runs == 0 {
            0.0
        } else {
            t.failures as f64 / t.runs as f64
        },
        ci_low: ci.low,
        ci_high: ci.high,
        flaky_failures,
        flaky_groups,
        groups: t.groups.len() as u64,
        first_flaky_commit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(test: &str, commit: Option<&str>, run_id: &str, failed: bool) -> Observation {
        Observation {
            test: test.to_owned(),
            suite: "unit".to_owned(),
            commit: commit.map(str::to_owned),
            environment: "linux".to_owned(),
            run_id: run_id.to_owned(),
            failed,
        }
    }

    /// One observation per commit `c0, c1, ...` (run `r0, r1, ...`), failing
    /// where `fails[i]`.
    fn one_per_commit(test: &str, fails: &[bool]) -> Vec<Observation> {
        fails
            .iter()
            .enumerate()
            .map(|(i, &f)| obs(test, Some(&format!("c{i}")), &format!("r{i}"), f))
            .collect()
    }

    fn classify_one(observations: &[Observation]) -> TestEvidence {
        let mut all = classify(observations, &[], &FlakyConfig::default());
        assert_eq!(all.len(), 1, "{all:?}");
        all.pop().unwrap()
    }

    #[test]
    fn a_failure_and_a_pass_on_the_same_commit_is_flaky() {
        let mut history = one_per_commit("t", &[false; 10]);
        // c3 again, in another run: fails.
        history.insert(4, obs("t", Some("c3"), "r-again", true));
        let e = classify_one(&history);
        assert_eq!(e.verdict, Verdict::Flaky);
        assert_eq!((e.failures, e.runs), (1, 11));
        assert_eq!((e.flaky_groups, e.groups, e.flaky_failures), (1, 10, 1));
        assert_eq!(e.first_flaky_commit.as_deref(), Some("c3"));
        assert!((e.rate - 1.0 / 11.0).abs() < 1e-12);
        let ci = wilson(1, 11, 0.95);
        assert_eq!((e.ci_low, e.ci_high), (ci.low, ci.high));
    }

    #[test]
    fn first_flaky_commit_is_the_first_mixed_group_in_input_order() {
        let mut history = one_per_commit("t", &[false; 10]);
        history.push(obs("t", Some("c7"), "x1", true));
        history.push(obs("t", Some("c2"), "x2", true));
        history.push(obs("t", Some("c9"), "x3", false));
        let e = classify_one(&history);
        assert_eq!(e.verdict, Verdict::Flaky);
        assert_eq!(e.flaky_groups, 2);
        // c2 appeared before c7 in the input.
        assert_eq!(e.first_flaky_commit.as_deref(), Some("c2"));
    }

    #[test]
    fn failures_on_different_commits_without_a_pass_there_are_not_flaky() {
        let mut fails = [false; 12];
        for i in [2, 5, 8] {
            fails[i] = true;
        }
        let e = classify_one(&one_per_commit("t", &fails));
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!((e.failures, e.runs, e.flaky_groups), (3, 12, 0));
        assert_eq!(e.first_flaky_commit, None);
    }

    #[test]
    fn a_pass_in_another_environment_does_not_contradict_a_failure() {
        let mut history = one_per_commit("t", &[false; 10]);
        let mut mac = obs("t", Some("c4"), "r-mac", true);
        mac.environment = "macos".to_owned();
        history.push(mac);
        history.push(obs("t", Some("c10"), "r10", false));
        let e = classify_one(&history);
        assert_eq!(e.flaky_groups, 0);
        assert_eq!(e.verdict, Verdict::Undecided);
    }

    #[test]
    fn consistent_failures_at_the_end_are_broken() {
        let mut fails = vec![false; 10];
        fails.extend([true, true]);
        let e = classify_one(&one_per_commit("t", &fails));
        assert_eq!(e.verdict, Verdict::Broken);
        // One failure at the end is not yet a streak.
        let e = classify_one(&one_per_commit("t", &fails[..11]));
        assert_eq!(e.verdict, Verdict::Undecided);
    }

    #[test]
    fn broken_now_wins_over_older_flake_evidence() {
        let mut history = one_per_commit("t", &[false; 10]);
        history.push(obs("t", Some("c3"), "x", true));
        history.push(obs("t", Some("c10"), "r10", true));
        history.push(obs("t", Some("c10"), "r10-retry", true));
        let e = classify_one(&history);
        assert_eq!(e.flaky_groups, 1);
        assert_eq!(e.verdict, Verdict::Broken);
        // A pass on the newest commit turns it back into flaky.
        history.push(obs("t", Some("c10"), "r11", false));
        assert_eq!(classify_one(&history).verdict, Verdict::Flaky);
    }

    #[test]
    fn a_failure_streak_on_a_commit_that_also_passed_is_flaky_not_broken() {
        let mut history = one_per_commit("t", &[false; 10]);
        history.push(obs("t", Some("c9"), "x1", true));
        history.push(obs("t", Some("c9"), "x2", true));
        assert_eq!(classify_one(&history).verdict, Verdict::Flaky);
    }

    #[test]
    fn observations_of_infrastructure_failures_are_dropped() {
        let mut history = one_per_commit("t", &[false; 10]);
        // The only failure happened in a run where 8 of 10 tests failed.
        history.push(obs("t", Some("c9"), "outage", true));
        let health = [
            RunHealth {
                run_id: "outage".to_owned(),
                tests: 10,
                failed: 8,
            },
            RunHealth {
                run_id: "r0".to_owned(),
                tests: 10,
                failed: 0,
            },
        ];
        let e = classify(&history, &health, &FlakyConfig::default())
            .pop()
            .unwrap();
        assert_eq!(e.verdict, Verdict::Stable);
        assert_eq!((e.failures, e.runs, e.groups), (0, 10, 10));
        // Without the health record it is flake evidence.
        assert_eq!(classify_one(&history).verdict, Verdict::Flaky);
    }

    #[test]
    fn small_runs_and_runs_at_the_threshold_are_kept() {
        let mut history = one_per_commit("t", &[false; 10]);
        history.push(obs("t", Some("c9"), "tiny", true));
        history.push(obs("t", Some("c8"), "half", true));
        let health = [
            // 2 of 3 failed, but only 3 tests.
            RunHealth {
                run_id: "tiny".to_owned(),
                tests: 3,
                failed: 2,
            },
            // Exactly half failed: not more than infra_fraction.
            RunHealth {
                run_id: "half".to_owned(),
                tests: 10,
                failed: 5,
            },
        ];
        let e = classify(&history, &health, &FlakyConfig::default())
            .pop()
            .unwrap();
        assert_eq!((e.failures, e.flaky_groups), (2, 2));
        assert_eq!(e.verdict, Verdict::Flaky);
    }

    #[test]
    fn below_the_minimum_sample_there_is_no_verdict() {
        let mut history = one_per_commit("t", &[false; 8]);
        history.push(obs("t", Some("c0"), "x", true));
        let e = classify_one(&history);
        assert_eq!(e.runs, 9);
        assert_eq!(e.verdict, Verdict::Undecided);
        // The evidence is still reported.
        assert_eq!(e.flaky_groups, 1);
        history.push(obs("t", Some("c8"), "r8", false));
        assert_eq!(classify_one(&history).verdict, Verdict::Flaky);
        // Nine clean runs are not yet stable, ten are.
        assert_eq!(
            classify_one(&one_per_commit("t", &[false; 9])).verdict,
            Verdict::Undecided
        );
        assert_eq!(
            classify_one(&one_per_commit("t", &[false; 10])).verdict,
            Verdict::Stable
        );
    }

    #[test]
    fn commitless_observations_do_not_combine_across_runs() {
        let history: Vec<_> = (0..12)
            .map(|i| obs("t", None, &format!("r{i}"), i % 3 == 0))
            .collect();
        let e = classify_one(&history);
        assert_eq!((e.groups, e.flaky_groups, e.failures), (12, 0, 4));
        assert_eq!(e.verdict, Verdict::Undecided);
        // An empty commit is no commit either.
        let empty: Vec<_> = history
            .iter()
            .cloned()
            .map(|mut o| {
                o.commit = Some(String::new());
                o
            })
            .collect();
        assert_eq!(classify_one(&empty).flaky_groups, 0);
    }

    #[test]
    fn commitless_retries_within_one_run_do_compare() {
        let mut history: Vec<_> = (0..10)
            .map(|i| obs("t", None, &format!("r{i}"), false))
            .collect();
        history.push(obs("t", None, "r4", true));
        let e = classify_one(&history);
        assert_eq!(e.flaky_groups, 1);
        assert_eq!(e.verdict, Verdict::Flaky);
        assert_eq!(e.first_flaky_commit, None);
    }

    #[test]
    fn a_test_with_every_observation_dropped_is_listed_undecided() {
        let history = vec![obs("t", Some("c0"), "outage", true)];
        let health = [RunHealth {
            run_id: "outage".to_owned(),
            tests: 5,
            failed: 5,
        }];
        let e = classify(&history, &health, &FlakyConfig::default())
            .pop()
            .unwrap();
        assert_eq!((e.runs, e.failures, e.groups), (0, 0, 0));
        assert_eq!((e.rate, e.ci_low, e.ci_high), (0.0, 0.0, 1.0));
        assert_eq!(e.verdict, Verdict::Undecided);
    }

    #[test]
    fn the_same_name_in_two_suites_is_two_tests() {
        let mut history = one_per_commit("t", &[false; 10]);
        let mut other = one_per_commit("t", &[true; 10]);
        for o in &mut other {
            o.suite = "integration".to_owned();
        }
        history.extend(other);
        let all = classify(&history, &[], &FlakyConfig::default());
        let by_suite: Vec<_> = all.iter().map(|e| (e.suite.as_str(), e.verdict)).collect();
        assert_eq!(
            by_suite,
            [("integration", Verdict::Broken), ("unit", Verdict::Stable)]
        );
    }

    #[test]
    fn ranking_puts_flaky_first_then_by_lower_bound_then_failures() {
        let mut history = Vec::new();
        // "often": 5 failures in mixed groups out of 20.
        for i in 0..20 {
            let commit = format!("c{}", i / 2);
            history.push(obs("often", Some(&commit), &format!("r{i}"), i % 4 == 0));
        }
        // "rare": 1 mixed failure out of 20.
        for i in 0..20 {
            let commit = format!("c{}", i / 2);
            history.push(obs("rare", Some(&commit), &format!("r{i}"), i == 0));
        }
        // "broken": fails always, a higher rate than both, but not flaky.
        history.extend(one_per_commit("broken", &[true; 10]));
        // "stable" and "new" (too few runs) last; "new" has a failure.
        history.extend(one_per_commit("stable", &[false; 10]));
        history.extend(one_per_commit("new", &[true, false]));
        let all = classify(&history, &[], &FlakyConfig::default());
        let order: Vec<_> = all.iter().map(|e| (e.test.as_str(), e.verdict)).collect();
        assert_eq!(
            order,
            [
                ("often", Verdict::Flaky),
                ("rare", Verdict::Flaky),
                ("broken", Verdict::Broken),
                ("new", Verdict::Undecided),
                ("stable", Verdict::Stable),
            ]
        );
    }

    #[test]
    fn json_uses_the_documented_field_names() {
        let mut history = one_per_commit("t", &[false; 10]);
        history.push(obs("t", Some("c3"), "x", true));
        let e = classify_one(&history);
        let value = serde_json::to_value(&e).unwrap();
        let serde_json::Value::Object(map) = &value else {
            panic!("not an object: {value}");
        };
        let keys: Vec<_> = map.keys().map(String::as_str).collect();
        let mut want = vec![
            "test",
            "suite",
            "verdict",
            "failures",
            "runs",
            "rate",
            "ci_low",
            "ci_high",
            "flaky_failures",
            "flaky_groups",
            "groups",
            "first_flaky_commit",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(value["verdict"], "flaky");
        assert_eq!(value["test"], "t");
        assert_eq!(value["suite"], "unit");
        assert_eq!(value["failures"], 1);
        assert_eq!(value["runs"], 11);
        assert_eq!(value["first_flaky_commit"], "c3");
        let back: TestEvidence = serde_json::from_value(value).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let base = FlakyConfig::default();
        assert!(base.validate().is_ok());
        for (cfg, name) in [
            (
                FlakyConfig {
                    min_runs: 0,
                    ..base
                },
                "flaky.min_runs",
            ),
            (
                FlakyConfig {
                    infra_fraction: 0.0,
                    ..base
                },
                "flaky.infra_fraction",
            ),
            (
                FlakyConfig {
                    infra_fraction: 1.5,
                    ..base
                },
                "flaky.infra_fraction",
            ),
            (
                FlakyConfig {
                    broken_streak: 0,
                    ..base
                },
                "flaky.broken_streak",
            ),
            (
                FlakyConfig {
                    confidence: 1.0,
                    ..base
                },
                "flaky.confidence",
            ),
        ] {
            let StatsError::OutOfRange { name: got, .. } = cfg.validate().unwrap_err();
            assert_eq!(got, name);
        }
    }
}
