//! Wald's sequential probability ratio test for a test's failure
//! probability: decide "stable" or "flaky" with as few runs as the evidence
//! allows, plus the closed forms that predict how many runs that takes.

use crate::StatsError;
use std::fmt;

/// The hypotheses and error rates of an [`Sprt`].
///
/// H0: the failure probability is at most `p0` (stable); H1: it is at least
/// `p1` (flaky). Between the two lies the indifference zone, where either
/// answer is acceptable. `alpha` is the probability of calling a `p0` test
/// flaky, `beta` of calling a `p1` test stable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SprtConfig {
    pub p0: f64,
    pub p1: f64,
    pub alpha: f64,
    pub beta: f64,
    /// Stop undecided ([`Decision::Truncated`]) after this many runs;
    /// `None` runs until decided (which happens with probability 1, but
    /// takes long for a rate inside the indifference zone).
    pub max_runs: Option<u64>,
}

impl Default for SprtConfig {
    /// H0: p ≤ 0.1 %, H1: p ≥ 1 %, α = β = 5 %, no run limit (issue 6).
    fn default() -> Self {
        Self {
            p0: 0.001,
            p1: 0.01,
            alpha: 0.05,
            beta: 0.05,
            max_runs: None,
        }
    }
}

impl SprtConfig {
    /// Checks `0 < p0 < p1 < 1`, `0 < alpha, beta < 0.5` and
    /// `max_runs >= 1`.
    pub fn validate(&self) -> Result<(), StatsError> {
        if !(self.p0 > 0.0 && self.p0 < 1.0) {
            return Err(StatsError::out_of_range("sprt.p0", self.p0, "in (0, 1)"));
        }
        if !(self.p1 > self.p0 && self.p1 < 1.0) {
            return Err(StatsError::out_of_range(
                "sprt.p1",
                self.p1,
                format!("in (p0, 1) = ({}, 1)", self.p0),
            ));
        }
        for (name, value) in [("sprt.alpha", self.alpha), ("sprt.beta", self.beta)] {
            if !(value > 0.0 && value < 0.5) {
                return Err(StatsError::out_of_range(name, value, "in (0, 0.5)"));
            }
        }
        if self.max_runs == Some(0) {
            return Err(StatsError::out_of_range(
                "sprt.max_runs",
                0.0,
                "at least 1 (or unset for no limit)",
            ));
        }
        Ok(())
    }

    /// Log-likelihood ratio added by one failure (positive) and by one
    /// pass (negative).
    fn steps(&self) -> (f64, f64) {
        let fail = (self.p1 / self.p0).ln();
        let pass = (-self.p1).ln_1p() - (-self.p0).ln_1p();
        (fail, pass)
    }

    /// Wald's boundaries `(B, A)` on the log-likelihood ratio:
    /// `B = ln(β / (1 − α))` (accept H0 at or below) and
    /// `A = ln((1 − β) / α)` (accept H1 at or above).
    fn log_bounds(&self) -> (f64, f64) {
        let lower = (self.beta / (1.0 - self.alpha)).ln();
        let upper = ((1.0 - self.beta) / self.alpha).ln();
        (lower, upper)
    }

    fn assert_valid(&self, what: &str) {
        if let Err(e) = self.validate() {
            panic!("{what}: {e}");
        }
    }
}

/// What an [`Sprt`] says after an observation. Once it is not
/// [`Continue`](Decision::Continue) it never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Not enough evidence yet: run the test again.
    Continue,
    /// H0 accepted: the failure probability is at most about `p0`.
    Stable,
    /// H1 accepted: the failure probability is at least about `p1`. This
    /// includes tests that fail every time; [`verdict`](crate::verdict)
    /// tells those apart as broken.
    Flaky,
    /// `max_runs` reached without a decision (the rate is probably inside
    /// the indifference zone between `p0` and `p1`).
    Truncated,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Continue => "continue",
            Decision::Stable => "stable",
            Decision::Flaky => "flaky",
            Decision::Truncated => "truncated",
        })
    }
}

