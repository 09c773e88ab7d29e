//! A local run: the coordinator loop (driving the run-state core,
//! `shoal_engine::RunState`) and this machine's slots (`shoal-slot`)
//! joined by in-process channels, the distributed design in one process;
//! results go to the history store and the reporters.
//!
//! - [`run`]: the entry point the binary calls
//! - `coordinator`: the loop that feeds slot messages to the run state
//! - `store_writer`: batches attempts into store transactions
//!
//! Everything of `shoal-slot` is re-exported, so callers see one engine.

mod coordinator;
mod store_writer;

use coordinator::{CoordOutcome, Coordinator};
use shoal_core::config::{Config, SuiteConfig};
use shoal_core::event::{Notice, NoticeLevel, RunStarted, SuiteDiscovered};
use shoal_core::{Event, QuarantinedCounts, RunCounts, TestCase, TestId, now_epoch};
use shoal_engine::{RunRules, RunState};
use shoal_exec::{Executor, ProcessExecutor};
use shoal_report::Reporter;
use shoal_sched::{PlannedTest, SchedConfig, SlotId};
use shoal_store::{RunRecord, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use shoal_slot::discovery_cache::DiscoveryCache;
pub use shoal_slot::{
    Cancel, Discovered, EngineError, Persistent, Selection, SlotCtx, SlotMessage, SuiteRuntime,
    SuiteSelection, containers, discover, discovery_cache, git, hooks, list, list_scoped,
    plan_suites, project, run_temp_root, selection,
};

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub config: Config,
    pub selection: Selection,
    /// Concurrent slots (already resolved; at least 1).
    pub slots: usize,
    pub repeat: u32,
    /// Overrides every suite's `retries` when set.
    pub retries: Option<u32>,
    /// `.shoal` directory: run scratch space lives under `runs/`.
    pub state_dir: PathBuf,
    /// This worker's name (`local` for local runs).
    pub worker: String,
    /// Keep slot scratch directories after the run.
    pub keep_scratch: bool,
    /// Reuse a suite's cached test list when its inputs are unchanged.
    pub discovery_cache: bool,
    /// Quarantined tests: they run and are reported as usual (their events
    /// say `quarantined`), but their failed and flaky results do not make
    /// the exit code 1. The caller merges `[quarantine] tests` with any
    /// automatically quarantined tests; the engine reads no config for it.
    pub quarantine: HashSet<TestId>,
    /// Shuffle the test order with this seed instead of longest first.
    pub shuffle: Option<u64>,
    /// What the run is for, as the history records it
    /// (`shoal_store::KIND_RUN`, `KIND_STRESS`, `KIND_BISECT`).
    pub kind: &'static str,
    /// Run the tests in exactly this order (tests not listed follow, in
    /// the usual order); with one slot, one after the other in one runner.
    /// `shoal bisect-order` replays a slot's recorded order this way.
    pub order: Option<Vec<TestId>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub counts: RunCounts,
    /// Of `counts`, the failed and flaky results of quarantined tests.
    pub quarantined: QuarantinedCounts,
    pub interrupted: bool,
    /// Executions that never got a final result (interrupted runs only).
    pub not_run: usize,
    /// The run's exit code, as [`shoal_engine::exit_code`] decided it
    /// (the same as its `run_finished` event's).
    pub exit_code: i32,
    /// Problems that did not stop the run (store writes, reporters).
    pub warnings: Vec<String>,
}

