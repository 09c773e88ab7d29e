//! How many executions per second the scheduler handles in-process
//! (planning, then lease → report → release), with big batches on few slots
//! and single-test batches on many. Run by `bench/overhead.py`, or
//! `cargo bench -p shoal-sched --bench throughput`.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};
use shoal_core::{Outcome, TestCase, TestId};
use shoal_sched::{PlannedTest, SchedConfig, Scheduler, SlotId};
use std::time::{Duration, Instant};

/// Executions per second including planning; prints the loop alone too.
fn executions_per_second(tests: usize, slots: u32, max_batch: usize) -> f64 {
    let mut rng = StdRng::seed_from_u64(7);
    let dist = LogNormal::new(0.2f64.ln(), 1.2).expect("valid log-normal");
    let plan: Vec<PlannedTest> = (0..tests)
        .map(|i| PlannedTest {
            case: TestCase {
                id: TestId::new(format!("suite{}", i % 3), format!("t{i}")),
                group: String::new(),
                runner: None,
            },
            estimate: Duration::from_secs_f64(dist.sample(&mut rng)),
            retries: 1,
            max_batch,
            batch_overhead: Duration::ZERO,
            locality: None,
        })
        .collect();
    let slots: Vec<SlotId> = (0..slots).map(SlotId::local).collect();
    let start = Instant::now();
    let mut s = Scheduler::new(SchedConfig::default(), plan, 1, &slots).expect("valid plan");
    let planned_in = start.elapsed();
    let mut n = 0usize;
    let now = Duration::ZERO;
    'run: loop {
        for &slot in &slots {
            let Some(l) = s.lease(slot, now) else {
                break 'run;
            };
            for e in &l.items {
                s.report(l.id, l.token, e.exec, Outcome::Pass, now);
                n += 1;
            }
            s.release(l.id, l.token, now);
        }
    }
    assert!(s.is_finished() && n == tests);
    let total = start.elapsed();
    let loop_rate = n as f64 / (total - planned_in).as_secs_f64();
    println!(
        "{tests} tests, {} slots, max_batch {max_batch}: planning {planned_in:.0?}, \
         lease+report+release {loop_rate:.0} executions/s, {:.0} executions/s including planning",
        slots.len(),
        n as f64 / total.as_secs_f64()
    );
    n as f64 / total.as_secs_f64()
}

fn main() {
    for (slots, max_batch) in [(8, 64), (50, 1)] {
        let mut rates: Vec<f64> = (0..5)
            .map(|_| executions_per_second(100_000, slots, max_batch))
            .collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "median of 5: {:.0} executions/s ({slots} slots, max_batch {max_batch})",
            rates[2]
        );
    }
}
