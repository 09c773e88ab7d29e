//! Running one coordinator batch on one slot of a prepared run: the
//! batch's items become a [`Lease`] of the tests this worker discovered
//! (an item it did not discover is reported as crashed), and the lease runs
//! through the local engine's [`SlotCtx`]. [`SlotRun`] keeps what lives
//! from batch to batch on a (run, slot): the `slot_setup` outcome and the
//! persistent runners.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::{CapturedOutput, Outcome, TestId, TestResult, now_epoch};
use shoal_exec::Executor;
use shoal_proto::v1::{Batch, BatchItem};
use shoal_runner::{Persistent, SlotCtx, SlotMessage};
use shoal_sched::{ExecId, Execution, Lease, LeaseId, SlotId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::prepare::PreparedRun;

/// The message of an item whose test this worker's discovery did not find.
pub const NOT_DISCOVERED: &str = "test not found by this worker's discovery";

/// One slot's engine state in one run: `slot_setup` runs before the first
/// batch, persistent runners live until [`SlotRun::close`].
#[derive(Debug, Default)]
pub struct SlotRun {
    /// The outcome of `slot_setup`, once it ran.
    setup: Option<Result<(), String>>,
    /// Persistent runners, by suite.
    runners: HashMap<String, Persistent>,
}

/// Who runs the batches: the worker's name (`SHOAL_WORKER`) and executor.
#[derive(Debug, Clone)]
pub struct SlotEnv {
    /// The worker's name.
    pub worker: String,
    /// How test processes are started.
    pub executor: Arc<dyn Executor>,
}

impl SlotEnv {
    /// The engine's slot for `run`, sending to `tx`, stopped by `cancel`.
    pub fn slot_ctx(
        &self,
        run: &PreparedRun,
        slot: u32,
        tx: mpsc::UnboundedSender<SlotMessage>,
        cancel: CancellationToken,
    ) -> SlotCtx {
        SlotCtx {
            slot,
            worker: self.worker.clone(),
            run_id: run.run_id.clone(),
            scratch: run.run_dir.join(format!("slot-{slot}")),
            support_dir: run.support_dir.clone(),
            project_root: run.project_root.clone(),
            suites: run.suites.clone(),
            executor: self.executor.clone(),
            // Container suites are refused by the client for remote runs
            // until workers start containers of their own (issue 5).
            executors: Default::default(),
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
        let ctx = env.slot_ctx(run, slot, tx, cancel);
        if self.setup.is_none() {
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
        let ctx = env.slot_ctx(run, slot, tx, CancellationToken::new());
        ctx.close(&mut self.runners).await;
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
