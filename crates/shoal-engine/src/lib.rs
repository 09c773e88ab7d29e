//! The run-state core: everything one run decides, with no I/O.
//!
//! [`RunState`] owns a run's [`Scheduler`], the leases it handed out and to
//! which worker, the quarantine list, the counts and the broken-build
//! notice. It is fed by slot requests, results, releases and the clock
//! (every method takes `now`), and turns them into [`Event`]s that the
//! caller drains with [`RunState::take_events`]: the local loop
//! (`shoal-runner`) and the coordinator (`shoal-coordinator`) drive this same
//! type, so a run decides the same way wherever it runs. Store rows are
//! built from the events. [`exit_code`] is the one place a run's exit code
//! is decided.

use shoal_core::event::{AttemptFinished, AttemptStarted, Notice, NoticeLevel, RunFinished};
use shoal_core::{
    CapturedOutput, Event, FinalStatus, Outcome, QuarantinedCounts, RunCounts, TestId,
};
use shoal_sched::{
    Adopted, Decision, ExecId, Execution, Lease, LeaseId, PlannedTest, Restored, SchedConfig,
    SchedError, Scheduler, SlotId,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The documented exit code of a run from its final state: 130 when it was
/// interrupted, 1 when a test that is not quarantined failed (or, with
/// `fail_on_flaky`, was flaky), else 0.
pub fn exit_code(
    counts: &RunCounts,
    quarantined: &QuarantinedCounts,
    interrupted: bool,
    fail_on_flaky: bool,
) -> i32 {
    let failed = counts.failed.saturating_sub(quarantined.failed);
    let flaky = counts.flaky.saturating_sub(quarantined.flaky);
    if interrupted {
        130
    } else if failed > 0 || (fail_on_flaky && flaky > 0) {
        1
    } else {
        0
    }
}

/// The message of an execution that never got a result, however often it
/// was tried: a test that keeps killing its runner or worker.
pub fn lost_message(tries: u32, reason: &str) -> String {
    format!(
        "no result after {tries} tries to run it: {reason}; a test that keeps killing its worker is reported as a crash"
    )
}

/// How a run is to behave, beyond its planned tests.
#[derive(Debug, Clone, Default)]
pub struct RunRules {
    pub sched: SchedConfig,
    pub repeat: u32,
    /// Tests whose failed and flaky results do not fail the run (they run
    /// and are reported as usual, marked `quarantined`).
    pub quarantine: HashSet<TestId>,
    /// A flaky result fails the run.
    pub fail_on_flaky: bool,
    /// Lease to one slot at a time, the same one while it lives, so the
    /// run's tests share one runner in order (`shoal bisect-order`).
    pub one_slot: bool,
}

/// A lease as the run tracks it: the batch, the name its worker is shown
/// by, and the worker that holds it (the coordinator's worker id; a local
/// run's worker name).
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub lease: Lease,
    pub worker: String,
    pub owner: String,
}

/// What a slot reported about one finished attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    /// As the test tool measured it, seconds.
    pub duration: f64,
    pub message: Option<String>,
    pub output: CapturedOutput,
    /// Seconds since the epoch.
    pub start: f64,
    pub end: f64,
}

/// One run's decisions. See the crate docs.
#[derive(Debug)]
pub struct RunState {
    sched: Scheduler,
    leases: HashMap<LeaseId, HeldLease>,
    quarantine: HashSet<TestId>,
    fail_on_flaky: bool,
    max_requeues: u32,
    counts: RunCounts,
    quarantined: QuarantinedCounts,
    /// Whether the broken-build notice was given (or is moot: no test may
    /// be retried, so there are no retries to stop).
    broken_noticed: bool,
    cancelled: bool,
    not_run: usize,
    out: Vec<Event>,
    one_slot: bool,
    /// With `one_slot`: the slot the run is bound to.
    bound: Option<SlotId>,
}

impl RunState {
    pub fn new(
        planned: Vec<PlannedTest>,
        rules: RunRules,
        slots: &[SlotId],
    ) -> Result<RunState, SchedError> {
        let broken_noticed = !planned.iter().any(|p| p.retries > 0);
        let max_requeues = rules.sched.max_requeues;
        let sched = Scheduler::new(rules.sched, planned, rules.repeat.max(1), slots)?;
        Ok(RunState {
            sched,
            leases: HashMap::new(),
            quarantine: rules.quarantine,
            fail_on_flaky: rules.fail_on_flaky,
            max_requeues,
            counts: RunCounts::default(),
            quarantined: QuarantinedCounts::default(),
            broken_noticed,
            cancelled: false,
            not_run: 0,
            out: Vec::new(),
            one_slot: rules.one_slot,
            bound: None,
        })
    }

