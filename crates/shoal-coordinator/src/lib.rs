//! shoal's coordinator (`shoal serve`): accepts runs from clients, hands
//! their tests to workers' slots as fenced, expiring leases, and records
//! every result in the store before acknowledging it.
//!
//! Layers, each a module:
//!
//! - `run`: one run: its stored spec, its [`shoal_engine::RunState`] (the
//!   same run-state core a local run has) and its event log; pure, with an
//!   injected [`Clock`], unit-tested on its own
//! - `state`: the shared state (workers, runs) under one lock
//! - `service`: the gRPC service over that state
//! - `persist`: the one writer task and writing results before a run ends
//! - `recovery`: rebuilding unfinished runs after a restart, expiring the
//!   leases of workers that stopped renewing them
//! - [`serve`]: wires them together until shutdown
//!
//! Durability: a run's spec (planned tests with their estimates) is stored
//! at submission and every attempt before its report is acknowledged, so a
//! coordinator killed at any point and restarted resumes every unfinished
//! run without losing a recorded result. Leases are not adopted across a
//! restart: their tests are requeued and late reports on them are fenced
//! (see docs/design/distributed.md).

mod persist;
mod recovery;
mod run;
mod service;
mod state;

use persist::*;
use recovery::*;
use service::*;
use state::*;

pub use run::{Clock, SystemClock};
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
