//! One distributed run inside the coordinator: its stored spec, its pure
//! scheduler, the leases handed out (by fencing token) and its event log.
//!
//! Everything here is synchronous and runs under the coordinator's lock;
//! what must reach the store is returned as records for the caller to write
//! before it answers the worker.

use serde::{Deserialize, Serialize};
use shoal_core::event::{AttemptFinished, AttemptStarted, Notice, NoticeLevel, RunFinished};
use shoal_core::{CapturedOutput, Event, Outcome, TestCase, TestId, now_epoch};
use shoal_sched::{
    Adopted, Decision, ExecId, Execution, Lease, PlannedTest, Restored, SchedConfig, Scheduler,
    SlotId,
};
use shoal_store::AttemptRecord;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a run was submitted with, planned: stored so a restarted
/// coordinator rebuilds the very same scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub manifest_digest: String,
    pub config_toml: String,
    pub project_dir: String,
    pub retries: Option<u32>,
    pub user: String,
    pub commit: Option<String>,
    pub dirty: bool,
    pub selection: String,
    pub repeat: u32,
    pub submitted: f64,
    /// In submission order, with the estimates planning used.
    pub tests: Vec<SpecTest>,
    /// The shuffle seed, if the run was submitted with `--shuffle`.
    #[serde(default)]
    pub shuffle: Option<u64>,
    /// Per suite, the paths its workers collect (absent: all).
    #[serde(default)]
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
}

/// One planned test of a [`RunSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecTest {
    pub suite: String,
    pub name: String,
    pub group: String,
    pub estimate_us: u64,
    pub retries: u32,
    pub max_batch: usize,
    pub overhead_us: u64,
    /// See [`PlannedTest::locality`].
    #[serde(default)]
    pub locality: Option<String>,
}

impl RunSpec {
    pub fn planned(&self) -> Vec<PlannedTest> {
        self.tests
            .iter()
            .map(|t| PlannedTest {
                case: TestCase {
                    id: TestId::new(t.suite.clone(), t.name.clone()),
                    group: t.group.clone(),
                    runner: None,
                },
                estimate: Duration::from_micros(t.estimate_us),
                retries: t.retries,
                max_batch: t.max_batch.max(1),
                batch_overhead: Duration::from_micros(t.overhead_us),
                locality: t.locality.clone(),
            })
            .collect()
    }
}

/// A lease as the coordinator tracks it.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub lease: Lease,
    pub worker_id: String,
    pub worker_name: String,
}

/// One run's live state.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    pub spec: RunSpec,
    pub sched: Scheduler,
    epoch: Instant,
    /// Live leases by fencing token (the lease id workers see).
    pub leases: HashMap<u64, HeldLease>,
    pub events: Vec<String>,
    pub seq: watch::Sender<u64>,
    pub start: f64,
    pub finished: bool,
    pub cancelled: bool,
    broken_noticed: bool,
    /// Blobs of the snapshot, loaded when a worker first fetches.
    pub blobs: Option<std::collections::HashSet<String>>,
    /// Records to write before answering (taken by the caller).
    pub pending: Vec<AttemptRecord>,
    /// Batches of records taken and not yet written.
    writing: usize,
    pub max_requeues: u32,
}

impl Run {
    pub fn new(
        id: String,
        spec: RunSpec,
        token_base: u64,
        lease_timeout: Duration,
        max_requeues: u32,
    ) -> Result<Run, shoal_sched::SchedError> {
        let cfg = SchedConfig {
            lease_timeout: Some(lease_timeout),
            token_base,
            max_requeues,
            shuffle: spec.shuffle,
            ..SchedConfig::default()
        };
        let sched = Scheduler::new(cfg, spec.planned(), spec.repeat.max(1), &[])?;
        let broken_noticed = !spec.tests.iter().any(|t| t.retries > 0);
        Ok(Run {
            id,
            start: spec.submitted,
            spec,
            sched,
            epoch: Instant::now(),
            leases: HashMap::new(),
            events: Vec::new(),
            seq: watch::channel(0).0,
            finished: false,
            cancelled: false,
            broken_noticed,
            blobs: None,
            pending: Vec::new(),
            writing: 0,
            max_requeues,
        })
    }

    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Appends an event to the log watchers follow.
    pub fn emit(&mut self, ev: &Event) {
        match serde_json::to_string(ev) {
            Ok(json) => {
                self.events.push(json);
                self.seq.send_replace(self.events.len() as u64);
            }
            Err(e) => tracing::error!(run = %self.id, "cannot encode event: {e}"),
        }
    }

