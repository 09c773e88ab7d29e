//! A slot: one concurrent runner with a stable number, its own scratch and
//! temp directory. It asks the coordinator for batches, runs them through the
//! suite's adapter and the executor, attributes timeouts and crashes to the
//! test that was running, and reports each result. Tests that did not get to
//! run are left unreported, so releasing the lease requeues them.

mod attribution;

use crate::SuiteRuntime;
use crate::containers::ServiceLog;
use crate::message::ToCoord;
use shoal_adapters::junit::recap_output;
use shoal_adapters::{BatchCtx, Invocation, Progress};
use shoal_core::config::{CommandLine, SuiteConfig, Workdir};
use shoal_core::{CapturedOutput, Outcome, TestCase, TestResult, now_epoch};
use shoal_exec::{Executor, ExitStatus, ProcessExit};
use shoal_exec::{RunningProcess, Terminator};
use shoal_sched::Lease;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// Makes `dir` a fresh working directory for one slot: the top-level
/// *files* of `root` are copied (so a test that writes `./test.db` writes
/// its slot's copy, even when an earlier run left one in the root) and the
/// top-level *directories* (and symlinks) are linked (so the project reads
/// the same, at the cost of one `symlink` each, whatever the tree's size).
/// shoal's `.shoal` is left out. Files written *below* a linked directory
/// still land in the shared tree (docs/config.md).
fn link_workdir(root: &std::path::Path, dir: &std::path::Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let root = std::path::absolute(root)?;
    for entry in std::fs::read_dir(&root)? {
        let entry = entry?;
        if entry.file_name() == ".shoal" {
            continue;
        }
        let to = dir.join(entry.file_name());
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), &to)?;
        } else {
            std::os::unix::fs::symlink(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// A suite name as one path component.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Grace given to processes killed because the run was interrupted.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// Everything a slot needs, shared read-only with the engine. A remote
/// worker builds one per (run, slot) and calls [`SlotCtx::prepare`] once,
/// then [`SlotCtx::run_lease`] per batch, forwarding what arrives on `tx`.
#[derive(Debug)]
pub struct SlotCtx {
    pub slot: u32,
    /// How many slots this worker (or local run) has: `SHOAL_SLOT_COUNT`.
    pub slot_count: u32,
    pub worker: String,
    pub run_id: String,
    pub scratch: PathBuf,
    pub support_dir: PathBuf,
    pub project_root: PathBuf,
    pub suites: Arc<HashMap<String, SuiteRuntime>>,
    pub executor: Arc<dyn Executor>,
    /// Per suite, the executor of its container on this slot (suites with
    /// an `environment`); other suites use `executor`.
    pub executors: HashMap<String, Arc<dyn Executor>>,
    /// Per suite, extra environment of its tests on this slot (where the
    /// slot's services are).
    pub test_env: HashMap<String, BTreeMap<String, String>>,
    /// Extra environment of `slot_setup` (where the services are, seen
    /// from this host).
    pub hook_env: BTreeMap<String, String>,
    /// Per suite, the slot's services whose logs go with failing tests.
    pub service_logs: HashMap<String, Vec<ServiceLog>>,
    pub tx: mpsc::UnboundedSender<ToCoord>,
    pub cancel: CancellationToken,
    pub kill_grace: Duration,
    pub output_cap: u64,
    pub slot_setup: Option<CommandLine>,
}

/// The directory under the system's temp directory that holds the temp
/// directories of a run's slots on this host (removed when the run ends).
/// Not under the project (`.shoal/`): tests that make temp directories
/// and expect them outside any git repository or `.gitignore` would
/// otherwise find themselves inside the user's.
pub fn run_temp_root(run_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shoal-{}", safe_name(run_id)))
}

impl SlotCtx {
    /// This slot's `TMPDIR`: its own directory under [`run_temp_root`]
    /// (workers of one host apart by name).
    fn tmp_dir(&self) -> PathBuf {
        run_temp_root(&self.run_id).join(format!("{}-slot-{}", safe_name(&self.worker), self.slot))
    }

    fn base_env(&self) -> BTreeMap<String, String> {
        let tmp = self.tmp_dir().to_string_lossy().into_owned();
        BTreeMap::from([
            ("SHOAL_SLOT".to_owned(), self.slot.to_string()),
            ("SHOAL_SLOT_COUNT".to_owned(), self.slot_count.to_string()),
            ("SHOAL_RUN_ID".to_owned(), self.run_id.clone()),
            ("SHOAL_WORKER".to_owned(), self.worker.clone()),
            ("TMPDIR".to_owned(), tmp.clone()),
            ("TMP".to_owned(), tmp.clone()),
            ("TEMP".to_owned(), tmp),
        ])
    }

    /// The executor for a suite's processes on this slot.
    fn executor_for(&self, suite: &str) -> &Arc<dyn Executor> {
        self.executors.get(suite).unwrap_or(&self.executor)
    }

    /// Where `suite`'s tests run on this slot: its root, or with
    /// `workdir = "slot"` the slot's own directory (`link_workdir`).
    fn workdir(&self, suite: &SuiteConfig) -> PathBuf {
        match suite.workdir {
            Workdir::Shared => suite.root.clone(),
            Workdir::Slot => self.scratch.join("work").join(safe_name(&suite.name)),
        }
    }

    /// Creates the slot's directories (a working directory of its own for
    /// suites with `workdir = "slot"`) and runs `slot_setup`.
    pub async fn prepare(&self) -> Result<(), String> {
        for dir in [self.scratch.clone(), self.tmp_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("failed to create slot directory {}: {e}", dir.display()))?;
        }
        for suite in self.suites.values() {
            if suite.config.workdir == Workdir::Slot {
                let dir = self.workdir(&suite.config);
                link_workdir(&suite.config.root, &dir).map_err(|e| {
                    format!(
                        "failed to make the working directory {} of suite `{}`: {e}",
                        dir.display(),
                        suite.config.name
                    )
                })?;
            }
        }
        if let Some(hook) = &self.slot_setup {
            let mut env = self.base_env();
            env.extend(self.hook_env.clone());
            crate::hooks::run_hook("slot_setup", hook, &self.project_root, &env)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The slot's main loop: set up, then run batches until there are none.
    pub async fn run(self) {
        if let Err(error) = self.prepare().await {
            let _ = self.tx.send(ToCoord::SlotFailed {
                slot: self.slot,
                error,
            });
            return;
        }
        let mut seq = 0u64;
        let mut runners: HashMap<String, Persistent> = HashMap::new();
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
            let Ok(Some(lease)) = rx.await else { break };
            seq += 1;
            self.run_lease(&lease, seq, &mut runners).await;
            let _ = self.tx.send(ToCoord::Done {
                lease: lease.id,
                token: lease.token,
            });
        }
        self.close(&mut runners).await;
    }

    /// Stops the slot's persistent runners.
    pub async fn close(&self, runners: &mut HashMap<String, Persistent>) {
        for (_, runner) in runners.drain() {
            if let Persistent::Live { proc, .. } = runner {
                shut_down(proc, self.kill_grace).await;
            }
        }
    }

    /// Runs one batch (`seq` unique within the slot), sending what happens
    /// on `tx`: [`ToCoord::Started`], [`ToCoord::Result`] and notices. Tests
    /// left without a result are the caller's to release.
    pub async fn run_lease(
        &self,
        lease: &Lease,
        seq: u64,
        runners: &mut HashMap<String, Persistent>,
    ) {
        let Some(first) = lease.items.first() else {
            return;
        };
        let Some(suite) = self.suites.get(&first.case.id.suite) else {
            return;
        };
        let cases: Vec<TestCase> = lease.items.iter().map(|e| e.case.clone()).collect();
        let mut env = self.base_env();
        env.extend(suite.config.env.clone());
        if let Some(services) = self.test_env.get(&suite.config.name) {
            env.extend(services.clone());
        }
        let batch_start = now_epoch();
        let mut config = suite.config.clone();
        config.root = self.workdir(&suite.config);
        let ctx = BatchCtx {
            suite: config,
            support_dir: self.support_dir.clone(),
            scratch_dir: self.scratch.clone(),
            batch_seq: seq,
            env,
            output_cap: self.output_cap,
            estimates: lease
                .items
                .iter()
                .map(|e| (e.case.id.name.clone(), e.estimate))
                .collect(),
            collect: suite.collect.clone(),
        };
        let services = self.service_logs.get(&suite.config.name);
        let runner = LeaseRunner {
            slot: self,
            lease,
            suite,
            ctx,
            held: services.map(|_| std::sync::Mutex::new(Vec::new())),
        };
        runner.run(&cases, runners).await;
        runner.flush_held(batch_start).await;
    }
}

impl LeaseRunner<'_> {
    /// Runs the batch: on the suite's long-lived runner when it has one,
    /// one process per invocation otherwise.
    async fn run(&self, cases: &[TestCase], runners: &mut HashMap<String, Persistent>) {
        let (slot, suite) = (self.slot, self.suite);
        let name = &suite.config.name;
        let state = runners.entry(name.clone()).or_insert(Persistent::Idle);
        // A fresh container per batch rules out a runner serving several.
        let fresh = slot.executor_for(name).fresh_per_process();
        if !fresh && !matches!(state, Persistent::Unavailable) {
            if let Some(inv) = suite.adapter.persistent_runner(&self.ctx) {
                match self.run_persistent(inv, cases, state).await {
                    Ok(()) => return,
                    Err(reason) => {
                        *state = Persistent::Unavailable;
                        let _ = slot.tx.send(ToCoord::Notice(format!(
                            "slot {}: the {} runner of suite `{name}` could not serve batches ({reason}); running one process per batch instead",
                            slot.slot,
                            suite.adapter.name()
                        )));
                    }
                }
            }
        }
        for inv in suite.adapter.plan(cases, &self.ctx) {
            if slot.cancel.is_cancelled() {
                break;
            }
            self.run_invocation(inv, true).await;
        }
    }

    /// Sends the failures held back for service logs, with the log lines
    /// each service wrote since the batch started.
    async fn flush_held(&self, batch_start: f64) {
        let Some(held) = &self.held else { return };
        let held = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
        if held.is_empty() {
            return;
        }
        let mut logs = String::new();
        for service in self
            .slot
            .service_logs
            .get(&self.suite.config.name)
            .into_iter()
            .flatten()
        {
            let lines = service.since(batch_start, SERVICE_LOG_LINES).await;
            logs.push_str(&format!(
                "\n--- service `{}` (slot {}), its log since the batch started ---\n",
                service.name(),
                self.slot.slot
            ));
            logs.push_str(if lines.is_empty() {
                "(nothing)\n"
            } else {
                &lines
            });
            if !logs.ends_with('\n') {
                logs.push('\n');
            }
        }
        for (exec, mut result, start, end) in held {
            result.output.text.push_str(&logs);
            self.send(exec, result, start, end);
        }
    }
}

/// A suite's long-lived runner on one slot.
pub enum Persistent {
    /// None running: start one for the next batch.
    Idle,
    Live {
        proc: Box<dyn RunningProcess>,
        terminator: Terminator,
        /// Batches it has completed.
        batches: u32,
    },
    /// It could not serve: this slot runs the suite one process per batch.
    Unavailable,
}

impl std::fmt::Debug for Persistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Persistent::Idle => f.write_str("Idle"),
            Persistent::Live { batches, .. } => write!(f, "Live {{ batches: {batches} }}"),
            Persistent::Unavailable => f.write_str("Unavailable"),
        }
    }
}

