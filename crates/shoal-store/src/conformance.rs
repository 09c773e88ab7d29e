//! The conformance suite: what every [`Store`] adapter must do, checked
//! through the trait alone so the SQLite and PostgreSQL adapters are held to
//! the same behaviour.
//!
//! Call [`run_all`] on a freshly created, empty store that uses the default
//! estimate window ([`DEFAULT_ESTIMATE_WINDOW`]), and [`run_shared`] on two
//! handles of another fresh persistent store. Failures panic with a message
//! naming the broken expectation.

use crate::{
    AttemptRecord, CoordinatorLock, DEFAULT_ESTIMATE_WINDOW, HistoryQuery, HistoryRow, KIND_BISECT,
    KIND_RUN, KIND_STRESS, LeaseRecord, QueuedRun, RunHealthRow, RunRecord, SlotOrder, Store,
    StoreError,
};
use shoal_core::{FinalStatus, Outcome, RunCounts, TestId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs every check that needs one handle in turn. `store` must be empty.
pub async fn run_all(store: &dyn Store) {
    empty_store_has_nothing(store).await;
    runs_round_trip(store).await;
    runs_are_listed_newest_first(store).await;
    attempts_round_trip(store).await;
    attempts_are_recorded_once(store).await;
    record_attempts_is_atomic(store).await;
    medians_of_recent_timed_attempts(store).await;
    estimates_for_many_tests(store).await;
    many_small_batches(store).await;
    tokens_are_reserved_in_disjoint_ranges(store).await;
    queued_runs_round_trip(store).await;
    leases_round_trip(store).await;
    environment_seed_and_kind_round_trip(store).await;
    history_filters_and_order(store).await;
    history_across_statement_chunks(store).await;
    run_health_counts_whole_runs(store).await;
    slot_order_of_a_failure(store).await;
}

/// Runs the checks that need two handles on one persistent store, as two
/// processes have: `a` and `b` must be fresh handles on the same new file
/// or database (not an in-memory store, which has one handle only).
pub async fn run_shared(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    coordinator_lock_is_exclusive(&*a, &*b).await;
    concurrent_reservations_never_overlap(&[a, b]).await;
}

fn run(run_id: &str, started: f64) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        started,
        commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        dirty: false,
        worker: "laptop".to_owned(),
        selection: "shoal run".to_owned(),
        planned: 0,
        environment: "linux-x86_64".to_owned(),
        seed: None,
        kind: KIND_RUN.to_owned(),
    }
}

fn attempt(
    run_id: &str,
    suite: &str,
    test: &str,
    outcome: Outcome,
    start: f64,
    duration: f64,
) -> AttemptRecord {
    AttemptRecord {
        run_id: run_id.to_owned(),
        suite: suite.to_owned(),
        test: test.to_owned(),
        attempt: 1,
        repeat: 0,
        outcome,
        slot: 0,
        worker: "local".to_owned(),
        start,
        end: start + duration,
        duration,
        final_status: None,
        message: None,
        commit: None,
        dirty: false,
    }
}

async fn begin(store: &dyn Store, run_id: &str, started: f64) {
    store
        .begin_run(&run(run_id, started))
        .await
        .expect("begin_run");
}

async fn estimate(store: &dyn Store, suite: &str, test: &str) -> Option<f64> {
    let id = TestId::new(suite, test);
    let estimates = store
        .duration_estimates(std::slice::from_ref(&id))
        .await
        .expect("duration_estimates");
    estimates.get(&id).map(Duration::as_secs_f64)
}

fn assert_close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no estimate, expected {expected}"));
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: estimate {actual}, expected {expected}"
    );
}

/// An empty store lists nothing, estimates nothing and knows no run.
pub async fn empty_store_has_nothing(store: &dyn Store) {
    assert!(
        store.runs(10).await.expect("runs").is_empty(),
        "a new store lists runs"
    );
    let tests = [TestId::new("s", "t")];
    assert!(
        store
            .duration_estimates(&tests)
            .await
            .expect("duration_estimates")
            .is_empty()
    );
    assert!(
        store
            .duration_estimates(&[])
            .await
            .expect("duration_estimates of nothing")
            .is_empty()
    );
    let err = store
        .attempts_of_run("no-such-run")
        .await
        .expect_err("attempts of an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "no-such-run"),
        "{err:?}"
    );
}

/// A run reads back as begun, then as finished; duplicates and unknown runs
/// are refused.
pub async fn runs_round_trip(store: &dyn Store) {
    let mut record = run("rt-run", 1_700_000_000.25);
    record.commit = None;
    record.dirty = true;
    record.worker = "host-ü".to_owned();
    record.selection = "shoal run -k 'a b' --repeat 3".to_owned();
    record.planned = 12_345;
    store.begin_run(&record).await.expect("begin_run");

    let find = |runs: Vec<crate::RunSummary>| runs.into_iter().find(|r| r.run.run_id == "rt-run");
    let begun = find(store.runs(usize::MAX).await.expect("runs")).expect("begun run is listed");
    assert_eq!(begun.run, record, "begun run reads back as recorded");
    assert_eq!(begun.end, None, "an unfinished run has no end");

    let mut dup = run("rt-run", 1.0);
    dup.selection = "other".to_owned();
    let err = store
        .begin_run(&dup)
        .await
        .expect_err("beginning a run twice");
    assert!(
        matches!(err, StoreError::DuplicateRun(ref id) if id == "rt-run"),
        "{err:?}"
    );

    let counts = RunCounts {
        passed: 10,
        failed: 2,
        flaky: 1,
        skipped: 3,
        attempts: 19,
    };
    store
        .finish_run("rt-run", 1_700_000_060.5, &counts, true, 130)
        .await
        .expect("finish_run");
    let finished =
        find(store.runs(usize::MAX).await.expect("runs")).expect("finished run is listed");
    assert_eq!(
        finished.run, record,
        "finishing keeps the run's start record (and a duplicate begin changed nothing)"
    );
    let end = finished.end.expect("a finished run has an end");
    assert_eq!(
        (end.end, &end.counts, end.interrupted, end.exit_code),
        (1_700_000_060.5, &counts, true, 130)
    );

    let counts2 = RunCounts {
        passed: 11,
        ..counts
    };
    store
        .finish_run("rt-run", 1_700_000_070.0, &counts2, false, 1)
        .await
        .expect("finish_run again");
    let end = find(store.runs(usize::MAX).await.expect("runs"))
        .and_then(|r| r.end)
        .expect("end");
    assert_eq!(
        (end.end, &end.counts, end.interrupted, end.exit_code),
        (1_700_000_070.0, &counts2, false, 1)
    );

    let err = store
        .finish_run("rt-none", 1.0, &counts, false, 0)
        .await
        .expect_err("finishing an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "rt-none"),
        "{err:?}"
    );
    assert!(
        store
            .attempts_of_run("rt-run")
            .await
            .expect("attempts of a run without any")
            .is_empty()
    );
}

