//! A tiny library with tests, bundled with shoal to try it on.

/// Adds two numbers.
pub fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// The n-th Fibonacci number.
pub fn fib(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn fib_small() {
        assert_eq!(fib(10), 55);
    }

    #[test]
    fn fib_large() {
        assert_eq!(fib(90), 2_880_067_194_370_816_120);
    }

    /// Slow tests start first once shoal has seen them run.
    #[test]
    fn slow_one() {
        std::thread::sleep(Duration::from_millis(1500));
    }

    #[test]
    fn slow_two() {
        std::thread::sleep(Duration::from_millis(1000));
    }

    #[test]
    #[ignore = "shows how skipped tests are reported"]
    fn not_today() {}
}