/// The running test for one test: feed it each run's outcome with
/// [`observe`](Sprt::observe) until it decides.
///
/// The log-likelihood ratio is computed from the counts
/// (`k·ln(p1/p0) + (n−k)·ln((1−p1)/(1−p0))`), not accumulated, so it is the
/// same however the outcomes were ordered and
/// [`runs_to_accept_h0_without_failures`] predicts the decision exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Sprt {
    cfg: SprtConfig,
    fail_step: f64,
    pass_step: f64,
    lower: f64,
    upper: f64,
    runs: u64,
    failures: u64,
    decision: Decision,
    decided_at: Option<u64>,
}

impl Sprt {
    /// A test with no observations, after checking `cfg`.
    pub fn new(cfg: SprtConfig) -> Result<Self, StatsError> {
        cfg.validate()?;
        let (fail_step, pass_step) = cfg.steps();
        let (lower, upper) = cfg.log_bounds();
        Ok(Self {
            cfg,
            fail_step,
            pass_step,
            lower,
            upper,
            runs: 0,
            failures: 0,
            decision: Decision::Continue,
            decided_at: None,
        })
    }

    /// Records one run and returns the decision.
    ///
    /// After a decision the decision stays, but later observations (runs
    /// that were already in flight when it came) still count in
    /// [`runs`](Sprt::runs) and [`failures`](Sprt::failures), so reports
    /// show every run that happened; [`decided_at`](Sprt::decided_at) keeps
    /// the sample size the decision was made at.
    pub fn observe(&mut self, failed: bool) -> Decision {
        self.runs += 1;
        self.failures += u64::from(failed);
        if self.decision != Decision::Continue {
            return self.decision;
        }
        let llr = self.llr();
        let decision = if llr >= self.upper {
            Decision::Flaky
        } else if llr <= self.lower {
            Decision::Stable
        } else if self.cfg.max_runs.is_some_and(|max| self.runs >= max) {
            Decision::Truncated
        } else {
            Decision::Continue
        };
        if decision != Decision::Continue {
            self.decision = decision;
            self.decided_at = Some(self.runs);
        }
        decision
    }

    /// The decision so far.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// Runs observed (including any after the decision).
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Failures observed (including any after the decision).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Passes observed: `runs - failures`.
    pub fn passes(&self) -> u64 {
        self.runs - self.failures
    }

    /// The number of runs at which the decision was made.
    pub fn decided_at(&self) -> Option<u64> {
        self.decided_at
    }

    /// The log-likelihood ratio ln(L(H1) / L(H0)) of all observations.
    pub fn llr(&self) -> f64 {
        let passes = self.runs - self.failures;
        self.failures as f64 * self.fail_step + passes as f64 * self.pass_step
    }

    /// `(lower, upper)` = `(B, A)`: the test accepts H0 (stable) when the
    /// [`llr`](Sprt::llr) falls to `B = ln(β/(1−α))` and H1 (flaky) when it
    /// reaches `A = ln((1−β)/α)`.
    pub fn bounds(&self) -> (f64, f64) {
        (self.lower, self.upper)
    }

    /// The configuration the test runs with.
    pub fn config(&self) -> &SprtConfig {
        &self.cfg
    }
}

/// How many passes in a row decide "stable" when there is no failure:
/// the least n with `n · ln((1−p1)/(1−p0)) ≤ B`, i.e.
/// `ceil(B / ln((1−p1)/(1−p0)))`; 326 for the default config. This is the
/// minimum cost of clearing a test, and the exact stopping time at p = 0.
/// Each failure adds `ln(p1/p0) / −ln((1−p1)/(1−p0))` passes (about 254 by
/// default) to it. `max_runs` is not applied.
///
/// # Panics
///
/// If `cfg` is invalid ([`SprtConfig::validate`]).
pub fn runs_to_accept_h0_without_failures(cfg: &SprtConfig) -> u64 {
    cfg.assert_valid("runs_to_accept_h0_without_failures");
    let (_, pass) = cfg.steps();
    let (lower, _) = cfg.log_bounds();
    // The closed form, then nudged so it agrees with the comparison
    // `Sprt::observe` makes even where floating point rounds the quotient.
    let mut n = (lower / pass).ceil().max(1.0) as u64;
    while n > 1 && ((n - 1) as f64) * pass <= lower {
        n -= 1;
    }
    while (n as f64) * pass > lower {
        n += 1;
    }
    n
}

