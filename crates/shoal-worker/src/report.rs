//! What a lease tells the coordinator: [`Update`]s made from the engine's
//! [`SlotMessage`]s, and [`ReportBatcher`], which groups them into `Report`
//! requests (at most every [`MAX_DELAY`] or [`MAX_UPDATES`] updates) and ends
//! with `done`. It does no I/O and takes the clock as an argument; sending
//! and retrying are the caller's.

use std::collections::VecDeque;
use std::time::Duration;

use shoal_core::{CapturedOutput, TestResult};
use shoal_proto::v1::{ReportRequest, TestFinished, TestStarted};
use shoal_slot::SlotMessage;
use tokio::time::Instant;

/// An update is sent at most this long after it was made.
pub const MAX_DELAY: Duration = Duration::from_millis(100);
/// A request carries at most this many updates; this many pending are sent
/// at once.
pub const MAX_UPDATES: usize = 64;
/// A request carries about this many bytes of test output at most (a single
/// update is never split), well under the 4 MiB a gRPC server accepts by
/// default.
pub const MAX_REQUEST_BYTES: usize = 2 << 20;
/// A test's output on the wire is capped at this many bytes (its first and
/// last halves kept, the rest counted as truncated).
pub const MAX_OUTPUT_BYTES: u64 = 1 << 20;

/// The lease a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    /// This worker.
    pub worker_id: String,
    /// The run the lease belongs to.
    pub run_id: String,
    /// The lease.
    pub lease_id: u64,
    /// Its fencing token.
    pub token: u64,
}

/// One thing to tell the coordinator about a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A test started.
    Started(TestStarted),
    /// A test finished.
    Finished(TestFinished),
    /// A warning for the run's user.
    Notice(String),
    /// The slot could not start (slot_setup failed).
    SlotFailed(String),
}

impl Update {
    /// The update a message of the engine's slot stands for, if any
    /// (`Ask` and `Done` are the local coordinator's business).
    pub fn from_slot_message(message: SlotMessage) -> Option<Self> {
        match message {
            SlotMessage::Started { exec, at, .. } => {
                Some(Update::Started(TestStarted { exec: exec.0, at }))
            }
            SlotMessage::Result {
                exec,
                result,
                start,
                end,
                ..
            } => Some(Update::Finished(finished(exec.0, &result, start, end))),
            SlotMessage::Notice(text) => Some(Update::Notice(text)),
            SlotMessage::SlotFailed { error, .. } => Some(Update::SlotFailed(error)),
            SlotMessage::Ask { .. } | SlotMessage::Done { .. } => None,
        }
    }

    /// Roughly how many bytes the update takes in a request.
    fn size(&self) -> usize {
        match self {
            Update::Started(_) => 16,
            Update::Finished(f) => 64 + f.output.len() + f.message.as_ref().map_or(0, String::len),
            Update::Notice(text) | Update::SlotFailed(text) => 8 + text.len(),
        }
    }
}

/// The wire form of one result: the outcome as the events name it, times in
/// seconds since the Unix epoch, output capped at [`MAX_OUTPUT_BYTES`].
pub fn finished(exec: u32, result: &TestResult, start: f64, end: f64) -> TestFinished {
    let output = if result.output.text.len() as u64 > MAX_OUTPUT_BYTES {
        shoal_adapters::junit::recap_output(&result.output, MAX_OUTPUT_BYTES)
    } else {
        CapturedOutput {
            text: result.output.text.clone(),
            truncated_bytes: result.output.truncated_bytes,
        }
    };
    TestFinished {
        exec,
        outcome: result.outcome.as_str().to_owned(),
        duration: result.duration.as_secs_f64(),
        message: result.message.clone(),
        output: output.text,
        output_truncated_bytes: output.truncated_bytes,
        start,
        end,
    }
}

/// Groups a lease's updates into `Report` requests.
///
/// Push updates as they come ([`ReportBatcher::push`]); when
/// [`ReportBatcher::due`] says so, [`ReportBatcher::take`] the next request
/// and send it until the coordinator acknowledges it (the coordinator
/// deduplicates, so resending is safe), then take the next. Once the lease's
/// work is over, [`ReportBatcher::close`]: the request holding the last
/// updates carries `done = true` (a request of its own when nothing is left),
/// and [`ReportBatcher::is_finished`] turns true once that one is taken.
#[derive(Debug)]
pub struct ReportBatcher {
    lease: LeaseRef,
    /// Updates not yet taken, with when each was pushed.
    pending: VecDeque<(Instant, Update)>,
    closed: bool,
    done_taken: bool,
}

impl ReportBatcher {
    /// A batcher for `lease`, with nothing pending.
    pub fn new(lease: LeaseRef) -> Self {
        Self {
            lease,
            pending: VecDeque::new(),
            closed: false,
            done_taken: false,
        }
    }

