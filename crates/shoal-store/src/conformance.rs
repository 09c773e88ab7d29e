//! The conformance suite: what every [`Store`] adapter must do, checked
//! through the trait alone so the SQLite and PostgreSQL adapters are held to
//! the same behaviour.
//!
//! Call [`run_all`] on a freshly created, empty store that uses the default
//! estimate window ([`DEFAULT_ESTIMATE_WINDOW`]). Failures panic with a
//! message naming the broken expectation.

use crate::{AttemptRecord, DEFAULT_ESTIMATE_WINDOW, RunRecord, Store, StoreError};
use shoal_core::{FinalStatus, Outcome, RunCounts, TestId};
use std::time::Duration;

/// Runs every check in turn. `store` must be empty.
pub async fn run_all(store: &dyn Store) {
    empty_store_has_nothing(store).await;
    runs_round_trip(store).await;
    runs_are_listed_newest_first(store).await;
    attempts_round_trip(store).await;
    attempts_are_recorded_once(store).await;
    record_attempts_is_atomic(store).await;
    medians_of_recent_timed_attempts(store).await;
    estimates_for_many_tests(store).await;
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
