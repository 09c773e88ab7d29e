//! Unit tests of the scheduler's policies, one behaviour per test.

use super::*;
use shoal_core::TestId;

const A: SlotId = SlotId::local(1);
const B: SlotId = SlotId::local(2);
const T0: Duration = Duration::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn test(suite: &str, name: &str, est_ms: u64) -> PlannedTest {
    PlannedTest {
        case: TestCase {
            id: TestId::new(suite, name),
            group: "g".into(),
            runner: None,
        },
        estimate: ms(est_ms),
        retries: 0,
        max_batch: 64,
        batch_overhead: Duration::ZERO,
        locality: None,
    }
}

fn with_retries(mut t: PlannedTest, retries: u32) -> PlannedTest {
    t.retries = retries;
    t
}

fn sched(tests: Vec<PlannedTest>, repeat: u32, slots: &[SlotId]) -> Scheduler {
    Scheduler::new(SchedConfig::default(), tests, repeat, slots).expect("valid plan")
}

fn names(l: &Lease) -> Vec<&str> {
    l.items.iter().map(|e| e.case.id.name.as_str()).collect()
}

/// Leases one batch on `slot` and reports `outcome` for all of it.
fn run_batch(s: &mut Scheduler, slot: SlotId, outcome: Outcome) -> Option<(Lease, Vec<Decision>)> {
    let l = s.lease(slot, T0)?;
    let ds = l
        .items
        .iter()
        .map(|e| s.report(l.id, l.token, e.exec, outcome, T0))
        .collect();
    s.release(l.id, l.token, T0);
    Some((l, ds))
}

fn in_file(file: &str, name: &str, est_ms: u64) -> PlannedTest {
    let mut t = test("py", &format!("{file}::{name}"), est_ms);
    t.locality = Some(file.to_owned());
    t.max_batch = 1;
    t
}

#[test]
fn tests_sharing_a_locality_stay_together_in_collection_order() {
    // Two files (given in collection order); a.py has more work in all, so
    // it goes first, and its tests keep their order whatever their own
    // estimates: scattered, pytest would set up a.py's fixtures repeatedly.
    let tests = vec![
        in_file("b.py", "b1", 300),
        in_file("a.py", "a1", 10),
        in_file("a.py", "a2", 400),
        in_file("b.py", "b2", 10),
        in_file("a.py", "a3", 10),
        test("py", "lone", 350),
    ];
    let mut s = sched(tests, 1, &[A]);
    let order: Vec<String> = std::iter::from_fn(|| run_batch(&mut s, A, Outcome::Pass))
        .flat_map(|(l, _)| names(&l).into_iter().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        order,
        [
            "a.py::a1", "a.py::a2", "a.py::a3", "lone", "b.py::b1", "b.py::b2"
        ],
        "groups by summed work (420, 350, 310), each in collection order"
    );
}

#[test]
fn suites_compete_by_their_head_groups_work() {
    // Suite py's head test is short, but its group is the most work: it
    // goes before suite rs's longer single test.
    let tests = vec![
        in_file("a.py", "a1", 10),
        in_file("a.py", "a2", 500),
        test("rs", "long", 300),
    ];
    let mut s = sched(tests, 1, &[A]);
    let first = s.lease(A, T0).expect("a batch");
    assert_eq!(names(&first), ["a.py::a1"]);
}

#[test]
fn leases_longest_first_with_ties_broken_by_test_id() {
    let tests = vec![
        test("s", "b", 100),
        test("s", "short", 10),
        test("s", "a", 100),
        test("s", "long", 500),
    ];
    let tests = tests
        .into_iter()
        .map(|mut t| {
            t.max_batch = 1;
            t
        })
        .collect();
    let mut s = sched(tests, 1, &[A]);
    let order: Vec<String> = std::iter::from_fn(|| run_batch(&mut s, A, Outcome::Pass))
        .map(|(l, _)| names(&l).concat())
        .collect();
    assert_eq!(order, ["long", "a", "b", "short"]);
    assert!(s.is_finished());
}

#[test]
fn batches_shrink_as_the_queue_drains_down_to_single_tests() {
    let tests = (0..200)
        .map(|i| test("s", &format!("t{i:03}"), 1000))
        .collect();
    let mut s = sched(tests, 1, &[A, B]);
    let mut sizes = Vec::new();
    while let Some((l, _)) = run_batch(&mut s, A, Outcome::Pass) {
        sizes.push(l.items.len());
    }
    // Target = queued / (2 × 2 slots): 200/4 = 50, 150/4 = 37, ...
    assert_eq!(sizes[..3], [50, 37, 28]);
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(sizes[sizes.len() - 3..], [1, 1, 1]);
    assert_eq!(sizes.iter().sum::<usize>(), 200);
}

