//! One distributed run inside the coordinator: its stored spec, its run
//! state (the same [`RunState`] a local run has) and its event log.
//!
//! Everything here is synchronous and runs under the coordinator's lock;
//! what must reach the store is returned as records for the caller to write
//! before it answers the worker.

use serde::{Deserialize, Serialize};
use shoal_core::event::{AttemptFinished, NoticeLevel, RunFinished};
use shoal_core::{CapturedOutput, Event, Outcome, RunSettings, TestCase, TestId, now_epoch};
use shoal_engine::{AttemptResult, RunRules, RunState};
use shoal_sched::{Adopted, ExecId, Lease, PlannedTest, Restored, SchedConfig, SlotId};
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
    /// How the run behaves, resolved on the client (runs stored before it
    /// existed: the defaults).
    #[serde(default)]
    pub settings: RunSettings,
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

pub use shoal_engine::HeldLease;

/// One run's live state.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    pub spec: RunSpec,
    /// Every decision of the run ([`RunState`], as a local run has it).
    pub state: RunState,
    epoch: Instant,
    pub events: Vec<String>,
    pub seq: watch::Sender<u64>,
    pub start: f64,
    pub finished: bool,
    /// Blobs of the snapshot, loaded when a worker first fetches.
    pub blobs: Option<std::collections::HashSet<String>>,
    /// Records to write before answering (taken by the caller).
    pub pending: Vec<AttemptRecord>,
    /// Batches of records taken and not yet written.
    writing: usize,
}

impl Run {
    pub fn new(
        id: String,
        spec: RunSpec,
        token_base: u64,
        lease_timeout: Duration,
        max_requeues: u32,
    ) -> Result<Run, shoal_sched::SchedError> {
        let rules = RunRules {
            sched: SchedConfig {
                lease_timeout: Some(lease_timeout),
                token_base,
                max_requeues,
                shuffle: spec.shuffle,
                keep_order: spec.settings.keep_order,
                ..SchedConfig::default()
            },
            repeat: spec.repeat.max(1),
            quarantine: spec.settings.quarantine.iter().cloned().collect(),
            fail_on_flaky: spec.settings.fail_on_flaky,
            one_slot: spec.settings.one_slot,
        };
        let state = RunState::new(spec.planned(), rules, &[])?;
        Ok(Run {
            id,
            start: spec.submitted,
            spec,
            state,
            epoch: Instant::now(),
            events: Vec::new(),
            seq: watch::channel(0).0,
            finished: false,
            blobs: None,
            pending: Vec::new(),
            writing: 0,
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

    /// Moves what the run state decided to the event log, and its attempts
    /// to the records to write.
    fn pump(&mut self) {
        for ev in self.state.take_events() {
            if let Event::AttemptFinished(a) = &ev {
                self.pending.push(AttemptRecord::from_event(
                    &self.id,
                    a,
                    self.spec.commit.as_deref(),
                    self.spec.dirty,
                ));
            }
            self.emit(&ev);
        }
    }

    pub fn notice(&mut self, level: NoticeLevel, message: String) {
        self.state.notice(level, message);
        self.pump();
    }

    pub fn cancelled(&self) -> bool {
        self.state.is_cancelled()
    }

    /// Live leases.
    pub fn lease_count(&self) -> usize {
        self.state.leases().count()
    }

    /// A batch for `slot` of the worker `worker_id` (shown as `name`).
    pub fn lease(&mut self, slot: SlotId, name: &str, worker_id: &str) -> Option<Lease> {
        let now = self.now();
        self.state.lease(slot, name, worker_id, now)
    }

    /// Brings the run state up to the recorded attempts (re-emitting them)
    /// and takes over the leases workers held: returns how many executions
    /// were restored, and which of `adopted` (by index) were taken over.
    /// `adopted` pairs each lease with its worker's id and name.
    pub fn restore(
        &mut self,
        records: &[AttemptRecord],
        adopted: &[(Adopted, String, String)],
    ) -> (usize, Vec<bool>) {
        let mut by_exec: HashMap<(TestId, u32), Restored> = HashMap::new();
        for r in records {
            let Some(exec) = self.state.sched().exec_id(&r.test_id(), r.repeat) else {
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
        let leases: Vec<(Adopted, String, String)> = adopted
            .iter()
            .map(|(a, id, name)| (a.clone(), name.clone(), id.clone()))
            .collect();
        let now = self.now();
        let (n, kept) = self.state.resume(&restored, &leases, now);
        for r in records {
            self.state.replay(AttemptFinished {
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
                quarantined: false,
            });
        }
        // Replayed attempts are in the store already: only the events go.
        for ev in self.state.take_events() {
            self.emit(&ev);
        }
        (n, kept)
    }

    pub fn started(&mut self, token: u64, exec: u32, at: f64) {
        let Some(id) = self.state.held_by_token(token).map(|h| h.lease.id) else {
            return;
        };
        self.state.started(id, ExecId(exec), at);
        self.pump();
    }

    /// A result on a live lease; ignored (stale) otherwise.
    pub fn finished_test(&mut self, token: u64, exec: u32, outcome: Outcome, r: ResultData) {
        let Some(id) = self.state.held_by_token(token).map(|h| h.lease.id) else {
            return;
        };
        let now = self.now();
        let result = AttemptResult {
            outcome,
            duration: r.duration,
            message: r.message,
            output: r.output,
            start: r.start,
            end: r.end,
        };
        self.state.result(id, token, ExecId(exec), result, now);
        self.pump();
    }

    /// Ends a lease (done, or its worker was lost): what got no result is
    /// requeued, or final once requeued too often.
    pub fn end_lease(&mut self, token: u64, reason: &str) {
        let Some(id) = self.state.held_by_token(token).map(|h| h.lease.id) else {
            return;
        };
        let now = self.now();
        self.state.release(id, token, reason, now);
        self.pump();
    }

    /// Expires leases past their deadline.
    pub fn expire(&mut self) -> Vec<HeldLease> {
        let now = self.now();
        let out = self.state.expire(
            now,
            "its worker stopped renewing the lease (it died or was cut off)",
        );
        self.pump();
        out
    }

    /// Cancels the run: nothing more is leased; live leases become stale.
    pub fn cancel(&mut self) {
        if self.finished || self.state.is_cancelled() {
            return;
        }
        self.state.cancel();
        self.pump();
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
        if self.finished || !self.state.is_over() || self.writing > 0 || !self.pending.is_empty() {
            return None;
        }
        self.finished = true;
        let fin = self.state.finished(&self.id, self.start, now_epoch());
        self.emit(&Event::RunFinished(fin.clone()));
        Some(fin)
    }

    /// Whether a worker holds a lease of this run (may read its snapshot).
    pub fn held_by(&self, worker_id: &str) -> bool {
        self.state.leases().any(|h| h.owner == worker_id)
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
