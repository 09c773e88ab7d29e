//! A discrete-event simulation of a run on a virtual clock: slots pull
//! batches from the scheduler, each batch costs a fixed overhead plus its
//! tests' actual durations (seeded log-normal), and the makespan is compared
//! with the lower bound LB = max(total work / slots, longest test).
//!
//! `cargo test -p shoal-sched --test integration sim -- --nocapture` prints
//! the figures quoted in docs/design/scheduler.md.

use crate::planned;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use shoal_core::Outcome;
use shoal_sched::{Lease, SchedConfig, Scheduler, SlotId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Spec {
    tests: usize,
    slots: u32,
    /// Median test duration, seconds.
    median: f64,
    /// Log-normal sigma of test durations.
    sigma: f64,
    /// Per-batch cost (process start-up), seconds.
    overhead: f64,
    /// actual = estimate × lognormal(0, est_noise); 0 means exact estimates.
    est_noise: f64,
    /// Without history every estimate is the same, so the queue runs in
    /// test-id order, which is random with respect to duration.
    history: bool,
    /// Probability that an attempt fails (tests get one retry).
    flake: f64,
    max_batch: usize,
    seed: u64,
}

impl Spec {
    fn new(seed: u64) -> Self {
        Self {
            tests: 10_000,
            slots: 50,
            median: 0.2,
            sigma: 1.2,
            overhead: 0.005,
            est_noise: 0.0,
            history: true,
            flake: 0.0,
            max_batch: 64,
            seed,
        }
    }
}

#[derive(Debug)]
struct SimResult {
    makespan: f64,
    lower_bound: f64,
    batches: usize,
    attempts: usize,
    flaky: usize,
}

impl SimResult {
    fn ratio(&self) -> f64 {
        self.makespan / self.lower_bound
    }
}

fn secs(t: f64) -> Duration {
    Duration::from_secs_f64(t)
}

fn simulate(spec: Spec) -> SimResult {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let durations = LogNormal::new(spec.median.ln(), spec.sigma).expect("valid log-normal");
    let noise = LogNormal::new(0.0, spec.est_noise.max(1e-12)).expect("valid log-normal");
    let mut actual = Vec::with_capacity(spec.tests);
    let tests: Vec<_> = (0..spec.tests)
        .map(|i| {
            let estimate: f64 = durations.sample(&mut rng);
            let real = if spec.est_noise > 0.0 {
                estimate * noise.sample(&mut rng)
            } else {
                estimate
            };
            actual.push(real);
            let estimate = if spec.history { estimate } else { 1.0 };
            planned(
                "sim",
                &format!("t{i:05}"),
                secs(estimate),
                1,
                spec.max_batch,
            )
        })
        .collect();
    let slots: Vec<SlotId> = (0..spec.slots).map(SlotId::local).collect();
    let mut s = Scheduler::new(SchedConfig::default(), tests, 1, &slots).expect("valid plan");

    let idx = |l: &Lease, i: usize| -> usize {
        let name = &l.items[i].case.id.name;
        name[1..].parse().expect("sim test name")
    };
    let mut running: Vec<Option<Lease>> = vec![None; slots.len()];
    let mut idle: Vec<usize> = Vec::new();
    let mut events: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut r = SimResult {
        makespan: 0.0,
        lower_bound: 0.0,
        batches: 0,
        attempts: 0,
        flaky: 0,
    };
    let (mut work, mut longest) = (0.0f64, 0.0f64);
    for i in 0..slots.len() {
        events.push(Reverse((Duration::ZERO, i)));
    }
    while let Some(Reverse((now, si))) = events.pop() {
        if let Some(l) = running[si].take() {
            for (i, e) in l.items.iter().enumerate() {
                let fails = spec.flake > 0.0 && rng.gen_bool(spec.flake);
                let outcome = if fails { Outcome::Fail } else { Outcome::Pass };
                let d = s.report(l.id, l.token, e.exec, outcome, now);
                r.flaky += usize::from(d.final_status() == Some(shoal_core::FinalStatus::Flaky));
                let t = actual[idx(&l, i)];
                work += t;
                longest = longest.max(t);
                r.attempts += 1;
            }
            s.release(l.id, l.token, now);
            r.makespan = r.makespan.max(now.as_secs_f64());
            idle.push(si);
        } else {
            idle.push(si);
        }
        // Every idle slot asks (retries may have appeared).
        let mut still = Vec::new();
        for sj in idle.drain(..) {
            match s.lease(slots[sj], now) {
                Some(l) => {
                    let run: f64 = (0..l.items.len()).map(|i| actual[idx(&l, i)]).sum();
                    events.push(Reverse((now + secs(spec.overhead + run), sj)));
                    running[sj] = Some(l);
                    r.batches += 1;
                }
                None => still.push(sj),
            }
        }
        idle = still;
    }
    assert!(s.is_finished(), "simulation ended with work left");
    r.lower_bound = (work / f64::from(spec.slots)).max(longest);
    r
}

fn report(label: &str, results: &[SimResult]) -> f64 {
    let worst = results.iter().map(SimResult::ratio).fold(0.0, f64::max);
    let mean = results.iter().map(SimResult::ratio).sum::<f64>() / results.len() as f64;
    let batches = results.iter().map(|r| r.batches).sum::<usize>() / results.len();
    println!(
        "sim {label:<44} makespan/LB mean {mean:.4} worst {worst:.4} (LB {:.1}s, {batches} batches)",
        results[0].lower_bound
    );
    worst
}

const SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn longest_first_finishes_within_5_percent_of_the_lower_bound() {
    for sigma in [1.0, 1.5] {
        let results: Vec<_> = SEEDS
            .iter()
            .map(|&seed| {
                simulate(Spec {
                    sigma,
                    ..Spec::new(seed)
                })
            })
            .collect();
        let worst = report(&format!("exact estimates, sigma {sigma}"), &results);
        assert!(
            worst <= 1.05,
            "makespan {worst:.4} × LB with exact estimates (sigma {sigma})"
        );
    }
}

#[test]
fn longest_first_stays_close_with_noisy_estimates() {
    let results: Vec<_> = SEEDS
        .iter()
        .map(|&seed| {
            simulate(Spec {
                est_noise: 0.7,
                ..Spec::new(seed)
            })
        })
        .collect();
    let worst = report("estimates off by lognormal(0, 0.7)", &results);
    assert!(
        worst <= 1.10,
        "makespan {worst:.4} × LB with noisy estimates"
    );
}

#[test]
fn a_queue_in_random_order_is_clearly_worse() {
    let lpt: Vec<_> = SEEDS
        .iter()
        .map(|&seed| simulate(Spec::new(seed)))
        .collect();
    let random: Vec<_> = SEEDS
        .iter()
        .map(|&seed| {
            simulate(Spec {
                history: false,
                ..Spec::new(seed)
            })
        })
        .collect();
    let lpt_worst = report("longest first (for comparison)", &lpt);
    report("random order (no history)", &random);
    let random_best = random.iter().map(SimResult::ratio).fold(f64::MAX, f64::min);
    assert!(
        random_best > lpt_worst + 0.05,
        "random order {random_best:.4} vs longest first {lpt_worst:.4}"
    );
}

#[test]
fn retries_of_flaky_tests_barely_move_the_makespan() {
    let results: Vec<_> = SEEDS
        .iter()
        .map(|&seed| {
            simulate(Spec {
                flake: 0.01,
                ..Spec::new(seed)
            })
        })
        .collect();
    for r in &results {
        assert!(r.flaky > 0 && r.attempts > 10_000, "{r:?}");
    }
    let worst = report("1% of attempts fail, one retry", &results);
    assert!(worst <= 1.05, "makespan {worst:.4} × LB with retries");
}