/// Wald's approximation of the probability that the test decides
/// "stable" (accepts H0) when the true failure probability is `p`: the
/// operating characteristic L(p). About `1 − α` at `p0`, `β` at `p1`.
///
/// With `h` the root of `p·(p1/p0)^h + (1−p)·((1−p1)/(1−p0))^h = 1`,
/// `L(p) = (e^{hA} − 1) / (e^{hA} − e^{hB})`. The approximation ignores
/// the overshoot past the boundaries and the run limit; the true error
/// rates are usually a little smaller than α and β.
///
/// # Panics
///
/// If `cfg` is invalid or `p` is not in `[0, 1]`.
pub fn operating_characteristic(cfg: &SprtConfig, p: f64) -> f64 {
    cfg.assert_valid("operating_characteristic");
    assert!((0.0..=1.0).contains(&p), "p must be in [0, 1], got {p}");
    let (a_step, b_step) = cfg.steps();
    let (lower, upper) = cfg.log_bounds();
    if p == 0.0 {
        return 1.0;
    }
    if p == 1.0 {
        return 0.0;
    }
    let h = solve_h(p, a_step, b_step);
    oc_at(h, lower, upper)
}

/// Wald's approximation of the expected number of runs until a decision,
/// E[N | p], for a test whose true failure probability is `p`:
///
/// `E[N] = (L(p)·B + (1 − L(p))·A) / E[z]` with
/// `E[z] = p·ln(p1/p0) + (1−p)·ln((1−p1)/(1−p0))` the mean step of the
/// log-likelihood ratio and L the [`operating_characteristic`]; where
/// `E[z] = 0` (a rate inside the indifference zone, about 0.39 % by
/// default) it is `−A·B / E[z²]`, the maximum. By default: 325 at p = 0,
/// about 188 at p1 = 1 %, 1.3 at p = 1. It ignores the overshoot past the
/// boundaries, so it underestimates: barely at p = 0 (exactly
/// [`runs_to_accept_h0_without_failures`]), by about a quarter at p1, where
/// one failure jumps most of the way to the boundary. It ignores `max_runs`
/// too. [`exact_outcome`] has the exact figure.
///
/// # Panics
///
/// If `cfg` is invalid or `p` is not in `[0, 1]`.
pub fn expected_runs(cfg: &SprtConfig, p: f64) -> f64 {
    cfg.assert_valid("expected_runs");
    assert!((0.0..=1.0).contains(&p), "p must be in [0, 1], got {p}");
    let (a_step, b_step) = cfg.steps();
    let (lower, upper) = cfg.log_bounds();
    let drift = p * a_step + (1.0 - p) * b_step;
    let second = p * a_step * a_step + (1.0 - p) * b_step * b_step;
    // Relative to the step sizes, a drift this small is the zero-drift
    // point, where the general formula is 0/0.
    if drift.abs() < 1e-9 * second.sqrt() {
        return -lower * upper / second;
    }
    let l = operating_characteristic(cfg, p);
    (l * lower + (1.0 - l) * upper) / drift
}

/// The exact behaviour of an [`Sprt`] on a test failing with probability
/// `p`: see [`exact_outcome`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExactOutcome {
    /// Probability of deciding [`Decision::Flaky`].
    pub flaky: f64,
    /// Probability of deciding [`Decision::Stable`].
    pub stable: f64,
    /// Probability of stopping at `max_runs` undecided.
    pub truncated: f64,
    /// Expected number of runs until the test stops, E[N | p].
    pub mean_runs: f64,
}

/// Without `max_runs`, [`exact_outcome`] stops once less probability than
/// this is still undecided and counts it as truncated.
const EXACT_TAIL: f64 = 1e-13;
/// ... or after this many runs.
const EXACT_RUN_CAP: u64 = 10_000_000;