#[test]
fn batches_respect_max_batch() {
    let tests = (0..100)
        .map(|i| {
            let mut t = test("s", &format!("t{i:03}"), 1000);
            t.max_batch = 8;
            t
        })
        .collect();
    let mut s = sched(tests, 1, &[A]);
    let l = s.lease(A, T0).unwrap();
    assert_eq!(l.items.len(), 8);
}

#[test]
fn a_test_longer_than_the_target_is_leased_alone() {
    let tests = vec![
        test("s", "huge", 100_000),
        test("s", "x", 10),
        test("s", "y", 10),
    ];
    let mut s = sched(tests, 1, &[A, B]);
    assert_eq!(names(&s.lease(A, T0).unwrap()), ["huge"]);
    assert_eq!(names(&s.lease(B, T0).unwrap()), ["x"]);
}

#[test]
fn a_batch_holds_one_suite_and_the_longest_suite_head_goes_first() {
    let tests = vec![
        test("py", "p1", 300),
        test("rs", "r1", 500),
        test("py", "p2", 200),
        test("rs", "r2", 100),
    ];
    let mut s = sched(tests, 1, &[A]);
    let first = s.lease(A, T0).unwrap();
    assert_eq!(first.suite(), "rs");
    assert!(first.items.iter().all(|e| e.case.id.suite == "rs"));
    let second = s.lease(A, T0).unwrap();
    assert_eq!(second.suite(), "py");
    assert!(second.items.iter().all(|e| e.case.id.suite == "py"));
}

#[test]
fn repeat_runs_every_test_n_times_never_twice_in_one_batch() {
    let tests = vec![test("s", "a", 100), test("s", "b", 100), test("s", "c", 50)];
    let mut s = sched(tests, 3, &[A]);
    assert_eq!(s.planned(), 9);
    let mut seen = HashMap::<(String, u32), FinalStatus>::new();
    while let Some((l, ds)) = run_batch(&mut s, A, Outcome::Pass) {
        let mut ids: Vec<_> = names(&l);
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            l.items.len(),
            "duplicate test in {:?}",
            names(&l)
        );
        for (e, d) in l.items.iter().zip(ds) {
            let prev = seen.insert(
                (e.case.id.name.clone(), e.repeat),
                d.final_status().unwrap(),
            );
            assert!(
                prev.is_none(),
                "{} repeat {} finished twice",
                e.case.id,
                e.repeat
            );
        }
    }
    assert_eq!(seen.len(), 9);
    assert!(seen.values().all(|&st| st == FinalStatus::Passed));
    assert_eq!(s.counts().passed, 9);
}

#[test]
fn final_statuses_follow_the_attempts() {
    let tests = vec![
        with_retries(test("s", "pass", 10), 2),
        with_retries(test("s", "flaky", 10), 2),
        with_retries(test("s", "fails", 10), 1),
        with_retries(test("s", "skip", 10), 2),
        with_retries(test("s", "fail_then_skip", 10), 2),
    ];
    let script: HashMap<&str, Vec<Outcome>> = HashMap::from([
        ("pass", vec![Outcome::Pass]),
        (
            "flaky",
            vec![Outcome::Fail, Outcome::Timeout, Outcome::Pass],
        ),
        ("fails", vec![Outcome::Fail, Outcome::Crash]),
        ("skip", vec![Outcome::Skip]),
        ("fail_then_skip", vec![Outcome::Fail, Outcome::Skip]),
    ]);
    let cfg = SchedConfig {
        broken_build_floor: 100,
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, tests, 1, &[A, B]).unwrap();
    let mut finals = HashMap::new();
    let mut slot = A;
    while let Some(l) = s.lease(slot, T0) {
        for e in &l.items {
            let name = e.case.id.name.as_str();
            let outcome = script[name][e.attempt as usize - 1];
            let d = s.report(l.id, l.token, e.exec, outcome, T0);
            if let Some(st) = d.final_status() {
                finals.insert(name.to_owned(), (st, e.attempt));
            } else {
                assert_eq!(d, Decision::Retry);
            }
        }
        s.release(l.id, l.token, T0);
        slot = if slot == A { B } else { A };
    }
    assert!(s.is_finished());
    let want = [
        ("pass", FinalStatus::Passed, 1),
        ("flaky", FinalStatus::Flaky, 3),
        ("fails", FinalStatus::Failed, 2),
        ("skip", FinalStatus::Skipped, 1),
        ("fail_then_skip", FinalStatus::Failed, 2),
    ];
    for (name, st, attempts) in want {
        assert_eq!(finals[name], (st, attempts), "{name}");
    }
    assert_eq!(s.counts().attempts, 1 + 3 + 2 + 1 + 2);
}

