//! Unit tests of the run-state core: what a run decides from results.

use super::*;
use shoal_core::TestCase;

const T0: Duration = Duration::ZERO;

fn slot(i: u32) -> SlotId {
    SlotId::new(0, i)
}

fn planned(names: &[&str], retries: u32) -> Vec<PlannedTest> {
    names
        .iter()
        .map(|n| PlannedTest {
            case: TestCase {
                id: TestId::new("s", *n),
                group: "g".into(),
                runner: None,
            },
            estimate: Duration::from_millis(10),
            retries,
            max_batch: 1,
            batch_overhead: Duration::ZERO,
            locality: None,
        })
        .collect()
}

fn rules(quarantine: &[&str], fail_on_flaky: bool) -> RunRules {
    RunRules {
        sched: SchedConfig::default(),
        repeat: 1,
        quarantine: quarantine.iter().map(|n| TestId::new("s", *n)).collect(),
        fail_on_flaky,
        one_slot: false,
    }
}

fn result(outcome: Outcome) -> AttemptResult {
    AttemptResult {
        outcome,
        duration: 0.01,
        message: None,
        output: CapturedOutput::default(),
        start: 1.0,
        end: 1.5,
    }
}

/// Runs the whole run on one slot: each test's attempts take the outcomes
/// `script` gives (by name; the last one repeats).
fn drive(state: &mut RunState, script: &[(&str, &[Outcome])]) {
    let mut tries: HashMap<String, usize> = HashMap::new();
    while let Some(l) = state.lease(slot(0), "w", "w", T0) {
        for e in &l.items {
            let name = e.case.id.name.clone();
            let outcomes = script
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(&[Outcome::Pass][..], |(_, o)| *o);
            let i = tries.entry(name).or_default();
            let o = outcomes[(*i).min(outcomes.len() - 1)];
            *i += 1;
            state.started(l.id, e.exec, 1.0);
            state.result(l.id, l.token, e.exec, result(o), T0);
        }
        state.release(l.id, l.token, "its batch ended", T0);
    }
}

fn finals(events: &[Event]) -> Vec<(String, FinalStatus, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFinished(a) => a.final_status.map(|s| (a.test.clone(), s, a.quarantined)),
            _ => None,
        })
        .collect()
}

#[test]
fn exit_code_follows_the_final_state() {
    let counts = |failed, flaky| RunCounts {
        passed: 3,
        failed,
        flaky,
        ..RunCounts::default()
    };
    let q = |failed, flaky| QuarantinedCounts { failed, flaky };
    assert_eq!(exit_code(&counts(0, 0), &q(0, 0), false, false), 0);
    assert_eq!(exit_code(&counts(1, 0), &q(0, 0), false, false), 1);
    assert_eq!(exit_code(&counts(1, 0), &q(1, 0), false, false), 0);
    assert_eq!(
        exit_code(&counts(2, 0), &q(1, 0), false, false),
        1,
        "one is not excused"
    );
    assert_eq!(exit_code(&counts(0, 1), &q(0, 0), false, false), 0);
    assert_eq!(exit_code(&counts(0, 1), &q(0, 0), false, true), 1);
    assert_eq!(exit_code(&counts(0, 1), &q(0, 1), false, true), 0);
    assert_eq!(exit_code(&counts(0, 2), &q(0, 1), false, true), 1);
    assert_eq!(exit_code(&counts(1, 0), &q(1, 0), true, false), 130);
}

#[test]
fn results_become_attempt_events_with_final_statuses_and_counts() {
    let mut s = RunState::new(planned(&["a", "b", "c"], 1), rules(&[], false), &[slot(0)]).unwrap();
    drive(
        &mut s,
        &[
            ("b", &[Outcome::Fail, Outcome::Pass]),
            ("c", &[Outcome::Fail]),
        ],
    );
    let events = s.take_events();
    let mut f = finals(&events);
    f.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        f,
        [
            ("a".to_owned(), FinalStatus::Passed, false),
            ("b".to_owned(), FinalStatus::Flaky, false),
            ("c".to_owned(), FinalStatus::Failed, false),
        ]
    );
    assert_eq!(
        (s.counts().passed, s.counts().flaky, s.counts().failed),
        (1, 1, 1)
    );
    assert_eq!(s.counts().attempts, 5, "b and c were retried once");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::AttemptStarted(_)))
            .count(),
        5
    );
    assert!(s.is_over());
    assert_eq!(s.exit_code(), 1);
    let fin = s.finished("r", 1.0, 2.0);
    assert_eq!(
        (fin.exit_code, fin.counts.failed, fin.interrupted),
        (1, 1, false)
    );
}

#[test]
fn quarantined_failures_are_marked_counted_apart_and_excused() {
    let mut s = RunState::new(planned(&["a", "q"], 0), rules(&["q"], false), &[slot(0)]).unwrap();
    drive(&mut s, &[("q", &[Outcome::Fail])]);
    let f = finals(&s.take_events());
    assert!(
        f.contains(&("q".to_owned(), FinalStatus::Failed, true)),
        "{f:?}"
    );
    assert!(
        f.contains(&("a".to_owned(), FinalStatus::Passed, false)),
        "{f:?}"
    );
    assert_eq!(
        s.quarantined(),
        QuarantinedCounts {
            failed: 1,
            flaky: 0
        }
    );
    assert_eq!(s.exit_code(), 0);
    assert_eq!(s.finished("r", 0.0, 1.0).quarantined.failed, 1);
}

