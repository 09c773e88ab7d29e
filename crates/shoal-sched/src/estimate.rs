//! Duration estimates for tests without history, from their neighbours'.

use crate::plan::PlannedTest;
use shoal_core::TestId;
use std::collections::HashMap;
use std::time::Duration;

/// Where [`fill_estimates`] took each estimate from, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EstimateSummary {
    /// The test's own history.
    pub known: usize,
    /// The mean of known tests in the same suite and group (file, binary).
    pub group: usize,
    /// The mean of known tests in the same suite.
    pub suite: usize,
    /// Nothing known nearby: the default.
    pub default: usize,
}

#[derive(Default, Clone, Copy)]
struct Mean {
    sum: u128,
    n: u128,
}

impl Mean {
    fn add(&mut self, d: Duration) {
        self.sum += d.as_nanos();
        self.n += 1;
    }

    fn get(self) -> Duration {
        let nanos = self.sum / self.n.max(1);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Sets every test's `estimate`: its own entry in `known` (the engine's
/// history, e.g. a median of recent passing runs); else the mean of the known
/// tests of the same suite and group, since tests in one file or binary tend
/// to cost alike; else the mean of the known tests of its suite; else
/// `default`.
///
/// Means are taken over the tests in `tests` that have history, so a
/// group's mean reflects the tests that exist now.
pub fn fill_estimates(
    tests: &mut [PlannedTest],
    known: &HashMap<TestId, Duration>,
    default: Duration,
) -> EstimateSummary {
    let mut groups: HashMap<(&str, &str), Mean> = HashMap::new();
    let mut suites: HashMap<&str, Mean> = HashMap::new();
    for t in tests.iter() {
        if let Some(&d) = known.get(&t.case.id) {
            let id = &t.case.id;
            groups.entry((&id.suite, &t.case.group)).or_default().add(d);
            suites.entry(&id.suite).or_default().add(d);
        }
    }

    let mut summary = EstimateSummary::default();
    let picked: Vec<Duration> = tests
        .iter()
        .map(|t| {
            let suite = t.case.id.suite.as_str();
            if let Some(&d) = known.get(&t.case.id) {
                summary.known += 1;
                d
            } else if let Some(m) = groups.get(&(suite, t.case.group.as_str())) {
                summary.group += 1;
                m.get()
            } else if let Some(m) = suites.get(suite) {
                summary.suite += 1;
                m.get()
            } else {
                summary.default += 1;
                default
            }
        })
        .collect();
    for (t, d) in tests.iter_mut().zip(picked) {
        t.estimate = d;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::TestCase;

    fn planned(suite: &str, group: &str, name: &str) -> PlannedTest {
        PlannedTest::new(TestCase {
            id: TestId::new(suite, name),
            group: group.into(),
            runner: None,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unknown_tests_take_group_then_suite_mean_then_default() {
        let mut tests = vec![
            planned("py", "a.py", "a1"),
            planned("py", "a.py", "a2"),
            planned("py", "a.py", "a3"),
            planned("py", "b.py", "b1"),
            planned("py", "c.py", "c1"),
            planned("rs", "bin", "r1"),
        ];
        let known = HashMap::from([
            (TestId::new("py", "a1"), ms(100)),
            (TestId::new("py", "a2"), ms(300)),
            (TestId::new("py", "b1"), ms(800)),
            // Not selected: must not influence any mean.
            (TestId::new("py", "gone"), ms(100_000)),
        ]);
        let summary = fill_estimates(&mut tests, &known, ms(1000));
        let est: Vec<_> = tests.iter().map(|t| t.estimate).collect();
        // a3: mean of a1, a2. c1: mean of the suite's known (100, 300, 800).
        assert_eq!(est, [ms(100), ms(300), ms(200), ms(800), ms(400), ms(1000)]);
        assert_eq!(
            summary,
            EstimateSummary {
                known: 3,
                group: 1,
                suite: 1,
                default: 1
            }
        );
    }

    #[test]
    fn same_group_name_in_another_suite_is_a_different_group() {
        let mut tests = vec![planned("x", "g", "known"), planned("y", "g", "new")];
        let known = HashMap::from([(TestId::new("x", "known"), ms(50))]);
        fill_estimates(&mut tests, &known, ms(7));
        assert_eq!(tests[1].estimate, ms(7));
    }
}
