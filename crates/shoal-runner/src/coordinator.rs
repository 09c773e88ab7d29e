//! The coordinator: one loop that owns the scheduler and turns what slots
//! report into [`Event`]s. Slots talk to it only through messages, so local
//! mode is the distributed design joined by in-process channels.

use crate::store_writer::StoreWriter;
use shoal_core::event::{AttemptFinished, AttemptStarted, Notice, NoticeLevel};
use shoal_core::{
    Event, FinalStatus, Outcome, QuarantinedCounts, RunCounts, TestId, TestResult, now_epoch,
};
use shoal_report::Reporter;
use shoal_sched::{Decision, ExecId, Execution, Lease, LeaseId, Scheduler, SlotId};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Messages from slots to the coordinator (in local mode, over a channel;
/// a remote worker forwards the ones [`SlotCtx::run_lease`] sends over gRPC).
///
/// [`SlotCtx::run_lease`]: crate::SlotCtx::run_lease
#[derive(Debug)]
pub enum ToCoord {
    Ask {
        slot: u32,
        reply: oneshot::Sender<Option<Lease>>,
    },
    Started {
        lease: LeaseId,
        exec: ExecId,
        at: f64,
    },
    Result {
        lease: LeaseId,
        token: u64,
        exec: ExecId,
        result: TestResult,
        start: f64,
        end: f64,
    },
    Done {
        lease: LeaseId,
        token: u64,
    },
    /// Something the user should know (e.g. a fallback a slot took).
    Notice(String),
    SlotFailed {
        slot: u32,
        error: String,
    },
}

/// What the coordinator loop ends with.
#[derive(Debug, Default)]
pub(crate) struct CoordOutcome {
    pub counts: RunCounts,
    /// Of `counts`, the failed and flaky results of quarantined tests.
    pub quarantined: QuarantinedCounts,
    pub not_run: usize,
    pub slot_errors: Vec<String>,
}

pub(crate) struct Coordinator<'a> {
    pub sched: Scheduler,
    pub reporter: &'a mut dyn Reporter,
    pub store: StoreWriter,
    pub worker: String,
    pub cancel: CancellationToken,
    pub epoch: Instant,
    pub leases: HashMap<LeaseId, Lease>,
    pub parked: Vec<(u32, oneshot::Sender<Option<Lease>>)>,
    pub outcome: CoordOutcome,
    /// Tests whose failures do not fail the run (they run as usual).
    pub quarantine: HashSet<TestId>,
    /// Whether the broken-build notice was given (or is moot: no test may
    /// be retried, so there are no retries to stop).
    pub broken_noticed: bool,
    pub emit_errors: Vec<String>,
}