/// Runs the selected tests, feeding every event to `reporter`.
pub async fn run(
    req: RunRequest,
    store: Arc<dyn Store>,
    reporter: &mut dyn Reporter,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    let run_id = uuid::Uuid::now_v7().to_string();
    let start = now_epoch();
    let root = req.config.project_root.clone();
    let run_dir = req.state_dir.join("runs").join(&run_id);
    let support_dir = run_dir.join("support");
    let git = git::git_state(&root).await;

    let base_env = BTreeMap::from([
        ("SHOAL_RUN_ID".to_owned(), run_id.clone()),
        ("SHOAL_WORKER".to_owned(), req.worker.clone()),
    ]);
    if let Some(hook) = &req.config.hooks.worker_setup {
        let out = hooks::run_hook("worker_setup", hook, &root, &base_env).await?;
        tracing::debug!(output = %out, "worker_setup finished");
    }

    let cache = req
        .discovery_cache
        .then(|| DiscoveryCache::new(&req.state_dir));
    req.selection.check(&req.config)?;
    let planned_suites = plan_suites(&req.config, &req.selection);
    let env_suites: Vec<&SuiteConfig> = planned_suites.iter().map(|(s, _)| s).collect();
    let mut containers = containers::SlotContainers::start(
        &env_suites,
        &(0..req.slots.max(1) as u32).collect::<Vec<_>>(),
        &containers::Placement {
            run_id: &run_id,
            worker: &req.worker,
            root: &root,
            run_dir: &run_dir,
        },
    )
    .await?;
    // Whatever ends the run (an error included), its containers go.
    let result: Result<RunReport, EngineError> = async {
        let discovered = discover(
            planned_suites.clone(),
            &support_dir,
            cache.as_ref(),
            &containers.discovery_executors(),
        )
        .await?;
        let total_selected: usize = discovered.iter().map(|d| d.selected.len()).sum();
        if total_selected == 0 {
            return Err(EngineError::NoTests);
        }

        // Order by history: recent median durations, with fallbacks.
        let ids: Vec<TestId> = discovered
            .iter()
            .flat_map(|d| d.selected.iter().map(|t| t.id.clone()))
            .collect();
        let mut warnings = Vec::new();
        let known = match store.duration_estimates(&ids).await {
            Ok(k) => k,
            Err(e) => {
                warnings.push(format!(
                    "could not read test history, ordering without it: {e}"
                ));
                HashMap::new()
            }
        };
        let mut planned = Vec::new();
        for d in &discovered {
            let cfg = &d.suite.config;
            let discovery = std::time::Duration::from_secs_f64(d.fresh_duration);
            let mut tests: Vec<PlannedTest> = d
                .selected
                .iter()
                .map(|case| PlannedTest {
                    case: case.clone(),
                    estimate: cfg.default_duration,
                    retries: req.retries.unwrap_or(cfg.retries),
                    max_batch: cfg.max_batch,
                    batch_overhead: d.suite.adapter.batch_overhead(case, discovery),
                    locality: d.suite.locality(case),
                })
                .collect();
            shoal_sched::fill_estimates(&mut tests, &known, cfg.default_duration);
            planned.extend(tests);
        }
        if let Some(order) = &req.order {
            let position: HashMap<&TestId, usize> =
                order.iter().enumerate().map(|(i, id)| (id, i)).collect();
            // Stable: unlisted tests keep their relative order, after.
            planned.sort_by_key(|p| position.get(&p.case.id).copied().unwrap_or(usize::MAX));
        }
        let estimated_work: f64 = planned
            .iter()
            .map(|p| p.estimate.as_secs_f64())
            .sum::<f64>()
            * req.repeat as f64;
        let planned_count = planned.len() * req.repeat as usize;
        let slots = req.slots.max(1).min(planned_count.max(1));
        let slot_ids: Vec<SlotId> = (0..slots as u32).map(SlotId::local).collect();
        let state = RunState::new(
            planned,
            RunRules {
                sched: SchedConfig {
                    retry_threshold: req.config.run.retry_threshold,
                    shuffle: req.shuffle,
                    keep_order: req.order.is_some(),
                    ..SchedConfig::default()
                },
                repeat: req.repeat,
                quarantine: req.quarantine.clone(),
                fail_on_flaky: req.config.run.fail_on_flaky,
                // One slot already when a run replays an order.
                one_slot: false,
            },
            &slot_ids,
        )
        .map_err(|e| EngineError::Slots(format!("could not plan the run: {e}")))?;

        let mut emit_errors = Vec::new();
        let mut emit = |reporter: &mut dyn Reporter, ev: Event| {
            if let Err(e) = reporter.on_event(&ev) {
                emit_errors.push(e.to_string());
            }
        };
        emit(
            reporter,
            Event::RunStarted(RunStarted {
                run_id: run_id.clone(),
                commit: git.commit.clone(),
                dirty: git.dirty,
                slots,
                worker: req.worker.clone(),
                planned: planned_count,
                repeat: req.repeat,
                retries: req.retries.unwrap_or(req.config.run.retries),
                estimated_work,
                start,
                seed: req.shuffle,
            }),
        );
        for d in &discovered {
            emit(
                reporter,
                Event::SuiteDiscovered(SuiteDiscovered {
                    suite: d.suite.config.name.clone(),
                    adapter: d.suite.adapter.name().to_owned(),
                    discovered: d.discovered,
                    selected: d.selected.len(),
                    duration: d.duration,
                    scope: d.scope.clone(),
                }),
            );
        }
        for w in &warnings {
            emit(
                reporter,
                Event::Notice(Notice {
                    level: NoticeLevel::Warn,
                    message: w.clone(),
                }),
            );
        }
        let unmatched = unmatched_quarantine(&req.quarantine, &req.selection, &root, &discovered);
        if !unmatched.is_empty() {
            let entries: Vec<String> = unmatched
                .iter()
                .map(|id| shoal_core::config::test_entry(id))
                .collect();
            emit(
                reporter,
                Event::Notice(Notice {
                    level: NoticeLevel::Warn,
                    message: format!(
                        "{} of the quarantine list matched no test: {} (remove with `shoal quarantine rm` unless they exist on another branch)",
                        match entries.len() {
                            1 => "1 entry".to_owned(),
                            n => format!("{n} entries"),
                        },
                        entries.join(", ")
                    ),
                }),
            );
        }
        store
            .begin_run(&RunRecord {
                run_id: run_id.clone(),
                started: start,
                commit: git.commit.clone(),
                dirty: git.dirty,
                worker: req.worker.clone(),
                selection: selection_summary(&req),
                planned: planned_count,
                environment: shoal_store::default_environment(),
                seed: req.shuffle,
                kind: req.kind.to_owned(),
            })
            .await
            .map_err(EngineError::store)?;

        let suites: Arc<HashMap<String, SuiteRuntime>> = Arc::new(
            discovered
                .iter()
                .map(|d| (d.suite.config.name.clone(), d.suite.clone()))
                .collect(),
        );
        let executor: Arc<dyn Executor> = Arc::new(ProcessExecutor);
        containers.keep_slots(slots as u32).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut slot_tasks = Vec::new();
        for slot in &slot_ids {
            let ctx = SlotCtx {
                slot: slot.index,
                slot_count: slots as u32,
                worker: req.worker.clone(),
                run_id: run_id.clone(),
                scratch: run_dir.join(format!("slot-{}", slot.index)),
                support_dir: support_dir.clone(),
                project_root: root.clone(),
                suites: suites.clone(),
                executor: executor.clone(),
                executors: containers.executors(slot.index),
                test_env: containers.test_env(slot.index),
                hook_env: containers.host_env(slot.index),
                service_logs: containers.service_logs(slot.index),
                tx: tx.clone(),
                cancel: cancel.clone(),
                kill_grace: req.config.run.kill_grace,
                output_cap: req.config.run.output_cap,
                slot_setup: req.config.hooks.slot_setup.clone(),
            };
            slot_tasks.push(tokio::spawn(ctx.run()));
        }
        drop(tx);

        let writer = store_writer::StoreWriter::spawn(
            store.clone(),
            run_id.clone(),
            git.commit.clone(),
            git.dirty,
        );
        let mut coord = Coordinator {
            state,
            reporter: &mut *reporter,
            store: writer,
            worker: req.worker.clone(),
            cancel: cancel.clone(),
            epoch: Instant::now(),
            parked: Vec::new(),
            outcome: CoordOutcome::default(),
            emit_errors: Vec::new(),
        };
        coord.run(rx).await;
        for t in slot_tasks {
            let _ = t.await;
        }
        containers.remove().await;
        warnings.extend(coord.store.finish().await);
        let Coordinator {
            mut state,
            outcome: CoordOutcome { slot_errors },
            emit_errors: coord_errors,
            ..
        } = coord;
        warnings.extend(coord_errors);
        if cancel.is_cancelled() {
            // Interrupted after the last slot ended: still an interrupted run.
            state.cancel();
        }
        let counts = state.counts().clone();
        if !slot_errors.is_empty() && counts.total() == 0 {
            return Err(EngineError::Slots(slot_errors.join("; ")));
        }

        let end = now_epoch();
        let finished = state.finished(&run_id, start, end);
        let report = RunReport {
            run_id: run_id.clone(),
            counts: counts.clone(),
            quarantined: finished.quarantined,
            interrupted: finished.interrupted,
            not_run: finished.not_run,
            exit_code: finished.exit_code,
            warnings,
        };
        for w in &report.warnings {
            emit(
                reporter,
                Event::Notice(Notice {
                    level: NoticeLevel::Warn,
                    message: w.clone(),
                }),
            );
        }
        emit(reporter, Event::RunFinished(finished.clone()));
        let mut report = report;
        if let Err(e) = store
            .finish_run(&run_id, end, &counts, finished.interrupted, finished.exit_code)
            .await
        {
            report
                .warnings
                .push(format!("failed to record the end of the run: {e}"));
        }
        report.warnings.extend(emit_errors);
        if !req.keep_scratch {
            let _ = std::fs::remove_dir_all(&run_dir);
            let _ = std::fs::remove_dir_all(run_temp_root(&run_id));
        }
        Ok(report)
    }
    .await;
    containers.remove().await;
    result
}

