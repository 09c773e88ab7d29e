//! A slot: one concurrent runner with a stable number, its own scratch and
//! temp directory. It asks the coordinator for batches, runs them through the
//! suite's adapter and the executor, attributes timeouts and crashes to the
//! test that was running, and reports each result. Tests that did not get to
//! run are left unreported, so releasing the lease requeues them.

use crate::SuiteRuntime;
use crate::coordinator::ToCoord;
use shoal_adapters::junit::recap_output;
use shoal_adapters::{BatchCtx, Invocation, Progress};
use shoal_core::config::CommandLine;
use shoal_core::{CapturedOutput, Outcome, TestCase, TestResult, now_epoch};
use shoal_exec::{Executor, ExitStatus, ProcessExit};
use shoal_sched::Lease;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// Grace given to processes killed because the run was interrupted.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// Everything a slot needs, shared read-only with the engine.
pub(crate) struct SlotCtx {
    pub slot: u32,
    pub worker: String,
    pub run_id: String,
    pub scratch: PathBuf,
    pub support_dir: PathBuf,
    pub project_root: PathBuf,
    pub suites: Arc<HashMap<String, SuiteRuntime>>,
    pub executor: Arc<dyn Executor>,
    pub tx: mpsc::UnboundedSender<ToCoord>,
    pub cancel: CancellationToken,
    pub kill_grace: Duration,
    pub output_cap: u64,
    pub slot_setup: Option<CommandLine>,
}

impl SlotCtx {
    fn base_env(&self) -> BTreeMap<String, String> {
        let tmp = self.scratch.join("tmp").to_string_lossy().into_owned();
        BTreeMap::from([
            ("SHOAL_SLOT".to_owned(), self.slot.to_string()),
            ("SHOAL_RUN_ID".to_owned(), self.run_id.clone()),
            ("SHOAL_WORKER".to_owned(), self.worker.clone()),
            ("TMPDIR".to_owned(), tmp.clone()),
            ("TMP".to_owned(), tmp.clone()),
            ("TEMP".to_owned(), tmp),
        ])
    }

    /// The slot's main loop: set up, then run batches until there are none.
    pub async fn run(self) {
        if let Err(e) = std::fs::create_dir_all(self.scratch.join("tmp")) {
            let _ = self.tx.send(ToCoord::SlotFailed {
                slot: self.slot,
                error: format!(
                    "failed to create slot directory {}: {e}",
                    self.scratch.display()
                ),
            });
            return;
        }
        if let Some(hook) = &self.slot_setup {
            if let Err(e) =
                crate::hooks::run_hook("slot_setup", hook, &self.project_root, &self.base_env())
                    .await
            {
                let _ = self.tx.send(ToCoord::SlotFailed {
                    slot: self.slot,
                    error: e.to_string(),
                });
                return;
            }
        }
        let mut seq = 0u64;
        loop {
            let (reply, rx) = oneshot::channel();
            if self
                .tx
                .send(ToCoord::Ask {
                    slot: self.slot,
                    reply,
                })
                .is_err()
            {
                return;
            }
            let Ok(Some(lease)) = rx.await else { return };
            seq += 1;
            self.run_lease(&lease, seq).await;
            let _ = self.tx.send(ToCoord::Done {
                lease: lease.id,
                token: lease.token,
            });
        }
    }

    async fn run_lease(&self, lease: &Lease, seq: u64) {
        let Some(first) = lease.items.first() else {
            return;
        };
        let Some(suite) = self.suites.get(&first.case.id.suite) else {
            return;
        };
        let cases: Vec<TestCase> = lease.items.iter().map(|e| e.case.clone()).collect();
        let mut env = self.base_env();
        env.extend(suite.config.env.clone());
        let ctx = BatchCtx {
            suite: suite.config.clone(),
            support_dir: self.support_dir.clone(),
            scratch_dir: self.scratch.clone(),
            batch_seq: seq,
            env,
            output_cap: self.output_cap,
        };
        let runner = LeaseRunner {
            slot: self,
            lease,
            suite,
            ctx,
        };
        for inv in suite.adapter.plan(&cases, &runner.ctx) {
            if self.cancel.is_cancelled() {
                break;
            }
            runner.run_invocation(inv, true).await;
        }
    }
}

struct LeaseRunner<'a> {
    slot: &'a SlotCtx,
    lease: &'a Lease,
    suite: &'a SuiteRuntime,
    ctx: BatchCtx,
}

/// Why a process was stopped by shoal, if it was.
#[derive(Debug, Clone, PartialEq)]
enum Stopped {
    /// A test ran past its timeout (`Some(name)`), or the process made no
    /// progress for that long between tests (`None`).
    Timeout(Option<String>),
    Cancelled,
}

