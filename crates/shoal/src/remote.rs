//! `shoal run --server`: discovers locally, uploads the project as a
//! content-addressed snapshot (only the blobs the coordinator lacks),
//! submits the run and feeds the coordinator's event stream to the same
//! reporters as a local run. Ctrl-C cancels the run on the coordinator.

use shoal_core::event::{Notice, NoticeLevel, SuiteDiscovered};
use shoal_core::{Event, TestId};
use shoal_proto::auth::ClientAuth;
use shoal_proto::v1::coordinator_client::CoordinatorClient;
use shoal_proto::v1::{
    Blob, CancelRequest, MissingBlobsRequest, SubmitRequest, TestSpec, WatchRequest,
};
use shoal_report::Reporter;
use shoal_runner::{Cancel, RunReport, RunRequest};
use shoal_snapshot::{Digest, pack};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Bytes of blobs sent per upload call.
const UPLOAD_CHUNK: usize = 32 * 1024 * 1024;

/// Where and how to reach the coordinator.
#[derive(Debug, Clone)]
pub struct Remote {
    pub server: String,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
}

type Client = CoordinatorClient<InterceptedService<Channel, ClientAuth>>;

/// Connects to the coordinator (lazily: the first call reports failures).
pub fn connect(remote: &Remote) -> anyhow::Result<Client> {
    let endpoint = shoal_proto::endpoint_with_ca(&remote.server, remote.ca.as_deref())?
        .connect_timeout(Duration::from_secs(5));
    let auth = ClientAuth::new(remote.token.clone())?;
    Ok(
        CoordinatorClient::with_interceptor(endpoint.connect_lazy(), auth)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024),
    )
}

/// Runs on the coordinator; returns like a local run.
pub async fn run(
    remote: &Remote,
    req: &RunRequest,
    reporter: &mut dyn Reporter,
    cancel: Cancel,
) -> anyhow::Result<RunReport> {
    let support_dir = req
        .state_dir
        .join("runs")
        .join(format!("remote-{}", std::process::id()));
    let res = submit_and_follow(remote, req, &support_dir, reporter, cancel).await;
    let _ = std::fs::remove_dir_all(&support_dir);
    res
}

async fn submit_and_follow(
    remote: &Remote,
    req: &RunRequest,
    support_dir: &std::path::Path,
    reporter: &mut dyn Reporter,
    cancel: Cancel,
) -> anyhow::Result<RunReport> {
    let root = req.config.project_root.clone();
    // Suites with an environment list in a container here too (the test
    // list is the client's); each worker then starts its own.
    let discovered = shoal_runner::list(&req.config, &req.selection, support_dir).await?;
    let mut tests = Vec::new();
    for d in &discovered {
        let cfg = &d.suite.config;
        let discovery = Duration::from_secs_f64(d.fresh_duration);
        for case in &d.selected {
            tests.push(TestSpec {
                suite: case.id.suite.clone(),
                name: case.id.name.clone(),
                group: case.group.clone(),
                batch_overhead_us: d.suite.adapter.batch_overhead(case, discovery).as_micros()
                    as u64,
                retries: req.retries.unwrap_or(cfg.retries),
                max_batch: cfg.max_batch.min(u32::MAX as usize) as u32,
                default_duration_ms: cfg.default_duration.as_millis() as u64,
                locality: d.suite.locality(case),
            });
        }
    }
    if tests.is_empty() {
        return Err(shoal_runner::EngineError::NoTests.into());
    }
    if let Some(order) = &req.order {
        // Submitted in the order to run (the coordinator keeps it).
        let position: std::collections::HashMap<TestId, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        tests.sort_by_key(|t| {
            position
                .get(&TestId::new(t.suite.clone(), t.name.clone()))
                .copied()
                .unwrap_or(usize::MAX)
        });
    }

    eprintln!("Packing {}...", root.display());
    let packed = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || pack(&root)).await??
    };
    let manifest_json = packed.manifest.to_json();
    let manifest_digest = packed.manifest.digest();
    let mut client = connect(remote)?;
    let mut digests: Vec<String> = packed.manifest.blobs().map(|d| d.to_string()).collect();
    digests.push(manifest_digest.to_string());
    let missing = client
        .missing_blobs(MissingBlobsRequest {
            digests: digests.clone(),
        })
        .await
        .map_err(|s| status_error("the coordinator", s))?
        .into_inner()
        .missing;
    let missing: HashSet<String> = missing.into_iter().collect();
    let mut sent_bytes = 0usize;
    let mut batch: Vec<Blob> = Vec::new();
    let mut batch_bytes = 0usize;
    for d in &digests {
        if !missing.contains(d) {
            continue;
        }
        let data = if *d == manifest_digest.to_string() {
            manifest_json.clone()
        } else {
            packed
                .read_blob(&Digest::parse(d)?)
                .ok_or_else(|| anyhow::anyhow!("blob {d} is not in the packed tree"))??
        };
        batch_bytes += data.len();
        sent_bytes += data.len();
        batch.push(Blob {
            digest: d.clone(),
            data,
        });
        if batch_bytes >= UPLOAD_CHUNK {
            let blobs = std::mem::take(&mut batch);
            batch_bytes = 0;
            client
                .upload_blobs(tokio_stream::iter(blobs))
                .await
                .map_err(|s| status_error("uploading the snapshot", s))?;
        }
    }
    if !batch.is_empty() {
        client
            .upload_blobs(tokio_stream::iter(batch))
            .await
            .map_err(|s| status_error("uploading the snapshot", s))?;
    }
    eprintln!(
        "Snapshot {}: {} files, uploaded {} of {} blobs ({} KiB)",
        &manifest_digest.to_string()[..12],
        packed.manifest.entries.len(),
        missing.len(),
        digests.len(),
        sent_bytes / 1024
    );
    let git = shoal_runner::git::git_state(&root).await;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let config_toml = match &req.config.path {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => String::new(),
    };
    let run_id = client
        .submit(SubmitRequest {
            protocol_version: shoal_proto::PROTOCOL_VERSION,
            manifest_digest: manifest_digest.to_string(),
            config_toml,
            project_dir: String::new(),
            tests,
            repeat: req.repeat,
            retries: req.retries,
            selection: req.selection.patterns.join(" "),
            user,
            commit: git.commit.clone(),
            dirty: git.dirty,
            shuffle_seed: req.shuffle,
            scopes: discovered
                .iter()
                .filter(|d| !d.suite.collect.is_empty())
                .map(|d| shoal_proto::v1::SuiteScope {
                    suite: d.suite.config.name.clone(),
                    paths: d.suite.collect.clone(),
                })
                .collect(),
            settings_json: shoal_core::RunSettings {
                keep_order: req.order.is_some(),
                one_slot: req.order.is_some(),
                ..shoal_core::RunSettings::of(&req.config, req.retries, &req.quarantine, req.kind)
            }
            .to_json(),
        })
        .await
        .map_err(|s| status_error("submitting the run", s))?
        .into_inner()
        .run_id;
    eprintln!("Run {run_id} submitted to {}", remote.server);
    follow(&mut client, &run_id, &discovered, reporter, cancel).await
}

