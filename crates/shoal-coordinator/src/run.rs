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
use std::sync::Arc;
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

/// The coordinator's monotonic clock, which lease deadlines are measured
/// in: injected, so a run's expiry can be tested without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The real clock: time since it was made.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// One run's live state.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    pub spec: RunSpec,
    /// Every decision of the run ([`RunState`], as a local run has it).
    pub state: RunState,
    clock: Arc<dyn Clock>,
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
        clock: Arc<dyn Clock>,
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
            clock,
            events: Vec::new(),
            seq: watch::channel(0).0,
            finished: false,
            blobs: None,
            pending: Vec::new(),
            writing: 0,
        })
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{Event, FinalStatus};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves.
    #[derive(Debug, Default)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    const LEASE: Duration = Duration::from_secs(10);

    fn spec(names: &[&str], settings: RunSettings) -> RunSpec {
        RunSpec {
            manifest_digest: "m".into(),
            config_toml: String::new(),
            project_dir: String::new(),
            retries: None,
            user: "u".into(),
            commit: Some("c0ffee".into()),
            dirty: false,
            selection: String::new(),
            repeat: 1,
            submitted: 1.0,
            tests: names
                .iter()
                .map(|n| SpecTest {
                    suite: "py".into(),
                    name: (*n).into(),
                    group: "g".into(),
                    estimate_us: 1000,
                    retries: 0,
                    max_batch: 1,
                    overhead_us: 0,
                    locality: None,
                })
                .collect(),
            shuffle: None,
            scopes: Default::default(),
            settings,
        }
    }

    fn run_of(names: &[&str], settings: RunSettings) -> (Run, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let run = Run::new(
            "r1".into(),
            spec(names, settings),
            1000,
            LEASE,
            2,
            clock.clone(),
        )
        .expect("plans");
        (run, clock)
    }

    fn result(at: f64) -> ResultData {
        ResultData {
            duration: 0.1,
            message: None,
            output: CapturedOutput::default(),
            start: at,
            end: at + 0.1,
        }
    }

    fn events(run: &Run) -> Vec<Event> {
        run.events
            .iter()
            .map(|j| serde_json::from_str(j).expect("an event"))
            .collect()
    }

    /// Leases one batch to worker `w`'s slot 0 and reports `outcome` for
    /// every test in it.
    fn run_batch(run: &mut Run, outcome: Outcome) -> bool {
        let Some(lease) = run.lease(SlotId::new(1, 0), "w", "w-id") else {
            return false;
        };
        for e in &lease.items {
            run.started(lease.token, e.exec.0, 2.0);
            run.finished_test(lease.token, e.exec.0, outcome, result(2.0));
        }
        run.end_lease(lease.token, "done");
        true
    }

    #[test]
    fn results_become_events_and_records_and_the_run_finishes_once_written() {
        let (mut run, _) = run_of(&["a", "b"], RunSettings::default());
        while run_batch(&mut run, Outcome::Pass) {}
        assert!(
            run.check_finished().is_none(),
            "not finished while its records are unwritten"
        );
        let records = run.take_pending();
        assert_eq!(records.len(), 2);
        assert!(
            records
                .iter()
                .all(|r| r.commit.as_deref() == Some("c0ffee"))
        );
        run.written(records, true);
        let fin = run.check_finished().expect("finished");
        assert_eq!((fin.counts.passed, fin.exit_code), (2, 0));
        assert!(run.check_finished().is_none(), "run_finished comes once");
        let evs = events(&run);
        assert_eq!(
            evs.iter()
                .filter(|e| matches!(e, Event::AttemptStarted(_)))
                .count(),
            2
        );
        assert!(matches!(evs.last(), Some(Event::RunFinished(_))));
    }

    #[test]
    fn a_failed_write_keeps_the_records_for_the_next() {
        let (mut run, _) = run_of(&["a"], RunSettings::default());
        run_batch(&mut run, Outcome::Fail);
        let records = run.take_pending();
        run.written(records, false);
        assert!(run.check_finished().is_none());
        let again = run.take_pending();
        assert_eq!(again.len(), 1, "the failed write's records come back");
        run.written(again, true);
        assert_eq!(run.check_finished().map(|f| f.exit_code), Some(1));
    }

    #[test]
    fn an_unrenewed_lease_expires_on_the_clock_and_its_test_is_requeued_then_a_crash() {
        let (mut run, clock) = run_of(&["killer"], RunSettings::default());
        for round in 0..3 {
            let lease = run
                .lease(SlotId::new(1, 0), "w", "w-id")
                .unwrap_or_else(|| panic!("round {round}: the test is leased again"));
            clock.advance(LEASE - Duration::from_millis(1));
            assert!(run.expire().is_empty(), "not before its deadline");
            clock.advance(Duration::from_millis(1));
            let expired = run.expire();
            assert_eq!(expired.len(), 1);
            assert_eq!(expired[0].lease.token, lease.token);
            assert_eq!(expired[0].owner, "w-id");
        }
        // max_requeues = 2: the third loss is final.
        let crash = events(&run)
            .into_iter()
            .find_map(|e| match e {
                Event::AttemptFinished(a) => Some(a),
                _ => None,
            })
            .expect("a final attempt");
        assert_eq!(crash.outcome, Outcome::Crash);
        assert_eq!(crash.final_status, Some(FinalStatus::Failed));
        assert!(
            crash
                .message
                .as_deref()
                .is_some_and(|m| m.contains("3 tries") && m.contains("stopped renewing")),
            "{crash:?}"
        );
    }

    #[test]
    fn the_spec_settings_quarantine_and_fail_on_flaky() {
        let settings = RunSettings {
            quarantine: vec![TestId::new("py", "q")],
            ..RunSettings::default()
        };
        let (mut run, _) = run_of(&["q"], settings);
        run_batch(&mut run, Outcome::Fail);
        let records = run.take_pending();
        run.written(records, true);
        let fin = run.check_finished().expect("finished");
        assert_eq!((fin.counts.failed, fin.quarantined.failed), (1, 1));
        assert_eq!(fin.exit_code, 0, "a quarantined failure is excused");
    }

    #[test]
    fn a_restored_run_counts_what_was_recorded_and_runs_the_rest() {
        let (mut first, _) = run_of(&["a", "b"], RunSettings::default());
        run_batch(&mut first, Outcome::Pass);
        let records = first.take_pending();
        assert_eq!(records.len(), 1);
        // A new coordinator: the same spec, the recorded attempts.
        let (mut again, _) = run_of(&["a", "b"], RunSettings::default());
        let (restored, kept) = again.restore(&records, &[]);
        assert_eq!((restored, kept.len()), (1, 0));
        let replayed = again.take_pending();
        assert!(replayed.is_empty(), "replayed attempts are not rewritten");
        again.written(replayed, true);
        assert!(run_batch(&mut again, Outcome::Pass));
        assert!(
            !run_batch(&mut again, Outcome::Pass),
            "only the other test was left"
        );
        let pending = again.take_pending();
        again.written(pending, true);
        let fin = again.check_finished().expect("finished");
        assert_eq!(fin.counts.passed, 2);
    }
}