/// `runs(limit)` returns the newest runs by start time, newest first.
pub async fn runs_are_listed_newest_first(store: &dyn Store) {
    // Far later than any other check's runs, begun out of order.
    for (id, started) in [
        ("order-b", 4e9 + 2.0),
        ("order-d", 4e9 + 4.0),
        ("order-a", 4e9 + 1.0),
        ("order-c", 4e9 + 3.0),
    ] {
        begin(store, id, started).await;
    }
    let top: Vec<String> = store
        .runs(3)
        .await
        .expect("runs")
        .into_iter()
        .map(|r| r.run.run_id)
        .collect();
    assert_eq!(
        top,
        ["order-d", "order-c", "order-b"],
        "runs(3) lists the three newest, newest first"
    );
    assert!(
        store.runs(0).await.expect("runs(0)").is_empty(),
        "runs(0) lists nothing"
    );
    let all = store.runs(usize::MAX).await.expect("runs");
    assert!(
        all.windows(2).all(|w| w[0].run.started >= w[1].run.started),
        "runs are newest first"
    );
    assert!(
        all.iter().any(|r| r.run.run_id == "rt-run"),
        "older runs are listed too"
    );
}

/// Every field of an attempt reads back unchanged, in start order, whatever
/// the batches it arrived in.
pub async fn attempts_round_trip(store: &dyn Store) {
    begin(store, "at-run", 1_700_000_100.0).await;
    let names = [
        "tests/test_a.py::test_x[a b]",
        "it's \"quoted\"; DROP TABLE tests; --",
        "crate::módulo::テスト",
        "multi\nline\tname",
        "",
    ];
    let outcomes = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Skip,
        Outcome::Timeout,
        Outcome::Crash,
        Outcome::Lost,
    ];
    let statuses = [
        None,
        Some(FinalStatus::Passed),
        Some(FinalStatus::Flaky),
        Some(FinalStatus::Failed),
        Some(FinalStatus::Skipped),
    ];
    let commits = [None, Some("aaaa".to_owned()), Some("bbbb".to_owned())];
    let mut expected = Vec::new();
    for i in 0..30u32 {
        let name = names[i as usize % names.len()];
        let mut a = attempt(
            "at-run",
            ["py", "rs"][i as usize % 2],
            name,
            outcomes[i as usize % 6],
            0.0,
            0.0,
        );
        a.attempt = 1 + i / 10;
        a.repeat = i % 10;
        a.slot = i % 4;
        a.worker = ["local", "worker-7"][(i / 3) as usize % 2].to_owned();
        // Start times interleave across the batches below.
        a.start = 1_700_000_100.0 + f64::from((i * 7) % 30) + 0.125;
        a.end = a.start + 0.75;
        a.duration = f64::from(i) * 0.1;
        a.final_status = statuses[i as usize % statuses.len()];
        a.message = (i % 3 == 0).then(|| format!("assert {i} == 0\n  at line {i}"));
        a.commit = commits[i as usize % commits.len()].clone();
        a.dirty = i % 2 == 0;
        expected.push(a);
    }
    for batch in expected.chunks(11) {
        store.record_attempts(batch).await.expect("record_attempts");
    }
    store
        .record_attempts(&[])
        .await
        .expect("record_attempts of nothing");

    expected.sort_by(|a, b| a.start.total_cmp(&b.start));
    let actual = store
        .attempts_of_run("at-run")
        .await
        .expect("attempts_of_run");
    assert_eq!(actual.len(), expected.len(), "every attempt is recorded");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e, "attempt reads back as recorded, in start order");
    }
}

/// A result delivered twice is recorded once (the first delivery wins), and
/// attempts stay with their run.
pub async fn attempts_are_recorded_once(store: &dyn Store) {
    begin(store, "once-1", 1_700_000_200.0).await;
    begin(store, "once-2", 1_700_000_201.0).await;
    let first = [
        attempt("once-1", "s", "t1", Outcome::Fail, 1_700_000_200.0, 1.0),
        attempt("once-1", "s", "t2", Outcome::Pass, 1_700_000_200.5, 1.0),
    ];
    store
        .record_attempts(&first)
        .await
        .expect("record_attempts");
    let mut replay = first.to_vec();
    replay[0].outcome = Outcome::Pass;
    let mut retry = attempt("once-1", "s", "t1", Outcome::Pass, 1_700_000_202.0, 1.0);
    retry.attempt = 2;
    replay.push(retry.clone());
    store
        .record_attempts(&replay)
        .await
        .expect("record_attempts replayed");
    let other = attempt("once-2", "s", "t1", Outcome::Pass, 1_700_000_203.0, 1.0);
    store
        .record_attempts(std::slice::from_ref(&other))
        .await
        .expect("record_attempts for another run");

    let mut expected = first.to_vec();
    expected.push(retry);
    assert_eq!(
        store
            .attempts_of_run("once-1")
            .await
            .expect("attempts_of_run"),
        expected
    );
    assert_eq!(
        store
            .attempts_of_run("once-2")
            .await
            .expect("attempts_of_run"),
        [other]
    );
}

/// A batch naming an unknown run is refused whole.
pub async fn record_attempts_is_atomic(store: &dyn Store) {
    begin(store, "atomic", 1_700_000_300.0).await;
    let batch = [
        attempt("atomic", "s", "ok", Outcome::Pass, 1_700_000_300.0, 1.0),
        attempt(
            "atomic-missing",
            "s",
            "ok",
            Outcome::Pass,
            1_700_000_301.0,
            1.0,
        ),
    ];
    let err = store
        .record_attempts(&batch)
        .await
        .expect_err("recording for an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "atomic-missing"),
        "{err:?}"
    );
    assert!(
        store
            .attempts_of_run("atomic")
            .await
            .expect("attempts_of_run")
            .is_empty(),
        "nothing of a refused batch is kept"
    );
    assert_eq!(
        estimate(store, "s", "ok").await,
        None,
        "a refused batch leaves no estimate"
    );
}

