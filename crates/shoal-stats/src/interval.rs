//! Confidence intervals for a failure rate: the Wilson score interval.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The confidence shoal uses when none is configured.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// A closed interval of probabilities, `0 <= low <= high <= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether `p` lies in the interval (bounds included).
    pub fn contains(&self, p: f64) -> bool {
        self.low <= p && p <= self.high
    }
}

/// Percentages, two decimals unless the formatter asks for a precision:
/// `[0.00%, 27.75%]`; `{:.1}` gives `[0.0%, 27.8%]`.
impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = f.precision().unwrap_or(2);
        write!(
            f,
            "[{:.*}%, {:.*}%]",
            precision,
            self.low * 100.0,
            precision,
            self.high * 100.0
        )
    }
}

/// The Wilson score interval for `failures` out of `runs` Bernoulli trials
/// at the two-sided `confidence` (0.95 uses z = 1.959964).
///
/// Unlike the normal ("Wald") interval it stays inside `[0, 1]` and is not
/// degenerate at `k = 0` or `k = n`, the common cases for flaky tests: zero
/// failures in 10 runs gives `[0, 0.2775]`, not `[0, 0]`. With `runs == 0`
/// nothing is known and the interval is `[0, 1]`. The bound at an extreme is
/// exact (`low == 0` when `failures == 0`, `high == 1` when
/// `failures == runs`).
///
/// # Panics
///
/// If `failures > runs` or `confidence` is not strictly between 0 and 1.
pub fn wilson(failures: u64, runs: u64, confidence: f64) -> Interval {
    assert!(
        failures <= runs,
        "wilson: {failures} failures out of {runs} runs"
    );
    if runs == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let z = z_for(confidence);
    let n = runs as f64;
    let p = failures as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let low = if failures == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let high = if failures == runs {
        1.0
    } else {
        (center + half).min(1.0)
    };
    Interval { low, high }
}

/// The two-sided critical value z for `confidence`: the standard normal
/// quantile at `1 - (1 - confidence) / 2` (1.959964 for 0.95).
///
/// # Panics
///
/// If `confidence` is not strictly between 0 and 1.
pub fn z_for(confidence: f64) -> f64 {
    assert!(
        confidence > 0.0 && confidence < 1.0,
        "confidence must be in (0, 1), got {confidence}"
    );
    normal_quantile(1.0 - (1.0 - confidence) / 2.0)
}

/// The standard normal quantile by Acklam's rational approximation
/// (relative error below 1.2e-9, enough for interval bounds printed to
/// four decimals). `q` must be in (0, 1).
fn normal_quantile(q: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |t: f64| {
        let r = (-2.0 * t.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if q < LOW {
        tail(q)
    } else if q > 1.0 - LOW {
        -tail(1.0 - q)
    } else {
        let x = q - 0.5;
        let r = x * x;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * x
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round4(x: f64) -> f64 {
        (x * 1e4).round() / 1e4
    }

    fn assert_interval(k: u64, n: u64, low: f64, high: f64) {
        let i = wilson(k, n, DEFAULT_CONFIDENCE);
        assert_eq!(
            (round4(i.low), round4(i.high)),
            (low, high),
            "wilson({k}, {n})"
        );
    }

    #[test]
    fn wilson_matches_published_values() {
        // Reference values from the closed form with z = 1.959964 (the same
        // figures R's prop.test(correct = FALSE) and statsmodels'
        // proportion_confint(method = "wilson") print).
        assert_interval(0, 10, 0.0, 0.2775);
        assert_interval(5, 10, 0.2366, 0.7634);
        assert_interval(10, 10, 0.7225, 1.0);
        assert_interval(1, 100, 0.0018, 0.0545);
        assert_interval(3, 1000, 0.001, 0.0088);
    }

    #[test]
    fn wilson_handles_the_extremes_exactly() {
        assert_eq!(
            wilson(0, 0, 0.95),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
        assert_eq!(wilson(0, 7, 0.95).low, 0.0);
        assert_eq!(wilson(7, 7, 0.95).high, 1.0);
        let one = wilson(1, 1, 0.95);
        assert!(one.low > 0.0 && one.high == 1.0, "{one:?}");
    }

    #[test]
    fn wilson_narrows_with_more_runs_and_widens_with_confidence() {
        let small = wilson(5, 50, 0.95);
        let large = wilson(50, 500, 0.95);
        assert!(large.high - large.low < small.high - small.low);
        assert!(small.contains(0.1) && large.contains(0.1));
        let wide = wilson(5, 50, 0.99);
        assert!(wide.low < small.low && wide.high > small.high);
    }

    #[test]
    fn z_for_95_percent_is_1_959964() {
        assert!((z_for(0.95) - 1.959_964).abs() < 1e-6, "{}", z_for(0.95));
        assert!((z_for(0.99) - 2.575_829).abs() < 1e-6, "{}", z_for(0.99));
        assert!((z_for(0.90) - 1.644_854).abs() < 1e-6, "{}", z_for(0.90));
    }

    #[test]
    #[should_panic(expected = "4 failures out of 3 runs")]
    fn wilson_rejects_more_failures_than_runs() {
        wilson(4, 3, 0.95);
    }

    #[test]
    fn interval_displays_as_percentages() {
        let i = wilson(0, 10, 0.95);
        assert_eq!(i.to_string(), "[0.00%, 27.75%]");
        assert_eq!(format!("{i:.1}"), "[0.0%, 27.8%]");
    }
}
