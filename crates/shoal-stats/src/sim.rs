//! A deterministic Monte Carlo of the SPRT: how often it flags a test of a
//! known failure probability, and after how many runs. Used by the tests,
//! the `sprt_sim` example and the figures in the documentation.

use crate::{
    Decision, ExactOutcome, Sprt, SprtConfig, exact_outcome, expected_runs,
    operating_characteristic,
};

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, fast generator whose
/// output for a seed never changes, so simulated figures are reproducible
/// across platforms and versions. Not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// The outcome of [`simulate`]: `trials` independent SPRTs on a test that
/// fails with probability `p`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSummary {
    pub p: f64,
    pub trials: u32,
    /// Trials decided [`Decision::Flaky`].
    pub flaky: u32,
    /// Trials decided [`Decision::Stable`].
    pub stable: u32,
    /// Trials stopped at `max_runs` without a decision.
    pub truncated: u32,
    /// Runs per trial until it stopped (decided or truncated).
    pub mean_runs: f64,
    /// Sample standard deviation of the runs per trial.
    pub sd_runs: f64,
    /// Nearest-rank median of the runs per trial.
    pub median_runs: u64,
    /// Nearest-rank 95th percentile of the runs per trial.
    pub p95_runs: u64,
    /// What the simulation estimates, computed exactly
    /// ([`exact_outcome`]).
    pub exact: ExactOutcome,
    /// Wald's approximation of E[N | p] ([`expected_runs`]).
    pub wald_expected_runs: f64,
    /// Wald's approximation of the probability of deciding stable
    /// ([`operating_characteristic`]).
    pub wald_stable: f64,
}

impl SimSummary {
    pub fn flaky_rate(&self) -> f64 {
        f64::from(self.flaky) / f64::from(self.trials)
    }

    pub fn stable_rate(&self) -> f64 {
        f64::from(self.stable) / f64::from(self.trials)
    }

    pub fn truncated_rate(&self) -> f64 {
        f64::from(self.truncated) / f64::from(self.trials)
    }
}