    pub fn notice(&mut self, level: NoticeLevel, message: String) {
        self.emit(&Event::Notice(Notice { level, message }));
    }

    /// Brings the scheduler up to the recorded attempts (re-emitting them)
    /// and takes over the leases workers held: returns how many executions
    /// were restored, and which of `adopted` (by index) were taken over.
    pub fn restore(
        &mut self,
        records: &[AttemptRecord],
        adopted: &[(Adopted, String, String)],
    ) -> (usize, Vec<bool>) {
        let mut by_exec: HashMap<(TestId, u32), Restored> = HashMap::new();
        for r in records {
            let Some(exec) = self.sched.exec_id(&r.test_id(), r.repeat) else {
                continue;
            };
            let e = by_exec.entry((r.test_id(), r.repeat)).or_insert(Restored {
                exec,
                attempts: 0,
                failures: 0,
                final_status: None,
            });
            e.attempts += 1;
            if !matches!(r.outcome, Outcome::Pass | Outcome::Skip) {
                e.failures += 1;
            }
            if r.final_status.is_some() {
                e.final_status = r.final_status;
            }
        }
        let restored: Vec<Restored> = by_exec.into_values().collect();
        let leases: Vec<Adopted> = adopted.iter().map(|(a, _, _)| a.clone()).collect();
        let now = self.now();
        let (n, taken) = self.sched.resume(&restored, &leases, now);
        let mut kept = Vec::with_capacity(taken.len());
        for (lease, (_, worker_id, worker_name)) in taken.into_iter().zip(adopted) {
            kept.push(lease.is_some());
            if let Some(lease) = lease {
                self.leases.insert(
                    lease.token,
                    HeldLease {
                        lease,
                        worker_id: worker_id.clone(),
                        worker_name: worker_name.clone(),
                    },
                );
            }
        }
        for r in records {
            self.emit(&Event::AttemptFinished(AttemptFinished {
                test: r.test.clone(),
                suite: r.suite.clone(),
                outcome: r.outcome,
                attempt: r.attempt,
                repeat: r.repeat,
                slot: r.slot,
                worker: r.worker.clone(),
                start: r.start,
                end: r.end,
                duration: r.duration,
                message: r.message.clone(),
                output: CapturedOutput::default(),
                will_retry: r.final_status.is_none(),
                final_status: r.final_status,
                // Quarantine is applied by the client (`shoal run --server`).
                quarantined: false,
            }));
        }
        (n, kept)
    }

    pub fn started(&mut self, token: u64, exec: u32, at: f64) {
        let Some(held) = self.leases.get(&token) else {
            return;
        };
        let Some(item) = held.lease.items.iter().find(|e| e.exec.0 == exec) else {
            return;
        };
        let ev = Event::AttemptStarted(AttemptStarted {
            test: item.case.id.name.clone(),
            suite: item.case.id.suite.clone(),
            attempt: item.attempt,
            repeat: item.repeat,
            slot: held.lease.slot.index,
            worker: held.worker_name.clone(),
            start: at,
        });
        self.emit(&ev);
    }

    /// A result on a live lease; ignored (stale) otherwise.
    pub fn finished_test(&mut self, token: u64, exec: u32, outcome: Outcome, r: ResultData) {
        let Some(held) = self.leases.get(&token) else {
            return;
        };
        let Some(item) = held.lease.items.iter().find(|e| e.exec.0 == exec).cloned() else {
            return;
        };
        let (slot, worker) = (held.lease.slot.index, held.worker_name.clone());
        let now = self.now();
        let decision = self
            .sched
            .report(held.lease.id, token, item.exec, outcome, now);
        self.attempt(&item, slot, &worker, decision, outcome, r);
    }

    /// Ends a lease (done, or its worker was lost): what got no result is
    /// requeued, or final once requeued too often.
    pub fn end_lease(&mut self, token: u64, reason: &str) {
        let Some(held) = self.leases.remove(&token) else {
            return;
        };
        let now = self.now();
        let lost = self.sched.release(held.lease.id, token, now);
        self.lost(&held, lost, reason);
    }

    /// Expires leases past their deadline.
    pub fn expire(&mut self) -> Vec<HeldLease> {
        let now = self.now();
        let mut out = Vec::new();
        for ex in self.sched.expire(now) {
            let Some((&token, _)) = self.leases.iter().find(|(_, h)| h.lease.id == ex.lease) else {
                continue;
            };
            let Some(held) = self.leases.remove(&token) else {
                continue;
            };
            self.lost(
                &held,
                ex.lost,
                "its worker stopped renewing the lease (it died or was cut off)",
            );
            out.push(held);
        }
        out
    }

