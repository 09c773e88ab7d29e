//! Recovery: rebuilding unfinished runs from the store after a restart,
//! and expiring the leases of workers that stopped renewing them.

use super::*;

/// Rebuilds every unfinished run from the store.
pub(crate) async fn resume_runs(shared: &Arc<Shared>) -> Result<(), ServerError> {
    for q in shared.store.open_queued_runs().await? {
        let spec: RunSpec = match serde_json::from_str(&q.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(run = %q.run_id, "unreadable stored run, closing it: {e}");
                shared.store.close_queued_run(&q.run_id).await?;
                continue;
            }
        };
        let base = shared.store.reserve_tokens(TOKENS_PER_RUN).await?;
        let mut run = match Run::new(
            q.run_id.clone(),
            spec,
            base,
            shared.lease_timeout,
            shared.max_requeues,
            shared.clock.clone(),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(run = %q.run_id, "cannot replan stored run, closing it: {e}");
                shared.store.close_queued_run(&q.run_id).await?;
                continue;
            }
        };
        let records = shared.store.attempts_of_run(&q.run_id).await?;
        let stored = shared.store.leases(Some(&q.run_id)).await?;
        let mut adopted = Vec::new();
        for l in &stored {
            let Some(items) = run::lease_items(&l.items) else {
                continue;
            };
            let (index, name) = {
                let mut inner = shared.lock();
                let next = inner.next_worker;
                let w = inner.workers.entry(l.worker_id.clone()).or_insert_with(|| {
                    let name = format!("worker {}", l.worker_id.get(..8).unwrap_or(&l.worker_id));
                    Worker {
                        index: next,
                        slots: 0,
                        display: name.clone(),
                        name,
                        last_seen: Instant::now(),
                    }
                });
                let got = (w.index, w.display.clone());
                if got.0 == next {
                    inner.next_worker += 1;
                }
                got
            };
            adopted.push((
                run::adopted(index, l.slot, l.token, items),
                l.worker_id.clone(),
                name,
            ));
        }
        let (restored, kept) = run.restore(&records, &adopted);
        for (l, kept) in stored.iter().zip(kept) {
            if !kept {
                shared.store.drop_lease(&l.run_id, l.lease_id).await?;
            }
        }
        let held = run.lease_count();
        run.notice(
            NoticeLevel::Warn,
            format!(
                "the coordinator restarted and resumed this run: {restored} of {} executions already had results; {held} batches still running on workers were taken over",
                run.state.sched().planned()
            ),
        );
        tracing::info!(run = %q.run_id, restored, held, "resumed run");
        let fin = run.check_finished();
        {
            let mut inner = shared.lock();
            inner.order.push(q.run_id.clone());
            inner.runs.insert(q.run_id.clone(), run);
        }
        if let Some(fin) = fin {
            finish_in_store(shared, &fin).await;
        }
    }
    Ok(())
}

/// Expires leases of dead workers and writes what that decided.
pub(crate) async fn expiry_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut writes = Vec::new();
        let mut dropped = Vec::new();
        let mut freed = false;
        {
            let mut inner = shared.lock();
            for run in inner.runs.values_mut() {
                for held in run.expire() {
                    tracing::warn!(run = %run.id, worker = %held.worker, token = held.lease.token, "lease expired; its tests are requeued");
                    dropped.push((run.id.clone(), held.lease.token));
                    freed = true;
                }
                if !run.pending.is_empty() {
                    writes.push((run.id.clone(), run.take_pending()));
                }
            }
        }
        if freed {
            shared.work.notify_waiters();
        }
        for (run, records) in writes {
            persist(&shared, &run, records).await;
        }
        for (run, token) in dropped {
            let _ = shared.writer.send(Write::DropLease(run, token));
        }
    }
}
