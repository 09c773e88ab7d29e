//! Fixed sample sizes: how many runs it takes to see a failure that
//! happens at a known rate (flake-aware bisection decides "good" this way).

/// The most runs [`sample_size_for`] ever asks for.
pub const MAX_SAMPLE_SIZE: u64 = 100_000;

/// Runs needed so that a test failing with probability `rate` per run fails
/// at least once with probability `confidence`:
/// `n = ceil(ln(1 − confidence) / ln(1 − rate))`, the least n with
/// `(1 − rate)^n ≤ 1 − confidence`. 299 for 1 % at 95 %; 59 for 5 %.
///
/// Bisecting a flake, a commit is called good when the test passes all n
/// runs; the chance of calling a commit good although it still flakes at
/// `rate` is then at most `1 − confidence`.
///
/// Assumptions: runs are independent and the rate is the same on every
/// run (stationary on the commit). Tests that interfere with each other,
/// or fail only under load, break both. The rate seen at the bad end is an
/// estimate; passing the low end of its confidence interval (for example
/// [`wilson`](crate::wilson)'s `low`) instead of the point estimate buys
/// margin against having seen a lucky streak of failures.
///
/// Clamped to `1..=MAX_SAMPLE_SIZE`: a `rate` of 1 needs one run; a rate at
/// or below zero (or NaN) can never be seen and gets the maximum.
///
/// # Panics
///
/// If `confidence` is not strictly between 0 and 1.
pub fn sample_size_for(rate: f64, confidence: f64) -> u64 {
    assert!(
        confidence > 0.0 && confidence < 1.0,
        "sample_size_for: confidence must be in (0, 1), got {confidence}"
    );
    if rate >= 1.0 {
        return 1;
    }
    if rate.is_nan() || rate <= 0.0 {
        return MAX_SAMPLE_SIZE;
    }
    let log_miss = (-rate).ln_1p(); // ln(1 − rate) < 0
    let target = (-confidence).ln_1p(); // ln(1 − confidence) < 0
    let estimate = (target / log_miss).ceil();
    if estimate >= MAX_SAMPLE_SIZE as f64 {
        return MAX_SAMPLE_SIZE;
    }
    // Make the rounding agree with the defining inequality.
    let misses = |n: u64| n as f64 * log_miss <= target;
    let mut n = (estimate as u64).max(1);
    while n > 1 && misses(n - 1) {
        n -= 1;
    }
    while !misses(n) && n < MAX_SAMPLE_SIZE {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sample_sizes() {
        assert_eq!(sample_size_for(0.01, 0.95), 299);
        assert_eq!(sample_size_for(0.05, 0.95), 59);
        assert_eq!(sample_size_for(0.2, 0.95), 14);
        assert_eq!(sample_size_for(0.5, 0.75), 2);
        assert_eq!(sample_size_for(0.001, 0.99), 4603);
    }

    #[test]
    fn the_size_is_the_least_that_reaches_the_confidence() {
        for rate in [0.003, 0.01, 0.07, 0.3, 0.5, 0.9] {
            for confidence in [0.5, 0.9, 0.95, 0.999] {
                let n = sample_size_for(rate, confidence);
                let miss = |n: u64| (1.0 - rate).powf(n as f64);
                assert!(miss(n) <= 1.0 - confidence + 1e-12, "{rate} {confidence}");
                assert!(
                    n == 1 || miss(n - 1) > 1.0 - confidence - 1e-12,
                    "{rate} {confidence}: {n} is not the least"
                );
            }
        }
    }

    #[test]
    fn extremes_are_clamped() {
        assert_eq!(sample_size_for(1.0, 0.95), 1);
        assert_eq!(sample_size_for(0.999, 0.5), 1);
        assert_eq!(sample_size_for(0.0, 0.95), MAX_SAMPLE_SIZE);
        assert_eq!(sample_size_for(-0.5, 0.95), MAX_SAMPLE_SIZE);
        assert_eq!(sample_size_for(f64::NAN, 0.95), MAX_SAMPLE_SIZE);
        assert_eq!(sample_size_for(1e-9, 0.95), MAX_SAMPLE_SIZE);
    }

    #[test]
    #[should_panic(expected = "confidence must be in (0, 1)")]
    fn confidence_of_one_is_rejected() {
        sample_size_for(0.01, 1.0);
    }
}
