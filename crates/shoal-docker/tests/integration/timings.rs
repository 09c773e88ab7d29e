//! Timings the docs quote: starting a slot container, and the overhead of
//! one process exec'd into it (median of 50 `true`).

use crate::support::{Slot, engine, opts};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn container_start_and_exec_overhead() {
    let Some(docker) = engine().await else { return };
    let mut starts = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..5 {
        let begun = Instant::now();
        slots.push(Slot::start(&docker, opts("timings")).await);
        starts.push(begun.elapsed());
    }
    let slot = slots.remove(0);
    for other in slots {
        other.remove().await;
    }

    let mut execs = Vec::new();
    for _ in 0..50 {
        let begun = Instant::now();
        let exit = slot.run(&["true"]).await;
        execs.push(begun.elapsed());
        assert!(exit.status.success(), "{}", exit.output.text);
    }
    let mut with_progress = Vec::new();
    for _ in 0..20 {
        let mut spec = slot.spec(&["true"]);
        spec.progress_pipe = true;
        let begun = Instant::now();
        assert!(slot.run_spec(&spec).await.status.success());
        with_progress.push(begun.elapsed());
    }
    let begun = Instant::now();
    slot.remove().await;
    let removal = begun.elapsed();
    println!(
        "TIMINGS container start median {:?} (of 5: {:?}); exec `true` median {:?} (min {:?}, max {:?}, of 50); with progress FIFO median {:?}; removal {:?}",
        median(starts.clone()),
        starts,
        median(execs.clone()),
        execs.iter().min().copied().unwrap_or_default(),
        execs.iter().max().copied().unwrap_or_default(),
        median(with_progress),
        removal,
    );
}