/// Runs `trials` SPRTs with `cfg`, each on a fresh stream of outcomes
/// failing with probability `p`, all drawn from one generator seeded with
/// `seed`. The same seed gives the same summary. Simulating several `p`
/// with the same seed uses the same uniform draws for each (common random
/// numbers), so differences between rows are not noise.
///
/// # Panics
///
/// If `cfg` is invalid, `trials == 0` or `p` is outside `[0, 1]`. (Without
/// `max_runs`, a `p` inside the indifference zone can take many thousand
/// runs per trial: the SPRT stops with probability 1, not quickly.)
pub fn simulate(cfg: &SprtConfig, p: f64, trials: u32, seed: u64) -> SimSummary {
    assert!(trials > 0, "simulate: trials must be at least 1");
    assert!((0.0..=1.0).contains(&p), "simulate: p must be in [0, 1]");
    let mut rng = SplitMix64::new(seed);
    let (mut flaky, mut stable, mut truncated) = (0, 0, 0);
    let mut runs = Vec::with_capacity(trials as usize);
    for _ in 0..trials {
        let mut sprt = Sprt::new(*cfg).unwrap_or_else(|e| panic!("simulate: {e}"));
        let decision = loop {
            match sprt.observe(rng.bernoulli(p)) {
                Decision::Continue => {}
                decided => break decided,
            }
        };
        match decision {
            Decision::Flaky => flaky += 1,
            Decision::Stable => stable += 1,
            Decision::Truncated => truncated += 1,
            Decision::Continue => unreachable!("the loop ends on a decision"),
        }
        runs.push(sprt.runs());
    }
    let mean_runs = runs.iter().sum::<u64>() as f64 / f64::from(trials);
    let sd_runs = if trials > 1 {
        let ss: f64 = runs.iter().map(|&n| (n as f64 - mean_runs).powi(2)).sum();
        (ss / f64::from(trials - 1)).sqrt()
    } else {
        0.0
    };
    runs.sort_unstable();
    let rank = |q: f64| runs[((q * runs.len() as f64).ceil() as usize).clamp(1, runs.len()) - 1];
    SimSummary {
        p,
        trials,
        flaky,
        stable,
        truncated,
        mean_runs,
        sd_runs,
        median_runs: rank(0.5),
        p95_runs: rank(0.95),
        exact: exact_outcome(cfg, p),
        wald_expected_runs: expected_runs(cfg, p),
        wald_stable: operating_characteristic(cfg, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs_to_accept_h0_without_failures;

    const SEED: u64 = 0x5EED_0006;
    const TRIALS: u32 = 300;

    fn cfg() -> SprtConfig {
        SprtConfig {
            max_runs: Some(5000),
            ..SprtConfig::default()
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the reference C
        // implementation (Vigna, prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
        let mut rng = SplitMix64::new(7);
        assert!(
            (0..10_000)
                .map(|_| rng.next_f64())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }

    /// With α = β = 5 % the SPRT flags a test failing at p1 = 1 % with
    /// probability 94.9 % (exactly; Wald guarantees at least
    /// 1 − β/(1 − α) ≈ 94.7 %), and higher rates more often. Out of 300
    /// trials the flagged count is binomial with standard deviation at
    /// most 3.8, so 90 % (270) is more than four standard deviations below
    /// the expectation: with the fixed seed the test is deterministic, and
    /// a correct implementation would practically never miss it on any
    /// seed. A wrong one (swapped bounds, wrong step signs, a bound in the
    /// wrong units) flags far fewer, or flags p = 0 tests, which this also
    /// checks: with p = 0 no failure ever happens, so a single flag is a
    /// bug, never chance.
    #[test]
    fn simulated_sprt_flags_flaky_tests_and_never_clean_ones() {
        let cfg = cfg();
        for p in [0.01, 0.02, 0.05, 0.2] {
            let s = simulate(&cfg, p, TRIALS, SEED);
            assert!(s.flaky_rate() >= 0.90, "p = {p}: {s:?}");
        }
        let clean = simulate(&cfg, 0.0, TRIALS, SEED);
        assert_eq!(clean.flaky, 0, "{clean:?}");
        assert_eq!(clean.stable, TRIALS);
        let n = runs_to_accept_h0_without_failures(&cfg);
        assert_eq!((clean.median_runs, clean.p95_runs), (n, n));
    }

    /// At p0 = 0.1 % the false-flag rate is 2.3 % (exactly; at most
    /// α/(1 − β) ≈ 5.3 % by Wald's bound); 10 % (30 of 300) is over eight
    /// standard deviations above it. An implementation with too lax a
    /// bound fails here.
    #[test]
    fn simulated_sprt_rarely_flags_a_test_at_p0() {
        let s = simulate(&cfg(), 0.001, TRIALS, SEED);
        assert!(s.flaky_rate() <= 0.10, "{s:?}");
        assert!(s.stable_rate() >= 0.90, "{s:?}");
    }

    /// The simulation agrees with the exact computation, an independent
    /// route to the same figures: the flagged fraction within four binomial
    /// standard deviations, the mean runs within four standard errors.
    /// Either would move by far more if the simulation's draws or the
    /// recursion's transitions were wrong.
    #[test]
    fn simulation_agrees_with_the_exact_figures() {
        let cfg = cfg();
        for p in [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.2] {
            let s = simulate(&cfg, p, TRIALS, SEED);
            let f = s.exact.flaky;
            let sd = (f * (1.0 - f) / f64::from(TRIALS)).sqrt();
            assert!((s.flaky_rate() - f).abs() <= 4.0 * sd + 1e-12, "{s:?}");
            let se = s.sd_runs / f64::from(TRIALS).sqrt();
            assert!(
                (s.mean_runs - s.exact.mean_runs).abs() <= 4.0 * se + 1e-9,
                "{s:?}"
            );
        }
    }

    /// Wald's approximation ignores the overshoot past the boundaries, so
    /// it underestimates the mean sample size: not at all at p = 0 beyond
    /// the rounding up to whole runs, by about a quarter at p1, where each
    /// failure jumps most of the way to the boundary.
    #[test]
    fn walds_approximation_underestimates_by_the_overshoot() {
        let cfg = cfg();
        let clean = exact_outcome(&cfg, 0.0);
        let wald = expected_runs(&cfg, 0.0);
        assert!(clean.mean_runs >= wald && clean.mean_runs - wald < 1.0);
        let at_p1 = exact_outcome(&cfg, cfg.p1);
        let ratio = at_p1.mean_runs / expected_runs(&cfg, cfg.p1);
        assert!((1.2..1.4).contains(&ratio), "{ratio}");
    }

    #[test]
    fn the_same_seed_gives_the_same_summary() {
        let cfg = cfg();
        assert_eq!(simulate(&cfg, 0.01, 50, 42), simulate(&cfg, 0.01, 50, 42));
        assert_ne!(
            simulate(&cfg, 0.01, 50, 42).mean_runs,
            simulate(&cfg, 0.01, 50, 43).mean_runs
        );
    }

    #[test]
    fn truncation_is_counted() {
        let cfg = SprtConfig {
            max_runs: Some(50),
            ..SprtConfig::default()
        };
        let s = simulate(&cfg, 0.0, 10, SEED);
        assert_eq!((s.truncated, s.p95_runs), (10, 50));
        assert_eq!(s.truncated_rate(), 1.0);
    }
}
