//! Random interleavings of lease, report, release, renew, expire, slot churn
//! and cancel, over many seeds, checked against a reference model: every
//! execution ends with exactly one final decision (or is cancelled), stale
//! inputs change nothing, and each decision is the one the rules prescribe.

use crate::planned;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_core::{FinalStatus, Outcome, TestId};
use shoal_sched::{Decision, ExecId, Execution, Lease, SchedConfig, Scheduler, SlotId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const OUTCOMES: [Outcome; 6] = [
    Outcome::Pass,
    Outcome::Fail,
    Outcome::Skip,
    Outcome::Timeout,
    Outcome::Crash,
    Outcome::Lost,
];

/// What the engine side knows about one execution.
#[derive(Debug, Default)]
struct ExecModel {
    retries: u32,
    /// Outcomes recorded (non-stale reports), in order.
    history: Vec<Outcome>,
    finals: u32,
    cancelled: u32,
    requeues: u32,
    /// Attempt number last handed out.
    attempt: u32,
}

/// A lease the engine side holds, with the items it has not reported yet.
#[derive(Debug)]
struct Held {
    lease: Lease,
    unreported: Vec<Execution>,
}

struct Harness {
    rng: StdRng,
    cfg: SchedConfig,
    s: Scheduler,
    model: HashMap<ExecId, ExecModel>,
    max_batch: HashMap<String, usize>,
    held: BTreeMap<u64, Held>,
    /// Leases that ended, with items reported in them, for stale replays.
    dead: Vec<(Lease, Execution)>,
    retries: HashMap<TestId, u32>,
    failed_attempts: usize,
    planned: usize,
    slots: Vec<SlotId>,
    now: Duration,
    /// How often each path was taken, to show the seeds cover them all.
    tally: BTreeMap<&'static str, usize>,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let suites = rng.gen_range(1..=3);
        let n = rng.gen_range(0..=30);
        let repeat = rng.gen_range(1..=3);
        let mut max_batch = HashMap::new();
        let tests: Vec<_> = (0..n)
            .map(|i| {
                let suite = format!("s{}", rng.gen_range(0..suites));
                let mb = *max_batch
                    .entry(suite.clone())
                    .or_insert_with(|| rng.gen_range(1..=6));
                let est = Duration::from_millis(rng.gen_range(0..=50) * 10);
                planned(&suite, &format!("t{i}"), est, rng.gen_range(0..=3), mb)
            })
            .collect();
        let cfg = SchedConfig {
            retry_threshold: rng.gen_range(0.0..0.6),
            broken_build_floor: rng.gen_range(0..=4),
            max_requeues: rng.gen_range(0..=3),
            lease_timeout: rng
                .gen_bool(0.5)
                .then(|| Duration::from_secs(rng.gen_range(1..=5))),
            token_base: rng.r#gen(),
            shuffle: rng.gen_bool(0.5).then(|| rng.r#gen()),
            keep_order: rng.gen_bool(0.2),
        };
        let workers = rng.gen_range(1..=2);
        let slots: Vec<SlotId> = (0..rng.gen_range(1..=4))
            .map(|i| SlotId::new(rng.gen_range(0..workers), i))
            .collect();
        let retries = tests
            .iter()
            .map(|t| (t.case.id.clone(), t.retries))
            .collect();
        let s = Scheduler::new(cfg.clone(), tests, repeat, &slots).expect("valid plan");
        Self {
            rng,
            planned: s.planned(),
            cfg,
            s,
            model: HashMap::new(),
            max_batch,
            held: BTreeMap::new(),
            dead: Vec::new(),
            retries,
            failed_attempts: 0,
            slots,
            now: Duration::ZERO,
            tally: BTreeMap::new(),
        }
    }

    fn check_counts(&self) {
        let s = &self.s;
        assert_eq!(
            s.queued() + s.in_flight() + s.finished() + s.cancelled(),
            self.planned,
            "queued {} + in flight {} + finished {} + cancelled {}",
            s.queued(),
            s.in_flight(),
            s.finished(),
            s.cancelled()
        );
        let unreported: usize = self.held.values().map(|h| h.unreported.len()).sum();
        assert_eq!(s.in_flight(), unreported);
        assert_eq!(s.live_leases(), self.held.len());
    }

    fn broken(&self) -> bool {
        self.failed_attempts > self.cfg.broken_build_floor
            && self.failed_attempts as f64 > self.cfg.retry_threshold * self.planned as f64
    }

    /// Whether a slot of `worker` holds a requeued execution that has not
    /// reported yet.
    fn suspect_running_on(&self, worker: u32) -> bool {
        self.held.values().any(|h| {
            h.lease.slot.worker == worker
                && h.unreported
                    .iter()
                    .any(|e| self.model.get(&e.exec).is_some_and(|m| m.requeues > 0))
        })
    }

    fn on_lease(&mut self, slot: SlotId) {
        let Some(l) = self.s.lease(slot, self.now) else {
            // Work may wait only for a suspect (a requeued execution) that
            // another slot of this worker is running: one at a time there.
            assert!(
                self.s.queued() == 0 || self.suspect_running_on(slot.worker),
                "no lease although work is queued"
            );
            return;
        };
        let suspects = l
            .items
            .iter()
            .filter(|e| self.model.get(&e.exec).is_some_and(|m| m.requeues > 0))
            .count();
        assert!(
            suspects == 0 || l.items.len() == 1,
            "a requeued execution is leased alone"
        );
        if suspects > 0 {
            assert!(
                !self.suspect_running_on(slot.worker),
                "two suspects at once on one worker"
            );
        }
        assert_eq!(l.slot, slot);
        assert!(!l.items.is_empty());
        let suite = l.suite().to_owned();
        assert!(
            l.items.iter().all(|e| e.case.id.suite == suite),
            "mixed suites"
        );
        let distinct: HashSet<_> = l.items.iter().map(|e| &e.case.id).collect();
        assert_eq!(distinct.len(), l.items.len(), "a test twice in one batch");
        assert!(l.items.len() <= self.max_batch[&suite]);
        if let Some(t) = self.cfg.lease_timeout {
            assert_eq!(l.deadline, Some(self.now + t));
        }
        for e in &l.items {
            let m = self.model.entry(e.exec).or_default();
            m.retries = self.retries[&e.case.id];
            assert_eq!(
                m.finals + m.cancelled,
                0,
                "{} leased after it ended",
                e.exec
            );
            let failures = m.history.iter().filter(|o| o.is_failure()).count() as u32;
            assert_eq!(e.attempt, failures + 1, "{} attempt number", e.exec);
            m.attempt = e.attempt;
        }
        self.held.insert(
            l.id.0,
            Held {
                unreported: l.items.clone(),
                lease: l,
            },
        );
    }

    fn on_report(&mut self) {
        let Some(&key) = self.pick_held() else { return };
        let h = self.held.get_mut(&key).expect("held");
        if h.unreported.is_empty() {
            return;
        }
        let i = self.rng.gen_range(0..h.unreported.len());
        let e = h.unreported.swap_remove(i);
        let lease = h.lease.clone();
        let outcome = *OUTCOMES.choose(&mut self.rng).expect("outcomes");
        let d = self
            .s
            .report(lease.id, lease.token, e.exec, outcome, self.now);

        let m = self.model.get_mut(&e.exec).expect("leased before");
        let failed_before = m.history.iter().any(|o| o.is_failure());
        m.history.push(outcome);
        let expected = match outcome {
            Outcome::Pass if failed_before => Decision::Final(FinalStatus::Flaky),
            Outcome::Pass => Decision::Final(FinalStatus::Passed),
            Outcome::Skip if failed_before => Decision::Final(FinalStatus::Failed),
            Outcome::Skip => Decision::Final(FinalStatus::Skipped),
            _ => {
                self.failed_attempts += 1;
                if e.attempt <= m.retries && !self.broken() {
                    Decision::Retry
                } else {
                    Decision::Final(FinalStatus::Failed)
                }
            }
        };
        assert_eq!(
            d, expected,
            "{} attempt {} outcome {outcome}",
            e.exec, e.attempt
        );
        self.count(match d {
            Decision::Retry => "retry",
            Decision::Final(FinalStatus::Flaky) => "flaky",
            Decision::Final(FinalStatus::Failed) if self.broken() => "failed (broken build)",
            Decision::Final(_) => "final",
            Decision::Stale => "stale",
        });
        let m = self.model.get_mut(&e.exec).expect("leased before");
        if d.final_status().is_some() {
            m.finals += 1;
        }
        if let Some(t) = self.cfg.lease_timeout {
            // The report renewed the lease; renewing again changes nothing.
            assert_eq!(
                self.s.renew(lease.id, lease.token, self.now),
                Ok(Some(self.now + t))
            );
            self.held.get_mut(&key).expect("held").lease.deadline = Some(self.now + t);
        }
        self.dead.push((lease, e));
    }

    /// Replays a report that must be ignored.
    fn on_stale_report(&mut self) {
        let Some((lease, e)) = self.dead.choose(&mut self.rng).cloned() else {
            return;
        };
        let attempts = self.s.counts().attempts;
        let d = self
            .s
            .report(lease.id, lease.token, e.exec, Outcome::Fail, self.now);
        assert_eq!(
            d,
            Decision::Stale,
            "replayed report of {} in {}",
            e.exec,
            lease.id
        );
        self.count("stale");
        assert_eq!(self.s.counts().attempts, attempts);
        // A wrong token for a live lease is stale too.
        if let Some(h) = self.held.values().next() {
            if let Some(e) = h.unreported.first() {
                let d = self.s.report(
                    h.lease.id,
                    h.lease.token ^ 1,
                    e.exec,
                    Outcome::Pass,
                    self.now,
                );
                assert_eq!(d, Decision::Stale);
            }
        }
    }

    fn ended(&mut self, key: u64, lost: Vec<(Execution, Decision)>) {
        let h = self.held.remove(&key).expect("held lease ended");
        let lost_ids: HashSet<ExecId> = lost.iter().map(|(e, _)| e.exec).collect();
        assert_eq!(lost_ids.len(), lost.len());
        for e in &h.unreported {
            let m = self.model.get_mut(&e.exec).expect("leased before");
            m.requeues += 1;
            let is_lost = m.requeues > self.cfg.max_requeues;
            assert_eq!(
                lost_ids.contains(&e.exec),
                is_lost,
                "{} requeued {} times",
                e.exec,
                m.requeues
            );
            if is_lost {
                *self.tally.entry("lost").or_default() += 1;
                m.finals += 1;
                self.failed_attempts += 1;
                m.history.push(Outcome::Lost);
            }
            self.dead.push((h.lease.clone(), e.clone()));
        }
        for (e, d) in &lost {
            assert_eq!(*d, Decision::Final(FinalStatus::Failed));
            assert!(
                h.unreported.iter().any(|u| u.exec == e.exec),
                "lost {} was not pending",
                e.exec
            );
        }
    }

    fn on_release(&mut self) {
        let Some(&key) = self.pick_held() else { return };
        let l = self.held[&key].lease.clone();
        let lost = self.s.release(l.id, l.token, self.now);
        self.ended(key, lost);
        assert!(
            self.s.release(l.id, l.token, self.now).is_empty(),
            "double release"
        );
    }

    fn on_expire(&mut self) {
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.lease.deadline.is_some_and(|d| d <= self.now))
            .map(|(&k, _)| k)
            .collect();
        let expired = self.s.expire(self.now);
        let got: Vec<u64> = expired.iter().map(|x| x.lease.0).collect();
        assert_eq!(got, due, "expired leases");
        for x in expired {
            self.count("expired");
            assert_eq!(x.slot, self.held[&x.lease.0].lease.slot);
            self.ended(x.lease.0, x.lost);
        }
        assert!(self.s.next_deadline().is_none_or(|d| d > self.now));
    }

    fn on_renew(&mut self) {
        let Some(&key) = self.pick_held() else { return };
        let h = self.held.get_mut(&key).expect("held");
        let r = self.s.renew(h.lease.id, h.lease.token, self.now);
        let deadline = self.cfg.lease_timeout.map(|t| self.now + t);
        assert_eq!(r, Ok(deadline));
        h.lease.deadline = deadline;
    }

    fn on_remove_slot(&mut self) {
        if self.slots.len() < 2 {
            return;
        }
        let i = self.rng.gen_range(0..self.slots.len());
        let slot = self.slots.swap_remove(i);
        self.count("remove slot");
        let keys: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.lease.slot == slot)
            .map(|(&k, _)| k)
            .collect();
        let mut lost = self.s.remove_slot(slot);
        for k in keys {
            let mine: Vec<_> = {
                let h = &self.held[&k];
                let ids: HashSet<ExecId> = h.unreported.iter().map(|e| e.exec).collect();
                let (mine, rest): (Vec<_>, Vec<_>) =
                    lost.into_iter().partition(|(e, _)| ids.contains(&e.exec));
                lost = rest;
                mine
            };
            self.ended(k, mine);
        }
        assert!(lost.is_empty());
        assert_eq!(self.s.live_slots(), self.slots.len());
    }

    fn on_cancel(&mut self) {
        self.count("cancel");
        let not_run = self.s.cancel_all();
        let ids: HashSet<ExecId> = not_run.iter().map(|e| e.exec).collect();
        assert_eq!(ids.len(), not_run.len());
        for id in ids {
            let m = self.model.entry(id).or_default();
            assert_eq!(m.finals, 0, "{id} cancelled after it ended");
            m.cancelled += 1;
        }
        for (_, h) in std::mem::take(&mut self.held) {
            for e in h.unreported {
                self.dead.push((h.lease.clone(), e));
            }
        }
        assert!(self.s.is_finished());
    }

    fn count(&mut self, what: &'static str) {
        *self.tally.entry(what).or_default() += 1;
    }

    fn pick_held(&mut self) -> Option<&u64> {
        let n = self.held.len();
        if n == 0 {
            return None;
        }
        self.held.keys().nth(self.rng.gen_range(0..n))
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(self.rng.gen_range(0..=700));
        match self.rng.gen_range(0..100) {
            0..=24 => {
                let slot = *self.slots.choose(&mut self.rng).expect("a slot");
                self.on_lease(slot);
            }
            25..=64 => self.on_report(),
            65..=74 => self.on_release(),
            75..=82 => self.on_expire(),
            83..=88 => self.on_renew(),
            89..=94 => self.on_stale_report(),
            95..=96 => self.on_remove_slot(),
            97..=98 => {
                let slot = SlotId::new(self.rng.gen_range(0..3), self.rng.gen_range(10..20));
                if self.s.add_slot(slot) {
                    self.slots.push(slot);
                }
            }
            _ => {
                if self.rng.gen_bool(0.05) {
                    self.on_cancel();
                }
            }
        }
        self.check_counts();
    }

    /// Runs every remaining execution to the end: lease, report pass, release.
    fn drain(&mut self) {
        let keys: Vec<u64> = self.held.keys().copied().collect();
        for k in keys {
            let l = self.held[&k].lease.clone();
            let lost = self.s.release(l.id, l.token, self.now);
            self.ended(k, lost);
        }
        let mut guard = 0;
        while !self.s.is_finished() {
            guard += 1;
            assert!(guard < 100_000, "the run does not end");
            let slot = *self.slots.first().expect("a slot");
            self.on_lease(slot);
            let Some(&key) = self.held.keys().next() else {
                panic!("unfinished with nothing queued or in flight");
            };
            while !self.held[&key].unreported.is_empty() {
                let h = self.held.get_mut(&key).expect("held");
                let e = h.unreported.remove(0);
                let lease = h.lease.clone();
                let d = self
                    .s
                    .report(lease.id, lease.token, e.exec, Outcome::Pass, self.now);
                let m = self.model.get_mut(&e.exec).expect("leased before");
                let failed_before = m.history.iter().any(|o| o.is_failure());
                m.history.push(Outcome::Pass);
                let want = if failed_before {
                    FinalStatus::Flaky
                } else {
                    FinalStatus::Passed
                };
                assert_eq!(d, Decision::Final(want));
                m.finals += 1;
            }
            let l = self.held[&key].lease.clone();
            let lost = self.s.release(l.id, l.token, self.now);
            self.ended(key, lost);
        }
    }

    fn check_end(&self) {
        assert!(self.s.is_finished());
        assert_eq!(self.s.queued() + self.s.in_flight(), 0);
        let mut total = 0;
        for (id, m) in &self.model {
            assert_eq!(
                m.finals + m.cancelled,
                1,
                "{id}: {} finals, {} cancellations",
                m.finals,
                m.cancelled
            );
            total += 1;
        }
        // Executions never leased can only have been cancelled.
        assert_eq!(self.s.finished() + self.s.cancelled(), self.planned);
        assert!(total <= self.planned);
        let c = self.s.counts();
        assert_eq!(c.total(), self.s.finished());
        let recorded: usize = self.model.values().map(|m| m.history.len()).sum();
        assert_eq!(c.attempts, recorded);
    }
}

#[test]
fn every_execution_ends_exactly_once_under_random_interleavings() {
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..400 {
        let mut h = Harness::new(seed);
        let steps = 50 + (seed as usize % 7) * 60;
        for _ in 0..steps {
            if h.s.is_finished() {
                break;
            }
            h.step();
        }
        h.drain();
        h.check_end();
        for (k, n) in h.tally {
            *tally.entry(k).or_default() += n;
        }
    }
    println!("interleavings covered: {tally:?}");
    for path in [
        "retry",
        "flaky",
        "final",
        "failed (broken build)",
        "stale",
        "lost",
        "expired",
        "cancel",
        "remove slot",
    ] {
        assert!(
            tally.get(path).copied().unwrap_or(0) >= 10,
            "path {path:?} barely exercised: {tally:?}"
        );
    }
}
