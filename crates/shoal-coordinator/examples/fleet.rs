//! A simulated fleet against a real coordinator process: how many trivial
//! tests per second `shoal serve` dispatches over gRPC, and how much of its
//! CPU each thousand of them costs.
//!
//! ```sh
//! cargo build --release -p shoal
//! cargo run --release -p shoal-coordinator --example fleet -- \
//!     [--tests 100000] [--workers 200] [--slots 8] [--max-batch 64,1] \
//!     [--runs 1] [--workers-per-channel 16] [--shoal PATH] [--timeout 900] \
//!     [--rpc-baseline 200000] [--store-probe 5000]
//! ```
//!
//! For each `--max-batch` value and each of `--runs` runs it starts a fresh
//! `shoal serve` (own temp data dir and SQLite store) on a free loopback
//! port, uploads an empty snapshot, registers `--workers` simulated workers
//! whose `--slots` slots long-poll `Lease` and answer every batch at once
//! with one `Report` (every test `pass`, duration 0, `done: true`), submits
//! `--tests` trivial tests and times submit → `run_finished` on the run's
//! `Watch` stream. The coordinator's CPU time comes from `/proc/<pid>/stat`.
//! The simulated workers share one HTTP/2 channel per `--workers-per-channel`
//! workers and run in this process, on the same cores as the coordinator.
//!
//! `--rpc-baseline N` first measures what a bare gRPC call costs the
//! coordinator: the same fleet sends N `Heartbeat`s holding no lease (a
//! lock, a map lookup, no store access), as fast as it can.
//!
//! `--store-probe N` times, in this process on a fresh SQLite file store
//! opened as `shoal serve` opens it, the store calls the coordinator makes
//! per batch (`save_lease`, `record_attempts`, `drop_lease`), each N times
//! in a row, and the same attempts written by one writer that gathers every
//! waiting report into one transaction (group commit).
//!
//! `--runs 0` runs only these probes.
//!
//! Prints a Markdown table: one row per configuration (medians over runs),
//! then one row per run with diagnostics (batch count, RPC latencies, this
//! process's own CPU). Exits non-zero when a run did not finish with every
//! test passed.