#[test]
fn a_retry_goes_to_another_slot_soon_not_to_the_end_of_the_queue() {
    let mut tests: Vec<_> = (0..20)
        .map(|i| test("s", &format!("t{i:02}"), 100))
        .collect();
    tests.push(with_retries(test("s", "flaky", 1000), 1));
    let mut s = sched(tests, 1, &[A, B]);
    let l = s.lease(A, T0).unwrap();
    assert_eq!(l.items[0].case.id.name, "flaky");
    for e in &l.items {
        let outcome = if e.case.id.name == "flaky" {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        s.report(l.id, l.token, e.exec, outcome, T0);
    }
    s.release(l.id, l.token, T0);
    // Slot A, where it failed, gets other work although the retry is first.
    let again = s.lease(A, T0).unwrap();
    assert!(!names(&again).contains(&"flaky"), "{:?}", names(&again));
    // The next slot to ask takes the retry first.
    let other = s.lease(B, T0).unwrap();
    assert_eq!(other.items[0].case.id.name, "flaky");
    assert_eq!(other.items[0].attempt, 2);
}

#[test]
fn a_slot_takes_a_retry_that_avoids_it_rather_than_idle() {
    let tests = vec![
        with_retries(test("s", "flaky", 100), 1),
        test("s", "other", 10),
    ];
    let mut s = sched(tests, 1, &[A, B]);
    let la = s.lease(A, T0).unwrap();
    assert_eq!(names(&la), ["flaky"]);
    let lb = s.lease(B, T0).unwrap();
    assert_eq!(names(&lb), ["other"]);
    assert_eq!(
        s.report(la.id, la.token, la.items[0].exec, Outcome::Fail, T0),
        Decision::Retry
    );
    s.release(la.id, la.token, T0);
    // B is busy; nothing else is queued: A takes its own failure back.
    let again = s.lease(A, T0).unwrap();
    assert_eq!(names(&again), ["flaky"]);
    assert_eq!(again.items[0].attempt, 2);
}

#[test]
fn with_one_slot_a_retry_runs_next() {
    let mut tests: Vec<_> = (0..10).map(|i| test("s", &format!("t{i}"), 100)).collect();
    tests.push(with_retries(test("s", "flaky", 1000), 1));
    let mut s = sched(tests, 1, &[A]);
    let l = s.lease(A, T0).unwrap();
    let flaky = l.items.iter().find(|e| e.case.id.name == "flaky").unwrap();
    assert_eq!(
        s.report(l.id, l.token, flaky.exec, Outcome::Fail, T0),
        Decision::Retry
    );
    let l2 = s.lease(A, T0).unwrap();
    assert_eq!(l2.items[0].case.id.name, "flaky");
}

#[test]
fn a_retry_prefers_another_worker_over_another_slot_of_the_same_worker() {
    let w0s1 = SlotId::new(0, 1);
    let w0s2 = SlotId::new(0, 2);
    let w1s1 = SlotId::new(1, 1);
    let mut tests: Vec<_> = (0..50)
        .map(|i| test("s", &format!("t{i:02}"), 100))
        .collect();
    tests.push(with_retries(test("s", "flaky", 1000), 2));
    let mut s = sched(tests, 1, &[w0s1, w0s2, w1s1]);
    let l = s.lease(w0s1, T0).unwrap();
    assert_eq!(l.items[0].case.id.name, "flaky");
    assert_eq!(
        s.report(l.id, l.token, l.items[0].exec, Outcome::Fail, T0),
        Decision::Retry
    );
    let sibling = s.lease(w0s2, T0).unwrap();
    assert!(!names(&sibling).contains(&"flaky"));
    let other_worker = s.lease(w1s1, T0).unwrap();
    assert_eq!(other_worker.items[0].case.id.name, "flaky");
}

#[test]
fn a_retry_after_a_crash_or_timeout_runs_alone() {
    for outcome in [Outcome::Crash, Outcome::Timeout] {
        let mut tests: Vec<_> = (0..40)
            .map(|i| test("s", &format!("t{i:02}"), 100))
            .collect();
        tests.push(with_retries(test("s", "crashy", 1000), 1));
        let mut s = sched(tests, 1, &[A]);
        let l = s.lease(A, T0).unwrap();
        assert!(l.items.len() > 1);
        assert_eq!(l.items[0].case.id.name, "crashy");
        assert_eq!(
            s.report(l.id, l.token, l.items[0].exec, outcome, T0),
            Decision::Retry
        );
        s.release(l.id, l.token, T0);
        // Without isolation the retry would lead a batch of 100 ms tests.
        let alone = s.lease(A, T0).unwrap();
        assert_eq!(names(&alone), ["crashy"], "{outcome}");
        assert_eq!(names(&s.lease(A, T0).unwrap())[0], "t00", "{outcome}");
    }
}

#[test]
fn a_retry_batches_with_tests_of_its_suite() {
    let mut tests: Vec<_> = (0..40)
        .map(|i| test("s", &format!("t{i:02}"), 100))
        .collect();
    tests.push(with_retries(test("s", "flaky", 1000), 1));
    let mut s = sched(tests, 1, &[A]);
    let l = s.lease(A, T0).unwrap();
    assert_eq!(
        s.report(l.id, l.token, l.items[0].exec, Outcome::Fail, T0),
        Decision::Retry
    );
    let next = s.lease(A, T0).unwrap();
    assert_eq!(next.items[0].case.id.name, "flaky");
    assert!(next.items.len() > 1);
}

#[test]
fn retries_stop_once_the_build_looks_broken() {
    let tests = (0..100)
        .map(|i| with_retries(test("s", &format!("t{i:03}"), 10), 3))
        .collect();
    let cfg = SchedConfig {
        broken_build_floor: 0,
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, tests, 1, &[A]).unwrap();
    let mut decisions = Vec::new();
    while let Some(l) = s.lease(A, T0) {
        for e in &l.items {
            if e.attempt == 1 {
                decisions.push(s.report(l.id, l.token, e.exec, Outcome::Fail, T0));
            } else {
                s.report(l.id, l.token, e.exec, Outcome::Pass, T0);
            }
        }
        s.release(l.id, l.token, T0);
    }
    // 10% of 100: the 11th failed execution breaks the build.
    assert!(decisions[..10].iter().all(|d| *d == Decision::Retry));
    assert!(
        decisions[10..]
            .iter()
            .all(|d| *d == Decision::Final(FinalStatus::Failed))
    );
    assert!(s.broken_build());
    assert_eq!(s.counts().flaky, 10);
    assert_eq!(s.counts().failed, 90);
}

#[test]
fn a_small_selection_is_retried_despite_the_threshold() {
    let mut s = sched(vec![with_retries(test("s", "only", 10), 3)], 1, &[A]);
    let (_, ds) = run_batch(&mut s, A, Outcome::Fail).unwrap();
    assert_eq!(ds, [Decision::Retry]);
    assert!(!s.broken_build());
}

#[test]
fn unreported_executions_are_requeued_at_the_front_then_lost() {
    let mut tests: Vec<_> = (0..10).map(|i| test("s", &format!("t{i}"), 10)).collect();
    tests.push(test("s", "killer", 20));
    let mut s = sched(tests, 1, &[A]);
    let l = s.lease(A, T0).unwrap();
    assert_eq!(names(&l)[0], "killer");
    assert!(s.release(l.id, l.token, T0).is_empty());
    // Released tests that did not run are back, not only the one.
    assert_eq!((s.queued(), s.in_flight()), (11, 0));
    // From now on the killer is a suspect: leased alone, so only it is
    // requeued each time, until it is lost.
    let mut lost = Vec::new();
    for _ in 0..20 {
        let l = s.lease(A, T0).unwrap();
        if names(&l) == ["killer"] {
            lost = s.release(l.id, l.token, T0);
            if !lost.is_empty() {
                break;
            }
        } else {
            for e in &l.items {
                s.report(l.id, l.token, e.exec, Outcome::Pass, T0);
            }
            s.release(l.id, l.token, T0);
        }
    }
    let lost_names: Vec<&str> = lost.iter().map(|(e, _)| e.case.id.name.as_str()).collect();
    assert_eq!(lost_names, ["killer"]);
    assert_eq!(lost[0].1, Decision::Final(FinalStatus::Failed));
    assert_eq!(s.lost(), 1);
    assert_eq!(s.counts().failed, 1);
}

/// A test that kills its worker (both slots' batches end unreported each
/// time): once requeued, no two suspects run side by side on one worker,
/// so the killer alone is lost, never a test that happened to run beside
/// it.
#[test]
fn a_worker_killer_takes_no_innocent_down_with_it() {
    let w = |slot| SlotId::new(7, slot);
    let mut tests: Vec<_> = (0..6).map(|i| test("s", &format!("t{i}"), 10)).collect();
    tests.push(test("s", "killer", 10));
    let mut s = sched(tests, 1, &[w(0), w(1)]);
    let mut lost = Vec::new();
    for _ in 0..50 {
        if s.is_finished() {
            break;
        }
        let leases: Vec<Lease> = [w(0), w(1)]
            .into_iter()
            .filter_map(|slot| s.lease(slot, T0))
            .collect();
        let dies = leases.iter().any(|l| names(l).contains(&"killer"));
        for l in &leases {
            if !dies {
                for e in &l.items {
                    s.report(l.id, l.token, e.exec, Outcome::Pass, T0);
                }
            }
            lost.extend(s.release(l.id, l.token, T0));
        }
    }
    assert!(s.is_finished());
    let lost_names: Vec<&str> = lost.iter().map(|(e, _)| e.case.id.name.as_str()).collect();
    assert_eq!(lost_names, ["killer"]);
    assert_eq!(s.counts().passed, 6);
}

#[test]
fn release_requeues_only_what_got_no_result() {
    let tests = (0..6).map(|i| test("s", &format!("t{i}"), 10)).collect();
    let mut s = sched(tests, 1, &[A]);
    let l = s.lease(A, T0).unwrap();
    assert_eq!(l.items.len(), 3);
    s.report(l.id, l.token, l.items[0].exec, Outcome::Pass, T0);
    assert!(s.release(l.id, l.token, T0).is_empty());
    assert_eq!(s.queued(), 5);
    let next = s.lease(A, T0).unwrap();
    assert_eq!(names(&next)[0], l.items[1].case.id.name);
    // Releasing again is stale and changes nothing.
    assert!(s.release(l.id, l.token, T0).is_empty());
    assert_eq!(s.queued() + s.in_flight() + s.finished(), 6);
}

#[test]
fn a_late_report_after_expiry_is_stale_and_counted_once() {
    let cfg = SchedConfig {
        lease_timeout: Some(Duration::from_secs(10)),
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, vec![test("s", "t", 10)], 1, &[A, B]).unwrap();
    let l = s.lease(A, Duration::from_secs(1)).unwrap();
    assert_eq!(l.deadline, Some(Duration::from_secs(11)));
    assert_eq!(s.next_deadline(), Some(Duration::from_secs(11)));
    assert!(s.expire(Duration::from_secs(10)).is_empty());
    let expired = s.expire(Duration::from_secs(11));
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].lease, expired[0].slot), (l.id, A));
    assert!(expired[0].lost.is_empty());
    let exec = l.items[0].exec;
    assert_eq!(
        s.report(l.id, l.token, exec, Outcome::Pass, Duration::from_secs(12)),
        Decision::Stale
    );
    assert_eq!(s.counts().attempts, 0);
    assert_eq!(
        s.renew(l.id, l.token, Duration::from_secs(12)),
        Err(StaleLease(l.id))
    );

    let l2 = s.lease(B, Duration::from_secs(12)).unwrap();
    assert_eq!(l2.items[0].exec, exec);
    assert_ne!(l2.token, l.token);
    // The old holder's result, with the new lease id but its old token.
    assert_eq!(
        s.report(l2.id, l.token, exec, Outcome::Fail, Duration::from_secs(12)),
        Decision::Stale
    );
    let d = s.report(
        l2.id,
        l2.token,
        exec,
        Outcome::Pass,
        Duration::from_secs(13),
    );
    assert_eq!(d, Decision::Final(FinalStatus::Passed));
    assert_eq!(
        s.report(
            l2.id,
            l2.token,
            exec,
            Outcome::Pass,
            Duration::from_secs(13)
        ),
        Decision::Stale
    );
    assert_eq!(s.counts().passed, 1);
    assert_eq!(s.counts().attempts, 1);
    assert!(s.is_finished());
}

