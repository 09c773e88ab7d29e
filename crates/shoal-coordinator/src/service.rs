//! The gRPC service: registration, heartbeats, leases, reports, snapshot
//! blobs, run submission and event streams, over the state in `state`.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) fn unknown_worker() -> Status {
    Status::not_found("this coordinator does not know the worker: register again")
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let req = request.into_inner();
        check_protocol_version(req.protocol_version)?;
        if req.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id is empty"));
        }
        let mut inner = self.shared.lock();
        let now = Instant::now();
        let live = self.shared.lease_timeout;
        let known = inner
            .workers
            .get(&req.worker_id)
            .map(|w| (w.name == req.name && w.slots > 0).then(|| w.display.clone()));
        // A worker registering again under the same name keeps how it is
        // shown; a new one (or one known only from a taken-over lease) gets
        // a name no other live worker is shown under.
        let shown = match known {
            Some(Some(shown)) => shown,
            _ => display_name(&inner.workers, &req.worker_id, &req.name, now, live),
        };
        if shown != req.name {
            let holder = inner
                .workers
                .iter()
                .filter(|(id, w)| {
                    id.as_str() != req.worker_id
                        && w.display == req.name
                        && now.duration_since(w.last_seen) <= live
                })
                .map(|(id, w)| (id.clone(), now.duration_since(w.last_seen)))
                .next();
            let (other, ago) = holder.unwrap_or_default();
            tracing::warn!(
                worker = %req.name,
                worker_id = %req.worker_id,
                other_worker_id = %other,
                "another live worker (last seen {:.1}s ago) is already registered as {}: showing this one as {shown}. Give each worker its own --name; after a worker is killed and restarted this lasts until its old registration stops heartbeating",
                ago.as_secs_f64(),
                req.name
            );
        }
        let index = if let Some(w) = inner.workers.get_mut(&req.worker_id) {
            // Known from a lease taken over after a restart: now named.
            w.name.clone_from(&req.name);
            w.display.clone_from(&shown);
            w.slots = req.slots;
            w.last_seen = now;
            w.index
        } else {
            let index = inner.next_worker;
            inner.next_worker += 1;
            tracing::info!(worker = %shown, slots = req.slots, index, worker_id = %req.worker_id, "worker registered");
            inner.workers.insert(
                req.worker_id.clone(),
                Worker {
                    index,
                    slots: req.slots,
                    name: req.name.clone(),
                    display: shown.clone(),
                    last_seen: now,
                },
            );
            index
        };
        // Open runs size their batches by every slot that can take work, not
        // only by the slots that already asked (else the first lease of a
        // run would take half of it).
        for run in inner.runs.values_mut() {
            for slot in 0..req.slots {
                run.state.add_slot(SlotId::new(index, slot));
            }
        }
        let timeout = self.shared.lease_timeout;
        Ok(Response::new(RegisterReply {
            protocol_version: shoal_proto::PROTOCOL_VERSION,
            lease_timeout_ms: timeout.as_millis() as u64,
            heartbeat_interval_ms: (timeout.as_millis() as u64 / 4).max(100),
            coordinator_id: self.shared.incarnation.clone(),
            display_name: shown,
        }))
    }

    async fn lease(&self, request: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let req = request.into_inner();
        let wait = Duration::from_millis(req.wait_ms.min(60_000));
        let until = Instant::now() + wait;
        loop {
            let notified = self.shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((batch, record)) = self.try_lease(&req)? {
                // Stored (in the background) so a restarted coordinator can
                // take it over; one not stored yet is requeued instead.
                let _ = self.shared.writer.send(Write::SaveLease(record));
                return Ok(Response::new(LeaseReply { batch: Some(batch) }));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until.into()) => {
                    return Ok(Response::new(LeaseReply { batch: None }));
                }
                _ = self.shared.shutdown.cancelled() => {
                    return Err(Status::unavailable("the coordinator is shutting down"));
                }
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.into_inner();
        let mut inner = self.shared.lock();
        if let Some(w) = inner.workers.get_mut(&req.worker_id) {
            w.last_seen = Instant::now();
        } else {
            // Keep running: leases taken over after a restart are renewed
            // once the worker registered again; others turn out stale.
            return Ok(Response::new(HeartbeatReply {
                register_again: true,
                stop: Vec::new(),
                finished_runs: Vec::new(),
            }));
        }
        let mut stop = Vec::new();
        for h in req.held {
            let live = inner.runs.get_mut(&h.run_id).is_some_and(|run| {
                let now = run.now();
                match run.state.held_by_token(h.token) {
                    Some(held) if held.owner == req.worker_id => {
                        let id = held.lease.id;
                        run.state.renew(id, h.token, now)
                    }
                    _ => false,
                }
            });
            if !live {
                stop.push(h);
            }
        }
        let finished_runs = req
            .runs
            .into_iter()
            .filter(|id| {
                inner
                    .runs
                    .get(id)
                    .is_none_or(|run| run.finished || run.cancelled())
            })
            .collect();
        Ok(Response::new(HeartbeatReply {
            register_again: false,
            stop,
            finished_runs,
        }))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportReply>, Status> {
        let req = request.into_inner();
        let step = self.apply_report(req.clone())?;
        let Some((records, done)) = step else {
            // Fenced: an expired, released or pre-restart lease.
            return Ok(Response::new(ReportReply { stale: true }));
        };
        if done {
            self.shared.work.notify_waiters();
        }
        if !persist(&self.shared, &req.run_id, records).await {
            return Err(Status::unavailable(
                "the coordinator could not record the results; send them again",
            ));
        }
        if done {
            let _ = self
                .shared
                .writer
                .send(Write::DropLease(req.run_id.clone(), req.token));
        }
        Ok(Response::new(ReportReply { stale: false }))
    }

    async fn get_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<shoal_proto::v1::RunSpec>, Status> {
        let req = request.into_inner();
        let inner = self.shared.lock();
        let run = self.run_for_worker(&inner, &req.worker_id, &req.run_id)?;
        Ok(Response::new(shoal_proto::v1::RunSpec {
            run_id: run.id.clone(),
            manifest_digest: run.spec.manifest_digest.clone(),
            config_toml: run.spec.config_toml.clone(),
            project_dir: run.spec.project_dir.clone(),
            retries: run.spec.retries,
            user: run.spec.user.clone(),
            settings_json: run.spec.settings.to_json(),
            scopes: run
                .spec
                .scopes
                .iter()
                .map(|(suite, paths)| shoal_proto::v1::SuiteScope {
                    suite: suite.clone(),
                    paths: paths.clone(),
                })
                .collect(),
        }))
    }

    type FetchBlobsStream = BoxStream<Blob>;

    async fn fetch_blobs(
        &self,
        request: Request<FetchBlobsRequest>,
    ) -> Result<Response<Self::FetchBlobsStream>, Status> {
        let req = request.into_inner();
        let manifest_digest = {
            let inner = self.shared.lock();
            let run = self.run_for_worker(&inner, &req.worker_id, &req.run_id)?;
            (run.spec.manifest_digest.clone(), run.blobs.is_some())
        };
        if !manifest_digest.1 {
            let digest = Digest::parse(&manifest_digest.0)
                .map_err(|e| Status::internal(format!("bad stored manifest digest: {e}")))?;
            let bytes =
                self.shared.blobs.read(&digest).map_err(|e| {
                    Status::internal(format!("cannot read the run's manifest: {e}"))
                })?;
            let manifest = Manifest::from_json(&bytes)
                .map_err(|e| Status::internal(format!("cannot parse the run's manifest: {e}")))?;
            let set = manifest.blobs().map(|d| d.to_string()).collect();
            if let Some(run) = self.shared.lock().runs.get_mut(&req.run_id) {
                run.blobs = Some(set);
            }
        }
        let mut out = Vec::with_capacity(req.digests.len());
        {
            let inner = self.shared.lock();
            let run = self.run_for_worker(&inner, &req.worker_id, &req.run_id)?;
            for d in &req.digests {
                let allowed = *d == run.spec.manifest_digest
                    || run.blobs.as_ref().is_some_and(|b| b.contains(d));
                if !allowed {
                    return Err(Status::permission_denied(format!(
                        "blob {d} is not part of run {}'s snapshot",
                        run.id
                    )));
                }
                out.push(d.clone());
            }
        }
        let blobs = self.shared.blobs.clone();
        let stream = tokio_stream::iter(out.into_iter().map(move |d| {
            let digest = Digest::parse(&d).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let data = blobs
                .read(&digest)
                .map_err(|e| Status::not_found(format!("blob {d}: {e}")))?;
            Ok(Blob { digest: d, data })
        }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn missing_blobs(
        &self,
        request: Request<MissingBlobsRequest>,
    ) -> Result<Response<MissingBlobsReply>, Status> {
        let req = request.into_inner();
        let mut digests = Vec::with_capacity(req.digests.len());
        for d in &req.digests {
            digests.push(Digest::parse(d).map_err(|e| Status::invalid_argument(e.to_string()))?);
        }
        let missing = self
            .shared
            .blobs
            .missing(&digests)
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        Ok(Response::new(MissingBlobsReply { missing }))
    }

    async fn upload_blobs(
        &self,
        request: Request<Streaming<Blob>>,
    ) -> Result<Response<UploadBlobsReply>, Status> {
        let mut stream = request.into_inner();
        let mut stored = 0;
        while let Some(blob) = stream.message().await? {
            let digest =
                Digest::parse(&blob.digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.shared
                .blobs
                .put_verified(&digest, &blob.data)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            stored += 1;
        }
        Ok(Response::new(UploadBlobsReply { stored }))
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let req = request.into_inner();
        check_protocol_version(req.protocol_version)?;
        let digest = Digest::parse(&req.manifest_digest)
            .map_err(|e| Status::invalid_argument(format!("manifest digest: {e}")))?;
        if !self.shared.blobs.has(&digest) {
            return Err(Status::failed_precondition(
                "the snapshot's manifest was not uploaded",
            ));
        }
        if req.tests.is_empty() {
            return Err(Status::invalid_argument("the run has no tests"));
        }
        let ids: Vec<TestId> = req
            .tests
            .iter()
            .map(|t| TestId::new(t.suite.clone(), t.name.clone()))
            .collect();
        let known = self
            .shared
            .store
            .duration_estimates(&ids)
            .await
            .unwrap_or_default();
        let mut planned: Vec<shoal_sched::PlannedTest> = Vec::new();
        for t in &req.tests {
            planned.push(shoal_sched::PlannedTest {
                case: shoal_core::TestCase {
                    id: TestId::new(t.suite.clone(), t.name.clone()),
                    group: t.group.clone(),
                    runner: None,
                },
                estimate: Duration::from_millis(t.default_duration_ms),
                retries: t.retries,
                max_batch: (t.max_batch as usize).max(1),
                batch_overhead: Duration::from_micros(t.batch_overhead_us),
                locality: t.locality.clone(),
            });
        }
        let default = Duration::from_millis(
            req.tests
                .iter()
                .map(|t| t.default_duration_ms)
                .max()
                .unwrap_or(1000),
        );
        shoal_sched::fill_estimates(&mut planned, &known, default);
        let mut settings =
            RunSettings::from_json(&req.settings_json).map_err(Status::invalid_argument)?;
        // Automatic quarantine selects from this coordinator's history, where
        // the run is recorded (never from the client's).
        let auto_notice = match &settings.auto_quarantine {
            None => None,
            Some(auto) => {
                match shoal_history::auto_quarantined(auto, self.shared.store.as_ref(), now_epoch())
                    .await
                {
                    Ok(tests) => {
                        let added: Vec<TestId> = tests
                            .into_iter()
                            .filter(|t| !settings.quarantine.contains(t))
                            .collect();
                        settings.quarantine.extend(added.iter().cloned());
                        (!added.is_empty()).then(|| {
                            let names: Vec<String> =
                                added.iter().map(shoal_core::config::test_entry).collect();
                            (
                                NoticeLevel::Info,
                                format!(
                                    "auto-quarantined (flaky in the last {} days of the coordinator's history): {}",
                                    shoal_history::AUTO_WINDOW.as_secs() / 86_400,
                                    names.join(", ")
                                ),
                            )
                        })
                    }
                    Err(e) => Some((
                        NoticeLevel::Warn,
                        format!(
                            "auto-quarantine could not read the coordinator's history ({e}); quarantining none"
                        ),
                    )),
                }
            }
        };
        let spec = RunSpec {
            settings,
            manifest_digest: req.manifest_digest.clone(),
            config_toml: req.config_toml,
            project_dir: req.project_dir,
            retries: req.retries,
            user: req.user.clone(),
            commit: req.commit.clone(),
            dirty: req.dirty,
            selection: req.selection.clone(),
            repeat: req.repeat.max(1),
            shuffle: req.shuffle_seed,
            scopes: req
                .scopes
                .iter()
                .map(|s| (s.suite.clone(), s.paths.clone()))
                .collect(),
            submitted: now_epoch(),
            tests: planned
                .iter()
                .map(|p| SpecTest {
                    suite: p.case.id.suite.clone(),
                    name: p.case.id.name.clone(),
                    group: p.case.group.clone(),
                    estimate_us: p.estimate.as_micros() as u64,
                    retries: p.retries,
                    max_batch: p.max_batch,
                    overhead_us: p.batch_overhead.as_micros() as u64,
                    locality: p.locality.clone(),
                })
                .collect(),
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let base = self
            .shared
            .store
            .reserve_tokens(TOKENS_PER_RUN)
            .await
            .map_err(store_status)?;
        let mut run = Run::new(
            run_id.clone(),
            spec.clone(),
            base,
            self.shared.lease_timeout,
            self.shared.max_requeues,
            self.shared.clock.clone(),
        )
        .map_err(|e| Status::invalid_argument(format!("cannot plan the run: {e}")))?;
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| Status::internal(format!("cannot encode the run: {e}")))?;
        let store = &self.shared.store;
        store
            .begin_run(&RunRecord {
                run_id: run_id.clone(),
                started: spec.submitted,
                commit: spec.commit.clone(),
                dirty: spec.dirty,
                worker: format!("coordinator (user {})", spec.user),
                selection: spec.selection.clone(),
                planned: run.state.sched().planned(),
                environment: shoal_store::default_environment(),
                seed: spec.shuffle,
                kind: spec.settings.kind.clone(),
            })
            .await
            .map_err(store_status)?;
        store
            .save_queued_run(&QueuedRun {
                run_id: run_id.clone(),
                spec: spec_json,
                submitted: spec.submitted,
            })
            .await
            .map_err(store_status)?;
        let estimated_work: f64 = planned
            .iter()
            .map(|p| p.estimate.as_secs_f64())
            .sum::<f64>()
            * spec.repeat as f64;
        // Every registered slot may take this run's work: batches are sized
        // for all of them from the first lease on.
        let slots: Vec<SlotId> = {
            let inner = self.shared.lock();
            inner
                .workers
                .values()
                .flat_map(|w| (0..w.slots).map(move |i| SlotId::new(w.index, i)))
                .collect()
        };
        for &slot in &slots {
            run.state.add_slot(slot);
        }
        run.emit(&shoal_core::Event::RunStarted(
            shoal_core::event::RunStarted {
                run_id: run_id.clone(),
                commit: spec.commit.clone(),
                dirty: spec.dirty,
                slots: slots.len(),
                worker: "coordinator".into(),
                planned: run.state.sched().planned(),
                repeat: spec.repeat,
                retries: spec.settings.retries,
                estimated_work,
                start: spec.submitted,
                seed: spec.shuffle,
            },
        ));
        if let Some((level, message)) = auto_notice {
            run.notice(level, message);
        }
        tracing::info!(run = %run_id, user = %spec.user, tests = spec.tests.len(), "run submitted");
        {
            let mut inner = self.shared.lock();
            inner.order.push(run_id.clone());
            inner.runs.insert(run_id.clone(), run);
        }
        self.shared.work.notify_waiters();
        Ok(Response::new(SubmitReply { run_id }))
    }

    type WatchStream = BoxStream<RunEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let mut rx = {
            let inner = self.shared.lock();
            let run = inner
                .runs
                .get(&req.run_id)
                .ok_or_else(|| Status::not_found(format!("no active run {}", req.run_id)))?;
            run.seq.subscribe()
        };
        let shared = self.shared.clone();
        let (tx, out) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut next = req.from_seq as usize;
            loop {
                let (batch, finished) = {
                    let inner = shared.lock();
                    let Some(run) = inner.runs.get(&req.run_id) else {
                        return;
                    };
                    let batch: Vec<(u64, String)> = run.events[next.min(run.events.len())..]
                        .iter()
                        .enumerate()
                        .map(|(i, e)| ((next + i) as u64, e.clone()))
                        .collect();
                    (batch, run.finished)
                };
                next += batch.len();
                for (seq, json) in batch {
                    if tx.send(Ok(RunEvent { seq, json })).await.is_err() {
                        return;
                    }
                }
                if finished {
                    let inner = shared.lock();
                    if inner
                        .runs
                        .get(&req.run_id)
                        .is_none_or(|r| r.events.len() <= next)
                    {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = shared.shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelReply>, Status> {
        let req = request.into_inner();
        let fin = {
            let mut inner = self.shared.lock();
            let Some(run) = inner.runs.get_mut(&req.run_id) else {
                return Ok(Response::new(CancelReply { found: false }));
            };
            tracing::info!(run = %req.run_id, "run cancelled");
            run.cancel();
            run.check_finished()
        };
        if let Some(fin) = fin {
            finish_in_store(&self.shared, &fin).await;
        }
        Ok(Response::new(CancelReply { found: true }))
    }
}

impl Service {
    /// Applies a report under the lock; `None` when its lease is stale.
    pub(crate) fn apply_report(
        &self,
        req: ReportRequest,
    ) -> Result<Option<(Vec<shoal_store::AttemptRecord>, bool)>, Status> {
        let mut inner = self.shared.lock();
        let Some(run) = inner.runs.get_mut(&req.run_id) else {
            return Ok(None);
        };
        match run.state.held_by_token(req.token) {
            Some(h) if h.owner != req.worker_id => {
                return Err(Status::permission_denied(
                    "this worker does not hold that lease",
                ));
            }
            Some(_) => {}
            None => return Ok(None),
        }

        for s in &req.started {
            run.started(req.token, s.exec, s.at);
        }
        for f in req.finished {
            let Some(outcome) = shoal_core::Outcome::parse(&f.outcome) else {
                return Err(Status::invalid_argument(format!(
                    "unknown outcome {:?}",
                    f.outcome
                )));
            };
            let data = ResultData {
                duration: f.duration,
                message: f.message,
                output: CapturedOutput {
                    text: f.output,
                    truncated_bytes: f.output_truncated_bytes,
                },
                start: f.start,
                end: f.end,
            };
            run.finished_test(req.token, f.exec, outcome, data);
        }
        for n in req.notices {
            run.notice(NoticeLevel::Warn, n);
        }
        if let Some(e) = req.slot_failed {
            run.notice(NoticeLevel::Error, format!("a slot could not start: {e}"));
        }
        if req.done {
            run.end_lease(req.token, "its batch ended without running it");
        }
        Ok(Some((run.take_pending(), req.done)))
    }

    pub(crate) fn run_for_worker<'a>(
        &self,
        inner: &'a Inner,
        worker_id: &str,
        run_id: &str,
    ) -> Result<&'a Run, Status> {
        let run = inner
            .runs
            .get(run_id)
            .ok_or_else(|| Status::not_found(format!("no active run {run_id}")))?;
        if !run.held_by(worker_id) {
            return Err(Status::permission_denied(
                "only a worker holding a lease of the run may read it",
            ));
        }
        Ok(run)
    }

    /// A batch for the slot from the run that holds the fewest leases.
    pub(crate) fn try_lease(
        &self,
        req: &LeaseRequest,
    ) -> Result<Option<(Batch, shoal_store::LeaseRecord)>, Status> {
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        let worker = inner
            .workers
            .get_mut(&req.worker_id)
            .ok_or_else(unknown_worker)?;
        worker.last_seen = Instant::now();
        let slot = SlotId::new(worker.index, req.slot);
        let name = worker.display.clone();
        let mut candidates: Vec<(usize, usize, String)> = inner
            .order
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let run = inner.runs.get(id)?;
                (!run.finished && !run.cancelled() && run.state.sched().queued() > 0)
                    .then(|| (run.lease_count(), i, id.clone()))
            })
            .collect();
        candidates.sort();
        for (_, _, id) in candidates {
            let Some(run) = inner.runs.get_mut(&id) else {
                continue;
            };
            let Some(lease) = run.lease(slot, &name, &req.worker_id) else {
                continue;
            };
            let token = lease.token;
            let batch = Batch {
                run_id: id.clone(),
                lease_id: token,
                token,
                lease_timeout_ms: self.shared.lease_timeout.as_millis() as u64,
                items: lease
                    .items
                    .iter()
                    .map(|e| BatchItem {
                        exec: e.exec.0,
                        suite: e.case.id.suite.clone(),
                        name: e.case.id.name.clone(),
                        group: e.case.group.clone(),
                        attempt: e.attempt,
                        repeat: e.repeat,
                        estimate_ms: e.estimate.as_millis() as u64,
                    })
                    .collect(),
            };
            let record = shoal_store::LeaseRecord {
                run_id: id.clone(),
                lease_id: token,
                token,
                worker_id: req.worker_id.clone(),
                slot: req.slot,
                items: serde_json::to_string(
                    &batch
                        .items
                        .iter()
                        .map(|i| (i.exec, i.attempt))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
                deadline: now_epoch() + self.shared.lease_timeout.as_secs_f64(),
            };
            return Ok(Some((batch, record)));
        }
        Ok(None)
    }
}

pub(crate) fn store_status(e: shoal_store::StoreError) -> Status {
    Status::unavailable(format!("store error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: u32, name: &str, display: &str, last_seen: Instant) -> Worker {
        Worker {
            index,
            slots: 2,
            name: name.to_owned(),
            display: display.to_owned(),
            last_seen,
        }
    }

    #[test]
    fn a_name_shown_by_another_live_worker_gets_a_number() {
        let now = Instant::now();
        let live = Duration::from_secs(10);
        let mut workers = HashMap::new();
        assert_eq!(display_name(&workers, "a", "ci", now, live), "ci");
        workers.insert("a".to_owned(), worker(0, "ci", "ci", now));
        // Its own registration does not count against it.
        assert_eq!(display_name(&workers, "a", "ci", now, live), "ci");
        // A second live process with the name: accepted, told apart.
        assert_eq!(display_name(&workers, "b", "ci", now, live), "ci#2");
        workers.insert("b".to_owned(), worker(1, "ci", "ci#2", now));
        assert_eq!(display_name(&workers, "c", "ci", now, live), "ci#3");
        assert_eq!(display_name(&workers, "c", "other", now, live), "other");
    }

    #[test]
    fn a_dead_registration_frees_its_name() {
        let now = Instant::now();
        let live = Duration::from_secs(10);
        let mut workers = HashMap::new();
        let long_ago = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        workers.insert("old".to_owned(), worker(0, "ci", "ci", long_ago));
        workers.insert("b".to_owned(), worker(1, "ci", "ci#2", now));
        // The first name is free again; the live `ci#2` keeps its own.
        assert_eq!(display_name(&workers, "c", "ci", now, live), "ci");
    }
}