use shoal_proto::auth::ClientAuth;
use shoal_proto::v1::coordinator_client::CoordinatorClient;
use shoal_proto::v1::{
    Blob, HeartbeatRequest, LeaseRequest, RegisterRequest, ReportRequest, SubmitRequest,
    TestFinished, TestSpec, WatchRequest,
};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = CoordinatorClient<InterceptedService<Channel, ClientAuth>>;
type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "usage: fleet [--tests N] [--workers N] [--slots N] [--max-batch N[,N...]] \
                     [--runs N] [--workers-per-channel N] [--shoal PATH] [--timeout SECS] \
                     [--rpc-baseline CALLS] [--store-probe OPS]";

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    tests: u32,
    workers: u32,
    slots: u32,
    max_batch: Vec<u32>,
    runs: usize,
    per_channel: u32,
    shoal: Option<PathBuf>,
    /// Heartbeat calls for the no-op RPC baseline (0: skip it).
    rpc_baseline: u64,
    /// Operations per step of the store probe (0: skip it).
    store_probe: u64,
    /// Give up on a run after this long.
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tests: 100_000,
        workers: 200,
        slots: 8,
        max_batch: vec![64, 1],
        runs: 1,
        per_channel: 16,
        shoal: None,
        rpc_baseline: 0,
        store_probe: 0,
        timeout: Duration::from_secs(900),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| -> Result<u32, String> {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag}: `{v}` is not a positive number"))
        };
        match flag.as_str() {
            "--tests" => args.tests = number(&value)?,
            "--workers" => args.workers = number(&value)?,
            "--slots" => args.slots = number(&value)?,
            // 0: only the probes (--rpc-baseline, --store-probe).
            "--runs" => {
                args.runs = value
                    .parse()
                    .map_err(|_| format!("--runs: `{value}` is not a number"))?
            }
            "--workers-per-channel" => args.per_channel = number(&value)?,
            "--timeout" => args.timeout = Duration::from_secs(number(&value)?.into()),
            "--max-batch" => {
                args.max_batch = value
                    .split(',')
                    .map(|v| number(v.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--rpc-baseline" => args.rpc_baseline = number(&value)?.into(),
            "--store-probe" => args.store_probe = number(&value)?.into(),
            "--shoal" => args.shoal = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The `shoal` binary: `--shoal`, else `shoal` beside this example's
/// profile directory (`target/<profile>/examples/fleet` →
/// `target/<profile>/shoal`), else the release build, else `shoal` on PATH.
fn find_shoal(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_owned();
    }
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_owned))
    {
        for candidate in [
            profile_dir.join("shoal"),
            profile_dir.join("../release/shoal"),
        ] {
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("shoal")
}

/// Clock ticks per second, for `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: &str, ticks: f64) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its `)`.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `)`: state is field 3 of the man page, so utime (14) and
    // stime (15) are at 11 and 12 here.
    let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((utime + stime) / ticks)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A `shoal serve` child process with its own data directory.
struct Coordinator {
    child: tokio::process::Child,
    pid: String,
    url: String,
    dir: tempfile::TempDir,
}

impl Coordinator {
    async fn start(shoal: &Path) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new().prefix("shoal-fleet-").tempdir()?;
        // A free port: bind, read it, release it for the coordinator.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let child = tokio::process::Command::new(shoal)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("coordinator.db").display()
            ))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", shoal.display()))?;
        let pid = child
            .id()
            .ok_or("the coordinator exited at once")?
            .to_string();
        let mut coordinator = Coordinator {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = coordinator.child.try_wait()? {
                return Err(format!(
                    "shoal serve exited with {status}: {}",
                    coordinator.log_tail()
                )
                .into());
            }
            if shoal_proto::endpoint(&coordinator.url)?
                .connect()
                .await
                .is_ok()
            {
                return Ok(coordinator);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "shoal serve did not listen within 20 s: {}",
                    coordinator.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the coordinator logged.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Counters shared by the simulated slots.
#[derive(Debug, Default)]
struct Stats {
    /// Lease calls answered with a batch / without one.
    batches: AtomicU64,
    empty_leases: AtomicU64,
    /// Tests reported (acknowledged, not stale).
    reported: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    /// Milliseconds since the submit at which the last batch was handed out.
    last_batch_ms: AtomicU64,
    /// Latencies (µs) of Lease calls that returned a batch, and of Reports.
    lease_us: Mutex<Vec<u32>>,
    report_us: Mutex<Vec<u32>>,
}

fn micros_since(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Registers `args.workers` simulated workers, `args.per_channel` to a
/// channel; returns each one's client and worker id.
async fn register_fleet(
    clients: &[Client],
    args: &Args,
) -> Result<Vec<(Client, String)>, BoxError> {
    let mut fleet = Vec::with_capacity(args.workers as usize);
    for w in 0..args.workers {
        let mut client = clients[(w / args.per_channel) as usize].clone();
        let worker_id = uuid::Uuid::now_v7().to_string();
        client
            .register(RegisterRequest {
                protocol_version: shoal_proto::PROTOCOL_VERSION,
                worker_id: worker_id.clone(),
                name: format!("sim-{w}"),
                slots: args.slots,
                labels: Default::default(),
            })
            .await?;
        fleet.push((client, worker_id));
    }
    Ok(fleet)
}

/// One slot: lease, report every test passed, repeat until `stop`.
async fn slot_loop(
    mut client: Client,
    worker_id: String,
    slot: u32,
    stats: Arc<Stats>,
    submitted: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
) {
    loop {
        let asked = Instant::now();
        let reply = tokio::select! {
            r = client.lease(LeaseRequest { worker_id: worker_id.clone(), slot, wait_ms: 1000 }) => r,
            _ = stop.cancelled() => return,
        };
        let batch = match reply {
            Ok(r) => r.into_inner().batch,
            Err(status) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("lease failed: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(batch) = batch else {
            stats.empty_leases.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let lease_us = micros_since(asked);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if let Some(t0) = *submitted.lock().unwrap_or_else(|e| e.into_inner()) {
            stats
                .last_batch_ms
                .fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let now = epoch_now();
        let n = batch.items.len() as u64;
        let request = ReportRequest {
            worker_id: worker_id.clone(),
            run_id: batch.run_id,
            lease_id: batch.lease_id,
            token: batch.token,
            finished: batch
                .items
                .iter()
                .map(|item| TestFinished {
                    exec: item.exec,
                    outcome: "pass".into(),
                    duration: 0.0,
                    start: now,
                    end: now,
                    ..TestFinished::default()
                })
                .collect(),
            done: true,
            ..ReportRequest::default()
        };
        let sent = Instant::now();
        // A report the coordinator could not record is sent again, as a
        // worker does.
        let mut tries = 0;
        loop {
            tries += 1;
            match client.report(request.clone()).await {
                Ok(r) if r.get_ref().stale => {
                    stats.stale.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => {
                    stats.reported.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(status) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("report failed: {status}");
                    if tries >= 5 || stop.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let report_us = micros_since(sent);
        stats
            .lease_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease_us);
        stats
            .report_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report_us);
    }
}

/// What the run's `run_finished` event said.
#[derive(Debug, Clone)]
struct Finished {
    at: Instant,
    passed: u64,
    failed: u64,
    exit_code: i64,
    attempt_events: u64,
}

/// Follows the run's events until `run_finished`.
async fn watch_run(mut client: Client, run_id: String) -> Result<Finished, BoxError> {
    let mut stream = client
        .watch(WatchRequest {
            run_id,
            from_seq: 0,
        })
        .await?
        .into_inner();
    let mut attempt_events = 0;
    while let Some(event) = stream.message().await? {
        // Most events are attempts: check the tag cheaply before parsing.
        if event.json.contains("\"attempt_finished\"") {
            attempt_events += 1;
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&event.json)?;
        if value["type"] == "run_finished" {
            let count = |k: &str| value["counts"][k].as_u64().unwrap_or(0);
            return Ok(Finished {
                at: Instant::now(),
                passed: count("passed"),
                failed: count("failed"),
                exit_code: value["exit_code"].as_i64().unwrap_or(-1),
                attempt_events,
            });
        }
    }
    Err("the event stream ended without run_finished".into())
}

/// One timed run's figures.
#[derive(Debug, Clone)]
struct Sample {
    wall: f64,
    coordinator_cpu: f64,
    fleet_cpu: f64,
    batches: u64,
    empty_leases: u64,
    reported: u64,
    stale: u64,
    errors: u64,
    finished: Option<Finished>,
    lease_p50_ms: f64,
    report_p50_ms: f64,
    report_p99_ms: f64,
}

impl Sample {
    fn ok(&self, tests: u32) -> bool {
        self.finished
            .as_ref()
            .is_some_and(|f| f.exit_code == 0 && f.passed == u64::from(tests) && f.failed == 0)
            && self.errors == 0
    }
}

fn percentile_ms(values: &mut [u32], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * p).round() as usize;
    f64::from(values[i]) / 1000.0
}

async fn one_run(
    args: &Args,
    shoal: &Path,
    max_batch: u32,
    ticks: f64,
) -> Result<Sample, BoxError> {
    let coordinator = Coordinator::start(shoal).await?;
    let auth = ClientAuth::new(None)?;
    let channels = args.workers.div_ceil(args.per_channel);
    let mut clients = Vec::new();
    for _ in 0..channels {
        let channel = shoal_proto::endpoint(&coordinator.url)?.connect().await?;
        clients.push(CoordinatorClient::with_interceptor(channel, auth.clone()));
    }
    let mut control = clients[0].clone();

    // The snapshot: an empty manifest.
    let manifest = shoal_snapshot::Manifest::new(vec![])?;
    let blob = Blob {
        digest: manifest.digest().to_hex(),
        data: manifest.to_json(),
    };
    control.upload_blobs(tokio_stream::iter(vec![blob])).await?;

    // Workers register; their slots start long-polling before the submit,
    // as an idle fleet does.
    let stats = Arc::new(Stats::default());
    let submitted = Arc::new(Mutex::new(None));
    let stop = CancellationToken::new();
    let mut slots = tokio::task::JoinSet::new();
    for (client, worker_id) in register_fleet(&clients, args).await? {
        for s in 0..args.slots {
            slots.spawn(slot_loop(
                client.clone(),
                worker_id.clone(),
                s,
                stats.clone(),
                submitted.clone(),
                stop.clone(),
            ));
        }
    }
    // Let every slot reach its first long poll.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let tests: Vec<TestSpec> = (0..args.tests)
        .map(|i| TestSpec {
            suite: "sim".into(),
            name: format!("t{i}"),
            group: "g".into(),
            batch_overhead_us: 0,
            retries: 0,
            max_batch,
            default_duration_ms: 1,
            locality: None,
        })
        .collect();
    let request = SubmitRequest {
        protocol_version: shoal_proto::PROTOCOL_VERSION,
        manifest_digest: manifest.digest().to_hex(),
        tests,
        repeat: 1,
        selection: "fleet simulation".into(),
        user: "fleet".into(),
        ..SubmitRequest::default()
    };

    let cpu0 = cpu_seconds(&coordinator.pid, ticks)?;
    let fleet0 = cpu_seconds("self", ticks)?;
    let t0 = Instant::now();
    *submitted.lock().unwrap_or_else(|e| e.into_inner()) = Some(t0);
    let run_id = control.submit(request).await?.into_inner().run_id;
    let mut watch = tokio::spawn(watch_run(control.clone(), run_id));

    // Until run_finished, or every test reported and no batch for 2 s.
    let mut finished = None;
    let end = loop {
        tokio::select! {
            res = &mut watch => {
                match res {
                    Ok(Ok(f)) => { let at = f.at; finished = Some(f); break at; }
                    Ok(Err(e)) => eprintln!("watch: {e}"),
                    Err(e) => eprintln!("watch task: {e}"),
                }
                // Without the stream, fall back to the reports.
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if quiet(&stats, args.tests, t0) || t0.elapsed() > args.timeout {
                        break;
                    }
                }
                break Instant::now();
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if quiet(&stats, args.tests, t0) {
                    eprintln!("every test reported and no batch for 2 s, but no run_finished");
                    break Instant::now();
                }
                if t0.elapsed() > args.timeout {
                    eprintln!("timed out after {:?}", args.timeout);
                    break Instant::now();
                }
            }
        }
    };
    let cpu1 = cpu_seconds(&coordinator.pid, ticks)?;
    let fleet1 = cpu_seconds("self", ticks)?;
    let wall = end.duration_since(t0).as_secs_f64();
    stop.cancel();
    watch.abort();
    while slots.join_next().await.is_some() {}
    coordinator.stop().await;

    let mut lease_us =
        std::mem::take(&mut *stats.lease_us.lock().unwrap_or_else(|e| e.into_inner()));
    let mut report_us =
        std::mem::take(&mut *stats.report_us.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Sample {
        wall,
        coordinator_cpu: cpu1 - cpu0,
        fleet_cpu: fleet1 - fleet0,
        batches: stats.batches.load(Ordering::Relaxed),
        empty_leases: stats.empty_leases.load(Ordering::Relaxed),
        reported: stats.reported.load(Ordering::Relaxed),
        stale: stats.stale.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        finished,
        lease_p50_ms: percentile_ms(&mut lease_us, 0.5),
        report_p50_ms: percentile_ms(&mut report_us, 0.5),
        report_p99_ms: percentile_ms(&mut report_us, 0.99),
    })
}

/// Every test was reported and no batch was handed out for 2 s.
fn quiet(stats: &Stats, tests: u32, t0: Instant) -> bool {
    stats.reported.load(Ordering::Relaxed) >= u64::from(tests)
        && t0.elapsed().as_millis() as u64 > stats.last_batch_ms.load(Ordering::Relaxed) + 2000
}

/// Calls/s and coordinator CPU µs per call of `calls` no-op `Heartbeat`s
/// from every simulated slot at once.
async fn rpc_baseline(
    args: &Args,
    shoal: &Path,
    calls: u64,
    ticks: f64,
) -> Result<(f64, f64), BoxError> {
    let coordinator = Coordinator::start(shoal).await?;
    let auth = ClientAuth::new(None)?;
    let mut clients = Vec::new();
    for _ in 0..args.workers.div_ceil(args.per_channel) {
        let channel = shoal_proto::endpoint(&coordinator.url)?.connect().await?;
        clients.push(CoordinatorClient::with_interceptor(channel, auth.clone()));
    }
    let mut tasks = Vec::new();
    for (client, worker_id) in register_fleet(&clients, args).await? {
        for _ in 0..args.slots {
            tasks.push((client.clone(), worker_id.clone()));
        }
    }
    let left = Arc::new(AtomicU64::new(calls));
    let cpu0 = cpu_seconds(&coordinator.pid, ticks)?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (mut client, worker_id) in tasks {
        let left = left.clone();
        set.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let request = HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    held: vec![],
                    runs: vec![],
                };
                client.heartbeat(request).await?;
            }
            Ok::<(), tonic::Status>(())
        });
    }
    while let Some(res) = set.join_next().await {
        res??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&coordinator.pid, ticks)? - cpu0;
    coordinator.stop().await;
    Ok((calls as f64 / wall, cpu * 1e6 / calls as f64))
}

/// The store calls of one batch, timed (see `--store-probe`).
async fn store_probe(n: u64, ticks: f64) -> Result<(), BoxError> {
    use shoal_core::{FinalStatus, Outcome};
    use shoal_store::{AttemptRecord, LeaseRecord, QueuedRun, RunRecord};

    let dir = tempfile::Builder::new()
        .prefix("shoal-fleet-store-")
        .tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("coordinator.db").display());
    let store = shoal_store::open_store(&url).await?;
    let run = "probe";
    store
        .begin_run(&RunRecord {
            run_id: run.into(),
            started: epoch_now(),
            commit: None,
            dirty: false,
            worker: "coordinator".into(),
            selection: String::new(),
            planned: 0,
            environment: shoal_store::default_environment(),
            seed: None,
            kind: shoal_store::KIND_RUN.to_owned(),
        })
        .await?;
    store
        .save_queued_run(&QueuedRun {
            run_id: run.into(),
            spec: "{}".into(),
            submitted: epoch_now(),
        })
        .await?;
    let attempt = |i: u64| AttemptRecord {
        run_id: run.into(),
        suite: "sim".into(),
        test: format!("t{i}"),
        attempt: 1,
        repeat: 0,
        outcome: Outcome::Pass,
        slot: (i % 8) as u32,
        worker: format!("sim-{}", i % 200),
        start: 1.0,
        end: 1.0,
        duration: 0.0,
        final_status: Some(FinalStatus::Passed),
        message: None,
        commit: None,
        dirty: false,
    };
    let lease = |i: u64| LeaseRecord {
        run_id: run.into(),
        lease_id: i,
        token: i,
        worker_id: "sim".into(),
        slot: 0,
        items: "[[0,1]]".into(),
        deadline: epoch_now() + 10.0,
    };
    println!(
        "| store call (SQLite file, one after another) | wall per call (us) | CPU per call (us) |"
    );
    println!("| --- | ---: | ---: |");
    let mut next = 0u64;
    let row = |what: &str, per: u64, t: Instant, cpu0: f64| -> Result<(), BoxError> {
        let cpu = cpu_seconds("self", ticks)? - cpu0;
        println!(
            "| {what} | {:.0} | {:.0} |",
            t.elapsed().as_secs_f64() * 1e6 / per as f64,
            cpu * 1e6 / per as f64
        );
        Ok(())
    };
    let (t, c) = (Instant::now(), cpu_seconds("self", ticks)?);
    for i in 0..n {
        store.save_lease(&lease(i)).await?;
    }
    row("save_lease", n, t, c)?;
    let (t, c) = (Instant::now(), cpu_seconds("self", ticks)?);
    for _ in 0..n {
        store.record_attempts(&[attempt(next)]).await?;
        next += 1;
    }
    row("record_attempts, 1 attempt", n, t, c)?;
    let (t, c) = (Instant::now(), cpu_seconds("self", ticks)?);
    for i in 0..n {
        store.drop_lease(run, i).await?;
    }
    row("drop_lease", n, t, c)?;
    for size in [7u64, 64] {
        let m = (n / 10).max(1);
        let (t, c) = (Instant::now(), cpu_seconds("self", ticks)?);
        for _ in 0..m {
            let batch: Vec<_> = (next..next + size).map(attempt).collect();
            next += size;
            store.record_attempts(&batch).await?;
        }
        row(&format!("record_attempts, {size} attempts"), m, t, c)?;
    }

    // Group commit: 1,600 concurrent single-attempt reports, one writer.
    let total = n * 10;
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(AttemptRecord, tokio::sync::oneshot::Sender<()>)>();
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        let mut transactions = 0u64;
        while let Some(first) = rx.recv().await {
            let (mut records, mut acks) = (vec![first.0], vec![first.1]);
            while let Ok((r, a)) = rx.try_recv() {
                records.push(r);
                acks.push(a);
            }
            writer_store.record_attempts(&records).await?;
            transactions += 1;
            for a in acks {
                let _ = a.send(());
            }
        }
        Ok::<u64, shoal_store::StoreError>(transactions)
    });
    let counter = Arc::new(AtomicU64::new(next));
    let stop_at = next + total;
    let (t, c) = (Instant::now(), cpu_seconds("self", ticks)?);
    let mut reporters = tokio::task::JoinSet::new();
    for _ in 0..1600 {
        let (tx, counter) = (tx.clone(), counter.clone());
        reporters.spawn(async move {
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= stop_at {
                    return;
                }
                let (ack, acked) = tokio::sync::oneshot::channel();
                if tx.send((attempt(i), ack)).is_err() || acked.await.is_err() {
                    return;
                }
            }
        });
    }
    while reporters.join_next().await.is_some() {}
    drop(tx);
    let transactions = writer.await??;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self", ticks)? - c;
    println!(
        "\ngroup commit: {total} single-attempt reports from 1,600 tasks through one writer: \
         {:.0} attempts/s in {transactions} transactions, {:.0} us CPU per attempt\n",
        total as f64 / secs,
        cpu * 1e6 / total as f64
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let shoal = find_shoal(args.shoal.as_deref());
    let ticks = clock_ticks();
    eprintln!(
        "coordinator: {}; {} tests, {} workers x {} slots, {} workers per channel, {} run(s) per configuration",
        shoal.display(),
        args.tests,
        args.workers,
        args.slots,
        args.per_channel,
        args.runs
    );
    if args.rpc_baseline > 0 {
        match rpc_baseline(&args, &shoal, args.rpc_baseline, ticks).await {
            Ok((rate, cpu_us)) => println!(
                "no-op RPC baseline: {} Heartbeat calls from {} x {} slots: {rate:.0} calls/s, {cpu_us:.1} us of coordinator CPU per call\n",
                args.rpc_baseline, args.workers, args.slots
            ),
            Err(e) => {
                eprintln!("RPC baseline failed: {e}");
                std::process::exit(1);
            }
        }
    }
    if args.store_probe > 0
        && let Err(e) = store_probe(args.store_probe, ticks).await
    {
        eprintln!("store probe failed: {e}");
        std::process::exit(1);
    }
    if args.runs == 0 {
        return;
    }
    let mut all_ok = true;
    let mut per_run = Vec::new();
    println!(
        "| tests | workers x slots | max batch | runs | median wall (s) | tests/s | coordinator CPU (s) | CPU per 1,000 tests (ms) | all passed |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for &max_batch in &args.max_batch {
        let mut samples = Vec::new();
        for r in 0..args.runs {
            match one_run(&args, &shoal, max_batch, ticks).await {
                Ok(s) => {
                    eprintln!(
                        "max-batch {max_batch} run {}: {:.2} s, {:.0} tests/s, coordinator CPU {:.2} s",
                        r + 1,
                        s.wall,
                        f64::from(args.tests) / s.wall,
                        s.coordinator_cpu
                    );
                    samples.push(s);
                }
                Err(e) => {
                    eprintln!("max-batch {max_batch} run {}: failed: {e}", r + 1);
                    all_ok = false;
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        let passed = samples.iter().all(|s| s.ok(args.tests));
        all_ok &= passed && samples.len() == args.runs;
        let wall = median(samples.iter().map(|s| s.wall).collect());
        let cpu = median(samples.iter().map(|s| s.coordinator_cpu).collect());
        println!(
            "| {} | {} x {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.1} | {} |",
            args.tests,
            args.workers,
            args.slots,
            max_batch,
            samples.len(),
            wall,
            f64::from(args.tests) / wall,
            cpu,
            cpu * 1_000_000.0 / f64::from(args.tests),
            if passed { "yes" } else { "NO" }
        );
        per_run.extend(samples.into_iter().map(|s| (max_batch, s)));
    }
    println!();
    println!(
        "| max batch | wall (s) | batches | mean batch | lease p50 (ms) | report p50 / p99 (ms) | coordinator CPU (s) | fleet CPU (s) | passed / failed / attempt events | exit | stale / errors | empty leases |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | --- | ---: |");
    for (max_batch, s) in &per_run {
        let (passed, failed, events, exit) = match &s.finished {
            Some(f) => (
                f.passed.to_string(),
                f.failed.to_string(),
                f.attempt_events.to_string(),
                f.exit_code.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "no run_finished".into()),
        };
        println!(
            "| {max_batch} | {:.2} | {} | {:.1} | {:.2} | {:.2} / {:.2} | {:.2} | {:.2} | {passed} / {failed} / {events} | {exit} | {} / {} | {} |",
            s.wall,
            s.batches,
            s.reported as f64 / s.batches.max(1) as f64,
            s.lease_p50_ms,
            s.report_p50_ms,
            s.report_p99_ms,
            s.coordinator_cpu,
            s.fleet_cpu,
            s.stale,
            s.errors,
            s.empty_leases,
        );
    }
    if !all_ok {
        std::process::exit(1);
    }
}