#[test]
fn renewals_and_reports_push_the_deadline_back() {
    let cfg = SchedConfig {
        lease_timeout: Some(Duration::from_secs(10)),
        ..SchedConfig::default()
    };
    let tests = vec![test("s", "a", 10), test("s", "b", 10)];
    let mut s = Scheduler::new(cfg, tests, 1, &[A]).unwrap();
    let l = s.lease(A, T0).unwrap();
    assert_eq!(l.items.len(), 1, "target is half the work of one slot");
    assert_eq!(
        s.renew(l.id, l.token, Duration::from_secs(8)),
        Ok(Some(Duration::from_secs(18)))
    );
    assert!(s.expire(Duration::from_secs(17)).is_empty());
    s.report(
        l.id,
        l.token,
        l.items[0].exec,
        Outcome::Pass,
        Duration::from_secs(15),
    );
    assert!(s.expire(Duration::from_secs(24)).is_empty());
    assert_eq!(s.expire(Duration::from_secs(25)).len(), 1);
    assert_eq!(s.renew(l.id, l.token + 1, T0), Err(StaleLease(l.id)));
}

#[test]
fn reports_with_a_wrong_token_or_for_another_lease_are_stale() {
    let tests = vec![test("s", "a", 10), test("s", "b", 10), test("s", "c", 10)];
    let mut s = sched(tests, 1, &[A, B]);
    let la = s.lease(A, T0).unwrap();
    let lb = s.lease(B, T0).unwrap();
    let ea = la.items[0].exec;
    let eb = lb.items[0].exec;
    assert_eq!(
        s.report(la.id, la.token + 1, ea, Outcome::Pass, T0),
        Decision::Stale
    );
    assert_eq!(
        s.report(la.id, la.token, eb, Outcome::Pass, T0),
        Decision::Stale
    );
    assert_eq!(
        s.report(la.id, la.token, ExecId(999), Outcome::Pass, T0),
        Decision::Stale
    );
    assert_eq!(
        s.report(LeaseId(999), la.token, ea, Outcome::Pass, T0),
        Decision::Stale
    );
    assert_eq!(s.counts().attempts, 0);
    assert!(
        s.report(la.id, la.token, ea, Outcome::Pass, T0)
            .final_status()
            .is_some()
    );
}