#[test]
fn fail_on_flaky_makes_a_flaky_run_fail() {
    let script: &[(&str, &[Outcome])] = &[("a", &[Outcome::Fail, Outcome::Pass])];
    let mut lenient = RunState::new(planned(&["a"], 2), rules(&[], false), &[slot(0)]).unwrap();
    drive(&mut lenient, script);
    assert_eq!((lenient.counts().flaky, lenient.exit_code()), (1, 0));
    let mut strict = RunState::new(planned(&["a"], 2), rules(&[], true), &[slot(0)]).unwrap();
    drive(&mut strict, script);
    assert_eq!(strict.exit_code(), 1);
    assert_eq!(strict.finished("r", 0.0, 1.0).exit_code, 1);
}

#[test]
fn a_test_that_never_reports_ends_as_a_crash_saying_why() {
    let mut s = RunState::new(planned(&["killer"], 0), rules(&[], false), &[slot(0)]).unwrap();
    let mut rounds = 0;
    while let Some(l) = s.lease(slot(0), "w", "w", T0) {
        rounds += 1;
        s.release(l.id, l.token, "its worker died", T0);
    }
    assert_eq!(rounds, SchedConfig::default().max_requeues + 1);
    let events = s.take_events();
    let Some(Event::AttemptFinished(a)) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(a.outcome, Outcome::Crash);
    assert_eq!(a.final_status, Some(FinalStatus::Failed));
    let message = a.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("its worker died") && message.contains("4 tries"),
        "{message}"
    );
    assert_eq!(s.exit_code(), 1);
}

#[test]
fn stale_results_and_releases_change_nothing() {
    let mut s = RunState::new(planned(&["a"], 0), rules(&[], false), &[slot(0)]).unwrap();
    let l = s.lease(slot(0), "w", "w", T0).unwrap();
    let e = l.items[0].exec;
    assert_eq!(
        s.result(l.id, l.token + 1, e, result(Outcome::Fail), T0),
        Decision::Stale
    );
    s.release(l.id, l.token + 1, "wrong token", T0);
    assert!(
        s.held(l.id).is_some(),
        "a release with a wrong token is ignored"
    );
    assert_eq!(
        s.result(l.id, l.token, e, result(Outcome::Pass), T0),
        Decision::Final(FinalStatus::Passed)
    );
    assert_eq!(
        s.result(l.id, l.token, e, result(Outcome::Fail), T0),
        Decision::Stale
    );
    assert_eq!(s.counts().attempts, 1);
}

#[test]
fn cancelling_stops_leasing_and_the_run_exits_130() {
    let mut s = RunState::new(planned(&["a", "b"], 0), rules(&[], false), &[slot(0)]).unwrap();
    let l = s.lease(slot(0), "w", "w", T0).unwrap();
    assert_eq!(s.cancel(), 2, "the leased and the queued test never run");
    assert!(s.lease(slot(0), "w", "w", T0).is_none());
    assert_eq!(
        s.result(l.id, l.token, l.items[0].exec, result(Outcome::Pass), T0),
        Decision::Stale
    );
    assert!(s.is_over());
    let fin = s.finished("r", 0.0, 1.0);
    assert_eq!(
        (fin.exit_code, fin.not_run, fin.interrupted),
        (130, 2, true)
    );
}

#[test]
fn the_broken_build_notice_comes_once() {
    let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut s = RunState::new(planned(&names, 2), rules(&[], false), &[slot(0)]).unwrap();
    let script: Vec<(&str, &[Outcome])> =
        names.iter().map(|n| (*n, &[Outcome::Fail][..])).collect();
    drive(&mut s, &script);
    let notices = s
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Notice(n) if n.message.contains("build looks broken")))
        .count();
    assert_eq!(notices, 1);
}

#[test]
fn a_one_slot_run_leases_to_its_first_slot_only_until_that_slot_is_lost() {
    let cfg = SchedConfig {
        lease_timeout: Some(Duration::from_secs(10)),
        keep_order: true,
        ..SchedConfig::default()
    };
    let r = RunRules {
        sched: cfg,
        repeat: 1,
        one_slot: true,
        ..RunRules::default()
    };
    let (a, b) = (SlotId::new(1, 0), SlotId::new(2, 0));
    let mut s = RunState::new(planned(&["x", "y", "z"], 0), r, &[a, b]).unwrap();
    let first = s.lease(a, "w1", "w1", T0).expect("the first slot to ask");
    assert!(s.lease(b, "w2", "w2", T0).is_none(), "another slot waits");
    for e in &first.items {
        s.result(first.id, first.token, e.exec, result(Outcome::Pass), T0);
    }
    s.release(first.id, first.token, "done", T0);
    assert!(
        s.lease(b, "w2", "w2", T0).is_none(),
        "still bound to the first"
    );
    let next = s.lease(a, "w1", "w1", T0).expect("the bound slot goes on");
    // The bound slot's worker dies: its lease expires, another slot takes
    // the run over.
    s.expire(Duration::from_secs(11), "its worker died");
    assert!(s.held(next.id).is_none());
    assert!(s.lease(b, "w2", "w2", Duration::from_secs(11)).is_some());
}
