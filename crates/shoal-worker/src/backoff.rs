//! [`Backoff`]: the delays between retries of a call to the coordinator,
//! 0.5 s doubling up to 10 s.

use std::time::Duration;

/// The first delay.
pub const INITIAL: Duration = Duration::from_millis(500);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(10);

/// An exponential retry schedule: [`INITIAL`], doubling on every failure,
/// capped at [`MAX`]; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A schedule starting at [`INITIAL`].
    pub fn new() -> Self {
        Self { next: INITIAL }
    }

    /// The delay to wait after a failure; the next one is twice as long,
    /// up to [`MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// Starts over at [`INITIAL`] (after a success).
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

/// A short human form of a retry delay: `500ms`, `2s`, `1.5s`.
pub fn fmt_delay(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.1}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_half_a_second_to_ten_seconds() {
        let mut backoff = Backoff::new();
        let delays: Vec<f64> = (0..8).map(|_| backoff.next_delay().as_secs_f64()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new();
        for _ in 0..4 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), INITIAL);
        assert_eq!(backoff.next_delay(), INITIAL * 2);
    }

    #[test]
    fn delays_read_well() {
        assert_eq!(fmt_delay(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_delay(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_delay(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_delay(MAX), "10s");
    }
}