/// The exact decision probabilities and expected sample size of the test,
/// for true failure probability `p`, including `max_runs` and the overshoot
/// that Wald's approximations ([`expected_runs`],
/// [`operating_characteristic`]) ignore.
///
/// It follows the probability of every undecided state (runs, failures)
/// forward one run at a time, making the same comparisons as
/// [`Sprt::observe`]. The log-likelihood ratio confines the undecided
/// states after n runs to a band of about `(A − B) / ln(p1(1−p0) /
/// (p0(1−p1)))` failure counts (3 by default), so this costs
/// O(runs × band). Without `max_runs` it stops when less than 1e-13 of the
/// probability is undecided (or after 10^7 runs) and reports that rest as
/// truncated.
///
/// By default a test failing at p1 = 1 % needs 247 runs on average, not
/// Wald's 188: each failure moves the ratio by ln 10 = 2.3 against a
/// boundary at 2.94, so it usually overshoots by a whole failure's worth.
///
/// # Panics
///
/// If `cfg` is invalid or `p` is not in `[0, 1]`.
pub fn exact_outcome(cfg: &SprtConfig, p: f64) -> ExactOutcome {
    cfg.assert_valid("exact_outcome");
    assert!((0.0..=1.0).contains(&p), "p must be in [0, 1], got {p}");
    let probe = Sprt::new(*cfg).expect("validated");
    let cap = cfg.max_runs.unwrap_or(EXACT_RUN_CAP);
    let mut out = ExactOutcome {
        flaky: 0.0,
        stable: 0.0,
        truncated: 0.0,
        mean_runs: 0.0,
    };
    // Undecided states after `n` runs: (failures, probability), by
    // failures ascending.
    let mut states: Vec<(u64, f64)> = vec![(0, 1.0)];
    let mut next: Vec<(u64, f64)> = Vec::new();
    let mut n = 0;
    while !states.is_empty() {
        n += 1;
        next.clear();
        for &(k, q) in &states {
            for (k, w) in [(k, q * (1.0 - p)), (k + 1, q * p)] {
                if w == 0.0 {
                    continue;
                }
                match next.last_mut() {
                    Some((last, acc)) if *last == k => *acc += w,
                    _ => next.push((k, w)),
                }
            }
        }
        states.clear();
        let mut undecided = 0.0;
        for &(k, w) in &next {
            let llr = k as f64 * probe.fail_step + (n - k) as f64 * probe.pass_step;
            if llr >= probe.upper {
                out.flaky += w;
            } else if llr <= probe.lower {
                out.stable += w;
            } else if n >= cap {
                out.truncated += w;
            } else {
                states.push((k, w));
                undecided += w;
                continue;
            }
            out.mean_runs += w * n as f64;
        }
        if cfg.max_runs.is_none() && undecided < EXACT_TAIL {
            out.truncated += undecided;
            out.mean_runs += undecided * n as f64;
            break;
        }
    }
    // Sums of many products can round a certainty to 1 + 2e-16.
    for prob in [&mut out.flaky, &mut out.stable, &mut out.truncated] {
        *prob = prob.min(1.0);
    }
    out
}

/// The failure probability at which an observation's expected
/// log-likelihood step is `exp(h·step)` balanced: `p(h) = (1 − r0^h) /
/// (r1^h − r0^h)` with `ln r1 = a > 0`, `ln r0 = b < 0`, written to avoid
/// overflow for large `|h|`. Decreasing in h; p(1) = p0, p(−1) = p1.
fn p_of_h(h: f64, a: f64, b: f64) -> f64 {
    if h == 0.0 {
        -b / (a - b)
    } else if h > 0.0 {
        // Divided through by r1^h.
        (-h * a).exp() * (h * b).exp_m1() / (h * (b - a)).exp_m1()
    } else {
        // Divided through by r0^h.
        (-h * b).exp_m1() / (h * (a - b)).exp_m1()
    }
}