#[test]
fn a_rebuilt_scheduler_fences_off_tokens_of_its_predecessor() {
    let old = sched(vec![test("s", "t", 10)], 1, &[A])
        .lease(A, T0)
        .unwrap();
    let cfg = SchedConfig {
        token_base: 1 << 32,
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, vec![test("s", "t", 10)], 1, &[A]).unwrap();
    let new = s.lease(A, T0).unwrap();
    assert_eq!(new.id, old.id);
    assert_eq!(
        s.report(old.id, old.token, old.items[0].exec, Outcome::Pass, T0),
        Decision::Stale
    );
}

#[test]
fn removing_a_slot_requeues_its_batches() {
    let tests = (0..8).map(|i| test("s", &format!("t{i}"), 10)).collect();
    let mut s = sched(tests, 1, &[A, B]);
    let la = s.lease(A, T0).unwrap();
    assert!(s.remove_slot(A).is_empty());
    assert_eq!(s.live_slots(), 1);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.queued(), 8);
    assert_eq!(
        s.report(la.id, la.token, la.items[0].exec, Outcome::Pass, T0),
        Decision::Stale
    );
    let lb = s.lease(B, T0).unwrap();
    assert_eq!(lb.items[0].exec, la.items[0].exec);
}

#[test]
fn cancel_returns_everything_not_final_and_ends_the_run() {
    let tests = (0..10).map(|i| test("s", &format!("t{i}"), 10)).collect();
    let mut s = sched(tests, 2, &[A]);
    let l = s.lease(A, T0).unwrap();
    s.report(l.id, l.token, l.items[0].exec, Outcome::Pass, T0);
    let not_run = s.cancel_all();
    assert_eq!(not_run.len(), 19);
    assert!(!not_run.iter().any(|e| e.exec == l.items[0].exec));
    assert!(s.is_finished());
    assert_eq!(s.cancelled(), 19);
    assert_eq!(s.finished(), 1);
    assert!(s.lease(A, T0).is_none());
    assert_eq!(
        s.report(l.id, l.token, l.items[1].exec, Outcome::Pass, T0),
        Decision::Stale
    );
    assert!(s.cancel_all().is_empty());
    assert_eq!(s.remaining_estimate(), Duration::ZERO);
}

