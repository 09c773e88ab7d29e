//! `shoal serve` (the coordinator) and `shoal worker`: argument parsing and
//! wiring; the work is in `shoal-coordinator` and `shoal-worker`.

use crate::exit_code::ShoalExitCode;
use crate::fail;
use clap::Args;
use shoal_proto::auth::TokenSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Without a token only loopback addresses are
    /// allowed.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: String,
    /// Where runs, leases and results live: `sqlite://PATH` or
    /// `postgres://USER:PASSWORD@HOST/DB` [default: sqlite://DATA_DIR/coordinator.db].
    #[arg(long, env = "SHOAL_STORE", value_name = "URL", hide_env_values = true)]
    store: Option<String>,
    /// Directory for snapshot blobs (and the default SQLite store).
    #[arg(long, default_value = ".shoal/coordinator", value_name = "DIR")]
    data_dir: PathBuf,
    /// Token workers and clients must present (prefer SHOAL_TOKEN).
    #[arg(
        long,
        env = "SHOAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A lease not renewed for this long is expired and its tests requeued.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration, value_name = "DURATION")]
    lease_timeout: Duration,
    /// Times a test's worker may be lost before the test counts as a crash.
    #[arg(long, default_value_t = 3, value_name = "N")]
    max_requeues: u32,
    /// TLS certificate (PEM); with --tls-key, serve https.
    #[arg(long, requires = "tls_key", value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PATH")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    remote: crate::RemoteArgs,
    /// Concurrent slots [default: logical cores].
    #[arg(short = 'j', long = "slots", env = "SHOAL_SLOTS", value_name = "N")]
    slots: Option<u32>,
    /// A label the coordinator may match on (repeatable), e.g. `os=linux`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// This worker's name, also SHOAL_WORKER for tests (default: the host
    /// name, `<host>-<k>` for the k-th worker sharing the cache directory).
    /// Refused if another live worker on the same cache directory has it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Snapshots, run directories and setup markers [default:
    /// ~/.cache/shoal-worker]. Several workers may share it: each takes an
    /// instance `instances/<k>` for its run directories.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// On SIGTERM, let running batches finish for this long.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("a label is KEY=VALUE, not {s:?}"))
}

pub async fn serve_cmd(root: &Path, args: ServeArgs) -> ShoalExitCode {
    let data_dir = root.join(&args.data_dir);
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        return fail(
            ShoalExitCode::Infrastructure,
            format!("cannot create {}: {e}", data_dir.display()),
        );
    }
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("coordinator.db").display()));
    let store = match shoal_store::open_store(&url).await {
        Ok(s) => s,
        Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
    };
    let tokens: Vec<String> = args
        .token
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => match shoal_proto::tls::server_config(c, k) {
            Ok(t) => Some(t),
            Err(e) => return crate::fail_err(ShoalExitCode::Usage, &e),
        },
        _ => None,
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                ShoalExitCode::Infrastructure,
                format!("cannot listen on {}: {e}", args.listen),
            );
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!(
        "shoal coordinator listening on {addr} (store {}, {})",
        shoal_store::redact_url(&url),
        if tokens.is_empty() {
            "no token: loopback only"
        } else {
            "token required"
        }
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let opts = shoal_coordinator::ServeOptions {
        store,
        tokens: TokenSet::new(&tokens),
        data_dir,
        lease_timeout: args.lease_timeout,
        max_requeues: args.max_requeues,
        tls,
    };
    match shoal_coordinator::serve(listener, opts, shutdown).await {
        Ok(()) => ShoalExitCode::Success,
        Err(e) => crate::fail_err(ShoalExitCode::Infrastructure, &e),
    }
}

pub async fn worker_cmd(args: WorkerArgs) -> ShoalExitCode {
    let Some(remote) = args.remote.remote() else {
        return fail(
            ShoalExitCode::Usage,
            "give the coordinator with --server URL (or SHOAL_SERVER)",
        );
    };
    let slots = args.slots.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    if args
        .name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().any(char::is_control))
    {
        return fail(
            ShoalExitCode::Usage,
            "--name must be a non-empty name on one line",
        );
    }
    let cache_dir = args.cache_dir.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache")
            .join("shoal-worker")
    });
    let opts = shoal_worker::WorkerOptions {
        server: remote.server,
        token: remote.token,
        ca: remote.ca,
        slots: slots.max(1),
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        name: args.name,
        cache_dir,
        drain_timeout: args.drain_timeout,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match shoal_worker::run_worker(opts, shutdown).await {
        Ok(()) => ShoalExitCode::Success,
        Err(
            e @ shoal_worker::WorkerError::Instance(shoal_worker::InstanceError::NameTaken {
                ..
            }),
        ) => crate::fail_err(ShoalExitCode::Usage, &e),
        Err(e) => crate::fail_err(ShoalExitCode::Infrastructure, &e),
    }
}

/// SIGTERM or Ctrl-C: shut down gracefully; a second one exits at once.
async fn stop_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    crate::watch_signals(shutdown, || {
        tracing::warn!("shutting down: finishing in-flight work (signal again to exit at once)")
    })
    .await;
}