/// Estimates are medians of the newest timed (pass/fail) attempts.
pub async fn medians_of_recent_timed_attempts(store: &dyn Store) {
    begin(store, "med-1", 1_800_000_000.0).await;
    begin(store, "med-2", 1_800_001_000.0).await;
    let suite = "med";
    let mut t = 1_800_000_000.0;
    let mut next = || {
        t += 1.0;
        t
    };
    let mut batch = Vec::new();
    for d in [3.0, 1.0, 2.0] {
        batch.push(attempt("med-1", suite, "odd", Outcome::Pass, next(), d));
    }
    for d in [10.0, 1.0, 3.0, 2.0] {
        batch.push(attempt("med-1", suite, "even", Outcome::Pass, next(), d));
    }
    batch.push(attempt(
        "med-1",
        suite,
        "single",
        Outcome::Pass,
        next(),
        4.0,
    ));
    for (o, d) in [
        (Outcome::Fail, 5.0),
        (Outcome::Pass, 1.0),
        (Outcome::Pass, 9.0),
    ] {
        batch.push(attempt("med-1", suite, "with-fail", o, next(), d));
    }
    for (o, d) in [
        (Outcome::Pass, 2.0),
        (Outcome::Skip, 0.0),
        (Outcome::Timeout, 100.0),
        (Outcome::Crash, 50.0),
        (Outcome::Lost, 70.0),
        (Outcome::Pass, 4.0),
    ] {
        batch.push(attempt("med-1", suite, "untimed-excluded", o, next(), d));
    }
    for o in [
        Outcome::Skip,
        Outcome::Timeout,
        Outcome::Crash,
        Outcome::Lost,
    ] {
        batch.push(attempt("med-1", suite, "never-timed", o, next(), 3.0));
    }
    batch.push(attempt(
        "med-1",
        "other-suite",
        "odd",
        Outcome::Pass,
        next(),
        42.0,
    ));
    // The newest window of attempts, recorded before older ones that must not count.
    let window = DEFAULT_ESTIMATE_WINDOW;
    for i in 0..window {
        batch.push(attempt(
            "med-2",
            suite,
            "windowed",
            Outcome::Pass,
            1_800_001_000.0 + i as f64,
            (i + 1) as f64,
        ));
    }
    // Distinct repetitions keep the attempts of one test apart.
    for (i, a) in batch.iter_mut().enumerate() {
        a.repeat = i as u32;
    }
    store
        .record_attempts(&batch)
        .await
        .expect("record_attempts");
    let older: Vec<_> = (0..5)
        .map(|i| {
            let mut a = attempt(
                "med-1",
                suite,
                "windowed",
                Outcome::Pass,
                1_800_000_500.0 + f64::from(i),
                1000.0,
            );
            a.repeat = 1000 + i;
            a
        })
        .collect();
    store
        .record_attempts(&older)
        .await
        .expect("record_attempts");
    // A later run adds to a test's history.
    store
        .record_attempts(&[attempt(
            "med-2",
            suite,
            "single",
            Outcome::Pass,
            1_800_001_500.0,
            6.0,
        )])
        .await
        .expect("record_attempts");

    assert_close(estimate(store, suite, "odd").await, 2.0, "odd count");
    assert_close(estimate(store, suite, "even").await, 2.5, "even count");
    assert_close(
        estimate(store, suite, "single").await,
        5.0,
        "two attempts across runs",
    );
    assert_close(
        estimate(store, suite, "with-fail").await,
        5.0,
        "failures are timed",
    );
    assert_close(
        estimate(store, suite, "untimed-excluded").await,
        3.0,
        "skip/timeout/crash/lost excluded",
    );
    assert_eq!(
        estimate(store, suite, "never-timed").await,
        None,
        "no timed attempt, no estimate"
    );
    assert_close(
        estimate(store, "other-suite", "odd").await,
        42.0,
        "same name in another suite is another test",
    );
    let expected_window = (window as f64 + 1.0) / 2.0;
    assert_close(
        estimate(store, suite, "windowed").await,
        expected_window,
        "only the newest window counts",
    );

    let asked = [
        TestId::new(suite, "odd"),
        TestId::new(suite, "odd"),
        TestId::new(suite, "even"),
        TestId::new(suite, "never-timed"),
        TestId::new(suite, "unknown"),
        TestId::new("unknown-suite", "odd"),
    ];
    let estimates = store
        .duration_estimates(&asked)
        .await
        .expect("duration_estimates");
    let mut keys: Vec<_> = estimates.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [TestId::new(suite, "even"), TestId::new(suite, "odd")],
        "batched lookup answers known timed tests only"
    );
    assert_close(
        estimates.get(&asked[0]).map(Duration::as_secs_f64),
        2.0,
        "batched odd",
    );
}

/// Thousands of tests in one batch and one lookup (more than one statement's
/// worth of parameters) all get the right estimate.
pub async fn estimates_for_many_tests(store: &dyn Store) {
    const N: usize = 5_000;
    begin(store, "many", 1_900_000_000.0).await;
    let duration = |i: usize| (i % 97) as f64 * 0.25 + 0.5;
    let suite = |i: usize| if i % 2 == 0 { "many-a" } else { "many-b" };
    let batch: Vec<_> = (0..N)
        .map(|i| {
            attempt(
                "many",
                suite(i),
                &format!("test_{i}"),
                Outcome::Pass,
                1_900_000_000.0 + i as f64 * 0.001,
                duration(i),
            )
        })
        .collect();
    store
        .record_attempts(&batch)
        .await
        .expect("record_attempts");
    let mut asked: Vec<_> = (0..N)
        .map(|i| TestId::new(suite(i), format!("test_{i}")))
        .collect();
    asked.extend((0..100).map(|i| TestId::new("many-a", format!("absent_{i}"))));
    let estimates = store
        .duration_estimates(&asked)
        .await
        .expect("duration_estimates");
    assert_eq!(estimates.len(), N, "one estimate per known test");
    for (i, id) in asked.iter().take(N).enumerate() {
        assert_close(
            estimates.get(id).map(Duration::as_secs_f64),
            duration(i),
            "many tests",
        );
    }
    assert_eq!(
        store
            .attempts_of_run("many")
            .await
            .expect("attempts_of_run")
            .len(),
        N
    );
}