#[test]
fn remaining_estimate_counts_queued_and_in_flight_work() {
    let tests = vec![
        test("s", "a", 300),
        test("s", "b", 200),
        test("s", "c", 100),
    ];
    let mut s = sched(tests, 2, &[A, B]);
    assert_eq!(s.remaining_estimate(), ms(1200));
    let l = s.lease(A, T0).unwrap();
    assert_eq!(l.estimate, ms(300));
    assert_eq!(s.remaining_estimate(), ms(1200));
    s.report(l.id, l.token, l.items[0].exec, Outcome::Pass, T0);
    assert_eq!(s.remaining_estimate(), ms(900));
}

#[test]
fn lease_is_none_while_everything_is_in_flight_then_work_reappears() {
    let mut s = sched(vec![with_retries(test("s", "t", 10), 1)], 1, &[A, B]);
    let l = s.lease(A, T0).unwrap();
    assert!(s.lease(B, T0).is_none());
    assert!(!s.is_finished());
    s.report(l.id, l.token, l.items[0].exec, Outcome::Fail, T0);
    assert_eq!(s.lease(B, T0).unwrap().items[0].attempt, 2);
}

#[test]
fn invalid_plans_are_refused() {
    let dup = vec![test("s", "t", 10), test("s", "t", 20)];
    assert_eq!(
        Scheduler::new(SchedConfig::default(), dup, 1, &[A]).unwrap_err(),
        SchedError::DuplicateTest(TestId::new("s", "t"))
    );
    let same_name_other_suite = vec![test("s", "t", 10), test("r", "t", 20)];
    assert!(Scheduler::new(SchedConfig::default(), same_name_other_suite, 1, &[A]).is_ok());
    assert_eq!(
        Scheduler::new(SchedConfig::default(), vec![test("s", "t", 1)], 0, &[A]).unwrap_err(),
        SchedError::ZeroRepeat
    );
}

#[test]
fn an_empty_plan_is_finished_at_once() {
    let mut s = sched(Vec::new(), 1, &[A]);
    assert!(s.is_finished());
    assert!(s.lease(A, T0).is_none());
}

#[test]
fn retries_of_two_repetitions_of_a_test_go_to_separate_batches() {
    const C: SlotId = SlotId::local(3);
    let mut tests: Vec<_> = (0..30)
        .map(|i| test("s", &format!("t{i:02}"), 100))
        .collect();
    // Same estimate as the rest: "flaky" sorts first by name.
    tests.push(with_retries(test("s", "flaky", 100), 1));
    let mut s = sched(tests, 2, &[A, B, C]);
    let leases = [s.lease(A, T0).unwrap(), s.lease(B, T0).unwrap()];
    for l in &leases {
        assert_eq!(l.items[0].case.id.name, "flaky");
        assert_eq!(
            s.report(l.id, l.token, l.items[0].exec, Outcome::Fail, T0),
            Decision::Retry
        );
    }
    let l = s.lease(C, T0).unwrap();
    assert_eq!(
        names(&l).iter().filter(|n| **n == "flaky").count(),
        1,
        "{:?}",
        names(&l)
    );
    assert!(l.items.len() > 1);
    assert_eq!(s.lease(C, T0).unwrap().items[0].case.id.name, "flaky");
}