impl Coordinator<'_> {
    fn now(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }

    pub(crate) fn emit(&mut self, ev: Event) {
        if let Event::AttemptFinished(a) = &ev {
            self.outcome.counts.attempts += 1;
            if let Some(st) = a.final_status {
                self.outcome.counts.add(st);
                if a.quarantined {
                    self.outcome.quarantined.add(st);
                }
            }
            self.store.record(a);
        }
        if let Err(e) = self.reporter.on_event(&ev) {
            self.emit_errors.push(e.to_string());
        }
    }

    /// Runs until every slot has exited.
    pub(crate) async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<ToCoord>) {
        let mut cancelled = false;
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = self.cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    for (_, reply) in self.parked.drain(..) {
                        let _ = reply.send(None);
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                ToCoord::Ask { slot, reply } => {
                    if cancelled {
                        let _ = reply.send(None);
                    } else {
                        self.parked.push((slot, reply));
                    }
                }
                ToCoord::Started { lease, exec, at } => {
                    if let Some(item) = self
                        .leases
                        .get(&lease)
                        .and_then(|l| l.items.iter().find(|e| e.exec == exec))
                    {
                        let slot = self.leases[&lease].slot.index;
                        let ev = Event::AttemptStarted(AttemptStarted {
                            test: item.case.id.name.clone(),
                            suite: item.case.id.suite.clone(),
                            attempt: item.attempt,
                            repeat: item.repeat,
                            slot,
                            worker: self.worker.clone(),
                            start: at,
                        });
                        self.emit(ev);
                    }
                }
                ToCoord::Result {
                    lease,
                    token,
                    exec,
                    result,
                    start,
                    end,
                } => {
                    let now = self.now();
                    let decision = self.sched.report(lease, token, exec, result.outcome, now);
                    let Some(l) = self.leases.get(&lease) else {
                        continue;
                    };
                    let Some(item) = l.items.iter().find(|e| e.exec == exec).cloned() else {
                        continue;
                    };
                    let slot = l.slot.index;
                    self.finish_attempt(&item, slot, decision, &result, start, end);
                }
                ToCoord::Done { lease, token } => {
                    let now = self.now();
                    let slot = self.leases.get(&lease).map(|l| l.slot.index).unwrap_or(0);
                    for (item, decision) in self.sched.release(lease, token, now) {
                        let t = now_epoch();
                        let result = TestResult {
                            id: item.case.id.clone(),
                            outcome: Outcome::Lost,
                            duration: std::time::Duration::ZERO,
                            message: Some("no result was produced for this test after repeated attempts to run it".into()),
                            output: Default::default(),
                        };
                        self.finish_attempt(&item, slot, decision, &result, t, t);
                    }
                    self.leases.remove(&lease);
                }
                ToCoord::Notice(message) => {
                    self.emit(Event::Notice(Notice {
                        level: NoticeLevel::Warn,
                        message,
                    }));
                }
                ToCoord::SlotFailed { slot, error } => {
                    self.outcome
                        .slot_errors
                        .push(format!("slot {slot}: {error}"));
                    self.emit(Event::Notice(Notice {
                        level: NoticeLevel::Error,
                        message: format!("slot {slot} could not start: {error}"),
                    }));
                    // Without working slots the run cannot go on.
                    self.cancel.cancel();
                }
            }
            if self.sched.broken_build() && !self.broken_noticed {
                self.broken_noticed = true;
                self.emit(Event::Notice(Notice {
                    level: NoticeLevel::Warn,
                    message: "more than the retry threshold of this run's tests failed: the build looks broken, so failures are no longer retried".into(),
                }));
            }
            self.serve_parked(cancelled);
        }
        if cancelled || self.cancel.is_cancelled() {
            self.outcome.not_run = self.sched.cancel_all().len();
        }
    }

    fn finish_attempt(
        &mut self,
        item: &Execution,
        slot: u32,
        decision: Decision,
        result: &TestResult,
        start: f64,
        end: f64,
    ) {
        let (will_retry, final_status) = match decision {
            Decision::Stale => return,
            Decision::Retry => (true, None),
            Decision::Final(st) => (false, Some(st)),
        };
        debug_assert!(final_status != Some(FinalStatus::Passed) || result.outcome == Outcome::Pass);
        let ev = Event::AttemptFinished(AttemptFinished {
            test: item.case.id.name.clone(),
            suite: item.case.id.suite.clone(),
            outcome: result.outcome,
            attempt: item.attempt,
            repeat: item.repeat,
            slot,
            worker: self.worker.clone(),
            start,
            end: end.max(start),
            duration: result.duration.as_secs_f64(),
            message: result.message.clone(),
            output: result.output.clone(),
            will_retry,
            final_status,
            quarantined: self.quarantine.contains(&item.case.id),
        });
        self.emit(ev);
    }

    fn serve_parked(&mut self, cancelled: bool) {
        if self.parked.is_empty() {
            return;
        }
        let now = self.now();
        let finished = self.sched.is_finished() || cancelled;
        let mut still = Vec::new();
        for (slot, reply) in std::mem::take(&mut self.parked) {
            if finished {
                let _ = reply.send(None);
                continue;
            }
            match self.sched.lease(SlotId::local(slot), now) {
                Some(lease) => {
                    self.leases.insert(lease.id, lease.clone());
                    // If the slot went away, give the work back.
                    if let Err(Some(l)) = reply.send(Some(lease)) {
                        let _ = self.sched.release(l.id, l.token, now);
                        self.leases.remove(&l.id);
                    }
                }
                None => still.push((slot, reply)),
            }
        }
        self.parked = still;
    }
}
