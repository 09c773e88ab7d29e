//! How many executions per second the scheduler handles in-process (lease,
//! report, release), with big batches and with single-test batches.

use crate::planned;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};
use shoal_core::Outcome;
use shoal_sched::{SchedConfig, Scheduler, SlotId};
use std::time::{Duration, Instant};

/// The engine needs at least this many tests per second from the scheduler.
const REQUIRED: f64 = 20_000.0;

/// Executions per second, counting planning (`Scheduler::new`) and the
/// whole lease → report → release loop; also prints the two separately.
fn executions_per_second(tests: usize, slots: u32, max_batch: usize) -> f64 {
    let mut rng = StdRng::seed_from_u64(7);
    let dist = LogNormal::new(0.2f64.ln(), 1.2).expect("valid log-normal");
    let plan: Vec<_> = (0..tests)
        .map(|i| {
            let est = Duration::from_secs_f64(dist.sample(&mut rng));
            planned(
                &format!("suite{}", i % 3),
                &format!("t{i}"),
                est,
                1,
                max_batch,
            )
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
    assert!(s.is_finished());
    assert_eq!(n, tests);
    let total = start.elapsed();
    let loop_rate = n as f64 / (total - planned_in).as_secs_f64();
    println!(
        "throughput: planning {tests} tests {planned_in:.0?}; lease+report+release {loop_rate:.0} executions/s \
         ({} slots, max_batch {max_batch})",
        slots.len()
    );
    n as f64 / total.as_secs_f64()
}

#[test]
fn lease_and_report_keep_up_with_the_engine() {
    for (slots, max_batch) in [(8, 64), (50, 1)] {
        let rate = executions_per_second(100_000, slots, max_batch);
        println!("throughput: {rate:.0} executions/s including planning");
        assert!(rate >= REQUIRED, "{rate:.0} executions/s < {REQUIRED}");
    }
}
