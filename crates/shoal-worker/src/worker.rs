//! The worker agent: registers with the coordinator, heartbeats the leases
//! it holds, runs one lease loop per slot (each batch through the local
//! engine's [`SlotCtx`]), forwards results as `Report`s, retires runs left
//! idle, and drains gracefully on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_exec::ProcessExecutor;
use shoal_proto::PROTOCOL_VERSION;
use shoal_proto::v1::{
    Batch, FetchBlobsRequest, GetRunRequest, HeartbeatRequest, HeldLease, LeaseRequest,
    RegisterReply, RegisterRequest, ReportRequest,
};
use shoal_slot::SlotMessage;
use shoal_snapshot::Digest;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::backoff::{Backoff, fmt_delay};
use crate::batch::{SlotEnv, SlotRun, crash_all};
use crate::client::{self, Client, OutageLog, describe, is_unknown_worker, request};
use crate::instance::{Instance, InstanceError};
use crate::prepare::{
    PrepareError, PreparedRun, RunInputs, SetupStatus, WorkerCache, check_run_id, prepare_run,
    remove_dir_if_present,
};
use crate::report::{LeaseRef, ReportBatcher, Update};

/// How long a `Lease` call waits for a batch.
const LEASE_WAIT_MS: u64 = 10_000;
/// A failed preparation is answered from memory for this long; a batch
/// arriving later tries again.
const PREPARE_RETRY_AFTER: Duration = Duration::from_secs(30);
/// A run not leased for this long has its runners closed and files removed.
const IDLE_RUN: Duration = Duration::from_secs(600);
/// How often idle runs are looked for.
const JANITOR_EVERY: Duration = Duration::from_secs(30);
/// After the drain time, how long the last reports (`done`) may take.
const FINAL_REPORT_GRACE: Duration = Duration::from_secs(10);
/// Heartbeat interval when the coordinator suggests none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// How to run a worker.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The coordinator's address (`host:port`, `http://...` or `https://...`).
    pub server: String,
    /// The token sent as `authorization: Bearer`, if the coordinator needs one.
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` coordinator.
    pub ca: Option<PathBuf>,
    /// Concurrent slots (each sees `SHOAL_SLOT` = 0..slots).
    pub slots: u32,
    /// Labels announced to the coordinator.
    pub labels: BTreeMap<String, String>,
    /// Human-readable name (also `SHOAL_WORKER` for tests and hooks).
    /// `None`: the host name, with `-<k>` for instance `k` > 0 of the cache
    /// directory (see [`Instance`]). A name another live worker on the same
    /// cache directory uses is refused.
    pub name: Option<String>,
    /// Where snapshots are cached and runs materialized. Several workers
    /// may share it: each takes its own [`Instance`] of it.
    pub cache_dir: PathBuf,
    /// On shutdown, how long batches in flight may go on before they are
    /// stopped.
    pub drain_timeout: Duration,
}

impl WorkerOptions {
    /// Options for a worker of the coordinator at `server` caching in
    /// `cache_dir`: one slot, no token, no labels, the default name (the
    /// host's), 30 s to drain.
    pub fn new(server: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            server: server.into(),
            token: None,
            ca: None,
            slots: 1,
            labels: BTreeMap::new(),
            name: None,
            cache_dir: cache_dir.into(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_some() {
            "Some(***)"
        } else {
            "None"
        };
        f.debug_struct("WorkerOptions")
            .field("server", &self.server)
            .field("token", &format_args!("{token}"))
            .field("ca", &self.ca)
            .field("slots", &self.slots)
            .field("labels", &self.labels)
            .field("name", &self.name)
            .field("cache_dir", &self.cache_dir)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

/// This machine's host name, or `worker` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// Why a worker could not start. Once started, a worker retries everything
/// (the coordinator being away included) until it is shut down.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The address, token or CA file cannot be used.
    #[error(transparent)]
    Connection(#[from] shoal_proto::ProtoError),
    /// `slots` is 0.
    #[error("a worker needs at least one slot")]
    NoSlots,
    /// No instance of the cache directory could be taken, or the name is
    /// used by another live worker on it.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The cache directory cannot be used.
    #[error("cannot use the cache directory {}: {source}", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: PrepareError,
    },
}

/// Runs a worker until `shutdown` is cancelled, then drains: no new
/// batches are asked for, batches in flight get up to
/// [`WorkerOptions::drain_timeout`] to finish before they are stopped (and
/// reported done, so the coordinator requeues what did not run), persistent
/// runners are closed and the run directories removed.
///
/// Errors only on options that cannot work (address, token, CA file,
/// slots, cache directory); an unreachable or refusing coordinator is
/// logged and retried. Several workers may share a cache directory, in one
/// process or several: each takes its own [`Instance`] of it.
pub async fn run_worker(
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    if opts.slots == 0 {
        return Err(WorkerError::NoSlots);
    }
    let has_token = opts.token.is_some();
    let client = client::connect(&opts.server, opts.token.clone(), opts.ca.as_deref())?;
    let instance = {
        let (dir, name) = (opts.cache_dir.clone(), opts.name.clone());
        tokio::task::spawn_blocking(move || Instance::acquire(&dir, name.as_deref(), &host_name()))
            .await
            .map_err(|e| WorkerError::Cache {
                path: opts.cache_dir.clone(),
                source: PrepareError::Task(e.to_string()),
            })??
    };
    let name = instance.name().to_owned();
    tracing::info!(
        "worker {name}: instance {} of the cache directory {} (run directories in {})",
        instance.index(),
        opts.cache_dir.display(),
        instance.runs_dir().display()
    );
    let cache = WorkerCache::with_instance(instance).map_err(|source| WorkerError::Cache {
        path: opts.cache_dir.clone(),
        source,
    })?;
    let env = SlotEnv {
        worker: name.clone(),
        executor: Arc::new(ProcessExecutor),
        slots: opts.slots,
    };
    let worker = Arc::new(Worker {
        worker_id: uuid::Uuid::now_v7().to_string(),
        name,
        opts: WorkerOptions {
            token: None,
            ..opts
        },
        has_token,
        client,
        cache,
        env,
        registration: tokio::sync::Mutex::new(()),
        generation: AtomicU64::new(0),
        heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64),
        held: Mutex::new(HashMap::new()),
        runs: Mutex::new(HashMap::new()),
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
        give_up: CancellationToken::new(),
        lease_log: OutageLog::new("asking the coordinator for work"),
        heartbeat_log: OutageLog::new("heartbeat"),
        report_log: OutageLog::new("reporting results"),
    });

    let Some(reply) = worker.register_until(&shutdown).await else {
        tracing::info!("worker stopped before it registered");
        return Ok(());
    };
    worker.apply(&reply);

    // Every task lives in a JoinSet, so dropping this future stops them all.
    let background = CancellationToken::new();
    let mut chores = JoinSet::new();
    chores.spawn(worker.clone().heartbeat_loop(background.clone()));
    chores.spawn(worker.clone().janitor_loop(background.clone()));
    let mut timer = JoinSet::new();
    timer.spawn(worker.clone().drain_timer());
    let mut slots = JoinSet::new();
    for slot in 0..worker.opts.slots {
        slots.spawn(worker.clone().slot_loop(slot));
    }
    while let Some(result) = slots.join_next().await {
        if let Err(e) = result {
            tracing::error!("a slot task failed: {e}");
        }
    }
    timer.shutdown().await;
    worker.give_up.cancel();
    background.cancel();
    while chores.join_next().await.is_some() {}
    worker.retire_all().await;
    tracing::info!("worker {} stopped", worker.name);
    Ok(())
}

/// What the coordinator should hear about, and how to stop it.
#[derive(Debug)]
struct Held {
    token: u64,
    /// Stops the lease's processes.
    cancel: CancellationToken,
    /// Nothing more is to be reported on the lease.
    stopped: CancellationToken,
}

/// A run's preparation, shared by the slots.
#[derive(Debug)]
enum PrepState {
    Ready(Arc<PreparedRun>),
    Failed { error: String, at: Instant },
}

/// A run this worker has leased batches of.
#[derive(Debug)]
struct RunEntry {
    run_id: String,
    prep: tokio::sync::Mutex<Option<PrepState>>,
    /// Slot states not in use (a slot takes its own out while running).
    slots: Mutex<HashMap<u32, SlotRun>>,
}

/// A run in the registry: how many batches use it, and since when none.
#[derive(Debug)]
struct RunUse {
    entry: Arc<RunEntry>,
    active: usize,
    last_used: Instant,
}

struct Worker {
    worker_id: String,
    /// The worker's name (given, or derived from the host and the instance).
    name: String,
    /// The options, without the token (it lives in the client only).
    opts: WorkerOptions,
    has_token: bool,
    client: Client,
    cache: WorkerCache,
    env: SlotEnv,
    /// Held while (re-)registering.
    registration: tokio::sync::Mutex<()>,
    /// Bumped by every re-registration.
    generation: AtomicU64,
    heartbeat_ms: AtomicU64,
    held: Mutex<HashMap<(String, u64), Held>>,
    runs: Mutex<HashMap<String, RunUse>>,
    /// Ask for no more batches.
    shutdown: CancellationToken,
    /// The drain time is over: stop every batch.
    abort: CancellationToken,
    /// Stop retrying calls (the worker is exiting).
    give_up: CancellationToken,
    lease_log: OutageLog,
    heartbeat_log: OutageLog,
    report_log: OutageLog,
}

/// Locks a mutex, also when a panicking thread poisoned it (the data is
/// plain bookkeeping that stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How sending one report ended.
enum Sent {
    Acked,
    /// The coordinator no longer holds the lease.
    Stale,
    /// The lease was stopped, or the worker is giving up.
    Abandoned,
    /// The coordinator refused the request for good; its updates are lost.
    Refused,
}

impl Worker {
    fn server(&self) -> &str {
        &self.opts.server
    }

    fn describe(&self, status: &Status) -> String {
        describe(status, self.server(), self.has_token)
    }

    // ---- registration ----

    /// Registers, retrying with backoff until it works or `stop` fires.
    async fn register_until(&self, stop: &CancellationToken) -> Option<RegisterReply> {
        let mut backoff = Backoff::new();
        loop {
            let message = RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                worker_id: self.worker_id.clone(),
                name: self.name.clone(),
                slots: self.opts.slots,
                labels: self.opts.labels.clone().into_iter().collect(),
            };
            let mut client = self.client.clone();
            let call = client.register(request(message, Duration::from_secs(10)));
            let result = tokio::select! {
                r = call => r,
                _ = stop.cancelled() => return None,
            };
            let problem = match result {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    if reply.protocol_version == PROTOCOL_VERSION || reply.protocol_version == 0 {
                        if !reply.display_name.is_empty() && reply.display_name != self.name {
                            tracing::warn!(
                                "another live worker is registered as {} with the coordinator: it shows this one as {} (give each worker its own --name; SHOAL_WORKER stays {})",
                                self.name,
                                reply.display_name,
                                self.name
                            );
                        }
                        tracing::info!(
                            worker_id = %self.worker_id,
                            coordinator = %reply.coordinator_id,
                            "registered as {} ({} slots) with the coordinator at {}",
                            self.name,
                            self.opts.slots,
                            self.server()
                        );
                        return Some(reply);
                    }
                    format!(
                        "protocol mismatch: the coordinator speaks shoal protocol v{}, this worker v{PROTOCOL_VERSION}",
                        reply.protocol_version
                    )
                }
                Err(status) if client::is_unreachable(&status) => self.describe(&status),
                Err(status) => format!("cannot register: {}", self.describe(&status)),
            };
            let delay = backoff.next_delay();
            if problem.starts_with("cannot reach") {
                tracing::warn!("{problem}; retrying in {}", fmt_delay(delay));
            } else {
                tracing::error!("{problem}; retrying in {}", fmt_delay(delay));
            }
            tokio::select! {
                _ = sleep(delay) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Takes the coordinator's settings from its reply.
    fn apply(&self, reply: &RegisterReply) {
        let interval = match (reply.heartbeat_interval_ms, reply.lease_timeout_ms) {
            (0, 0) => DEFAULT_HEARTBEAT,
            (0, timeout) => Duration::from_millis(timeout / 3),
            (ms, _) => Duration::from_millis(ms),
        };
        let ms = interval.as_millis().clamp(10, 60_000) as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Registers again (the coordinator forgot this worker), unless someone
    /// already did since `seen` was read from `generation`.
    async fn reregister(&self, seen: u64) {
        let _guard = self.registration.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        tracing::info!(
            "the coordinator does not know this worker (did it restart?); registering again as {}",
            self.worker_id
        );
        if let Some(reply) = self.register_until(&self.give_up).await {
            self.apply(&reply);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    // ---- heartbeats ----

    fn held_list(&self) -> Vec<HeldLease> {
        lock(&self.held)
            .iter()
            .map(|((run_id, lease_id), held)| HeldLease {
                run_id: run_id.clone(),
                lease_id: *lease_id,
                token: held.token,
            })
            .collect()
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let interval = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
            tokio::select! {
                _ = sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            let seen = self.generation.load(Ordering::Acquire);
            let message = HeartbeatRequest {
                worker_id: self.worker_id.clone(),
                held: self.held_list(),
                runs: lock(&self.runs).keys().cloned().collect(),
            };
            let timeout = interval.clamp(Duration::from_secs(2), Duration::from_secs(10));
            let mut client = self.client.clone();
            let call = client.heartbeat(request(message, timeout));
            let result = tokio::select! {
                r = call => r,
                _ = stop.cancelled() => return,
            };
            match result {
                Ok(reply) => {
                    self.heartbeat_log.succeeded();
                    let reply = reply.into_inner();
                    if reply.register_again {
                        // A coordinator that does not know this worker
                        // cannot judge its leases: keep them, register, and
                        // let the next heartbeat say which to stop.
                        self.reregister(seen).await;
                        continue;
                    }
                    for lease in &reply.stop {
                        self.stop_lease(
                            &lease.run_id,
                            lease.lease_id,
                            "the coordinator stopped it",
                        );
                    }
                    self.retire_finished(&reply.finished_runs).await;
                }
                Err(status) if is_unknown_worker(&status) => self.reregister(seen).await,
                Err(status) => self.heartbeat_log.failed(&self.describe(&status)),
            }
        }
    }

    /// Stops a held lease at once: its processes are killed and nothing
    /// more is reported on it.
    fn stop_lease(&self, run_id: &str, lease_id: u64, why: &str) {
        let held = lock(&self.held).remove(&(run_id.to_owned(), lease_id));
        if let Some(held) = held {
            tracing::info!("stopping lease {lease_id} of run {run_id}: {why}");
            held.stopped.cancel();
            held.cancel.cancel();
        }
    }

    // ---- draining ----

    async fn drain_timer(self: Arc<Self>) {
        self.shutdown.cancelled().await;
        let in_flight = lock(&self.held).len();
        tracing::info!(
            "shutting down: asking for no more work; {in_flight} batch(es) in flight get up to {} to finish",
            fmt_delay(self.opts.drain_timeout)
        );
        sleep(self.opts.drain_timeout).await;
        let in_flight = lock(&self.held).len();
        if in_flight > 0 {
            tracing::warn!(
                "the drain time is over: stopping {in_flight} batch(es); the coordinator runs their unfinished tests elsewhere"
            );
        }
        self.abort.cancel();
        sleep(FINAL_REPORT_GRACE).await;
        self.give_up.cancel();
    }

    // ---- slots ----

    async fn slot_loop(self: Arc<Self>, slot: u32) {
        let mut backoff = Backoff::new();
        let mut seq = 0u64;
        while !self.shutdown.is_cancelled() {
            let seen = self.generation.load(Ordering::Acquire);
            let message = LeaseRequest {
                worker_id: self.worker_id.clone(),
                slot,
                wait_ms: LEASE_WAIT_MS,
            };
            let timeout = Duration::from_millis(LEASE_WAIT_MS) + Duration::from_secs(30);
            let mut client = self.client.clone();
            let call = client.lease(request(message, timeout));
            let result = tokio::select! {
                r = call => r,
                _ = self.shutdown.cancelled() => break,
            };
            match result {
                Ok(reply) => {
                    self.lease_log.succeeded();
                    backoff.reset();
                    if let Some(batch) = reply.into_inner().batch {
                        seq += 1;
                        self.run_batch(slot, seq, batch).await;
                    }
                }
                Err(status) => {
                    if is_unknown_worker(&status) {
                        self.reregister(seen).await;
                    } else {
                        self.lease_log.failed(&self.describe(&status));
                    }
                    tokio::select! {
                        _ = sleep(backoff.next_delay()) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// Runs one batch and reports on it until `done` is acknowledged (or
    /// the lease is stopped).
    async fn run_batch(&self, slot: u32, seq: u64, batch: Batch) {
        let key = (batch.run_id.clone(), batch.lease_id);
        let cancel = self.abort.child_token();
        let stopped = CancellationToken::new();
        lock(&self.held).insert(
            key.clone(),
            Held {
                token: batch.token,
                cancel: cancel.clone(),
                stopped: stopped.clone(),
            },
        );
        tracing::info!(
            "slot {slot}: leased {} tests of run {} (lease {})",
            batch.items.len(),
            batch.run_id,
            batch.lease_id
        );
        let lease = LeaseRef {
            worker_id: self.worker_id.clone(),
            run_id: batch.run_id.clone(),
            lease_id: batch.lease_id,
            token: batch.token,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let work = self.work(slot, seq, &batch, tx, cancel.clone());
        let forward = self.forward(lease, rx, &stopped);
        tokio::join!(work, forward);
        let mut held = lock(&self.held);
        if held.get(&key).is_some_and(|h| h.token == batch.token) {
            held.remove(&key);
        }
    }

    /// The batch's work: prepare the run, then run the batch on the slot.
    /// Everything to report goes to `tx`; dropping it ends the reporting.
    async fn work(
        &self,
        slot: u32,
        seq: u64,
        batch: &Batch,
        tx: mpsc::UnboundedSender<SlotMessage>,
        cancel: CancellationToken,
    ) {
        let entry = self.acquire_run(&batch.run_id);
        let _release = RunRelease {
            worker: self,
            run_id: &batch.run_id,
        };
        let prepared = tokio::select! {
            p = self.prepared(&entry) => p,
            _ = cancel.cancelled() => return,
        };
        let run = match prepared {
            Ok(run) => run,
            Err(reason) => {
                let message = format!("the worker could not prepare the run: {reason}");
                crash_all(&tx, batch, &message);
                return;
            }
        };
        let mut state = lock(&entry.slots).remove(&slot).unwrap_or_default();
        state
            .run_batch(&self.env, &run, slot, seq, batch, tx, cancel)
            .await;
        lock(&entry.slots).insert(slot, state);
    }

    // ---- reporting ----

    /// Turns what arrives on `rx` into `Report`s until `done` is
    /// acknowledged, the lease goes stale or is stopped.
    async fn forward(
        &self,
        lease: LeaseRef,
        mut rx: mpsc::UnboundedReceiver<SlotMessage>,
        stopped: &CancellationToken,
    ) {
        let mut batcher = ReportBatcher::new(lease);
        let mut open = true;
        loop {
            // Take in everything already sent, so requests fill up.
            while open {
                match rx.try_recv() {
                    Ok(message) => {
                        if let Some(update) = Update::from_slot_message(message) {
                            batcher.push(update, Instant::now());
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        batcher.close();
                    }
                }
            }
            if batcher.due(Instant::now()) {
                let request = batcher.take();
                match self.send_report(request, stopped).await {
                    Sent::Acked | Sent::Refused => {}
                    Sent::Stale => {
                        let l = batcher.lease();
                        self.stop_lease(
                            &l.run_id,
                            l.lease_id,
                            "the coordinator no longer holds it",
                        );
                        return;
                    }
                    Sent::Abandoned => return,
                }
                if batcher.is_finished() {
                    return;
                }
                continue;
            }
            let due = batcher.next_due();
            tokio::select! {
                message = rx.recv(), if open => match message {
                    Some(message) => {
                        if let Some(update) = Update::from_slot_message(message) {
                            batcher.push(update, Instant::now());
                        }
                    }
                    None => {
                        open = false;
                        batcher.close();
                    }
                },
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
                _ = stopped.cancelled() => return,
            }
        }
    }

    /// Sends one report until the coordinator acknowledges it.
    async fn send_report(&self, message: ReportRequest, stopped: &CancellationToken) -> Sent {
        let mut backoff = Backoff::new();
        loop {
            let seen = self.generation.load(Ordering::Acquire);
            let mut client = self.client.clone();
            let call = client.report(request(message.clone(), Duration::from_secs(30)));
            let result = tokio::select! {
                r = call => r,
                _ = stopped.cancelled() => return Sent::Abandoned,
                _ = self.give_up.cancelled() => return Sent::Abandoned,
            };
            match result {
                Ok(reply) => {
                    self.report_log.succeeded();
                    return if reply.into_inner().stale {
                        Sent::Stale
                    } else {
                        Sent::Acked
                    };
                }
                // Another worker holds the lease now: as good as stale.
                Err(status) if status.code() == Code::PermissionDenied => {
                    tracing::warn!(
                        "the coordinator refused a report on lease {} of run {}: {}",
                        message.lease_id,
                        message.run_id,
                        status.message()
                    );
                    return Sent::Stale;
                }
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
                    ) =>
                {
                    tracing::error!(
                        "the coordinator refused a report on lease {} of run {} ({}); its {} result(s) are dropped and those tests will run again",
                        message.lease_id,
                        message.run_id,
                        self.describe(&status),
                        message.finished.len()
                    );
                    return Sent::Refused;
                }
                Err(status) => {
                    if is_unknown_worker(&status) {
                        self.reregister(seen).await;
                    } else {
                        self.report_log.failed(&self.describe(&status));
                    }
                    tokio::select! {
                        _ = sleep(backoff.next_delay()) => {}
                        _ = stopped.cancelled() => return Sent::Abandoned,
                        _ = self.give_up.cancelled() => return Sent::Abandoned,
                    }
                }
            }
        }
    }

    // ---- runs ----

    fn acquire_run(&self, run_id: &str) -> Arc<RunEntry> {
        let mut runs = lock(&self.runs);
        let run = runs.entry(run_id.to_owned()).or_insert_with(|| RunUse {
            entry: Arc::new(RunEntry {
                run_id: run_id.to_owned(),
                prep: tokio::sync::Mutex::new(None),
                slots: Mutex::new(HashMap::new()),
            }),
            active: 0,
            last_used: Instant::now(),
        });
        run.active += 1;
        run.last_used = Instant::now();
        run.entry.clone()
    }

    fn release_run(&self, run_id: &str) {
        if let Some(run) = lock(&self.runs).get_mut(run_id) {
            run.active = run.active.saturating_sub(1);
            run.last_used = Instant::now();
        }
    }

    /// The run prepared (once for all slots), or why it could not be.
    async fn prepared(&self, entry: &RunEntry) -> Result<Arc<PreparedRun>, String> {
        let mut state = entry.prep.lock().await;
        match &*state {
            Some(PrepState::Ready(run)) => return Ok(run.clone()),
            Some(PrepState::Failed { error, at }) if at.elapsed() < PREPARE_RETRY_AFTER => {
                return Err(error.clone());
            }
            _ => {}
        }
        tracing::info!("preparing run {}", entry.run_id);
        match self.prepare(&entry.run_id).await {
            Ok(run) => {
                let setup = match run.setup {
                    SetupStatus::NoHook => "",
                    SetupStatus::Ran => "; worker_setup ran",
                    SetupStatus::Cached => "; worker_setup already done",
                };
                tracing::info!(
                    "prepared run {} in {:.1}s ({} blobs fetched, {} cached; {} tests discovered{setup})",
                    run.run_id,
                    run.took.as_secs_f64(),
                    run.blobs_fetched,
                    run.blobs_cached,
                    run.tests.len()
                );
                let run = Arc::new(run);
                *state = Some(PrepState::Ready(run.clone()));
                Ok(run)
            }
            Err(error) => {
                tracing::error!("could not prepare run {}: {error}", entry.run_id);
                *state = Some(PrepState::Failed {
                    error: error.clone(),
                    at: Instant::now(),
                });
                Err(error)
            }
        }
    }

    async fn prepare(&self, run_id: &str) -> Result<PreparedRun, String> {
        check_run_id(run_id).map_err(|e| e.to_string())?;
        let message = GetRunRequest {
            worker_id: self.worker_id.clone(),
            run_id: run_id.to_owned(),
        };
        let spec = self
            .client
            .clone()
            .get_run(request(message, Duration::from_secs(30)))
            .await
            .map_err(|status| {
                format!(
                    "could not get the run's description: {}",
                    self.describe(&status)
                )
            })?
            .into_inner();
        let mut inputs = RunInputs::from(spec);
        inputs.run_id = run_id.to_owned();
        let fetch = |digests: Vec<Digest>| {
            let client = self.client.clone();
            let message = FetchBlobsRequest {
                worker_id: self.worker_id.clone(),
                run_id: run_id.to_owned(),
                digests: digests.iter().map(Digest::to_hex).collect(),
            };
            async move {
                fetch_blobs(client, message)
                    .await
                    .map_err(|s| self.describe(&s))
            }
        };
        prepare_run(&self.cache, &inputs, &self.name, fetch)
            .await
            .map_err(|e| error_chain(&e))
    }

    /// Closes the runners of runs not leased for [`IDLE_RUN`] and removes
    /// their files.
    async fn janitor_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = sleep(JANITOR_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            let idle: Vec<Arc<RunEntry>> = {
                let mut runs = lock(&self.runs);
                let ids: Vec<String> = runs
                    .iter()
                    .filter(|(_, r)| r.active == 0 && r.last_used.elapsed() >= IDLE_RUN)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter()
                    .filter_map(|id| runs.remove(id))
                    .map(|r| r.entry)
                    .collect()
            };
            for entry in idle {
                tracing::info!(
                    "run {} was not leased for {} minutes: closing its runners and removing its files",
                    entry.run_id,
                    IDLE_RUN.as_secs() / 60
                );
                self.retire(entry).await;
            }
        }
    }

    /// Retires the runs the coordinator says are over, unless a batch of
    /// theirs is still running (the next heartbeat asks again): their
    /// containers and runners go now, not after [`IDLE_RUN`].
    async fn retire_finished(&self, finished: &[String]) {
        let over: Vec<Arc<RunEntry>> = {
            let mut runs = lock(&self.runs);
            let idle: Vec<&String> = finished
                .iter()
                .filter(|id| runs.get(*id).is_some_and(|r| r.active == 0))
                .collect();
            idle.into_iter()
                .filter_map(|id| runs.remove(id))
                .map(|r| r.entry)
                .collect()
        };
        for entry in over {
            tracing::info!(
                "run {} is over: releasing what this worker kept for it",
                entry.run_id
            );
            self.retire(entry).await;
        }
    }

    /// Retires every run (at exit).
    async fn retire_all(&self) {
        let all: Vec<Arc<RunEntry>> = lock(&self.runs).drain().map(|(_, r)| r.entry).collect();
        for entry in all {
            self.retire(entry).await;
        }
    }

    /// Closes a run's persistent runners and removes its directory. The run
    /// is no longer in the registry and no batch uses it.
    async fn retire(&self, entry: Arc<RunEntry>) {
        let run = match &*entry.prep.lock().await {
            Some(PrepState::Ready(run)) => Some(run.clone()),
            _ => None,
        };
        let slots = std::mem::take(&mut *lock(&entry.slots));
        if let Some(run) = &run {
            for (slot, mut state) in slots {
                state.close(&self.env, run, slot).await;
            }
        }
        if check_run_id(&entry.run_id).is_err() {
            return;
        }
        let dir = self.cache.run_dir(&entry.run_id);
        let temp = shoal_slot::run_temp_root(&entry.run_id);
        let removed = tokio::task::spawn_blocking(move || {
            remove_dir_if_present(&dir).and(remove_dir_if_present(&temp))
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{}", error_chain(&e)),
            Err(e) => tracing::warn!("removing the files of run {} failed: {e}", entry.run_id),
        }
    }
}

/// Marks a batch's use of its run over (also when the batch is dropped).
struct RunRelease<'a> {
    worker: &'a Worker,
    run_id: &'a str,
}

impl Drop for RunRelease<'_> {
    fn drop(&mut self) {
        self.worker.release_run(self.run_id);
    }
}

/// One `FetchBlobs` call, retried a few times while the coordinator is
/// unreachable.
async fn fetch_blobs(
    client: Client,
    message: FetchBlobsRequest,
) -> Result<Vec<(Digest, Vec<u8>)>, Status> {
    const ATTEMPTS: u32 = 4;
    let mut backoff = Backoff::new();
    let mut attempt = 1;
    loop {
        match fetch_once(client.clone(), message.clone()).await {
            Err(status) if client::is_unreachable(&status) && attempt < ATTEMPTS => {
                attempt += 1;
                sleep(backoff.next_delay()).await;
            }
            result => return result,
        }
    }
}

async fn fetch_once(
    mut client: Client,
    message: FetchBlobsRequest,
) -> Result<Vec<(Digest, Vec<u8>)>, Status> {
    let mut stream = client
        .fetch_blobs(request(message, Duration::from_secs(600)))
        .await?
        .into_inner();
    let mut blobs = Vec::new();
    while let Some(blob) = stream.message().await? {
        let digest = Digest::parse(&blob.digest)
            .map_err(|e| Status::internal(format!("the coordinator sent a bad digest: {e}")))?;
        blobs.push((digest, blob.data));
    }
    Ok(blobs)
}

/// An error and its causes on one line (`a: b: c`), without repeats.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let mut opts = WorkerOptions::new("http://coord:7420", "/tmp/cache");
        opts.token = Some("very-secret-token".into());
        let debug = format!("{opts:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
        assert!(debug.contains("Some(***)"), "{debug}");
        assert!(debug.contains("http://coord:7420"), "{debug}");
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = PrepareError::Io {
            action: "remove",
            path: "/x".into(),
            source: io,
        };
        assert_eq!(error_chain(&err), "failed to remove /x: denied");
    }

    #[tokio::test]
    async fn bad_options_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WorkerOptions::new("coord-without-port", dir.path());
        let err = run_worker(opts.clone(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing port"), "{err}");

        opts.server = "127.0.0.1:1".into();
        opts.slots = 0;
        let err = run_worker(opts.clone(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, WorkerError::NoSlots), "{err}");

        opts.slots = 1;
        opts.token = Some("has space".into());
        let err = run_worker(opts, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("has space"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_while_the_coordinator_is_unreachable_returns() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let opts = WorkerOptions::new(format!("127.0.0.1:{port}"), dir.path());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(700)).await;
            stop.cancel();
        });
        let t0 = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), run_worker(opts, shutdown))
            .await
            .expect("run_worker returns on shutdown")
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(600));
    }
}