    /// The lease reported on.
    pub fn lease(&self) -> &LeaseRef {
        &self.lease
    }

    /// Adds an update made at `now`.
    pub fn push(&mut self, update: Update, now: Instant) {
        self.pending.push_back((now, update));
    }

    /// No more updates will come: what is pending is due, and the last
    /// request says `done`.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Updates not yet taken into a request.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a request should be sent now.
    pub fn due(&self, now: Instant) -> bool {
        if self.done_taken {
            return false;
        }
        if self.closed || self.pending.len() >= MAX_UPDATES {
            return true;
        }
        self.next_due().is_some_and(|t| now >= t)
    }

    /// When a request becomes due without further pushes (`None`: only a
    /// push or [`ReportBatcher::close`] can make one due).
    pub fn next_due(&self) -> Option<Instant> {
        if self.done_taken {
            return None;
        }
        self.pending.front().map(|(t, _)| *t + MAX_DELAY)
    }

    /// Whether the request saying `done` has been taken.
    pub fn is_finished(&self) -> bool {
        self.done_taken
    }

    /// The next request: up to [`MAX_UPDATES`] pending updates (and about
    /// [`MAX_REQUEST_BYTES`], at least one), with `done` when the batcher
    /// is closed and nothing is left after it. Call when
    /// [`ReportBatcher::due`].
    pub fn take(&mut self) -> ReportRequest {
        let mut request = ReportRequest {
            worker_id: self.lease.worker_id.clone(),
            run_id: self.lease.run_id.clone(),
            lease_id: self.lease.lease_id,
            token: self.lease.token,
            ..ReportRequest::default()
        };
        let mut count = 0;
        let mut bytes = 0;
        while let Some((_, update)) = self.pending.front() {
            let size = update.size();
            if count == MAX_UPDATES || (count > 0 && bytes + size > MAX_REQUEST_BYTES) {
                break;
            }
            // A second `slot_failed` cannot share the field: next request.
            if matches!(update, Update::SlotFailed(_)) && request.slot_failed.is_some() {
                break;
            }
            count += 1;
            bytes += size;
            match self.pending.pop_front().map(|(_, u)| u) {
                Some(Update::Started(s)) => request.started.push(s),
                Some(Update::Finished(f)) => request.finished.push(f),
                Some(Update::Notice(n)) => request.notices.push(n),
                Some(Update::SlotFailed(e)) => request.slot_failed = Some(e),
                None => break,
            }
        }
        if self.closed && self.pending.is_empty() {
            request.done = true;
            self.done_taken = true;
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{Outcome, TestId};

    fn lease() -> LeaseRef {
        LeaseRef {
            worker_id: "w".into(),
            run_id: "r".into(),
            lease_id: 7,
            token: 3,
        }
    }

    fn started(exec: u32) -> Update {
        Update::Started(TestStarted {
            exec,
            at: f64::from(exec),
        })
    }

    fn result(outcome: Outcome, output: &str) -> TestResult {
        TestResult {
            id: TestId::new("s", "t"),
            outcome,
            duration: Duration::from_millis(1500),
            message: Some("boom".into()),
            output: CapturedOutput {
                text: output.into(),
                truncated_bytes: 2,
            },
        }
    }

    #[test]
    fn nothing_is_due_until_the_delay_passes() {
        let t0 = Instant::now();
        let mut b = ReportBatcher::new(lease());
        assert!(!b.due(t0));
        assert_eq!(b.next_due(), None);
        b.push(started(1), t0);
        b.push(started(2), t0 + Duration::from_millis(50));
        assert!(!b.due(t0 + Duration::from_millis(99)));
        assert_eq!(b.next_due(), Some(t0 + MAX_DELAY));
        assert!(b.due(t0 + MAX_DELAY));
        let req = b.take();
        assert_eq!(req.started.len(), 2);
        assert!(!req.done);
        assert_eq!(
            (
                req.worker_id.as_str(),
                req.run_id.as_str(),
                req.lease_id,
                req.token
            ),
            ("w", "r", 7, 3)
        );
        assert_eq!(b.pending(), 0);
        assert!(!b.due(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_full_batch_is_due_at_once_and_requests_hold_at_most_the_maximum() {
        let t0 = Instant::now();
        let mut b = ReportBatcher::new(lease());
        for i in 0..(MAX_UPDATES as u32 - 1) {
            b.push(started(i), t0);
        }
        assert!(!b.due(t0));
        b.push(started(999), t0);
        b.push(started(1000), t0);
        assert!(b.due(t0));
        let first = b.take();
        assert_eq!(first.started.len(), MAX_UPDATES);
        assert_eq!(first.started.first().map(|s| s.exec), Some(0));
        assert_eq!(b.pending(), 1);
        // The leftover is sent on the delay, then `done` on close.
        b.close();
        assert!(b.due(t0));
        let last = b.take();
        assert_eq!(
            last.started.iter().map(|s| s.exec).collect::<Vec<_>>(),
            [1000]
        );
        assert!(last.done);
        assert!(b.is_finished());
        assert!(!b.due(t0));
    }

    #[test]
    fn close_with_nothing_pending_sends_done_alone() {
        let mut b = ReportBatcher::new(lease());
        b.close();
        assert!(b.due(Instant::now()));
        let req = b.take();
        assert!(req.done);
        assert!(req.started.is_empty() && req.finished.is_empty());
        assert!(b.is_finished());
    }

    #[test]
    fn done_waits_for_every_update() {
        let t0 = Instant::now();
        let mut b = ReportBatcher::new(lease());
        for i in 0..(MAX_UPDATES as u32 * 2 + 5) {
            b.push(started(i), t0);
        }
        b.close();
        let mut seen = Vec::new();
        let mut dones = Vec::new();
        while b.due(t0) {
            let req = b.take();
            seen.extend(req.started.iter().map(|s| s.exec));
            dones.push(req.done);
        }
        assert_eq!(seen, (0..(MAX_UPDATES as u32 * 2 + 5)).collect::<Vec<_>>());
        assert_eq!(dones, [false, false, true]);
    }

    #[test]
    fn big_outputs_are_split_over_requests() {
        let t0 = Instant::now();
        let mut b = ReportBatcher::new(lease());
        let big = "x".repeat(MAX_REQUEST_BYTES / 2 + 10);
        for exec in 0..3 {
            let f = finished(exec, &result(Outcome::Fail, &big), 1.0, 2.0);
            b.push(Update::Finished(f), t0);
        }
        b.close();
        let sizes: Vec<usize> =
            std::iter::from_fn(|| b.due(t0).then(|| b.take().finished.len())).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }

    #[test]
    fn two_slot_failures_go_in_two_requests() {
        let t0 = Instant::now();
        let mut b = ReportBatcher::new(lease());
        b.push(Update::Notice("careful".into()), t0);
        b.push(Update::SlotFailed("one".into()), t0);
        b.push(Update::SlotFailed("two".into()), t0);
        b.close();
        let first = b.take();
        assert_eq!(first.notices, ["careful"]);
        assert_eq!(first.slot_failed.as_deref(), Some("one"));
        assert!(!first.done);
        let second = b.take();
        assert_eq!(second.slot_failed.as_deref(), Some("two"));
        assert!(second.done);
    }

    #[test]
    fn results_map_to_the_wire_form() {
        let f = finished(4, &result(Outcome::Timeout, "out"), 10.0, 11.5);
        assert_eq!(f.exec, 4);
        assert_eq!(f.outcome, "timeout");
        assert_eq!(f.duration, 1.5);
        assert_eq!(f.message.as_deref(), Some("boom"));
        assert_eq!(f.output, "out");
        assert_eq!(f.output_truncated_bytes, 2);
        assert_eq!((f.start, f.end), (10.0, 11.5));
        for outcome in [
            Outcome::Pass,
            Outcome::Fail,
            Outcome::Skip,
            Outcome::Crash,
            Outcome::Lost,
        ] {
            assert_eq!(
                finished(0, &result(outcome, ""), 0.0, 0.0).outcome,
                outcome.as_str()
            );
        }
    }

    #[test]
    fn huge_output_is_capped_on_the_wire() {
        let text = "y".repeat(MAX_OUTPUT_BYTES as usize * 3);
        let f = finished(0, &result(Outcome::Fail, &text), 0.0, 0.0);
        assert!(
            f.output.len() as u64 <= MAX_OUTPUT_BYTES + 200,
            "{}",
            f.output.len()
        );
        assert!(f.output_truncated_bytes >= MAX_OUTPUT_BYTES * 2);
    }

    #[test]
    fn slot_messages_become_updates() {
        use shoal_sched::{ExecId, LeaseId};
        let started = Update::from_slot_message(SlotMessage::Started {
            lease: LeaseId(1),
            exec: ExecId(5),
            at: 3.0,
        });
        assert_eq!(
            started,
            Some(Update::Started(TestStarted { exec: 5, at: 3.0 }))
        );
        let failed = Update::from_slot_message(SlotMessage::SlotFailed {
            slot: 0,
            error: "setup".into(),
        });
        assert_eq!(failed, Some(Update::SlotFailed("setup".into())));
        let done = Update::from_slot_message(SlotMessage::Done {
            lease: LeaseId(1),
            token: 1,
        });
        assert_eq!(done, None);
    }
}