/// Quarantine entries that name no test this run discovered. Only entries
/// the run could have found are judged: of a suite it discovered, matching
/// its name patterns (it lists no test outside them).
fn unmatched_quarantine<'a>(
    quarantine: &'a HashSet<TestId>,
    selection: &Selection,
    project_root: &std::path::Path,
    discovered: &[Discovered],
) -> Vec<&'a TestId> {
    let suites: HashMap<&str, (SuiteSelection, &SuiteRuntime)> = discovered
        .iter()
        .map(|d| {
            let config = &d.suite.config;
            (
                config.name.as_str(),
                (selection.for_suite(project_root, config), &d.suite),
            )
        })
        .collect();
    let selected: HashSet<&TestId> = discovered
        .iter()
        .flat_map(|d| d.selected.iter().map(|t| &t.id))
        .collect();
    let mut unmatched: Vec<&TestId> = quarantine
        .iter()
        .filter(|id| {
            let Some((sel, suite)) = suites.get(id.suite.as_str()) else {
                return false;
            };
            let case = TestCase {
                id: (*id).clone(),
                group: String::new(),
                runner: None,
            };
            sel.wants(suite.adapter.as_ref(), &suite.config.root, &case) && !selected.contains(id)
        })
        .collect();
    unmatched.sort();
    unmatched
}

fn selection_summary(req: &RunRequest) -> String {
    let mut parts = Vec::new();
    if !req.selection.suites.is_empty() {
        parts.push(format!("--suite {}", req.selection.suites.join(",")));
    }
    parts.extend(req.selection.patterns.iter().cloned());
    if req.repeat > 1 {
        parts.push(format!("--repeat {}", req.repeat));
    }
    parts.join(" ")
}