    fn lost(&mut self, held: &HeldLease, lost: Vec<(Execution, Decision)>, reason: &str) {
        for (item, decision) in lost {
            let t = now_epoch();
            let message = format!(
                "no result after {} tries to run it: {reason}; a test that keeps killing its worker is reported as a crash",
                self.max_requeues + 1
            );
            let data = ResultData {
                duration: 0.0,
                message: Some(message),
                output: CapturedOutput::default(),
                start: t,
                end: t,
            };
            self.attempt(
                &item,
                held.lease.slot.index,
                &held.worker_name,
                decision,
                Outcome::Crash,
                data,
            );
        }
    }

    fn attempt(
        &mut self,
        item: &Execution,
        slot: u32,
        worker: &str,
        decision: Decision,
        outcome: Outcome,
        r: ResultData,
    ) {
        let (will_retry, final_status) = match decision {
            Decision::Stale => return,
            Decision::Retry => (true, None),
            Decision::Final(st) => (false, Some(st)),
        };
        let ev = AttemptFinished {
            test: item.case.id.name.clone(),
            suite: item.case.id.suite.clone(),
            outcome,
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
            quarantined: false,
        };
        self.pending.push(AttemptRecord::from_event(
            &self.id,
            &ev,
            self.spec.commit.as_deref(),
            self.spec.dirty,
        ));
        self.emit(&Event::AttemptFinished(ev));
        if self.sched.broken_build() && !self.broken_noticed {
            self.broken_noticed = true;
            self.notice(
                NoticeLevel::Warn,
                "more than the retry threshold of this run's tests failed: the build looks broken, so failures are no longer retried".into(),
            );
        }
    }

    /// Cancels the run: nothing more is leased; live leases become stale.
    pub fn cancel(&mut self) {
        if self.finished || self.cancelled {
            return;
        }
        self.cancelled = true;
        self.sched.cancel_all();
        self.leases.clear();
    }

    /// Takes the records to write; [`Run::written`] must follow.
    pub fn take_pending(&mut self) -> Vec<AttemptRecord> {
        self.writing += 1;
        std::mem::take(&mut self.pending)
    }

    /// A write of taken records ended; failed ones are kept for the next.
    pub fn written(&mut self, records: Vec<AttemptRecord>, ok: bool) {
        self.writing -= 1;
        if !ok {
            self.pending.extend(records);
        }
    }

    /// Whether the run just ended (every result it counts is in the
    /// store); emits `run_finished` once.
    pub fn check_finished(&mut self) -> Option<RunFinished> {
        if self.finished
            || !(self.sched.is_finished() || self.cancelled)
            || self.writing > 0
            || !self.pending.is_empty()
        {
            return None;
        }
        self.finished = true;
        let counts = self.sched.counts().clone();
        let exit_code = if self.cancelled {
            130
        } else if counts.failed > 0 {
            1
        } else {
            0
        };
        let fin = RunFinished {
            run_id: self.id.clone(),
            counts,
            quarantined: Default::default(),
            start: self.start,
            end: now_epoch(),
            interrupted: self.cancelled,
            not_run: self.sched.cancelled(),
            exit_code,
        };
        self.emit(&Event::RunFinished(fin.clone()));
        Some(fin)
    }

    /// Whether a worker holds a lease of this run (may read its snapshot).
    pub fn held_by(&self, worker_id: &str) -> bool {
        self.leases.values().any(|h| h.worker_id == worker_id)
    }
}

/// What a worker reported about one finished test.
#[derive(Debug, Clone)]
pub struct ResultData {
    pub duration: f64,
    pub message: Option<String>,
    pub output: CapturedOutput,
    pub start: f64,
    pub end: f64,
}

/// Parses a stored lease's items (`[[exec, attempt], ...]`).
pub fn lease_items(json: &str) -> Option<Vec<(ExecId, u32)>> {
    let items: Vec<(u32, u32)> = serde_json::from_str(json).ok()?;
    Some(items.into_iter().map(|(e, a)| (ExecId(e), a)).collect())
}

/// A stored lease as the scheduler adopts it.
pub fn adopted(worker: u32, slot: u32, token: u64, items: Vec<(ExecId, u32)>) -> Adopted {
    Adopted {
        slot: SlotId::new(worker, slot),
        token,
        items,
    }
}