#[test]
fn batch_overhead_keeps_tail_batches_worth_starting() {
    // 40 tests of 100 ms on 2 slots: without overhead the tail is single
    // tests; with a 300 ms start-up cost every batch carries ≥ 600 ms of work
    // (or whatever is left).
    let plan = |overhead_ms| -> Vec<usize> {
        let tests = (0..40)
            .map(|i| {
                let mut t = test("s", &format!("t{i:02}"), 100);
                t.batch_overhead = ms(overhead_ms);
                t
            })
            .collect();
        let slots = [SlotId::local(0), SlotId::local(1)];
        let mut s = Scheduler::new(SchedConfig::default(), tests, 1, &slots).unwrap();
        let mut sizes = Vec::new();
        while let Some(l) = s.lease(slots[sizes.len() % 2], ms(0)) {
            sizes.push(l.items.len());
            for e in &l.items {
                s.report(l.id, l.token, e.exec, Outcome::Pass, ms(0));
            }
            s.release(l.id, l.token, ms(0));
        }
        sizes
    };
    let plain = plan(0);
    assert_eq!(plain.last(), Some(&1), "{plain:?}");
    let with_overhead = plan(300);
    let (last, rest) = with_overhead.split_last().unwrap();
    assert!(rest.iter().all(|&n| n >= 6), "{with_overhead:?}");
    assert!(*last >= 1);
    assert!(
        with_overhead.len() < plain.len(),
        "{with_overhead:?} vs {plain:?}"
    );
    assert_eq!(with_overhead.iter().sum::<usize>(), 40);
}

/// Runs the scheduler to the end with every attempt passing; returns the
/// (test, repeat, attempt) of each execution it ran.
fn drain(s: &mut Scheduler) -> Vec<(String, u32, u32)> {
    let slot = SlotId::local(0);
    let mut ran = Vec::new();
    while let Some(l) = s.lease(slot, Duration::ZERO) {
        for e in &l.items {
            ran.push((e.case.id.name.clone(), e.repeat, e.attempt));
            s.report(l.id, l.token, e.exec, Outcome::Pass, Duration::ZERO);
        }
        s.release(l.id, l.token, Duration::ZERO);
    }
    ran.sort();
    ran
}

#[test]
fn restore_skips_final_executions_and_resumes_retries_at_their_attempt() {
    let plan = || {
        vec![
            with_retries(test("s", "a", 30), 2),
            with_retries(test("s", "b", 20), 2),
            with_retries(test("s", "c", 10), 2),
        ]
    };
    let mut s = sched(plan(), 3, &[SlotId::local(0)]);
    let id = |n: &str| TestId::new("s", n);
    let exec = |s: &Scheduler, n: &str, r: u32| s.exec_id(&id(n), r).expect("planned");
    let recorded = vec![
        // a: repetition 1 passed; repetition 0 failed once (retry pending).
        Restored {
            exec: exec(&s, "a", 1),
            attempts: 1,
            failures: 0,
            final_status: Some(FinalStatus::Passed),
        },
        Restored {
            exec: exec(&s, "a", 0),
            attempts: 1,
            failures: 1,
            final_status: None,
        },
        // b: every repetition final.
        Restored {
            exec: exec(&s, "b", 0),
            attempts: 2,
            failures: 1,
            final_status: Some(FinalStatus::Flaky),
        },
        Restored {
            exec: exec(&s, "b", 1),
            attempts: 1,
            failures: 0,
            final_status: Some(FinalStatus::Passed),
        },
        Restored {
            exec: exec(&s, "b", 2),
            attempts: 1,
            failures: 0,
            final_status: Some(FinalStatus::Passed),
        },
    ];
    assert_eq!(s.restore(&recorded), 5);
    assert_eq!(s.finished(), 4);
    assert_eq!(s.queued(), 5);
    assert_eq!(s.counts().flaky, 1);
    let ran = drain(&mut s);
    let want: Vec<(String, u32, u32)> = vec![
        ("a".into(), 0, 2),
        ("a".into(), 2, 1),
        ("c".into(), 0, 1),
        ("c".into(), 1, 1),
        ("c".into(), 2, 1),
    ];
    assert_eq!(ran, want);
    assert!(s.is_finished());
    assert_eq!(s.counts().passed, 2 + 2 + 3);
    assert_eq!(s.counts().flaky, 2, "a#0 passed after a recorded failure");
    assert_eq!(s.exec_id(&id("zz"), 0), None);
    assert_eq!(s.exec_id(&id("a"), 3), None);
}