    /// The scheduler, to read (queued, in flight, finished, deadlines).
    pub fn sched(&self) -> &Scheduler {
        &self.sched
    }

    /// The events produced since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.out)
    }

    /// Queues an event of the caller's (a notice, a slot's output) in
    /// order with the run's own.
    pub fn push_event(&mut self, ev: Event) {
        self.out.push(ev);
    }

    pub fn notice(&mut self, level: NoticeLevel, message: String) {
        self.out.push(Event::Notice(Notice { level, message }));
    }

    pub fn is_quarantined(&self, id: &TestId) -> bool {
        self.quarantine.contains(id)
    }

    /// A batch for `slot` (of the worker shown as `worker`), or `None` when
    /// nothing can be leased now (ask again after the next result or
    /// release) or the run is over or cancelled.
    pub fn lease(
        &mut self,
        slot: SlotId,
        worker: &str,
        owner: &str,
        now: Duration,
    ) -> Option<Lease> {
        if self.cancelled {
            return None;
        }
        if self.one_slot {
            match self.bound {
                Some(b) if b != slot => return None,
                _ => {}
            }
        }
        let lease = self.sched.lease(slot, now)?;
        if self.one_slot {
            self.bound = Some(slot);
        }
        self.leases.insert(
            lease.id,
            HeldLease {
                lease: lease.clone(),
                worker: worker.to_owned(),
                owner: owner.to_owned(),
            },
        );
        Some(lease)
    }

    /// A slot joined (before it asks for work, so batches are sized for it).
    pub fn add_slot(&mut self, slot: SlotId) {
        self.sched.add_slot(slot);
    }

    /// Extends a live lease (a heartbeat); `false` when it is not live.
    pub fn renew(&mut self, lease: LeaseId, token: u64, now: Duration) -> bool {
        self.sched.renew(lease, token, now).is_ok()
    }

    /// A live lease.
    pub fn held(&self, lease: LeaseId) -> Option<&HeldLease> {
        self.leases.get(&lease)
    }

    /// The live lease whose fencing token is `token`.
    pub fn held_by_token(&self, token: u64) -> Option<&HeldLease> {
        self.leases.values().find(|h| h.lease.token == token)
    }

    pub fn leases(&self) -> impl Iterator<Item = &HeldLease> {
        self.leases.values()
    }

    /// An attempt began running.
    pub fn started(&mut self, lease: LeaseId, exec: ExecId, at: f64) {
        let Some(held) = self.leases.get(&lease) else {
            return;
        };
        let Some(item) = held.lease.items.iter().find(|e| e.exec == exec) else {
            return;
        };
        self.out.push(Event::AttemptStarted(AttemptStarted {
            test: item.case.id.name.clone(),
            suite: item.case.id.suite.clone(),
            attempt: item.attempt,
            repeat: item.repeat,
            slot: held.lease.slot.index,
            worker: held.worker.clone(),
            start: at,
        }));
    }

    /// An attempt's result on a live lease (ignored, `Stale`, otherwise).
    pub fn result(
        &mut self,
        lease: LeaseId,
        token: u64,
        exec: ExecId,
        r: AttemptResult,
        now: Duration,
    ) -> Decision {
        let Some(held) = self.leases.get(&lease) else {
            return Decision::Stale;
        };
        let Some(item) = held.lease.items.iter().find(|e| e.exec == exec).cloned() else {
            return Decision::Stale;
        };
        let (slot, worker) = (held.lease.slot.index, held.worker.clone());
        let decision = self.sched.report(lease, token, exec, r.outcome, now);
        self.attempt(&item, slot, &worker, decision, r);
        decision
    }

    /// Ends a lease (its batch is done, or its runner or worker is gone):
    /// what got no result is requeued, or final once requeued too often
    /// (a crash, with `reason` in its message).
    pub fn release(&mut self, lease: LeaseId, token: u64, reason: &str, now: Duration) {
        if self
            .leases
            .get(&lease)
            .is_none_or(|h| h.lease.token != token)
        {
            return;
        }
        let lost = self.sched.release(lease, token, now);
        if let Some(held) = self.leases.remove(&lease) {
            self.lost(&held, lost, reason);
        }
    }

    /// Ends every lease past its deadline, as [`release`](Self::release)
    /// would; returns them.
    pub fn expire(&mut self, now: Duration, reason: &str) -> Vec<HeldLease> {
        let mut out = Vec::new();
        for ex in self.sched.expire(now) {
            if self.bound == Some(ex.slot) {
                // The bound slot's worker is gone: another slot takes over.
                self.bound = None;
            }
            if let Some(held) = self.leases.remove(&ex.lease) {
                self.lost(&held, ex.lost, reason);
                out.push(held);
            }
        }
        out
    }

    /// Brings the scheduler up to recorded attempts and takes over leases
    /// workers held (a coordinator restart): see [`Scheduler::resume`].
    /// Returns how many executions were restored and, per adopted lease,
    /// whether it was taken over.
    ///
    /// `adopted` pairs each lease with its worker's name and owner.
    pub fn resume(
        &mut self,
        restored: &[Restored],
        adopted: &[(Adopted, String, String)],
        now: Duration,
    ) -> (usize, Vec<bool>) {
        let leases: Vec<Adopted> = adopted.iter().map(|(a, _, _)| a.clone()).collect();
        let (n, taken) = self.sched.resume(restored, &leases, now);
        let mut kept = Vec::with_capacity(taken.len());
        for (lease, (_, worker, owner)) in taken.into_iter().zip(adopted) {
            kept.push(lease.is_some());
            if let Some(lease) = lease {
                self.leases.insert(
                    lease.id,
                    HeldLease {
                        lease,
                        worker: worker.clone(),
                        owner: owner.clone(),
                    },
                );
            }
        }
        (n, kept)
    }

    /// Counts an attempt recorded before a restart, as if it had just been
    /// reported (the scheduler learns of it through
    /// [`resume`](Self::resume)), and emits it again.
    pub fn replay(&mut self, mut a: AttemptFinished) {
        a.quarantined = self.quarantine.contains(&a.test_id());
        self.push_attempt(a);
    }

    /// Stops the run: nothing more is leased, live leases become stale;
    /// returns how many executions will never run.
    pub fn cancel(&mut self) -> usize {
        if !self.cancelled {
            self.cancelled = true;
            self.not_run = self.sched.cancel_all().len();
            self.leases.clear();
        }
        self.not_run
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Every execution has its final result, or the run was cancelled.
    pub fn is_over(&self) -> bool {
        self.cancelled || self.sched.is_finished()
    }

    pub fn counts(&self) -> &RunCounts {
        &self.counts
    }

    pub fn quarantined(&self) -> QuarantinedCounts {
        self.quarantined
    }

    pub fn not_run(&self) -> usize {
        self.not_run
    }

    /// The run's exit code as things stand ([`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        exit_code(
            &self.counts,
            &self.quarantined,
            self.cancelled,
            self.fail_on_flaky,
        )
    }

    /// The `run_finished` event of this run (not queued: the caller emits
    /// it after its own last notices).
    pub fn finished(&self, run_id: &str, start: f64, end: f64) -> RunFinished {
        RunFinished {
            run_id: run_id.to_owned(),
            counts: self.counts.clone(),
            quarantined: self.quarantined,
            start,
            end,
            interrupted: self.cancelled,
            not_run: self.not_run,
            exit_code: self.exit_code(),
        }
    }

    fn lost(&mut self, held: &HeldLease, lost: Vec<(Execution, Decision)>, reason: &str) {
        for (item, decision) in lost {
            let t = shoal_core::now_epoch();
            let r = AttemptResult {
                outcome: Outcome::Crash,
                duration: 0.0,
                message: Some(lost_message(self.max_requeues + 1, reason)),
                output: CapturedOutput::default(),
                start: t,
                end: t,
            };
            self.attempt(&item, held.lease.slot.index, &held.worker, decision, r);
        }
    }

    fn attempt(
        &mut self,
        item: &Execution,
        slot: u32,
        worker: &str,
        decision: Decision,
        r: AttemptResult,
    ) {
        let (will_retry, final_status) = match decision {
            Decision::Stale => return,
            Decision::Retry => (true, None),
            Decision::Final(st) => (false, Some(st)),
        };
        debug_assert!(final_status != Some(FinalStatus::Passed) || r.outcome == Outcome::Pass);
        self.push_attempt(AttemptFinished {
            test: item.case.id.name.clone(),
            suite: item.case.id.suite.clone(),
            outcome: r.outcome,
            attempt: item.attempt,
            repeat: item.repeat,
            slot,
            worker: worker.to_owned(),
            start: r.start,
            end: r.end.max(r.start),
            duration: r.duration,
            message: r.message,
            output: r.output,
            will_retry,
            final_status,
            quarantined: self.quarantine.contains(&item.case.id),
        });
        if self.sched.broken_build() && !self.broken_noticed {
            self.broken_noticed = true;
            self.notice(
                NoticeLevel::Warn,
                "more than the retry threshold of this run's tests failed: the build looks broken, so failures are no longer retried".into(),
            );
        }
    }

    fn push_attempt(&mut self, a: AttemptFinished) {
        self.counts.attempts += 1;
        if let Some(st) = a.final_status {
            self.counts.add(st);
            if a.quarantined {
                self.quarantined.add(st);
            }
        }
        self.out.push(Event::AttemptFinished(a));
    }
}

#[cfg(test)]
mod tests;
