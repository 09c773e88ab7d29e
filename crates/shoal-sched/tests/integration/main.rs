//! Integration tests of shoal-sched through its public API: randomized
//! protocol interleavings against a reference model and the makespan
//! simulator. (Throughput is a benchmark: `benches/throughput.rs`.)

mod invariants;
mod sim;

use shoal_core::{TestCase, TestId};
use shoal_sched::PlannedTest;
use std::time::Duration;

/// A planned test with the given estimate.
pub fn planned(
    suite: &str,
    name: &str,
    estimate: Duration,
    retries: u32,
    max_batch: usize,
) -> PlannedTest {
    PlannedTest {
        case: TestCase {
            id: TestId::new(suite, name),
            group: format!("{suite}/group"),
            runner: None,
        },
        estimate,
        retries,
        max_batch,
        batch_overhead: Duration::ZERO,
        locality: None,
    }
}
