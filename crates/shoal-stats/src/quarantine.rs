//! When a flaky test may be quarantined automatically.

use crate::{StatsError, TestEvidence, Verdict};

/// Thresholds for automatic quarantine: a flaky test with at least
/// `min_runs` kept observations whose failure rate lies in
/// `[min_rate, max_rate]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarantinePolicy {
    /// Observations needed before quarantining (default 20).
    pub min_runs: u64,
    /// Flakes rarer than this are tolerated (default 0.01).
    pub min_rate: f64,
    /// A test failing more often than this is closer to broken than flaky
    /// and stays visible (default 0.5).
    pub max_rate: f64,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            min_runs: 20,
            min_rate: 0.01,
            max_rate: 0.5,
        }
    }
}

impl QuarantinePolicy {
    /// Checks `0 <= min_rate <= max_rate <= 1`.
    pub fn validate(&self) -> Result<(), StatsError> {
        if !(0.0..=1.0).contains(&self.min_rate) {
            return Err(StatsError::out_of_range(
                "quarantine.min_rate",
                self.min_rate,
                "in [0, 1]",
            ));
        }
        if !(self.min_rate..=1.0).contains(&self.max_rate) {
            return Err(StatsError::out_of_range(
                "quarantine.max_rate",
                self.max_rate,
                format!("in [min_rate, 1] = [{}, 1]", self.min_rate),
            ));
        }
        Ok(())
    }
}

/// Whether `evidence` warrants automatic quarantine under `policy`: only
/// for a [`Flaky`](Verdict::Flaky) verdict with enough runs and a rate
/// (the point estimate `failures / runs`) within the policy's range. Never
/// for a broken test (it fails for real and must stay visible), an
/// undecided one (not enough evidence) or a stable one.
pub fn should_quarantine(evidence: &TestEvidence, policy: &QuarantinePolicy) -> bool {
    evidence.verdict == Verdict::Flaky
        && evidence.runs >= policy.min_runs
        && evidence.rate >= policy.min_rate
        && evidence.rate <= policy.max_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(verdict: Verdict, failures: u64, runs: u64) -> TestEvidence {
        TestEvidence {
            test: "t".to_owned(),
            suite: "s".to_owned(),
            verdict,
            failures,
            runs,
            rate: failures as f64 / runs as f64,
            ci_low: 0.0,
            ci_high: 1.0,
            flaky_failures: failures,
            flaky_groups: 1,
            groups: runs,
            first_flaky_commit: None,
        }
    }

    #[test]
    fn flaky_tests_within_the_thresholds_are_quarantined() {
        let policy = QuarantinePolicy::default();
        assert!(should_quarantine(
            &evidence(Verdict::Flaky, 5, 100),
            &policy
        ));
        assert!(should_quarantine(
            &evidence(Verdict::Flaky, 1, 100),
            &policy
        ));
        assert!(should_quarantine(
            &evidence(Verdict::Flaky, 10, 20),
            &policy
        ));
    }

    #[test]
    fn too_few_runs_too_rare_or_too_frequent_are_not() {
        let policy = QuarantinePolicy::default();
        assert!(!should_quarantine(
            &evidence(Verdict::Flaky, 5, 19),
            &policy
        ));
        assert!(!should_quarantine(
            &evidence(Verdict::Flaky, 1, 200),
            &policy
        ));
        assert!(!should_quarantine(
            &evidence(Verdict::Flaky, 11, 20),
            &policy
        ));
    }

    #[test]
    fn broken_undecided_and_stable_tests_never_are() {
        let lax = QuarantinePolicy {
            min_runs: 0,
            min_rate: 0.0,
            max_rate: 1.0,
        };
        for verdict in [Verdict::Broken, Verdict::Undecided, Verdict::Stable] {
            for (k, n) in [(0, 100), (5, 100), (100, 100)] {
                assert!(
                    !should_quarantine(&evidence(verdict, k, n), &lax),
                    "{verdict}"
                );
            }
        }
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(QuarantinePolicy::default().validate().is_ok());
        let bad = QuarantinePolicy {
            min_rate: 0.2,
            max_rate: 0.1,
            ..QuarantinePolicy::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid quarantine.max_rate = 0.1: must be in [min_rate, 1] = [0.2, 1]; fix the setting"
        );
        let bad = QuarantinePolicy {
            min_rate: -0.1,
            ..QuarantinePolicy::default()
        };
        assert!(bad.validate().is_err());
    }
}
