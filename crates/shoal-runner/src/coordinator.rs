//! The coordinator: one loop that owns the run state
//! ([`shoal_engine::RunState`], as the distributed coordinator does) and
//! feeds it what slots report, passing its [`Event`]s on. Slots talk to it
//! only through messages, so local mode is the distributed design joined by
//! in-process channels.

use crate::store_writer::StoreWriter;
use shoal_core::Event;
use shoal_core::event::NoticeLevel;
use shoal_engine::{AttemptResult, RunState};
use shoal_report::Reporter;
use shoal_sched::{Lease, SlotId};
use shoal_slot::SlotMessage as ToCoord;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the coordinator loop ends with, besides the run state.
#[derive(Debug, Default)]
pub(crate) struct CoordOutcome {
    pub slot_errors: Vec<String>,
}

/// Why the tests of a batch that a slot ended without their results are
/// requeued (and, once requeued too often, a crash).
const RUNNER_GAVE_NO_RESULT: &str = "its runner ended the batch without a result for it";

pub(crate) struct Coordinator<'a> {
    pub state: RunState,
    pub reporter: &'a mut dyn Reporter,
    pub store: StoreWriter,
    pub worker: String,
    pub cancel: CancellationToken,
    pub epoch: Instant,
    pub parked: Vec<(u32, oneshot::Sender<Option<Lease>>)>,
    pub outcome: CoordOutcome,
    pub emit_errors: Vec<String>,
}

impl Coordinator<'_> {
    fn now(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }

    /// Sends the run state's new events to the store and the reporter.
    fn flush(&mut self) {
        for ev in self.state.take_events() {
            if let Event::AttemptFinished(a) = &ev {
                self.store.record(a);
            }
            if let Err(e) = self.reporter.on_event(&ev) {
                self.emit_errors.push(e.to_string());
            }
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
            let now = self.now();
            match msg {
                ToCoord::Ask { slot, reply } => {
                    if cancelled {
                        let _ = reply.send(None);
                    } else {
                        self.parked.push((slot, reply));
                    }
                }
                ToCoord::Started { lease, exec, at } => self.state.started(lease, exec, at),
                ToCoord::Result {
                    lease,
                    token,
                    exec,
                    result,
                    start,
                    end,
                } => {
                    let r = AttemptResult {
                        outcome: result.outcome,
                        duration: result.duration.as_secs_f64(),
                        message: result.message,
                        output: result.output,
                        start,
                        end,
                    };
                    self.state.result(lease, token, exec, r, now);
                }
                ToCoord::Done { lease, token } => {
                    self.state.release(lease, token, RUNNER_GAVE_NO_RESULT, now);
                }
                ToCoord::Notice(message) => self.state.notice(NoticeLevel::Warn, message),
                ToCoord::SlotFailed { slot, error } => {
                    self.outcome
                        .slot_errors
                        .push(format!("slot {slot}: {error}"));
                    self.state.notice(
                        NoticeLevel::Error,
                        format!("slot {slot} could not start: {error}"),
                    );
                    // Without working slots the run cannot go on.
                    self.cancel.cancel();
                }
            }
            self.flush();
            self.serve_parked(cancelled);
        }
        if cancelled || self.cancel.is_cancelled() {
            self.state.cancel();
        }
        self.flush();
    }

    fn serve_parked(&mut self, cancelled: bool) {
        if self.parked.is_empty() {
            return;
        }
        let now = self.now();
        let finished = self.state.is_over() || cancelled;
        let mut still = Vec::new();
        for (slot, reply) in std::mem::take(&mut self.parked) {
            if finished {
                let _ = reply.send(None);
                continue;
            }
            match self
                .state
                .lease(SlotId::local(slot), &self.worker, &self.worker, now)
            {
                Some(lease) => {
                    // If the slot went away, give the work back.
                    if let Err(Some(l)) = reply.send(Some(lease)) {
                        self.state.release(l.id, l.token, "its slot went away", now);
                    }
                }
                None => still.push((slot, reply)),
            }
        }
        self.parked = still;
        self.flush();
    }
}
