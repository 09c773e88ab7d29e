//! The four verdicts shoal reports for a test, and how an [`Sprt`] maps to
//! them.

use crate::{Decision, Sprt};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What shoal concludes about a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fails sometimes and passes sometimes under the same conditions.
    Flaky,
    /// No evidence of failures (H0 accepted, or enough clean history).
    Stable,
    /// Fails consistently: a real failure, not flakiness. Never
    /// quarantined automatically.
    Broken,
    /// Not enough evidence for any of the above.
    Undecided,
}

impl Verdict {
    /// The lowercase name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Flaky => "flaky",
            Verdict::Stable => "stable",
            Verdict::Broken => "broken",
            Verdict::Undecided => "undecided",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict of a sequential test: [`Stable`](Verdict::Stable) when it
/// accepted H0; when it accepted H1, [`Broken`](Verdict::Broken) if the test
/// never passed (`failures == runs`) and [`Flaky`](Verdict::Flaky)
/// otherwise; [`Undecided`](Verdict::Undecided) while it continues or after
/// it was truncated.
///
/// With the default config two failures in a row accept H1, so a test that
/// fails twice and was never run again is called broken. A test failing
/// half the time does that in a quarter of the cases; any pass observed
/// afterwards (see [`Sprt::observe`]) turns the verdict into flaky.
pub fn verdict(sprt: &Sprt) -> Verdict {
    match sprt.decision() {
        Decision::Stable => Verdict::Stable,
        Decision::Flaky if sprt.passes() == 0 => Verdict::Broken,
        Decision::Flaky => Verdict::Flaky,
        Decision::Continue | Decision::Truncated => Verdict::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SprtConfig;

    fn run(outcomes: &[bool]) -> Sprt {
        let mut sprt = Sprt::new(SprtConfig::default()).unwrap();
        for &failed in outcomes {
            sprt.observe(failed);
        }
        sprt
    }

    #[test]
    fn always_failing_is_broken_not_flaky() {
        assert_eq!(verdict(&run(&[true, true])), Verdict::Broken);
    }

    #[test]
    fn a_pass_among_the_failures_makes_it_flaky() {
        assert_eq!(verdict(&run(&[true, false, true])), Verdict::Flaky);
        // Also when the pass arrives after the decision.
        assert_eq!(verdict(&run(&[true, true, false])), Verdict::Flaky);
    }

    #[test]
    fn accepted_h0_is_stable_and_the_rest_undecided() {
        assert_eq!(verdict(&run(&[false; 326])), Verdict::Stable);
        assert_eq!(verdict(&run(&[false; 325])), Verdict::Undecided);
        assert_eq!(verdict(&run(&[])), Verdict::Undecided);
        let mut truncated = Sprt::new(SprtConfig {
            max_runs: Some(3),
            ..SprtConfig::default()
        })
        .unwrap();
        for _ in 0..3 {
            truncated.observe(false);
        }
        assert_eq!(truncated.decision(), Decision::Truncated);
        assert_eq!(verdict(&truncated), Verdict::Undecided);
    }

    #[test]
    fn verdicts_serialize_lowercase() {
        let all = [
            Verdict::Flaky,
            Verdict::Stable,
            Verdict::Broken,
            Verdict::Undecided,
        ];
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(json, r#"["flaky","stable","broken","undecided"]"#);
        let back: Vec<Verdict> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, all);
        for v in all {
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{v}\""));
        }
    }
}