/// Closes a persistent runner's stdin (its signal to exit) and waits for it,
/// killing it if it does not go within `grace`.
async fn shut_down(mut proc: Box<dyn RunningProcess>, grace: Duration) {
    let terminator = proc.terminator();
    proc.close_stdin();
    let wait = proc.wait();
    tokio::pin!(wait);
    tokio::select! {
        _ = &mut wait => {}
        _ = tokio::time::sleep(grace) => {
            terminator.kill();
            let _ = wait.await;
        }
    }
}

struct LeaseRunner<'a> {
    slot: &'a SlotCtx,
    lease: &'a Lease,
    suite: &'a SuiteRuntime,
    ctx: BatchCtx,
    /// With services on the slot: failures held until the batch ends, to
    /// go out with the services' logs.
    held: Option<std::sync::Mutex<Vec<HeldResult>>>,
}

/// A failure waiting for its services' logs: exec, result, start, end.
type HeldResult = (shoal_sched::ExecId, TestResult, f64, f64);

/// Lines of each service's log attached to a failing test.
const SERVICE_LOG_LINES: usize = 40;

/// Why a process was stopped by shoal, if it was.
#[derive(Debug, Clone, PartialEq)]
enum Stopped {
    /// A test ran past its timeout (`Some(name)`), or the process made no
    /// progress for that long between tests (`None`).
    Timeout(Option<String>),
    Cancelled,
}