/// A coordinator records each finished attempt as it arrives: a thousand
/// one-attempt batches (one transaction each) all land, and a batch
/// delivered twice is still recorded once.
pub async fn many_small_batches(store: &dyn Store) {
    const N: u32 = 1_000;
    begin(store, "small", 1_950_000_000.0).await;
    let started = Instant::now();
    for i in 0..N {
        let mut a = attempt(
            "small",
            "small",
            &format!("t{}", i % 100),
            Outcome::Pass,
            1_950_000_000.0 + f64::from(i),
            0.5,
        );
        a.repeat = i / 100;
        store
            .record_attempts(std::slice::from_ref(&a))
            .await
            .expect("record_attempts of one attempt");
        if i % 10 == 0 {
            store
                .record_attempts(std::slice::from_ref(&a))
                .await
                .expect("record_attempts redelivered");
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{N} one-attempt record_attempts calls: {elapsed:?}");
    assert_eq!(
        store
            .attempts_of_run("small")
            .await
            .expect("attempts_of_run")
            .len(),
        N as usize,
        "every one-attempt batch is recorded once"
    );
    // Far above what either adapter needs (well under a second on SQLite in
    // release builds); catches a per-call cost such as an fsync or a
    // reconnect on every call.
    assert!(
        elapsed < Duration::from_secs(30),
        "{N} small batches took {elapsed:?}"
    );
}

fn queued(run_id: &str, submitted: f64, spec: &str) -> QueuedRun {
    QueuedRun {
        run_id: run_id.to_owned(),
        spec: spec.to_owned(),
        submitted,
    }
}

async fn open_runs(store: &dyn Store) -> Vec<QueuedRun> {
    store.open_queued_runs().await.expect("open_queued_runs")
}

/// Queued runs read back as saved, oldest submitted first (ties by id),
/// until closed; ids are unique and closing is idempotent.
pub async fn queued_runs_round_trip(store: &dyn Store) {
    assert!(open_runs(store).await.is_empty(), "a new store queues runs");
    let b = queued(
        "q-b",
        1_700_000_200.5,
        r#"{"tests":["a","b"],"repeat":3,"note":"it's \"quoted\"\n"}"#,
    );
    let a = queued("q-a", 1_700_000_100.25, "{}");
    let d = queued("q-d", 1_700_000_100.25, r#"{"who":"テスト ü"}"#);
    let c = queued("q-c", 1_700_000_300.0, "");
    for run in [&b, &d, &c, &a] {
        store.save_queued_run(run).await.expect("save_queued_run");
    }
    assert_eq!(
        open_runs(store).await,
        [a.clone(), d.clone(), b.clone(), c.clone()],
        "oldest submitted first, ties by run id, every field as saved"
    );

    let err = store
        .save_queued_run(&queued("q-b", 1.0, "other"))
        .await
        .expect_err("saving a queued run twice");
    assert!(
        matches!(err, StoreError::DuplicateRun(ref id) if id == "q-b"),
        "{err:?}"
    );

    store
        .close_queued_run("q-b")
        .await
        .expect("close_queued_run");
    assert_eq!(
        open_runs(store).await,
        [a.clone(), d.clone(), c.clone()],
        "a closed run is not open (and the duplicate changed nothing)"
    );
    store
        .close_queued_run("q-b")
        .await
        .expect("closing a closed run again");
    let err = store
        .close_queued_run("q-none")
        .await
        .expect_err("closing an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "q-none"),
        "{err:?}"
    );
    let err = store
        .save_queued_run(&b)
        .await
        .expect_err("saving a closed run's id again");
    assert!(matches!(err, StoreError::DuplicateRun(_)), "{err:?}");

    for id in ["q-a", "q-c", "q-d"] {
        store.close_queued_run(id).await.expect("close_queued_run");
    }
    assert!(open_runs(store).await.is_empty());
}

fn lease(run_id: &str, lease_id: u64, token: u64, slot: u32) -> LeaseRecord {
    LeaseRecord {
        run_id: run_id.to_owned(),
        lease_id,
        token,
        worker_id: format!("worker-{slot}"),
        slot,
        items: format!(r#"[{{"suite":"py","test":"t{lease_id}"}}]"#),
        deadline: 1_700_000_000.5 + lease_id as f64,
    }
}

async fn all_leases(store: &dyn Store, run_id: Option<&str>) -> Vec<LeaseRecord> {
    store.leases(run_id).await.expect("leases")
}

/// Leases read back as saved, are replaced by key, dropped one by one, and
/// go with their run when it closes.
pub async fn leases_round_trip(store: &dyn Store) {
    store
        .save_queued_run(&queued("l-1", 1_700_000_010.0, "{}"))
        .await
        .expect("save_queued_run");
    store
        .save_queued_run(&queued("l-2", 1_700_000_005.0, "{}"))
        .await
        .expect("save_queued_run");
    let (one_1, one_2, two_7) = (
        lease("l-1", 1, 10, 0),
        lease("l-1", 2, 11, 3),
        lease("l-2", 7, 12, 1),
    );
    for l in [&one_2, &two_7, &one_1] {
        store.save_lease(l).await.expect("save_lease");
    }
    assert_eq!(
        all_leases(store, None).await,
        [two_7.clone(), one_1.clone(), one_2.clone()],
        "leases by run (oldest submitted first), then lease id"
    );
    assert_eq!(
        all_leases(store, Some("l-1")).await,
        [one_1.clone(), one_2.clone()]
    );
    assert!(all_leases(store, Some("l-none")).await.is_empty());

    let renewed = LeaseRecord {
        token: 99,
        worker_id: "worker-9".to_owned(),
        slot: 9,
        items: "[]".to_owned(),
        deadline: 1_700_000_999.25,
        ..one_2.clone()
    };
    store.save_lease(&renewed).await.expect("save_lease again");
    assert_eq!(
        all_leases(store, Some("l-1")).await,
        [one_1.clone(), renewed.clone()],
        "saving a lease with the same key replaces it"
    );

    store.drop_lease("l-1", 1).await.expect("drop_lease");
    store.drop_lease("l-1", 1).await.expect("drop_lease again");
    store
        .drop_lease("l-none", 5)
        .await
        .expect("drop_lease of an unknown run");
    store
        .drop_lease("l-1", u64::MAX)
        .await
        .expect("drop_lease of an id no lease can have");
    assert_eq!(all_leases(store, Some("l-1")).await, [renewed]);

    let err = store
        .save_lease(&lease("l-none", 1, 1, 0))
        .await
        .expect_err("a lease of an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "l-none"),
        "{err:?}"
    );

    let max = i64::MAX as u64;
    let big = lease("l-2", max, max, u32::MAX);
    store
        .save_lease(&big)
        .await
        .expect("save_lease of the largest ids");
    for (lease_id, token) in [(u64::MAX, 1), (1, max + 1)] {
        let err = store
            .save_lease(&lease("l-2", lease_id, token, 0))
            .await
            .expect_err("an id past i64::MAX");
        assert!(matches!(err, StoreError::OutOfRange { .. }), "{err:?}");
    }
    assert_eq!(
        all_leases(store, Some("l-2")).await,
        [two_7.clone(), big.clone()],
        "the largest ids read back, and refused leases are not kept"
    );

    store
        .close_queued_run("l-1")
        .await
        .expect("close_queued_run");
    assert!(
        all_leases(store, Some("l-1")).await.is_empty(),
        "closing a run deletes its leases"
    );
    assert_eq!(all_leases(store, None).await, [two_7.clone(), big.clone()]);
    store
        .save_lease(&lease("l-1", 3, 13, 0))
        .await
        .expect("a lease of a closed run");
    assert!(
        all_leases(store, None)
            .await
            .iter()
            .all(|l| l.run_id == "l-2"),
        "a lease of a closed run is not kept"
    );
    store
        .close_queued_run("l-2")
        .await
        .expect("close_queued_run");
    assert!(all_leases(store, None).await.is_empty());
}

/// Reservations hand out disjoint ranges starting at 1 or later; a
/// reservation that would overflow the counter is refused.
pub async fn tokens_are_reserved_in_disjoint_ranges(store: &dyn Store) {
    let reserve = |n: u64| async move { store.reserve_tokens(n).await.expect("reserve_tokens") };
    let first = reserve(1).await;
    assert!(first >= 1, "the first token is at least 1, got {first}");
    let mut end = first + 1;
    for n in [10, 1, 1000, 3] {
        let base = reserve(n).await;
        assert!(
            base >= end,
            "range at {base} overlaps the one ending at {end}"
        );
        end = base + n;
    }
    let empty = reserve(0).await;
    assert!(empty >= end, "an empty range starts past the last one");
    for n in [u64::MAX, i64::MAX as u64] {
        let err = store
            .reserve_tokens(n)
            .await
            .expect_err("reserving past i64::MAX tokens");
        assert!(matches!(err, StoreError::OutOfRange { .. }), "{err:?}");
    }
    let after = reserve(2).await;
    assert!(after >= end, "a refused reservation breaks nothing");
}

/// One coordinator per store: a second lock, through the same handle or
/// another, is refused until the first guard goes.
pub async fn coordinator_lock_is_exclusive(a: &dyn Store, b: &dyn Store) {
    let held = a.lock_coordinator().await.expect("lock a fresh store");
    for (who, store) in [("the same handle", a), ("another handle", b)] {
        let err = store
            .lock_coordinator()
            .await
            .expect_err("a second coordinator lock");
        assert!(matches!(err, StoreError::Locked { .. }), "{who}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("another coordinator is using this store"),
            "{who}: {msg}"
        );
    }

    drop(held);
    // Dropping frees the lock; a PostgreSQL server notices the closed
    // session a moment later.
    let again = lock_within(b, Duration::from_secs(10)).await;
    let err = a
        .lock_coordinator()
        .await
        .expect_err("b holds the lock now");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

    again.release().await;
    let third = a
        .lock_coordinator()
        .await
        .expect("a released lock is free at once");
    third.release().await;
}

/// Takes the coordinator lock, retrying while it is still held, for up to
/// `limit`.
async fn lock_within(store: &dyn Store, limit: Duration) -> CoordinatorLock {
    let start = Instant::now();
    loop {
        match store.lock_coordinator().await {
            Ok(lock) => return lock,
            Err(StoreError::Locked { .. }) if start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the lock was not freed within {limit:?}: {e}"),
        }
    }
}

/// Concurrent reservations through several handles get disjoint ranges.
pub async fn concurrent_reservations_never_overlap(stores: &[Arc<dyn Store>]) {
    const TASKS_PER_STORE: u64 = 4;
    const CALLS: u64 = 25;
    let mut tasks = tokio::task::JoinSet::new();
    for store in stores {
        for t in 0..TASKS_PER_STORE {
            let store = Arc::clone(store);
            tasks.spawn(async move {
                let mut ranges = Vec::new();
                for i in 0..CALLS {
                    let n = 1 + (t * 7 + i) % 5;
                    let base = store.reserve_tokens(n).await.expect("reserve_tokens");
                    ranges.push((base, n));
                }
                ranges
            });
        }
    }
    let mut ranges = Vec::new();
    while let Some(done) = tasks.join_next().await {
        ranges.extend(done.expect("reserving task"));
    }
    assert_eq!(
        ranges.len() as u64,
        stores.len() as u64 * TASKS_PER_STORE * CALLS
    );
    ranges.sort_unstable();
    assert!(
        ranges[0].0 >= 1,
        "tokens start at 1 or later: {:?}",
        ranges[0]
    );
    for w in ranges.windows(2) {
        let ((base, n), (next, _)) = (w[0], w[1]);
        assert!(base + n <= next, "ranges {:?} and {:?} overlap", w[0], w[1]);
    }
}

// ---- flaky statistics ---------------------------------------------------------

/// A run's environment, seed (every `u64`, through the signed column) and
/// kind read back as begun.
pub async fn environment_seed_and_kind_round_trip(store: &dyn Store) {
    let seeds = [
        None,
        Some(0),
        Some(1),
        Some(i64::MAX as u64),
        Some(i64::MAX as u64 + 1),
        Some(u64::MAX),
    ];
    let environments = ["", "linux-x86_64", "macos-aarch64 (ü)"];
    let kinds = [KIND_RUN, KIND_STRESS, KIND_BISECT, "a kind of its own"];
    let mut begun = Vec::new();
    for (i, seed) in seeds.into_iter().enumerate() {
        let mut record = run(&format!("esk-{i}"), 3e9 + i as f64);
        record.seed = seed;
        record.environment = environments[i % environments.len()].to_owned();
        record.kind = kinds[i % kinds.len()].to_owned();
        store.begin_run(&record).await.expect("begin_run");
        begun.push(record);
    }
    let listed = store.runs(usize::MAX).await.expect("runs");
    for record in &begun {
        let found = listed
            .iter()
            .find(|r| r.run.run_id == record.run_id)
            .unwrap_or_else(|| panic!("run {} is listed", record.run_id));
        assert_eq!(
            &found.run, record,
            "environment, seed and kind read back as begun"
        );
    }
}

/// The test data of the history checks: runs far later than any other
/// check's attempts, and attempts recorded in several batches, out of
/// order.
struct HistoryData {
    runs: Vec<RunRecord>,
    /// In recording order.
    attempts: Vec<AttemptRecord>,
}

/// The start of the history checks' attempts; no other check records
/// attempts this late.
const HISTORY_T: f64 = 6e9;

impl HistoryData {
    fn new() -> Self {
        let t = HISTORY_T;
        let mut runs = Vec::new();
        for (id, offset, kind, environment, seed) in [
            ("h-run", 0.0, KIND_RUN, "linux-x86_64", None),
            (
                "h-stress",
                100.0,
                KIND_STRESS,
                "macos-aarch64",
                Some(u64::MAX),
            ),
            ("h-bisect", 200.0, KIND_BISECT, "linux-x86_64", Some(7)),
            ("h-empty", 300.0, KIND_RUN, "linux-x86_64", None),
        ] {
            let mut r = run(id, t + offset);
            r.kind = kind.to_owned();
            r.environment = environment.to_owned();
            r.seed = seed;
            runs.push(r);
        }
        let mut attempts = Vec::new();
        let mut add = |run_id: &str,
                       test: (&str, &str),
                       outcome: Outcome,
                       final_status: Option<FinalStatus>,
                       start: f64,
                       (attempt_no, repeat, slot): (u32, u32, u32)| {
            let mut a = attempt(run_id, test.0, test.1, outcome, t + start, 0.5);
            a.final_status = final_status;
            a.attempt = attempt_no;
            a.repeat = repeat;
            a.slot = slot;
            a.worker = format!("worker-{}", slot % 2);
            a.commit = (slot != 3).then(|| format!("commit-{run_id}"));
            a.dirty = slot == 2;
            attempts.push(a);
        };
        let (one, two, other) = (
            ("hist-a", "test_one"),
            ("hist-a", "test_two"),
            ("hist-a", "other"),
        );
        let (b_one, b_pct) = (("hist-b", "test_one"), ("hist-b", "50%_done"));
        // The stress run first: recording order is not start order.
        for i in 0..10 {
            let (outcome, status) = if i % 3 == 1 {
                (Outcome::Fail, FinalStatus::Failed)
            } else {
                (Outcome::Pass, FinalStatus::Passed)
            };
            let start = 101.0 + f64::from(i);
            add("h-stress", one, outcome, Some(status), start, (1, i, i % 4));
        }
        let failed = Some(FinalStatus::Failed);
        add("h-stress", b_one, Outcome::Crash, failed, 150.0, (1, 0, 3));
        add("h-stress", b_pct, Outcome::Pass, None, 149.5, (1, 0, 2));
        add(
            "h-run",
            one,
            Outcome::Pass,
            Some(FinalStatus::Passed),
            1.0,
            (1, 0, 0),
        );
        add("h-run", two, Outcome::Fail, None, 2.0, (1, 0, 0));
        add(
            "h-run",
            two,
            Outcome::Pass,
            Some(FinalStatus::Flaky),
            3.0,
            (2, 0, 1),
        );
        add("h-run", other, Outcome::Fail, failed, 4.0, (1, 0, 2));
        add(
            "h-run",
            b_one,
            Outcome::Skip,
            Some(FinalStatus::Skipped),
            5.0,
            (1, 0, 3),
        );
        add("h-run", one, Outcome::Timeout, failed, 6.0, (1, 1, 0));
        add("h-bisect", one, Outcome::Fail, failed, 201.0, (1, 0, 0));
        // Recorded later with the same start: comes after it.
        add("h-bisect", two, Outcome::Pass, None, 201.0, (1, 0, 1));
        Self { runs, attempts }
    }

    async fn record(&self, store: &dyn Store) {
        for r in &self.runs {
            store.begin_run(r).await.expect("begin_run");
        }
        let (last, batches) = self.attempts.split_last().expect("attempts");
        for batch in batches.chunks(7) {
            store.record_attempts(batch).await.expect("record_attempts");
        }
        store
            .record_attempts(std::slice::from_ref(last))
            .await
            .expect("record_attempts");
    }

    /// Every attempt as a history row, oldest first (ties in recording
    /// order).
    fn rows(&self) -> Vec<HistoryRow> {
        let mut rows: Vec<(usize, HistoryRow)> = self
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let r = self
                    .runs
                    .iter()
                    .find(|r| r.run_id == a.run_id)
                    .expect("the attempt's run");
                (i, history_row(a, r))
            })
            .collect();
        rows.sort_by(|(i, a), (j, b)| a.start.total_cmp(&b.start).then(i.cmp(j)));
        rows.into_iter().map(|(_, row)| row).collect()
    }

    /// What `query` must return, computed from the data alone.
    fn expected(&self, query: &HistoryQuery) -> Vec<HistoryRow> {
        let mut rows: Vec<HistoryRow> = self
            .rows()
            .into_iter()
            .filter(|r| {
                query
                    .tests
                    .as_ref()
                    .is_none_or(|t| t.contains(&r.test_id()))
                    && query.suite.as_ref().is_none_or(|s| *s == r.suite)
                    && query
                        .name_contains
                        .as_ref()
                        .is_none_or(|n| r.test.contains(n.as_str()))
                    && query.since.is_none_or(|s| r.start >= s)
                    && query.kinds.as_ref().is_none_or(|k| k.contains(&r.kind))
            })
            .collect();
        if let Some(limit) = query.limit {
            rows.drain(..rows.len().saturating_sub(limit));
        }
        rows
    }
}

/// The history row of attempt `a` of run `r`.
fn history_row(a: &AttemptRecord, r: &RunRecord) -> HistoryRow {
    HistoryRow {
        run_id: a.run_id.clone(),
        suite: a.suite.clone(),
        test: a.test.clone(),
        commit: a.commit.clone(),
        dirty: a.dirty,
        environment: r.environment.clone(),
        kind: r.kind.clone(),
        outcome: a.outcome,
        final_status: a.final_status,
        attempt: a.attempt,
        repeat: a.repeat,
        slot: a.slot,
        worker: a.worker.clone(),
        start: a.start,
        end: a.end,
    }
}

async fn history(store: &dyn Store, query: &HistoryQuery) -> Vec<HistoryRow> {
    store.history(query).await.expect("history")
}

/// `history` filters by tests, suite, name, time and run kind, returns rows
/// oldest first with every field, and with a limit the newest rows.
pub async fn history_filters_and_order(store: &dyn Store) {
    let data = HistoryData::new();
    data.record(store).await;
    let t = HISTORY_T;
    let tests = |ids: &[(&str, &str)]| Some(ids.iter().map(|(s, n)| TestId::new(*s, *n)).collect());
    let strings = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let queries = [
        (
            "one test",
            HistoryQuery {
                tests: tests(&[("hist-a", "test_one")]),
                ..HistoryQuery::default()
            },
        ),
        (
            "several tests, unknown ones ignored",
            HistoryQuery {
                tests: tests(&[
                    ("hist-b", "test_one"),
                    ("hist-a", "test_one"),
                    ("hist-a", "no_such_test"),
                    ("no-such-suite", "test_one"),
                    ("hist-a", "test_one"),
                ]),
                ..HistoryQuery::default()
            },
        ),
        (
            "a suite",
            HistoryQuery {
                suite: Some("hist-a".to_owned()),
                ..HistoryQuery::default()
            },
        ),
        (
            "a suite and a name",
            HistoryQuery {
                suite: Some("hist-b".to_owned()),
                name_contains: Some("one".to_owned()),
                ..HistoryQuery::default()
            },
        ),
        (
            "a name in every suite, since",
            HistoryQuery {
                name_contains: Some("test_".to_owned()),
                since: Some(t),
                ..HistoryQuery::default()
            },
        ),
        (
            "a name with LIKE wildcards is plain text",
            HistoryQuery {
                name_contains: Some("%_".to_owned()),
                since: Some(t),
                ..HistoryQuery::default()
            },
        ),
        (
            "names are matched case-sensitively",
            HistoryQuery {
                name_contains: Some("TEST_".to_owned()),
                since: Some(t),
                ..HistoryQuery::default()
            },
        ),
        (
            "since includes its bound",
            HistoryQuery {
                since: Some(t + 150.0),
                ..HistoryQuery::default()
            },
        ),
        (
            "one kind",
            HistoryQuery {
                since: Some(t),
                kinds: strings(&[KIND_STRESS]),
                ..HistoryQuery::default()
            },
        ),
        (
            "two kinds",
            HistoryQuery {
                since: Some(t),
                kinds: strings(&[KIND_BISECT, KIND_RUN]),
                ..HistoryQuery::default()
            },
        ),
        (
            "the newest three",
            HistoryQuery {
                since: Some(t),
                limit: Some(3),
                ..HistoryQuery::default()
            },
        ),
        (
            "the newest of a suite",
            HistoryQuery {
                suite: Some("hist-a".to_owned()),
                limit: Some(4),
                ..HistoryQuery::default()
            },
        ),
        (
            "a limit above the count",
            HistoryQuery {
                since: Some(t),
                limit: Some(1_000),
                ..HistoryQuery::default()
            },
        ),
        (
            "every filter at once",
            HistoryQuery {
                tests: tests(&[("hist-a", "test_one"), ("hist-b", "test_one")]),
                suite: Some("hist-a".to_owned()),
                name_contains: Some("one".to_owned()),
                since: Some(t + 100.0),
                kinds: strings(&[KIND_STRESS, KIND_RUN]),
                limit: Some(2),
            },
        ),
        (
            "no tests",
            HistoryQuery {
                tests: Some(Vec::new()),
                ..HistoryQuery::default()
            },
        ),
        (
            "no kinds",
            HistoryQuery {
                since: Some(t),
                kinds: Some(Vec::new()),
                ..HistoryQuery::default()
            },
        ),
        (
            "limit 0",
            HistoryQuery {
                since: Some(t),
                limit: Some(0),
                ..HistoryQuery::default()
            },
        ),
        (
            "an unknown suite",
            HistoryQuery {
                suite: Some("no-such-suite".to_owned()),
                ..HistoryQuery::default()
            },
        ),
    ];
    for (what, query) in &queries {
        let expected = data.expected(query);
        assert_eq!(history(store, query).await, expected, "history: {what}");
    }
    // The model is not vacuous: the checks above see what they mean to.
    let count = |i: usize| data.expected(&queries[i].1).len();
    assert_eq!(
        (count(0), count(5), count(6), count(7)),
        (13, 1, 0, 3),
        "rows the model expects"
    );
    let newest: Vec<f64> = history(store, &queries[10].1)
        .await
        .iter()
        .map(|r| r.start - t)
        .collect();
    assert_eq!(
        newest,
        [150.0, 201.0, 201.0],
        "the newest three, oldest first"
    );

    // No filter at all: every attempt in the store, oldest first.
    let everything = history(store, &HistoryQuery::default()).await;
    let mut recorded = 0;
    for r in store.runs(usize::MAX).await.expect("runs") {
        recorded += store
            .attempts_of_run(&r.run.run_id)
            .await
            .expect("attempts_of_run")
            .len();
    }
    assert_eq!(
        everything.len(),
        recorded,
        "an empty query returns every attempt"
    );
    assert!(
        everything.windows(2).all(|w| w[0].start <= w[1].start),
        "history is oldest first"
    );
    assert_eq!(
        everything[everything.len() - data.attempts.len()..],
        data.rows(),
        "the newest attempts are the history checks' own, every field as recorded"
    );
}

/// Thousands of asked tests (more than one statement's worth of keys) read
/// back every row in order, and a limit picks the newest across statements.
pub async fn history_across_statement_chunks(store: &dyn Store) {
    const N: u32 = 4_500;
    let t = 5.5e9;
    let mut r = run("chunks", t);
    r.kind = KIND_STRESS.to_owned();
    store.begin_run(&r).await.expect("begin_run");
    let mut attempts = Vec::new();
    for i in 0..N {
        // Newest first by name, and every seventh test again later on, so
        // that the newest rows come from every statement.
        let name = format!("t{i:05}");
        let mut a = attempt("chunks", "chunk", &name, Outcome::Pass, 0.0, 0.1);
        a.start = t + f64::from(N - i) * 0.001;
        a.end = a.start + 0.1;
        attempts.push(a.clone());
        if i % 7 == 0 {
            a.repeat = 1;
            a.outcome = Outcome::Fail;
            a.start = t + 10.0 + f64::from(i) * 0.001;
            a.end = a.start + 0.1;
            attempts.push(a);
        }
    }
    store
        .record_attempts(&attempts)
        .await
        .expect("record_attempts");
    let mut expected: Vec<HistoryRow> = attempts.iter().map(|a| history_row(a, &r)).collect();
    expected.sort_by(|a, b| a.start.total_cmp(&b.start));

    let mut asked: Vec<TestId> = (0..N)
        .map(|i| TestId::new("chunk", format!("t{i:05}")))
        .collect();
    asked.push(TestId::new("chunk", "absent"));
    let all = HistoryQuery {
        tests: Some(asked),
        ..HistoryQuery::default()
    };
    assert_eq!(
        history(store, &all).await,
        expected,
        "every row, oldest first"
    );
    let newest = HistoryQuery {
        limit: Some(700),
        ..all.clone()
    };
    assert_eq!(
        history(store, &newest).await,
        expected[expected.len() - 700..],
        "the newest rows across statements"
    );
    let by_name = HistoryQuery {
        tests: None,
        suite: Some("chunk".to_owned()),
        name_contains: Some("t0".to_owned()),
        since: Some(t),
        kinds: Some(vec![KIND_STRESS.to_owned()]),
        limit: Some(5),
    };
    assert_eq!(
        history(store, &by_name).await,
        expected[expected.len() - 5..],
        "tests found by name, across statements"
    );
}

/// `run_health` counts every execution of whole runs (attempts with a final
/// status) and the failed ones, in the order asked, without unknown runs.
pub async fn run_health_counts_whole_runs(store: &dyn Store) {
    let t = 5.2e9;
    for (i, id) in ["rh-mixed", "rh-broken", "rh-empty"]
        .into_iter()
        .enumerate()
    {
        begin(store, id, t + i as f64).await;
    }
    let mut attempts = Vec::new();
    let statuses = [
        (Outcome::Pass, Some(FinalStatus::Passed)),
        (Outcome::Pass, Some(FinalStatus::Passed)),
        (Outcome::Pass, Some(FinalStatus::Passed)),
        (Outcome::Fail, Some(FinalStatus::Failed)),
        (Outcome::Timeout, Some(FinalStatus::Failed)),
        (Outcome::Pass, Some(FinalStatus::Flaky)),
        (Outcome::Skip, Some(FinalStatus::Skipped)),
        (Outcome::Fail, None),
        (Outcome::Crash, None),
    ];
    for (i, (outcome, status)) in statuses.into_iter().enumerate() {
        let mut a = attempt(
            "rh-mixed",
            "rh",
            &format!("t{i}"),
            outcome,
            t + i as f64,
            1.0,
        );
        a.final_status = status;
        attempts.push(a);
    }
    for i in 0..4 {
        let mut a = attempt("rh-broken", "rh", &format!("t{i}"), Outcome::Crash, t, 1.0);
        a.final_status = Some(FinalStatus::Failed);
        attempts.push(a);
    }
    attempts.push(attempt("rh-broken", "rh", "lost", Outcome::Lost, t, 1.0));
    store
        .record_attempts(&attempts)
        .await
        .expect("record_attempts");

    let health = |run_id: &str, executions: u64, failed: u64| RunHealthRow {
        run_id: run_id.to_owned(),
        executions,
        failed,
    };
    let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        store
            .run_health(&ids(&[
                "rh-broken",
                "rh-none",
                "rh-mixed",
                "rh-empty",
                "rh-mixed"
            ]))
            .await
            .expect("run_health"),
        [
            health("rh-broken", 4, 4),
            health("rh-mixed", 7, 2),
            health("rh-empty", 0, 0),
        ],
        "whole runs, in the order asked, unknown and repeated ids left out"
    );
    assert!(
        store.run_health(&[]).await.expect("run_health").is_empty(),
        "no runs asked, none answered"
    );
    let mut many: Vec<String> = (0..2_500).map(|i| format!("rh-unknown-{i}")).collect();
    many.push("rh-mixed".to_owned());
    assert_eq!(
        store.run_health(&many).await.expect("run_health"),
        [health("rh-mixed", 7, 2)],
        "ids across statements"
    );
}

/// `slot_order` finds a test's first failing attempt in a run and what its
/// worker's slot ran before it, leaving out later attempts, other slots of
/// the worker, the same slot of other workers and other runs.
pub async fn slot_order_of_a_failure(store: &dyn Store) {
    let t = 5e9;
    begin(store, "so-run", t).await;
    begin(store, "so-other", t - 10.0).await;
    let at = |run_id: &str, test: &str, outcome: Outcome, start: f64, worker: &str, slot: u32| {
        let mut a = attempt(run_id, "so", test, outcome, t + start, 0.25);
        a.worker = worker.to_owned();
        a.slot = slot;
        a
    };
    let repeat = |mut a: AttemptRecord, r: u32| {
        a.repeat = r;
        a
    };
    let (w1, w2) = ("worker-1", "worker-2");
    // Worker 1, slot 0: what ran before the failure, the failure, and after.
    let first = at("so-run", "a", Outcome::Pass, 1.0, w1, 0);
    let skipped = at("so-run", "b", Outcome::Skip, 2.0, w1, 0);
    let passed_first = at("so-run", "target", Outcome::Pass, 3.0, w1, 0);
    let tie_before = at("so-run", "tie-before", Outcome::Pass, 5.0, w1, 0);
    let failure = repeat(at("so-run", "target", Outcome::Fail, 5.0, w1, 0), 1);
    let tie_after = at("so-run", "tie-after", Outcome::Pass, 5.0, w1, 0);
    let after = at("so-run", "c", Outcome::Pass, 6.0, w1, 0);
    let later_failure = repeat(at("so-run", "target", Outcome::Timeout, 7.0, w1, 0), 2);
    // Elsewhere.
    let other_slot = at("so-run", "x", Outcome::Pass, 2.5, w1, 1);
    let other_worker = at("so-run", "z", Outcome::Pass, 1.5, w2, 0);
    let passed_elsewhere = repeat(at("so-run", "target", Outcome::Pass, 0.5, w2, 0), 3);
    let failed_later_elsewhere = repeat(at("so-run", "target", Outcome::Crash, 5.5, w2, 1), 4);
    let other_run = at("so-other", "target", Outcome::Fail, 0.1, w1, 0);
    let other_run_before = at("so-other", "a", Outcome::Pass, 0.05, w1, 0);
    // A test whose first non-passing attempt is a skip, then a crash.
    let crashy_skip = at("so-run", "crashy", Outcome::Skip, 1.0, w2, 1);
    let crashy_crash = repeat(at("so-run", "crashy", Outcome::Crash, 3.0, w2, 1), 1);

    for batch in [
        vec![
            later_failure.clone(),
            other_slot.clone(),
            first.clone(),
            other_worker.clone(),
            tie_before.clone(),
            other_run.clone(),
            crashy_crash.clone(),
        ],
        vec![
            failure.clone(),
            skipped.clone(),
            passed_elsewhere.clone(),
            other_run_before.clone(),
        ],
        vec![
            tie_after.clone(),
            after.clone(),
            passed_first.clone(),
            failed_later_elsewhere.clone(),
            crashy_skip.clone(),
        ],
    ] {
        store
            .record_attempts(&batch)
            .await
            .expect("record_attempts");
    }
    let so_run = run("so-run", t);
    let row = |a: &AttemptRecord| history_row(a, &so_run);
    let order = |test: &str| {
        let id = TestId::new("so", test);
        async move { store.slot_order("so-run", &id).await.expect("slot_order") }
    };

    assert_eq!(
        order("target").await,
        Some(SlotOrder {
            worker: w1.to_owned(),
            slot: 0,
            failed: row(&failure),
            before: vec![
                row(&first),
                row(&skipped),
                row(&passed_first),
                row(&tie_before)
            ],
        }),
        "the first failure's slot, and what it ran before (ties by recording order)"
    );
    assert_eq!(
        order("crashy").await,
        Some(SlotOrder {
            worker: w2.to_owned(),
            slot: 1,
            failed: row(&crashy_crash),
            before: vec![row(&crashy_skip)],
        }),
        "a skip is not a failure; a crash is"
    );
    assert_eq!(order("a").await, None, "a test that only passed");
    assert_eq!(order("never-ran").await, None, "a test that never ran");
    let err = store
        .slot_order("so-none", &TestId::new("so", "target"))
        .await
        .expect_err("slot order of an unknown run");
    assert!(
        matches!(err, StoreError::UnknownRun(ref id) if id == "so-none"),
        "{err:?}"
    );
    let other = store
        .slot_order("so-other", &TestId::new("so", "target"))
        .await
        .expect("slot_order")
        .expect("the other run's failure");
    assert_eq!(
        (other.failed, other.before),
        (
            history_row(&other_run, &run("so-other", t - 10.0)),
            vec![history_row(&other_run_before, &run("so-other", t - 10.0))]
        ),
        "each run's own slot"
    );
}

/// The run that the schema-migration tests record in a store at schema
/// version 2 (before runs had an environment, a seed and a kind), as it
/// must read back once migrated: environment `""`, no seed, kind `"run"`.
pub fn schema_v2_run() -> RunRecord {
    RunRecord {
        environment: String::new(),
        seed: None,
        kind: KIND_RUN.to_owned(),
        ..run("v2-run", 1_600_000_000.0)
    }
}

/// The attempts the schema-migration tests record for [`schema_v2_run`].
pub fn schema_v2_attempts() -> Vec<AttemptRecord> {
    let mut failed = attempt("v2-run", "v2", "t1", Outcome::Fail, 1_600_000_001.0, 1.0);
    failed.final_status = Some(FinalStatus::Failed);
    let mut passed = attempt("v2-run", "v2", "t2", Outcome::Pass, 1_600_000_002.0, 1.0);
    passed.final_status = Some(FinalStatus::Passed);
    vec![failed, passed]
}

/// Checks a store that was created at schema version 2, given
/// [`schema_v2_run`] and its [`schema_v2_attempts`] then, and reopened by
/// this version: the old run and its attempts are all there, with the new
/// columns' defaults, and new runs are recorded beside them.
pub async fn schema_v2_runs_survive_migration(store: &dyn Store) {
    let old = schema_v2_run();
    let runs = store.runs(usize::MAX).await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].run, old,
        "the old run reads back, environment '' and kind 'run'"
    );
    let attempts = schema_v2_attempts();
    assert_eq!(
        store
            .attempts_of_run(&old.run_id)
            .await
            .expect("attempts_of_run"),
        attempts
    );
    let rows: Vec<HistoryRow> = attempts.iter().map(|a| history_row(a, &old)).collect();
    let query = HistoryQuery {
        kinds: Some(vec![KIND_RUN.to_owned()]),
        since: Some(0.0),
        ..HistoryQuery::default()
    };
    assert_eq!(
        history(store, &query).await,
        rows,
        "old attempts are history of kind 'run'"
    );
    assert_eq!(
        store
            .run_health(std::slice::from_ref(&old.run_id))
            .await
            .expect("run_health"),
        [RunHealthRow {
            run_id: old.run_id.clone(),
            executions: 2,
            failed: 1,
        }]
    );
    let failed = store
        .slot_order(&old.run_id, &TestId::new("v2", "t1"))
        .await
        .expect("slot_order")
        .expect("the old failure");
    assert_eq!(failed.failed, rows[0]);

    let mut new = run("v3-run", 1_600_000_100.0);
    new.seed = Some(42);
    new.kind = KIND_STRESS.to_owned();
    store
        .begin_run(&new)
        .await
        .expect("begin_run after migrating");
    let runs = store.runs(usize::MAX).await.expect("runs");
    assert_eq!(
        runs.into_iter().map(|r| r.run).collect::<Vec<_>>(),
        [new, old],
        "new runs beside the old"
    );
}