impl LeaseRunner<'_> {
    fn exec_of(&self, case: &TestCase) -> Option<shoal_sched::ExecId> {
        self.lease
            .items
            .iter()
            .find(|e| e.case.id == case.id)
            .map(|e| e.exec)
    }

    fn started(&self, case: &TestCase, at: f64) {
        if let Some(exec) = self.exec_of(case) {
            let _ = self.slot.tx.send(ToCoord::Started {
                lease: self.lease.id,
                exec,
                at,
            });
        }
    }

    fn report(&self, case: &TestCase, result: TestResult, start: f64, end: f64) {
        if let Some(exec) = self.exec_of(case) {
            let _ = self.slot.tx.send(ToCoord::Result {
                lease: self.lease.id,
                token: self.lease.token,
                exec,
                result,
                start,
                end,
            });
        }
    }

    fn synth(
        &self,
        case: &TestCase,
        outcome: Outcome,
        message: String,
        output: &CapturedOutput,
        duration: Duration,
    ) -> TestResult {
        TestResult {
            id: case.id.clone(),
            outcome,
            duration,
            message: Some(message),
            output: output.clone(),
        }
    }

    /// Runs one process of the batch and reports what it can attribute.
    /// `may_split`: when a multi-test process without per-test progress dies
    /// or times out, rerun its tests one per process to attribute the cause.
    async fn run_invocation(&self, inv: Invocation, may_split: bool) {
        let adapter = &self.suite.adapter;
        let timeout = self.suite.config.timeout;
        let grace = self.slot.kill_grace;
        let cancel = &self.slot.cancel;
        let inv_start = now_epoch();
        let mut proc = match self.slot.executor.spawn(&inv.spec).await {
            Ok(p) => p,
            Err(e) => {
                let out = CapturedOutput::default();
                for case in &inv.tests {
                    let r = self.synth(
                        case,
                        Outcome::Crash,
                        format!("could not start the test runner: {e}"),
                        &out,
                        Duration::ZERO,
                    );
                    self.report(case, r, inv_start, now_epoch());
                }
                return;
            }
        };
        let terminator = proc.terminator();
        let progress_mode = adapter.reports_progress() && inv.spec.progress_pipe;
        if !progress_mode {
            for case in &inv.tests {
                self.started(case, inv_start);
            }
        }

        // Phase 1: follow per-test progress, with a per-test deadline.
        let mut progress: Vec<Progress> = Vec::new();
        let mut started_at: HashMap<String, f64> = HashMap::new();
        let mut finished_at: HashMap<String, f64> = HashMap::new();
        let mut current: Option<(String, Instant)> = None;
        let mut idle_since = Instant::now();
        let mut stopped: Option<Stopped> = None;
        let mut streamed: HashSet<String> = HashSet::new();
        let mut eof = !progress_mode;
        while !eof {
            let deadline = match (&stopped, &current) {
                (Some(_), _) => Instant::now() + Duration::from_secs(3600),
                (None, Some((_, t0))) => *t0 + timeout,
                (None, None) => idle_since + timeout,
            };
            tokio::select! {
                line = proc.next_progress() => match line {
                    None => eof = true,
                    Some(line) => {
                        let Some(p) = adapter.parse_progress(&line) else { continue };
                        let now = now_epoch();
                        match &p {
                            Progress::Started { name } => {
                                current = Some((name.clone(), Instant::now()));
                                started_at.insert(name.clone(), now);
                                if let Some(case) = inv.tests.iter().find(|c| c.id.name == *name) {
                                    self.started(case, now);
                                }
                            }
                            Progress::Finished { name, outcome, duration, message, output } => {
                                current = None;
                                idle_since = Instant::now();
                                finished_at.insert(name.clone(), now);
                                // Report at once: failures show as they
                                // happen and the run's counts stay live. The
                                // tool's own report is read after exit for
                                // whatever the stream missed.
                                if let Some(case) = inv.tests.iter().find(|c| c.id.name == *name) {
                                    if streamed.insert(name.clone()) {
                                        let result = TestResult {
                                            id: case.id.clone(),
                                            outcome: *outcome,
                                            duration: *duration,
                                            message: message.clone(),
                                            output: output
                                                .as_ref()
                                                .map(|o| recap_output(o, self.slot.output_cap))
                                                .unwrap_or_default(),
                                        };
                                        let start = started_at.get(name).copied().unwrap_or(now);
                                        self.report(case, result, start, now);
                                    }
                                }
                            }
                        }
                        progress.push(p);
                    }
                },
                _ = sleep_until(deadline) => {
                    stopped = Some(Stopped::Timeout(current.as_ref().map(|c| c.0.clone())));
                    terminator.terminate(grace);
                }
                _ = cancel.cancelled(), if stopped.is_none() => {
                    stopped = Some(Stopped::Cancelled);
                    terminator.terminate(CANCEL_GRACE);
                }
            }
        }

        // Phase 2: wait for exit; without progress, the whole process gets
        // `timeout` per test.
        let overall = Instant::now() + timeout.saturating_mul(inv.tests.len().max(1) as u32);
        let wait = proc.wait();
        tokio::pin!(wait);
        let exit = loop {
            tokio::select! {
                exit = &mut wait => break exit,
                _ = sleep_until(overall), if stopped.is_none() && !progress_mode => {
                    stopped = Some(Stopped::Timeout(None));
                    terminator.terminate(grace);
                }
                _ = cancel.cancelled(), if stopped.is_none() => {
                    stopped = Some(Stopped::Cancelled);
                    terminator.terminate(CANCEL_GRACE);
                }
            }
        };
        let exit = match exit {
            Ok(exit) => exit,
            Err(e) => ProcessExit {
                status: ExitStatus::Code(-1),
                output: CapturedOutput {
                    text: format!("shoal lost track of the process: {e}"),
                    truncated_bytes: 0,
                },
                wall: Duration::ZERO,
                terminated: true,
            },
        };
        let end = now_epoch();

        // Everything streamed: no need to read the tool's report.
        let collected = if streamed.len() == inv.tests.len() {
            Vec::new()
        } else {
            adapter.collect(&inv, &exit, &progress)
        };
        let results: HashMap<String, TestResult> = collected
            .into_iter()
            .map(|r| (r.id.name.clone(), r))
            .collect();
        let crashed = !exit.status.success() && !matches!(exit.status, ExitStatus::Code(1))
            || stopped.is_some();
        let mut unattributed: Vec<TestCase> = Vec::new();
        let mut any_died_running = false;
        // First pass: the test that was running when the process died.
        for case in &inv.tests {
            let name = &case.id.name;
            if results.contains_key(name) {
                continue;
            }
            if progress_mode && started_at.contains_key(name) && !finished_at.contains_key(name) {
                any_died_running = true;
            }
        }
        for case in inv.tests.iter().filter(|c| !streamed.contains(&c.id.name)) {
            let name = &case.id.name;
            let start = started_at.get(name).copied().unwrap_or(inv_start);
            if let Some(mut r) = results.get(name).cloned() {
                let end_t = finished_at
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| (start + r.duration.as_secs_f64()).min(end).max(start));
                if r.output.text.is_empty() && inv.tests.len() == 1 {
                    r.output = exit.output.clone();
                }
                self.report(case, r, start, end_t);
                continue;
            }
            let elapsed = Duration::from_secs_f64((end - start).max(0.0));
            let timed_out = match &stopped {
                Some(Stopped::Cancelled) => continue, // interrupted, not a result
                // The test that was running, or the only test of a process
                // without progress.
                Some(Stopped::Timeout(Some(t))) => t == name,
                Some(Stopped::Timeout(None)) => !progress_mode && inv.tests.len() == 1,
                None => false,
            };
            if timed_out {
                let msg = format!("timed out after {}", fmt_duration(timeout));
                self.report(
                    case,
                    self.synth(case, Outcome::Timeout, msg, &exit.output, elapsed),
                    start,
                    end,
                );
                continue;
            }
            if progress_mode {
                if started_at.contains_key(name) && !finished_at.contains_key(name) {
                    let msg = format!(
                        "the test runner died ({}) while this test was running",
                        exit.status
                    );
                    self.report(
                        case,
                        self.synth(case, Outcome::Crash, msg, &exit.output, elapsed),
                        start,
                        end,
                    );
                } else if started_at.contains_key(name) || (!crashed && !any_died_running) {
                    // It ran (or the runner finished normally without running
                    // it) yet no report has it.
                    let msg = format!(
                        "the test runner ({}) reported no result for this test",
                        exit.status
                    );
                    self.report(
                        case,
                        self.synth(case, Outcome::Lost, msg, &exit.output, elapsed),
                        start,
                        end,
                    );
                }
                // Otherwise it never started because another test killed the
                // runner: leave it unreported so the lease release requeues it.
            } else if inv.tests.len() == 1 {
                let (outcome, msg) =
                    if exit.status.success() || exit.status == ExitStatus::Code(1) && !crashed {
                        (
                            Outcome::Lost,
                            format!(
                                "the test runner ({}) reported no result for this test",
                                exit.status
                            ),
                        )
                    } else {
                        (
                            Outcome::Crash,
                            format!("the test process died ({})", exit.status),
                        )
                    };
                self.report(
                    case,
                    self.synth(case, outcome, msg, &exit.output, elapsed),
                    start,
                    end,
                );
            } else {
                unattributed.push(case.clone());
            }
        }
        if unattributed.is_empty() {
            return;
        }
        if (crashed || stopped.is_some()) && may_split && !cancel.is_cancelled() {
            // One process ran several tests and died without saying which was
            // to blame: run them one per process to find out.
            for case in unattributed {
                for single in self
                    .suite
                    .adapter
                    .plan(std::slice::from_ref(&case), &self.ctx)
                {
                    Box::pin(self.run_invocation(single, false)).await;
                }
            }
        } else {
            for case in unattributed {
                let msg = format!(
                    "the test runner ({}) reported no result for this test",
                    exit.status
                );
                let r = self.synth(&case, Outcome::Lost, msg, &exit.output, Duration::ZERO);
                self.report(&case, r, inv_start, end);
            }
        }
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && d.subsec_nanos() == 0 && d.as_secs() % 60 == 0 {
        format!("{}m", d.as_secs() / 60)
    } else if s >= 1.0 {
        format!(
            "{}s",
            format!("{s:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
        )
    } else {
        format!("{}ms", d.as_millis())
    }
}