#[test]
fn resume_adopts_held_leases_with_their_old_tokens_and_a_fresh_deadline() {
    let plan = || {
        vec![
            with_retries(test("s", "a", 30), 1),
            test("s", "b", 20),
            test("s", "c", 10),
            test("s", "d", 5),
        ]
    };
    let cfg = SchedConfig {
        lease_timeout: Some(ms(1000)),
        token_base: 1 << 40,
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, plan(), 1, &[]).expect("valid plan");
    let id = |n: &str| TestId::new("s", n);
    let exec = |s: &Scheduler, n: &str| s.exec_id(&id(n), 0).expect("planned");
    let worker = SlotId::new(3, 1);
    let recorded = vec![
        Restored {
            exec: exec(&s, "a"),
            attempts: 1,
            failures: 1,
            final_status: None,
        },
        Restored {
            exec: exec(&s, "d"),
            attempts: 1,
            failures: 0,
            final_status: Some(FinalStatus::Passed),
        },
    ];
    let adopted = vec![
        // a's retry (attempt 2) and b were running on the worker.
        Adopted {
            slot: worker,
            token: 77,
            items: vec![(exec(&s, "a"), 2), (exec(&s, "b"), 1)],
        },
        // Already final, or a different attempt: nothing to adopt.
        Adopted {
            slot: worker,
            token: 78,
            items: vec![(exec(&s, "d"), 1), (exec(&s, "c"), 2)],
        },
    ];
    let (restored, leases) = s.resume(&recorded, &adopted, ms(500));
    assert_eq!(restored, 2);
    assert!(leases[1].is_none());
    let l = leases[0].clone().expect("adopted");
    assert_eq!((l.token, l.slot, l.deadline), (77, worker, Some(ms(1500))));
    assert_eq!(names(&l), ["a", "b"]);
    assert_eq!(l.items[0].attempt, 2);
    assert_eq!(s.in_flight(), 2);
    assert_eq!(s.queued(), 1, "only c is left to lease");
    // The worker's late reports on the old token count.
    assert_eq!(
        s.report(l.id, 77, l.items[0].exec, Outcome::Pass, ms(600)),
        Decision::Final(FinalStatus::Flaky)
    );
    let other = s.lease(SlotId::local(0), ms(600)).expect("c");
    assert_eq!(names(&other), ["c"]);
    assert_ne!(other.token, 77);
    s.report(
        other.id,
        other.token,
        other.items[0].exec,
        Outcome::Pass,
        ms(700),
    );
    s.release(other.id, other.token, ms(700));
    // Unrenewed (the report at 600 renewed it), it expires like any
    // lease: b is requeued.
    assert!(s.expire(ms(1550)).is_empty());
    let expired = s.expire(ms(1600));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease, l.id);
    assert_eq!(s.queued(), 1);
}

/// The order one slot runs `n` single-test batches in, shuffled with `seed`.
fn shuffled_order(seed: u64, input: &[&str]) -> Vec<String> {
    let tests = input
        .iter()
        .map(|name| {
            let mut t = test("s", name, 100);
            t.max_batch = 1;
            t
        })
        .collect();
    let cfg = SchedConfig {
        shuffle: Some(seed),
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, tests, 1, &[A]).expect("valid plan");
    std::iter::from_fn(|| run_batch(&mut s, A, Outcome::Pass))
        .map(|(l, _)| names(&l).concat())
        .collect()
}

#[test]
fn a_shuffle_seed_names_one_order_whatever_the_input_order() {
    let names: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let forward: Vec<&str> = names.iter().map(String::as_str).collect();
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    let a = shuffled_order(7, &forward);
    assert_eq!(a, shuffled_order(7, &backward), "same seed, same order");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, forward, "a permutation of the tests");
    assert_ne!(a, forward, "not the id order");
    let b = shuffled_order(8, &forward);
    assert_ne!(a, b, "another seed, another order");
    // Every test lands in every position for some seed: no fixed points
    // built into the shuffle (40 seeds, 40 tests).
    let firsts: std::collections::HashSet<String> = (0..200)
        .map(|seed| shuffled_order(seed, &forward)[0].clone())
        .collect();
    assert!(firsts.len() > 30, "{} distinct first tests", firsts.len());
}

#[test]
fn keep_order_leases_in_the_given_order_whatever_the_estimates() {
    let tests: Vec<PlannedTest> = [("c", 10), ("a", 500), ("b", 100)]
        .into_iter()
        .map(|(name, est)| {
            let mut t = test("s", name, est);
            t.max_batch = 1;
            t
        })
        .collect();
    let cfg = SchedConfig {
        keep_order: true,
        shuffle: Some(3),
        ..SchedConfig::default()
    };
    let mut s = Scheduler::new(cfg, tests, 1, &[A]).expect("valid plan");
    let order: Vec<String> = std::iter::from_fn(|| run_batch(&mut s, A, Outcome::Pass))
        .map(|(l, _)| names(&l).concat())
        .collect();
    assert_eq!(order, ["c", "a", "b"]);
}