/// Solves `p_of_h(h) = p` for `p` in (0, 1) by bisection.
fn solve_h(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (-1.0, 1.0);
    while p_of_h(lo, a, b) < p && lo > -1e6 {
        lo *= 2.0;
    }
    while p_of_h(hi, a, b) > p && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if p_of_h(mid, a, b) > p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * (1.0 + mid.abs()) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// `L(h) = (e^{hA} − 1) / (e^{hA} − e^{hB})` with `B < 0 < A`, its limit
/// `A / (A − B)` at h = 0, and no overflow for large `|h|`.
fn oc_at(h: f64, lower: f64, upper: f64) -> f64 {
    if h.abs() < 1e-12 {
        return upper / (upper - lower);
    }
    if h > 0.0 {
        // Divided through by e^{hA}.
        (-h * upper).exp_m1() / (h * (lower - upper)).exp_m1()
    } else {
        // Divided through by e^{hB}.
        (-h * lower).exp() * (h * upper).exp_m1() / (h * (upper - lower)).exp_m1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_sprt() -> Sprt {
        Sprt::new(SprtConfig::default()).unwrap()
    }

    #[test]
    fn default_config_clears_a_passing_test_after_326_straight_passes() {
        let cfg = SprtConfig::default();
        let n = runs_to_accept_h0_without_failures(&cfg);
        // ceil(ln(0.05/0.95) / ln(0.99/0.999)) = ceil(325.36).
        assert_eq!(n, 326);
        let mut sprt = default_sprt();
        for run in 1..n {
            assert_eq!(sprt.observe(false), Decision::Continue, "run {run}");
        }
        assert_eq!(sprt.observe(false), Decision::Stable);
        assert_eq!(sprt.decided_at(), Some(n));
        assert!(sprt.llr() <= sprt.bounds().0);
    }

    #[test]
    fn closed_form_agrees_with_the_test_for_other_configs() {
        for (p0, p1, alpha, beta) in [
            (0.01, 0.05, 0.05, 0.05),
            (0.001, 0.002, 0.01, 0.2),
            (0.1, 0.5, 0.1, 0.1),
            (0.0001, 0.001, 0.05, 0.05),
        ] {
            let cfg = SprtConfig {
                p0,
                p1,
                alpha,
                beta,
                max_runs: None,
            };
            let n = runs_to_accept_h0_without_failures(&cfg);
            let mut sprt = Sprt::new(cfg).unwrap();
            let mut decided = 0;
            while sprt.observe(false) == Decision::Continue {
                decided += 1;
            }
            assert_eq!(decided + 1, n, "{cfg:?}");
        }
    }

    #[test]
    fn a_test_failing_every_fifth_run_is_flagged_quickly() {
        let mut sprt = default_sprt();
        let mut decision = Decision::Continue;
        let mut run = 0;
        while decision == Decision::Continue {
            decision = sprt.observe(run % 5 == 0);
            run += 1;
        }
        assert_eq!(decision, Decision::Flaky);
        // Failure, four passes, failure: ln(10)·2 − 4·0.00905 = 4.57 ≥ A.
        assert_eq!(sprt.runs(), 6);
        assert_eq!(sprt.failures(), 2);
    }

    #[test]
    fn a_test_failing_every_run_is_flagged_after_two() {
        let mut sprt = default_sprt();
        assert_eq!(sprt.observe(true), Decision::Continue);
        assert_eq!(sprt.observe(true), Decision::Flaky);
    }

    #[test]
    fn the_decision_sticks_but_later_runs_still_count() {
        let mut sprt = default_sprt();
        sprt.observe(true);
        assert_eq!(sprt.observe(true), Decision::Flaky);
        for _ in 0..2000 {
            assert_eq!(sprt.observe(false), Decision::Flaky);
        }
        assert!(sprt.llr() < sprt.bounds().0, "llr now says stable");
        assert_eq!(sprt.decision(), Decision::Flaky);
        assert_eq!((sprt.runs(), sprt.failures()), (2002, 2));
        assert_eq!(sprt.decided_at(), Some(2));
    }

    #[test]
    fn max_runs_truncates_undecided() {
        let mut sprt = Sprt::new(SprtConfig {
            max_runs: Some(10),
            ..SprtConfig::default()
        })
        .unwrap();
        for _ in 0..9 {
            assert_eq!(sprt.observe(false), Decision::Continue);
        }
        assert_eq!(sprt.observe(false), Decision::Truncated);
        assert_eq!(sprt.observe(true), Decision::Truncated);
        assert_eq!(sprt.decided_at(), Some(10));
    }

    #[test]
    fn a_decision_on_the_last_allowed_run_is_not_truncated() {
        let mut sprt = Sprt::new(SprtConfig {
            max_runs: Some(2),
            ..SprtConfig::default()
        })
        .unwrap();
        sprt.observe(true);
        assert_eq!(sprt.observe(true), Decision::Flaky);
    }

    #[test]
    fn bounds_are_walds() {
        let (lower, upper) = default_sprt().bounds();
        assert!((upper - (0.95f64 / 0.05).ln()).abs() < 1e-12);
        assert!((lower - (0.05f64 / 0.95).ln()).abs() < 1e-12);
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_setting_named() {
        let base = SprtConfig::default();
        let cases = [
            (SprtConfig { p0: 0.0, ..base }, "sprt.p0"),
            (SprtConfig { p0: -0.1, ..base }, "sprt.p0"),
            (
                SprtConfig {
                    p0: f64::NAN,
                    ..base
                },
                "sprt.p0",
            ),
            (SprtConfig { p1: 0.001, ..base }, "sprt.p1"),
            (SprtConfig { p1: 0.0005, ..base }, "sprt.p1"),
            (SprtConfig { p1: 1.0, ..base }, "sprt.p1"),
            (SprtConfig { alpha: 0.0, ..base }, "sprt.alpha"),
            (SprtConfig { alpha: 0.5, ..base }, "sprt.alpha"),
            (SprtConfig { beta: 0.7, ..base }, "sprt.beta"),
            (
                SprtConfig {
                    max_runs: Some(0),
                    ..base
                },
                "sprt.max_runs",
            ),
        ];
        for (cfg, name) in cases {
            let err = Sprt::new(cfg).expect_err(name);
            let StatsError::OutOfRange { name: got, .. } = &err;
            assert_eq!(*got, name, "{err}");
        }
        let msg = Sprt::new(SprtConfig { p1: 0.0005, ..base })
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid sprt.p1 = 0.0005: must be in (p0, 1) = (0.001, 1); fix the setting"
        );
    }

    #[test]
    fn operating_characteristic_is_one_minus_alpha_at_p0_and_beta_at_p1() {
        let cfg = SprtConfig::default();
        assert!((operating_characteristic(&cfg, cfg.p0) - 0.95).abs() < 1e-6);
        assert!((operating_characteristic(&cfg, cfg.p1) - 0.05).abs() < 1e-6);
        assert_eq!(operating_characteristic(&cfg, 0.0), 1.0);
        assert_eq!(operating_characteristic(&cfg, 1.0), 0.0);
        let mut last = 1.0;
        for i in 1..100 {
            let l = operating_characteristic(&cfg, f64::from(i) / 100.0);
            assert!(l <= last && (0.0..=1.0).contains(&l), "p = {i}%: {l}");
            last = l;
        }
    }

    #[test]
    fn exact_outcome_at_the_extremes_is_deterministic() {
        let cfg = SprtConfig::default();
        let clean = exact_outcome(&cfg, 0.0);
        assert_eq!(
            (clean.stable, clean.flaky, clean.truncated),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(
            clean.mean_runs,
            runs_to_accept_h0_without_failures(&cfg) as f64
        );
        let broken = exact_outcome(&cfg, 1.0);
        assert_eq!((broken.flaky, broken.mean_runs), (1.0, 2.0));
        let capped = exact_outcome(
            &SprtConfig {
                max_runs: Some(100),
                ..cfg
            },
            0.0,
        );
        assert_eq!((capped.truncated, capped.mean_runs), (1.0, 100.0));
    }

    /// Wald's inequalities: the real error rates of the (untruncated or
    /// truncated) test are at most α/(1−β) and β/(1−α).
    #[test]
    fn exact_error_rates_respect_walds_bounds() {
        for cfg in [
            SprtConfig::default(),
            SprtConfig {
                p0: 0.01,
                p1: 0.05,
                alpha: 0.01,
                beta: 0.1,
                max_runs: Some(5000),
            },
        ] {
            let at_p0 = exact_outcome(&cfg, cfg.p0);
            let at_p1 = exact_outcome(&cfg, cfg.p1);
            let total = at_p0.flaky + at_p0.stable + at_p0.truncated;
            assert!((total - 1.0).abs() < 1e-9, "{at_p0:?}");
            assert!(at_p0.flaky <= cfg.alpha / (1.0 - cfg.beta), "{at_p0:?}");
            assert!(at_p1.stable <= cfg.beta / (1.0 - cfg.alpha), "{at_p1:?}");
            // And not absurdly far below them either.
            assert!(at_p0.flaky > cfg.alpha / 4.0, "{at_p0:?}");
            assert!(at_p1.stable > cfg.beta / 4.0, "{at_p1:?}");
        }
    }

    #[test]
    fn exact_outcome_default_figures() {
        // Cross-checked with an independent Python implementation of the
        // same recursion.
        let cfg = SprtConfig {
            max_runs: Some(5000),
            ..SprtConfig::default()
        };
        let at_p0 = exact_outcome(&cfg, 0.001);
        assert!((at_p0.flaky - 0.023_455).abs() < 1e-6, "{at_p0:?}");
        assert!((at_p0.mean_runs - 414.993).abs() < 1e-3, "{at_p0:?}");
        let at_p1 = exact_outcome(&cfg, 0.01);
        assert!((at_p1.flaky - 0.948_864).abs() < 1e-6, "{at_p1:?}");
        assert!((at_p1.mean_runs - 247.426).abs() < 1e-3, "{at_p1:?}");
        let frequent = exact_outcome(&cfg, 0.2);
        assert!((frequent.mean_runs - 10.0).abs() < 1e-9, "{frequent:?}");
        // Without a run limit the same, up to the truncated tail.
        let unlimited = exact_outcome(&SprtConfig::default(), 0.01);
        assert!((unlimited.mean_runs - at_p1.mean_runs).abs() < 1e-6);
        assert!(unlimited.truncated < 1e-12);
    }

    #[test]
    fn expected_runs_matches_walds_closed_forms() {
        let cfg = SprtConfig::default();
        let (fail, pass) = cfg.steps();
        let (lower, upper) = cfg.log_bounds();
        // p = 0: every step is a pass, E[N] = B / ln((1−p1)/(1−p0)).
        assert!((expected_runs(&cfg, 0.0) - lower / pass).abs() < 1e-9);
        // p = 1: every step is a failure, E[N] = A / ln(p1/p0).
        assert!((expected_runs(&cfg, 1.0) - upper / fail).abs() < 1e-9);
        // At p1: ((β·B + (1−β)·A) / E[z]).
        let drift = cfg.p1 * fail + (1.0 - cfg.p1) * pass;
        let want = (0.05 * lower + 0.95 * upper) / drift;
        assert!((expected_runs(&cfg, cfg.p1) - want).abs() < 1e-3);
        // Continuous across the zero-drift point, where the general formula
        // is 0/0 and −A·B/E[z²] takes over.
        let p_star = -pass / (fail - pass);
        let at = expected_runs(&cfg, p_star);
        assert!(
            (at - lower * upper / -(p_star * fail * fail + (1.0 - p_star) * pass * pass)).abs()
                < 1e-9
        );
        for p in [p_star * (1.0 - 1e-6), p_star * (1.0 + 1e-6)] {
            let e = expected_runs(&cfg, p);
            assert!((e - at).abs() / at < 1e-5, "{p}: {e} vs {at}");
        }
        for p in [p_star * 0.999, p_star * 1.001] {
            let e = expected_runs(&cfg, p);
            assert!((e - at).abs() / at < 1e-3, "{p}: {e} vs {at}");
        }
    }
}
