//! Persistence: the one writer task (group commit of attempts, lease
//! changes), and writing a run's results before it may finish.

use super::*;

/// What the writer task writes, in arrival order.
#[derive(Debug)]
pub(crate) enum Write {
    Attempts(
        Vec<shoal_store::AttemptRecord>,
        tokio::sync::oneshot::Sender<bool>,
    ),
    SaveLease(shoal_store::LeaseRecord),
    DropLease(String, u64),
}

/// Writes what reports and leases produce. Attempts waiting together go in
/// one transaction (group commit): under many concurrent reports the store
/// pays one commit for all of them instead of one each, and the lease
/// writes, which nothing waits for, never delay an acknowledgement.
pub(crate) async fn writer_loop(
    store: Arc<dyn Store>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Write>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 4096 {
                break;
            }
        }
        let mut attempts = Vec::new();
        let mut acks = Vec::new();
        let mut leases = Vec::new();
        for w in batch {
            match w {
                Write::Attempts(mut records, ack) => {
                    attempts.append(&mut records);
                    acks.push(ack);
                }
                other => leases.push(other),
            }
        }
        let ok = attempts.is_empty()
            || match store.record_attempts(&attempts).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("failed to record {} attempts: {e}", attempts.len());
                    false
                }
            };
        for ack in acks {
            let _ = ack.send(ok);
        }
        for w in leases {
            let res = match &w {
                Write::SaveLease(record) => store.save_lease(record).await,
                Write::DropLease(run, id) => store.drop_lease(run, *id).await,
                Write::Attempts(..) => Ok(()),
            };
            if let Err(e) = res {
                tracing::warn!("failed to record a lease change: {e}");
            }
        }
    }
}

/// Writes a run's attempts (taken with [`Run::take_pending`]); on failure
/// they go back to the run and are written with its next batch. Then, with
/// everything it decided durable, the run may finish: `run_finished` is
/// never sent before the results it counts are in the store.
///
/// The write runs as a task of its own, so a caller dropped mid-way (a
/// worker disconnecting during its report) cannot leave the run waiting
/// for a write that never ends.
pub(crate) async fn persist(
    shared: &Arc<Shared>,
    run_id: &str,
    records: Vec<shoal_store::AttemptRecord>,
) -> bool {
    let (shared, run_id) = (shared.clone(), run_id.to_owned());
    tokio::spawn(async move { persist_now(&shared, &run_id, records).await })
        .await
        .unwrap_or(false)
}

pub(crate) async fn persist_now(
    shared: &Shared,
    run_id: &str,
    records: Vec<shoal_store::AttemptRecord>,
) -> bool {
    let written = records.is_empty() || {
        let (ack, done) = tokio::sync::oneshot::channel();
        shared
            .writer
            .send(Write::Attempts(records.clone(), ack))
            .is_ok()
            && done.await.unwrap_or(false)
    };
    let fin = {
        let mut inner = shared.lock();
        let Some(run) = inner.runs.get_mut(run_id) else {
            return written;
        };
        run.written(records, written);
        run.check_finished()
    };
    if let Some(fin) = fin {
        finish_in_store(shared, &fin).await;
    }
    written
}

pub(crate) async fn finish_in_store(shared: &Shared, fin: &shoal_core::event::RunFinished) {
    if let Err(e) = shared
        .store
        .finish_run(
            &fin.run_id,
            fin.end,
            &fin.counts,
            fin.interrupted,
            fin.exit_code,
        )
        .await
    {
        tracing::error!(run = %fin.run_id, "failed to record the end of the run: {e}");
    }
    if let Err(e) = shared.store.close_queued_run(&fin.run_id).await {
        tracing::error!(run = %fin.run_id, "failed to close the run: {e}");
    }
    tracing::info!(run = %fin.run_id, exit_code = fin.exit_code, "run finished");
}
