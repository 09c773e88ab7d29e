//! shoal's coordinator (`shoal serve`): accepts runs from clients, hands
//! their tests to workers' slots as fenced, expiring leases, and records
//! every result in the store before acknowledging it.
//!
//! - [`serve`]: runs the gRPC service until shutdown
//! - `run`: one run's scheduler, leases and event log
//!
//! Durability: a run's spec (planned tests with their estimates) is stored
//! at submission and every attempt before its report is acknowledged, so a
//! coordinator killed at any point and restarted resumes every unfinished
//! run without losing a recorded result. Leases are not adopted across a
//! restart: their tests are requeued and late reports on them are fenced
//! (see docs/design/distributed.md).

mod run;

use run::{ResultData, Run, RunSpec, SpecTest};
use shoal_core::event::NoticeLevel;
use shoal_core::{CapturedOutput, RunSettings, TestId, now_epoch};
use shoal_proto::auth::{AuthInterceptor, TokenSet, check_protocol_version};
use shoal_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use shoal_proto::v1::*;
use shoal_sched::SlotId;
use shoal_snapshot::{BlobStore, Digest, Manifest};
use shoal_store::{CoordinatorLock, QueuedRun, RunRecord, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Fencing tokens reserved per run: lease tokens are `base + n`.
const TOKENS_PER_RUN: u64 = 1 << 32;
/// Largest message accepted (blob uploads).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// How to run a coordinator.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub store: Arc<dyn Store>,
    pub tokens: TokenSet,
    /// Snapshot blobs live under `data_dir/blobs`.
    pub data_dir: PathBuf,
    /// A lease not renewed for this long is expired and its tests requeued.
    pub lease_timeout: Duration,
    /// Times a test's worker may be lost before the test is a crash.
    pub max_requeues: u32,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Why the coordinator could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] shoal_store::StoreError),
    #[error("cannot open the blob store: {0}")]
    Blobs(#[from] shoal_snapshot::SnapshotError),
    #[error(
        "refusing to listen on {0} without a token: give --token (or SHOAL_TOKEN), or listen on a loopback address"
    )]
    OpenOnNetwork(std::net::SocketAddr),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A registered worker, by its `worker_id` (a UUID per process): the name
/// identifies nothing, several workers may register with the same one.
#[derive(Debug)]
struct Worker {
    index: u32,
    /// Slots it announced (0 until it registers after a restart).
    slots: u32,
    /// The name it registered with.
    name: String,
    /// The name it is shown under: `name`, or `name#2`, ... when another
    /// live worker already showed under `name` (see [`display_name`]).
    display: String,
    /// Its last register, heartbeat or lease call.
    last_seen: Instant,
}

/// The name a worker registering as `name` is shown under: the first of
/// `name`, `name#2`, `name#3`, ... that no *other* live worker (seen within
/// `live`) is shown under. Never a refusal: a worker restarted after a kill
/// registers (with a new id) while its old registration still looks live,
/// and must be accepted.
fn display_name(
    workers: &HashMap<String, Worker>,
    worker_id: &str,
    name: &str,
    now: Instant,
    live: Duration,
) -> String {
    let shown: std::collections::HashSet<&str> = workers
        .iter()
        .filter(|(id, w)| id.as_str() != worker_id && now.duration_since(w.last_seen) <= live)
        .map(|(_, w)| w.display.as_str())
        .collect();
    std::iter::once(name.to_owned())
        .chain((2..).map(|n| format!("{name}#{n}")))
        .find(|candidate| !shown.contains(candidate.as_str()))
        .unwrap_or_else(|| name.to_owned())
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<String, Run>,
    /// Submission order, for tie-breaking between runs.
    order: Vec<String>,
    workers: HashMap<String, Worker>,
    next_worker: u32,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    lease_timeout: Duration,
    max_requeues: u32,
    clock: Arc<dyn run::Clock>,
    incarnation: String,
    inner: Mutex<Inner>,
    /// Wakes long-polling lease requests: work was added or freed.
    work: Notify,
    /// Ends event streams when the coordinator stops.
    shutdown: CancellationToken,
    /// The one writer: attempts of concurrent reports share a transaction.
    writer: tokio::sync::mpsc::UnboundedSender<Write>,
    _lock: CoordinatorLock,
}

/// What the writer task writes, in arrival order.
#[derive(Debug)]
enum Write {
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
async fn writer_loop(store: Arc<dyn Store>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Write>) {
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the coordinator on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    if opts.tokens.is_open() && !addr.ip().is_loopback() {
        return Err(ServerError::OpenOnNetwork(addr));
    }
    let lock = opts.store.lock_coordinator().await?;
    let blobs = BlobStore::open(opts.data_dir.join("blobs"))?;
    let shared = Arc::new(Shared {
        store: opts.store.clone(),
        blobs,
        lease_timeout: opts.lease_timeout,
        max_requeues: opts.max_requeues,
        clock: Arc::new(run::SystemClock::new()),
        incarnation: uuid::Uuid::now_v7().to_string(),
        inner: Mutex::new(Inner::default()),
        work: Notify::new(),
        shutdown: shutdown.clone(),
        writer: {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(writer_loop(opts.store.clone(), rx));
            tx
        },
        _lock: lock,
    });
    resume_runs(&shared).await?;
    let ticker = tokio::spawn(expiry_loop(shared.clone(), shutdown.clone()));
    let service = tonic::service::interceptor::InterceptedService::new(
        CoordinatorServer::new(Service {
            shared: shared.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        AuthInterceptor::new(opts.tokens.clone()),
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls {
        builder = builder.tls_config(tls)?;
    }
    tracing::info!(%addr, "coordinator listening");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let res = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    ticker.abort();
    res?;
    Ok(())
}

/// Rebuilds every unfinished run from the store.
async fn resume_runs(shared: &Arc<Shared>) -> Result<(), ServerError> {
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
async fn expiry_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
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

/// Writes a run's attempts (taken with [`Run::take_pending`]); on failure
/// they go back to the run and are written with its next batch. Then, with
/// everything it decided durable, the run may finish: `run_finished` is
/// never sent before the results it counts are in the store.
///
/// The write runs as a task of its own, so a caller dropped mid-way (a
/// worker disconnecting during its report) cannot leave the run waiting
/// for a write that never ends.
async fn persist(
    shared: &Arc<Shared>,
    run_id: &str,
    records: Vec<shoal_store::AttemptRecord>,
) -> bool {
    let (shared, run_id) = (shared.clone(), run_id.to_owned());
    tokio::spawn(async move { persist_now(&shared, &run_id, records).await })
        .await
        .unwrap_or(false)
}

async fn persist_now(
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

async fn finish_in_store(shared: &Shared, fin: &shoal_core::event::RunFinished) {
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

#[derive(Debug, Clone)]
struct Service {
    shared: Arc<Shared>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unknown_worker() -> Status {
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
    fn apply_report(
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

    fn run_for_worker<'a>(
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
    fn try_lease(
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

fn store_status(e: shoal_store::StoreError) -> Status {
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
