//! Running one coordinator batch on one slot of a prepared run: the
//! batch's items become a [`Lease`] of the tests this worker discovered
//! (an item it did not discover is reported as crashed), and the lease runs
//! through the local engine's [`SlotCtx`]. [`SlotRun`] keeps what lives
//! from batch to batch on a (run, slot): the slot's containers (suites with
//! an `environment`, started on this worker's own engine at the slot's first
//! batch), the `slot_setup` outcome and the persistent runners.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::{CapturedOutput, Outcome, TestId, TestResult, now_epoch};
use shoal_exec::Executor;
use shoal_proto::v1::{Batch, BatchItem};
use shoal_sched::{ExecId, Execution, Lease, LeaseId, SlotId};
use shoal_slot::containers::{Placement, SlotContainers};
use shoal_slot::{Persistent, SlotCtx, SlotMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::prepare::PreparedRun;

/// The message of an item whose test this worker's discovery did not find.
pub const NOT_DISCOVERED: &str = "test not found by this worker's discovery";

/// One slot's engine state in one run: `slot_setup` runs before the first
/// batch, persistent runners live until [`SlotRun::close`].
#[derive(Debug, Default)]
pub struct SlotRun {
    /// The slot's containers, once started.
    containers: Option<SlotContainers>,
    /// The outcome of starting the containers and `slot_setup`, once done.
    setup: Option<Result<(), String>>,
    /// Persistent runners, by suite.
    runners: HashMap<String, Persistent>,
    /// `slot_setup` has run (after the containers started).
    prepared: bool,
}

/// Who runs the batches: the worker's name (`SHOAL_WORKER`) and executor.
#[derive(Debug, Clone)]
pub struct SlotEnv {
    /// The worker's name.
    pub worker: String,
    /// How test processes are started.
    pub executor: Arc<dyn Executor>,
    /// The worker's slot count (`SHOAL_SLOT_COUNT`).
    pub slots: u32,
}

impl SlotEnv {
    /// The engine's slot for `run`, sending to `tx`, stopped by `cancel`.
    pub fn slot_ctx(
        &self,
        run: &PreparedRun,
        slot: u32,
        containers: Option<&SlotContainers>,
        tx: mpsc::UnboundedSender<SlotMessage>,
        cancel: CancellationToken,
    ) -> SlotCtx {
        SlotCtx {
            slot,
            slot_count: self.slots,
            worker: self.worker.clone(),
            run_id: run.run_id.clone(),
            scratch: run.run_dir.join(format!("slot-{slot}")),
            support_dir: run.support_dir.clone(),
            project_root: run.project_root.clone(),
            suites: run.suites.clone(),
            executor: self.executor.clone(),
            executors: containers.map(|c| c.executors(slot)).unwrap_or_default(),
            test_env: containers.map(|c| c.test_env(slot)).unwrap_or_default(),
            hook_env: containers.map(|c| c.host_env(slot)).unwrap_or_default(),
            service_logs: containers.map(|c| c.service_logs(slot)).unwrap_or_default(),
            tx,
            cancel,
            kill_grace: run.config.run.kill_grace,
            output_cap: run.config.run.output_cap,
            slot_setup: run.config.hooks.slot_setup.clone(),
        }
    }
}

impl SlotRun {
    /// A slot on which nothing has run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `batch` (the `seq`-th on this slot) of `run` on slot `slot`,
    /// sending starts, results, notices and a slot failure to `tx`: items
    /// this worker did not discover get a crash result at once; if
    /// `slot_setup` fails (now or on an earlier batch) the slot failure is
    /// sent and nothing runs. Tests left without a result (cancelled
    /// through `cancel`) are the coordinator's to requeue.
    #[expect(
        clippy::too_many_arguments,
        reason = "the batch, where it runs, and the two channels of a lease"
    )]
    pub async fn run_batch(
        &mut self,
        env: &SlotEnv,
        run: &PreparedRun,
        slot: u32,
        seq: u64,
        batch: &Batch,
        tx: mpsc::UnboundedSender<SlotMessage>,
        cancel: CancellationToken,
    ) {
        let mut items = Vec::new();
        for item in &batch.items {
            match run.test(&item.suite, &item.name) {
                Some(case) => items.push(Execution {
                    exec: ExecId(item.exec),
                    case: case.clone(),
                    attempt: item.attempt,
                    repeat: item.repeat,
                    estimate: Duration::from_millis(item.estimate_ms),
                }),
                None => crash(&tx, batch, item, NOT_DISCOVERED),
            }
        }
        if items.is_empty() || cancel.is_cancelled() {
            return;
        }
        let lease = Lease {
            id: LeaseId(batch.lease_id),
            token: batch.token,
            slot: SlotId::new(0, slot),
            estimate: items.iter().map(|e| e.estimate).sum(),
            items,
            deadline: None,
        };
        if self.setup.is_none() {
            self.setup = Some(self.start_containers(env, run, slot).await);
        }
        let ctx = env.slot_ctx(run, slot, self.containers.as_ref(), tx, cancel);
        if matches!(self.setup, Some(Ok(()))) && !self.prepared {
            self.prepared = true;
            self.setup = Some(ctx.prepare().await);
        }
        match &self.setup {
            Some(Err(error)) => {
                let _ = ctx.tx.send(SlotMessage::SlotFailed {
                    slot,
                    error: error.clone(),
                });
            }
            _ => ctx.run_lease(&lease, seq, &mut self.runners).await,
        }
    }

    /// Stops the slot's persistent runners.
    pub async fn close(&mut self, env: &SlotEnv, run: &PreparedRun, slot: u32) {
        let (tx, _rx) = mpsc::unbounded_channel();
        let ctx = env.slot_ctx(
            run,
            slot,
            self.containers.as_ref(),
            tx,
            CancellationToken::new(),
        );
        ctx.close(&mut self.runners).await;
        if let Some(containers) = self.containers.take() {
            containers.remove().await;
        }
    }

    /// Starts the slot's containers on this worker's engine (suites with an
    /// `environment`; nothing otherwise).
    async fn start_containers(
        &mut self,
        env: &SlotEnv,
        run: &PreparedRun,
        slot: u32,
    ) -> Result<(), String> {
        let suites: Vec<_> = run.suites.values().map(|s| &s.config).collect();
        let placement = Placement {
            run_id: &run.run_id,
            worker: &env.worker,
            root: &run.project_root,
            run_dir: &run.run_dir,
        };
        let containers = SlotContainers::start(&suites, &[slot], &placement)
            .await
            .map_err(|e| format!("worker {}: {e}", env.worker))?;
        self.containers = Some(containers);
        Ok(())
    }
}

/// Reports every item of `batch` as crashed with `message` (e.g. the run
/// could not be prepared).
pub fn crash_all(tx: &mpsc::UnboundedSender<SlotMessage>, batch: &Batch, message: &str) {
    for item in &batch.items {
        crash(tx, batch, item, message);
    }
}

/// Reports `item` as crashed with `message`.
fn crash(tx: &mpsc::UnboundedSender<SlotMessage>, batch: &Batch, item: &BatchItem, message: &str) {
    let now = now_epoch();
    let _ = tx.send(SlotMessage::Result {
        lease: LeaseId(batch.lease_id),
        token: batch.token,
        exec: ExecId(item.exec),
        result: TestResult {
            id: TestId::new(item.suite.clone(), item.name.clone()),
            outcome: Outcome::Crash,
            duration: Duration::ZERO,
            message: Some(message.to_owned()),
            output: CapturedOutput::default(),
        },
        start: now,
        end: now,
    });
}