/// Feeds the run's events to `reporter` until it finishes, reconnecting
/// when the stream breaks (a coordinator restart) and skipping events
/// already seen.
async fn follow(
    client: &mut Client,
    run_id: &str,
    discovered: &[shoal_runner::Discovered],
    reporter: &mut dyn Reporter,
    cancel: Cancel,
) -> anyhow::Result<RunReport> {
    let mut seen: HashSet<(String, String, u32, u32)> = HashSet::new();
    let mut started = false;
    let mut cancel_sent = false;
    let mut warnings = Vec::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let stream = client
            .watch(WatchRequest {
                run_id: run_id.to_owned(),
                from_seq: 0,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::NotFound => {
                tracing::warn!("lost the coordinator ({}); reconnecting", s.message());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(s) => return Err(status_error("watching the run", s)),
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    if let Err(s) = client.cancel(CancelRequest { run_id: run_id.to_owned() }).await {
                        warnings.push(format!("could not cancel the run on the coordinator: {}", s.message()));
                    }
                    continue;
                }
            };
            let ev = match msg {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(s) => {
                    tracing::warn!("event stream broke ({}); reconnecting", s.message());
                    break;
                }
            };
            backoff = Duration::from_millis(200);
            let event: Event = match serde_json::from_str(&ev.json) {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(format!("unreadable event from the coordinator: {e}"));
                    continue;
                }
            };
            match &event {
                Event::RunStarted(_) if started => continue,
                Event::RunStarted(_) => {
                    started = true;
                    reporter.on_event(&event)?;
                    for d in discovered {
                        reporter.on_event(&Event::SuiteDiscovered(SuiteDiscovered {
                            suite: d.suite.config.name.clone(),
                            adapter: d.suite.adapter.name().to_owned(),
                            discovered: d.discovered,
                            selected: d.selected.len(),
                            duration: d.duration,
                            scope: d.scope.clone(),
                        }))?;
                    }
                    continue;
                }
                Event::AttemptFinished(a) => {
                    let key = (a.suite.clone(), a.test.clone(), a.repeat, a.attempt);
                    if !seen.insert(key) {
                        continue;
                    }
                }
                Event::RunFinished(f) => {
                    // The coordinator's verdict, from the same run state a
                    // local run has (quarantine and fail-on-flaky applied).
                    let f = f.clone();
                    for w in &warnings {
                        reporter.on_event(&Event::Notice(Notice {
                            level: NoticeLevel::Warn,
                            message: w.clone(),
                        }))?;
                    }
                    reporter.on_event(&event)?;
                    return Ok(RunReport {
                        run_id: f.run_id,
                        counts: f.counts,
                        quarantined: f.quarantined,
                        interrupted: f.interrupted,
                        not_run: f.not_run,
                        exit_code: f.exit_code,
                        warnings,
                    });
                }
                _ => {}
            }
            if started {
                reporter.on_event(&event)?;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Cancels a run by id (`shoal cancel`).
pub async fn cancel(remote: &Remote, run_id: &str) -> anyhow::Result<bool> {
    let mut client = connect(remote)?;
    Ok(client
        .cancel(CancelRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .map_err(|s| status_error("cancelling the run", s))?
        .into_inner()
        .found)
}

fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::Unauthenticated => " (check --token / SHOAL_TOKEN)",
        tonic::Code::Unavailable => " (is `shoal serve` running and reachable?)",
        _ => "",
    };
    anyhow::anyhow!("{what} failed: {}{hint}", s.message())
}