/// What following a process's progress pipe learned.
#[derive(Debug, Default)]
struct Follow {
    progress: Vec<Progress>,
    started_at: HashMap<String, f64>,
    finished_at: HashMap<String, f64>,
    /// Tests already reported from the stream.
    streamed: HashSet<String>,
    stopped: Option<Stopped>,
    /// A persistent runner said it finished the batch.
    batch_done: bool,
    /// Tests a persistent runner said it had not collected.
    unknown: Vec<String>,
}

impl Follow {
    /// Started and never finished: what was running when the process died.
    fn died_running(&self, name: &str) -> bool {
        self.started_at.contains_key(name) && !self.finished_at.contains_key(name)
    }
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
        let Some(exec) = self.exec_of(case) else {
            return;
        };
        match &self.held {
            Some(held) if result.outcome.is_failure() => held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((exec, result, start, end)),
            _ => self.send(exec, result, start, end),
        }
    }

    fn send(&self, exec: shoal_sched::ExecId, result: TestResult, start: f64, end: f64) {
        let _ = self.slot.tx.send(ToCoord::Result {
            lease: self.lease.id,
            token: self.lease.token,
            exec,
            result,
            start,
            end,
        });
    }

    fn report_synth(
        &self,
        case: &TestCase,
        outcome: Outcome,
        message: String,
        output: &CapturedOutput,
        start: f64,
        end: f64,
    ) {
        let result = TestResult {
            id: case.id.clone(),
            outcome,
            duration: Duration::from_secs_f64((end - start).max(0.0)),
            message: Some(message),
            output: output.clone(),
        };
        self.report(case, result, start, end);
    }

    /// Follows the progress pipe until it closes (or, for a persistent
    /// runner, until it finishes the batch), enforcing the per-test timeout
    /// and reporting each test the moment it finishes.
    async fn follow(
        &self,
        proc: &mut Box<dyn RunningProcess>,
        terminator: &Terminator,
        tests: &[TestCase],
        f: &mut Follow,
    ) {
        let adapter = &self.suite.adapter;
        let timeout = self.suite.config.timeout;
        let mut current: Option<(String, Instant)> = None;
        let mut idle_since = Instant::now();
        loop {
            let deadline = match (&f.stopped, &current) {
                (Some(_), _) => Instant::now() + Duration::from_secs(3600),
                (None, Some((_, t0))) => *t0 + timeout,
                (None, None) => idle_since + timeout,
            };
            tokio::select! {
                line = proc.next_progress() => {
                    let Some(line) = line else { return };
                    let Some(p) = adapter.parse_progress(&line) else { continue };
                    let now = now_epoch();
                    match &p {
                        Progress::Started { name } => {
                            current = Some((name.clone(), Instant::now()));
                            f.started_at.insert(name.clone(), now);
                            if let Some(case) = tests.iter().find(|c| c.id.name == *name) {
                                self.started(case, now);
                            }
                        }
                        Progress::Finished { name, outcome, duration, message, output } => {
                            current = None;
                            idle_since = Instant::now();
                            f.finished_at.insert(name.clone(), now);
                            // Report at once: failures show as they happen
                            // and the run's counts stay live.
                            if let Some(case) = tests.iter().find(|c| c.id.name == *name) {
                                if f.streamed.insert(name.clone()) {
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
                                    let start = f.started_at.get(name).copied().unwrap_or(now);
                                    self.report(case, result, start, now);
                                }
                            }
                        }
                        Progress::BatchDone => {
                            if f.stopped.is_none() {
                                f.batch_done = true;
                                return;
                            }
                        }
                        Progress::Unknown { name } => f.unknown.push(name.clone()),
                    }
                    f.progress.push(p);
                }
                _ = sleep_until(deadline) => {
                    f.stopped = Some(Stopped::Timeout(current.as_ref().map(|c| c.0.clone())));
                    terminator.terminate(self.slot.kill_grace);
                }
                _ = self.slot.cancel.cancelled(), if f.stopped.is_none() => {
                    f.stopped = Some(Stopped::Cancelled);
                    terminator.terminate(CANCEL_GRACE);
                }
            }
        }
    }

    /// Reports what each test of a finished process without a streamed
    /// result gets ([`attribution::attribute`], a pure function of what was
    /// observed). Returns the tests no one can be blamed for: several tests
    /// in one process without progress.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per kind of process, all the facts are needed"
    )]
    fn attribute(
        &self,
        tests: &[TestCase],
        exit: &ProcessExit,
        results: HashMap<String, TestResult>,
        f: &Follow,
        progress_mode: bool,
        inv_start: f64,
        end: f64,
    ) -> Vec<TestCase> {
        let observed = attribution::Observed {
            tests,
            exit,
            follow: f,
            progress_mode,
            abnormal_exit: self.suite.adapter.exit_is_abnormal(&exit.status),
            timeout: self.suite.config.timeout,
            start: inv_start,
            end,
        };
        let mut unattributed = Vec::new();
        for verdict in attribution::attribute(&observed, &results) {
            match verdict {
                attribution::Verdict::Reported {
                    case,
                    result,
                    start,
                    end,
                } => self.report(&case, result, start, end),
                attribution::Verdict::Decided {
                    case,
                    outcome,
                    message,
                    start,
                    end,
                } => self.report_synth(&case, outcome, message, &exit.output, start, end),
                // Left without a result: the lease's release requeues it.
                attribution::Verdict::Requeue(_) => {}
                attribution::Verdict::Unattributed(case) => unattributed.push(case),
            }
        }
        unattributed
    }

    /// Runs one process of the batch and reports what it can attribute.
    /// `may_split`: when a multi-test process without per-test progress dies
    /// or times out, rerun its tests one per process to attribute the cause.
    async fn run_invocation(&self, inv: Invocation, may_split: bool) {
        let adapter = &self.suite.adapter;
        let timeout = self.suite.config.timeout;
        let cancel = &self.slot.cancel;
        let inv_start = now_epoch();
        let mut proc = match self
            .slot
            .executor_for(&self.suite.config.name)
            .spawn(&inv.spec)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                for case in &inv.tests {
                    let msg = format!("could not start the test runner: {e}");
                    self.report_synth(
                        case,
                        Outcome::Crash,
                        msg,
                        &CapturedOutput::default(),
                        inv_start,
                        now_epoch(),
                    );
                }
                return;
            }
        };
        let terminator = proc.terminator();
        let progress_mode = adapter.reports_progress() && inv.spec.progress_pipe;
        let mut f = Follow::default();
        if progress_mode {
            self.follow(&mut proc, &terminator, &inv.tests, &mut f)
                .await;
        } else {
            for case in &inv.tests {
                self.started(case, inv_start);
            }
        }

        // Wait for exit; without progress, the whole process gets `timeout`
        // per test, unless the adapter set a limit for it.
        let limit = inv
            .time_limit
            .unwrap_or_else(|| timeout.saturating_mul(inv.tests.len().max(1) as u32));
        let overall = Instant::now() + limit;
        let wait = proc.wait();
        tokio::pin!(wait);
        let exit = loop {
            tokio::select! {
                exit = &mut wait => break exit,
                _ = sleep_until(overall), if f.stopped.is_none() && !progress_mode => {
                    f.stopped = Some(Stopped::Timeout(None));
                    terminator.terminate(self.slot.kill_grace);
                }
                _ = cancel.cancelled(), if f.stopped.is_none() => {
                    f.stopped = Some(Stopped::Cancelled);
                    terminator.terminate(CANCEL_GRACE);
                }
            }
        };
        let exit = exit.unwrap_or_else(|e| lost_track(&e));
        let end = now_epoch();

        // Everything streamed: no need to read the tool's report.
        let collected = if f.streamed.len() == inv.tests.len() {
            Vec::new()
        } else {
            adapter.collect(&inv, &exit, &f.progress)
        };
        let results = collected
            .into_iter()
            .map(|r| (r.id.name.clone(), r))
            .collect();
        let unattributed = self.attribute(
            &inv.tests,
            &exit,
            results,
            &f,
            progress_mode,
            inv_start,
            end,
        );
        if unattributed.is_empty() {
            return;
        }
        if may_split && !cancel.is_cancelled() {
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
                    "the test runner ({}) died and reported no result for this test",
                    ended(&exit)
                );
                self.report_synth(&case, Outcome::Lost, msg, &exit.output, inv_start, end);
            }
        }
    }

    /// Runs the batch on the suite's long-lived runner for this slot,
    /// starting it if needed. `Err` means the runner cannot serve (it could
    /// not start, or died before running its first test): the caller falls
    /// back to one process per batch, and nothing was reported.
    async fn run_persistent(
        &self,
        inv: Invocation,
        cases: &[TestCase],
        state: &mut Persistent,
    ) -> Result<(), String> {
        if matches!(state, Persistent::Idle) {
            let proc = self
                .slot
                .executor_for(&self.suite.config.name)
                .spawn(&inv.spec)
                .await
                .map_err(|e| e.to_string())?;
            let terminator = proc.terminator();
            *state = Persistent::Live {
                proc,
                terminator,
                batches: 0,
            };
        }
        let Persistent::Live {
            proc,
            terminator,
            batches,
        } = state
        else {
            return Err("no runner".into());
        };
        let terminator = terminator.clone();
        let first_batch = *batches == 0;
        let inv_start = now_epoch();
        let mut f = Follow::default();
        if proc
            .send_line(&self.suite.adapter.batch_request(cases))
            .await
            .is_ok()
        {
            self.follow(proc, &terminator, cases, &mut f).await;
        }
        if f.batch_done {
            *batches += 1;
            // Tests outside what the runner collected run in a process of
            // their own, which names their files (never lost, never
            // misattributed to the runner).
            let uncollected: Vec<TestCase> = cases
                .iter()
                .filter(|c| !f.streamed.contains(&c.id.name) && f.unknown.contains(&c.id.name))
                .cloned()
                .collect();
            if !uncollected.is_empty() {
                tracing::debug!(
                    tests = uncollected.len(),
                    "the long-lived runner did not collect these tests; running them in a process of their own"
                );
                for inv in self.suite.adapter.plan(&uncollected, &self.ctx) {
                    if self.slot.cancel.is_cancelled() {
                        break;
                    }
                    Box::pin(self.run_invocation(inv, true)).await;
                }
            }
            let end = now_epoch();
            for case in cases
                .iter()
                .filter(|c| !f.streamed.contains(&c.id.name) && !f.unknown.contains(&c.id.name))
            {
                let msg = "the test runner finished the batch without running this test".to_owned();
                self.report_synth(
                    case,
                    Outcome::Lost,
                    msg,
                    &CapturedOutput::default(),
                    inv_start,
                    end,
                );
            }
            return Ok(());
        }
        // The runner is gone (or going): collect its exit, then attribute.
        let Persistent::Live { proc, .. } = std::mem::replace(state, Persistent::Idle) else {
            unreachable!("state was live above")
        };
        terminator.terminate(self.slot.kill_grace);
        let exit = proc.wait().await.unwrap_or_else(|e| lost_track(&e));
        if first_batch && f.started_at.is_empty() && f.stopped.is_none() {
            return Err(format!(
                "{}: {}",
                exit.status,
                crate::hooks::tail(&exit.output.text, 2000)
            ));
        }
        let unattributed = self.attribute(
            cases,
            &exit,
            HashMap::new(),
            &f,
            true,
            inv_start,
            now_epoch(),
        );
        debug_assert!(
            unattributed.is_empty(),
            "progress mode attributes every test"
        );
        Ok(())
    }
}

/// The exit to report when waiting for a process failed.
fn lost_track(e: &shoal_exec::ExecError) -> ProcessExit {
    ProcessExit {
        status: ExitStatus::Code(-1),
        output: CapturedOutput {
            text: format!("shoal lost track of the process: {e}"),
            truncated_bytes: 0,
        },
        wall: Duration::ZERO,
        terminated: true,
        oom_killed: false,
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

/// How a process ended, for messages: its status, and why when the kernel's
/// OOM killer was the cause.
fn ended(exit: &ProcessExit) -> String {
    if exit.oom_killed {
        format!(
            "killed for memory: the OOM killer acted at the container's memory limit ({})",
            exit.status
        )
    } else {
        exit.status.to_string()
    }
}
