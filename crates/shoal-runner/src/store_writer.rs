//! Writes finished attempts to the store in batches from a background task,
//! so the coordinator loop never waits on the database.

use shoal_core::event::AttemptFinished;
use shoal_store::{AttemptRecord, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most attempts written in one transaction.
const MAX_BATCH: usize = 512;
/// Longest a finished attempt waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Handle to the background writer.
pub(crate) struct StoreWriter {
    tx: Option<mpsc::UnboundedSender<AttemptRecord>>,
    task: Option<JoinHandle<Vec<String>>>,
    run_id: String,
    commit: Option<String>,
    dirty: bool,
}

impl StoreWriter {
    pub(crate) fn spawn(
        store: Arc<dyn Store>,
        run_id: String,
        commit: Option<String>,
        dirty: bool,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<AttemptRecord>();
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut buf = Vec::new();
            loop {
                let first = rx.recv().await;
                let Some(first) = first else { break };
                buf.push(first);
                let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
                while buf.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => buf.push(r),
                        Ok(None) | Err(_) => break,
                    }
                }
                if let Err(e) = store.record_attempts(&buf).await {
                    errors.push(format!("failed to record {} attempts: {e}", buf.len()));
                }
                buf.clear();
            }
            errors
        });
        StoreWriter {
            tx: Some(tx),
            task: Some(task),
            run_id,
            commit,
            dirty,
        }
    }

    pub(crate) fn record(&self, a: &AttemptFinished) {
        let rec = AttemptRecord::from_event(&self.run_id, a, self.commit.as_deref(), self.dirty);
        if let Some(tx) = &self.tx {
            let _ = tx.send(rec);
        }
    }

    /// Writes everything still buffered; returns write errors.
    pub(crate) async fn finish(&mut self) -> Vec<String> {
        self.tx.take();
        match self.task.take() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| vec![format!("store writer failed: {e}")]),
            None => Vec::new(),
        }
    }
}
