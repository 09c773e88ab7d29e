//! Running coordinator batches on a slot of a prepared run, through the
//! real engine and pytest, and turning what the slot sends into `Report`
//! requests.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use shoal_exec::ProcessExecutor;
use shoal_proto::v1::{Batch, BatchItem, ReportRequest, TestFinished};
use shoal_worker::batch::NOT_DISCOVERED;
use shoal_worker::{LeaseRef, PreparedRun, ReportBatcher, SlotEnv, SlotRun, Update};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{Setup, inputs, prepare, test_named};

fn env() -> SlotEnv {
    SlotEnv {
        slots: 2,
        worker: "test-worker".into(),
        executor: Arc::new(ProcessExecutor),
    }
}

fn item(exec: u32, suite: &str, name: &str) -> BatchItem {
    BatchItem {
        exec,
        suite: suite.into(),
        name: name.into(),
        group: String::new(),
        attempt: 1,
        repeat: 0,
        estimate_ms: 100,
    }
}

fn batch(run: &PreparedRun, lease_id: u64, items: Vec<BatchItem>) -> Batch {
    Batch {
        run_id: run.run_id.clone(),
        lease_id,
        token: lease_id * 10,
        items,
        lease_timeout_ms: 30_000,
    }
}

/// Runs `batch` on `slot` and returns the requests a worker would send.
async fn run_batch(
    slot_run: &mut SlotRun,
    run: &PreparedRun,
    slot: u32,
    seq: u64,
    batch: &Batch,
    cancel: CancellationToken,
) -> Vec<ReportRequest> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    slot_run
        .run_batch(&env(), run, slot, seq, batch, tx, cancel)
        .await;
    let mut batcher = ReportBatcher::new(LeaseRef {
        worker_id: "w-1".into(),
        run_id: batch.run_id.clone(),
        lease_id: batch.lease_id,
        token: batch.token,
    });
    while let Some(message) = rx.recv().await {
        if let Some(update) = Update::from_slot_message(message) {
            batcher.push(update, Instant::now());
        }
    }
    batcher.close();
    let mut requests = Vec::new();
    while batcher.due(Instant::now()) {
        requests.push(batcher.take());
    }
    requests
}

fn finished(requests: &[ReportRequest]) -> BTreeMap<u32, TestFinished> {
    requests
        .iter()
        .flat_map(|r| r.finished.iter().cloned())
        .map(|f| (f.exec, f))
        .collect()
}

async fn prepared(setup: &Setup, config: &str) -> PreparedRun {
    let digest = setup.upload();
    let (run, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &digest, config, ""),
    )
    .await;
    run.unwrap()
}

#[tokio::test]
async fn a_batch_runs_through_the_engine_and_becomes_reports() {
    let setup = Setup::pytest();
    let run = prepared(&setup, "").await;
    let pass = test_named(&run, "test_outcomes.py::test_pass");
    let fail = test_named(&run, "test_outcomes.py::test_fail_assert");
    let skip = test_named(&run, "test_outcomes.py::test_skip_marker");
    let mut slot = SlotRun::new();

    let first = batch(
        &run,
        1,
        vec![
            item(0, "pytest", &pass),
            item(1, "pytest", &fail),
            item(2, "pytest", &skip),
            item(3, "pytest", "tests/test_gone.py::test_deleted"),
        ],
    );
    let requests = run_one(&mut slot, &run, &first).await;
    let last = requests.last().unwrap();
    assert!(last.done);
    assert!(requests[..requests.len() - 1].iter().all(|r| !r.done));
    assert!(
        requests
            .iter()
            .all(|r| r.lease_id == 1 && r.token == 10 && r.worker_id == "w-1")
    );
    let results = finished(&requests);
    let outcomes: Vec<(u32, &str)> = results
        .iter()
        .map(|(e, f)| (*e, f.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [(0, "pass"), (1, "fail"), (2, "skip"), (3, "crash")]
    );
    assert_eq!(results[&3].message.as_deref(), Some(NOT_DISCOVERED));
    assert!(results[&1].output.contains("assert") || results[&1].message.is_some());
    assert!(results[&0].start > 1.0e9 && results[&0].end >= results[&0].start);
    let started: Vec<u32> = requests
        .iter()
        .flat_map(|r| r.started.iter().map(|s| s.exec))
        .collect();
    for exec in [0, 1, 2] {
        assert!(started.contains(&exec), "{started:?}");
    }
    assert!(!started.contains(&3));

    // The slot's scratch lives in the run directory, its TMPDIR under the
    // system's temp directory (outside any project), with SHOAL_SLOT = 2.
    assert!(run.run_dir.join("slot-2").is_dir());
    let tmp = shoal_slot::run_temp_root(&run.run_id);
    assert!(
        std::fs::read_dir(&tmp)
            .expect("the run's temp root")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("-slot-2")),
        "{}",
        tmp.display()
    );

    // The next batch on the slot reuses its state.
    let second = batch(&run, 2, vec![item(7, "pytest", &pass)]);
    let requests = run_one(&mut slot, &run, &second).await;
    assert_eq!(finished(&requests)[&7].outcome, "pass");
    slot.close(&env(), &run, 2).await;
}

async fn run_one(
    slot: &mut SlotRun,
    prepared_run: &PreparedRun,
    batch: &Batch,
) -> Vec<ReportRequest> {
    run_batch(
        slot,
        prepared_run,
        2,
        batch.lease_id,
        batch,
        CancellationToken::new(),
    )
    .await
}

#[tokio::test]
async fn a_cancelled_batch_leaves_its_unfinished_tests_unreported() {
    let setup = Setup::pytest();
    let run = prepared(&setup, "").await;
    let slow = test_named(&run, "test_slow.py::test_slow_1500ms");
    let pass = test_named(&run, "test_outcomes.py::test_pass");
    let mut slot = SlotRun::new();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let t0 = std::time::Instant::now();
    let the_batch = batch(
        &run,
        1,
        vec![item(0, "pytest", &slow), item(1, "pytest", &pass)],
    );
    let requests = run_batch(&mut slot, &run, 0, 1, &the_batch, cancel).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(!finished(&requests).contains_key(&0), "{requests:?}");
    assert!(requests.last().unwrap().done);
    slot.close(&env(), &run, 0).await;
}

#[tokio::test]
async fn a_failing_slot_setup_is_reported_as_a_slot_failure_and_not_rerun() {
    let setup = Setup::pytest();
    let count = setup.tmp.path().join("slot-setup.count");
    let config = format!(
        r#"
[hooks]
slot_setup = "echo $SHOAL_SLOT >> '{}'; echo 'no database'; exit 1"

[suites.pytest]
adapter = "pytest"
"#,
        count.display()
    );
    let run = prepared(&setup, &config).await;
    let pass = test_named(&run, "test_outcomes.py::test_pass");
    let mut slot = SlotRun::new();
    for lease in [1, 2] {
        let the_batch = batch(&run, lease, vec![item(0, "pytest", &pass)]);
        let requests = run_batch(
            &mut slot,
            &run,
            1,
            lease,
            &the_batch,
            CancellationToken::new(),
        )
        .await;
        assert!(finished(&requests).is_empty(), "{requests:?}");
        let failures: Vec<&str> = requests
            .iter()
            .filter_map(|r| r.slot_failed.as_deref())
            .collect();
        assert_eq!(failures.len(), 1, "{requests:?}");
        assert!(failures[0].contains("no database"), "{}", failures[0]);
        assert!(requests.last().unwrap().done);
    }
    assert_eq!(fs::read_to_string(&count).unwrap(), "1\n");
}
