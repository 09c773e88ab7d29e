//! What runs tests on a machine, local runs and remote workers alike:
//! finding the project and its suites, selection, discovery (and its
//! cache), a run's containers and services, hooks, and the slot that runs
//! leased batches and attributes timeouts and crashes. No history store and
//! no reporter: the local run loop (`shoal-runner`) and the worker
//! (`shoal-worker`) both build on this crate.
//!
//! - [`project`]: finding and loading config (or detecting suites)
//! - [`selection`]: what a pattern selects and how much is collected
//! - [`list`] / [`list_scoped`]: discovery of the selected suites
//! - [`SlotCtx`]: a slot running batches, reporting as [`SlotMessage`]s
//! - [`discovery_cache`]: skips discovery when its inputs are unchanged

pub mod containers;
pub mod discovery_cache;
pub mod git;
pub mod hooks;
mod message;
pub mod project;
pub mod selection;
mod slot;

use discovery_cache::DiscoveryCache;
use shoal_adapters::{Adapter, AdapterError, DiscoverCtx, adapter_for};
use shoal_core::TestCase;
use shoal_core::config::{Config, SuiteConfig};
use shoal_exec::Executor;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use message::ToCoord as SlotMessage;
pub use selection::{Selection, SuiteSelection};
pub use slot::{Persistent, SlotCtx, run_temp_root};
pub use tokio_util::sync::CancellationToken as Cancel;

/// A suite ready to run: its config and its adapter.
#[derive(Debug, Clone)]
pub struct SuiteRuntime {
    pub config: SuiteConfig,
    pub adapter: Arc<dyn Adapter>,
    /// What the suite's long-lived runners collect (paths relative to the
    /// suite root, from [`Adapter::runner_scope`]); empty: everything.
    pub collect: Vec<String>,
}

impl SuiteRuntime {
    /// What the scheduler keeps `case` together with
    /// ([`shoal_sched::PlannedTest::locality`]): with `order = "collection"`
    /// the whole suite (its queue is collection order), else what the
    /// adapter says (pytest: the file).
    pub fn locality(&self, case: &TestCase) -> Option<String> {
        match self.config.order {
            shoal_core::config::TestOrder::Collection => Some(String::new()),
            shoal_core::config::TestOrder::Duration => self.adapter.locality(case),
        }
    }
}

/// One suite's discovered and selected tests.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub suite: SuiteRuntime,
    pub discovered: usize,
    pub selected: Vec<TestCase>,
    /// Seconds this discovery took (near zero when answered from the cache).
    pub duration: f64,
    /// Seconds a real discovery of the suite takes (the cached figure on a
    /// cache hit): the estimate of a runner's start-up cost.
    pub fresh_duration: f64,
    /// The paths collection was limited to (relative to the suite root);
    /// empty: the whole suite.
    pub scope: Vec<String>,
}

/// Why a run could not be carried out (as opposed to tests failing).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to discover the tests of suite `{suite}`: {source}")]
    Discovery {
        suite: String,
        #[source]
        source: AdapterError,
    },
    #[error("unknown suite `{0}` (the config defines: {1})")]
    UnknownSuite(String, String),
    #[error("no tests matched the selection")]
    NoTests,
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("the history store failed: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run could not go on: {0}")]
    Slots(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the container environment could not start: {0}")]
    Containers(String),
}

impl EngineError {
    /// A failure of the history store (a local run records into one).
    pub fn store(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
        EngineError::Store(Box::new(e))
    }
}

/// Discovers the selected suites' tests (concurrently) and applies the
/// selection. Suites with an environment list in a container of it, started
/// for the listing and removed after.
pub async fn list(
    config: &Config,
    selection: &Selection,
    support_dir: &std::path::Path,
) -> Result<Vec<Discovered>, EngineError> {
    selection.check(config)?;
    list_planned(config, plan_suites(config, selection), support_dir).await
}

/// Discovers every suite of `config` limited to the paths `scopes` gives it
/// (a suite missing there is collected whole), selecting all it finds: a
/// remote worker collects exactly what the client's runners would.
pub async fn list_scoped(
    config: &Config,
    scopes: &BTreeMap<String, Vec<String>>,
    support_dir: &std::path::Path,
) -> Result<Vec<Discovered>, EngineError> {
    let planned = config
        .suites
        .iter()
        .map(|s| {
            let scope = scopes.get(&s.name).cloned().unwrap_or_default();
            (s.clone(), SuiteSelection::within(scope))
        })
        .collect();
    list_planned(config, planned, support_dir).await
}

async fn list_planned(
    config: &Config,
    planned: Vec<(SuiteConfig, SuiteSelection)>,
    support_dir: &std::path::Path,
) -> Result<Vec<Discovered>, EngineError> {
    let suites: Vec<&SuiteConfig> = planned.iter().map(|(s, _)| s).collect();
    let run_id = format!("list-{}", uuid::Uuid::now_v7());
    let containers = containers::SlotContainers::start(
        &suites,
        &[0],
        &containers::Placement {
            run_id: &run_id,
            worker: "local",
            root: &config.project_root,
            run_dir: support_dir,
        },
    )
    .await?;
    let listed = discover(
        planned,
        support_dir,
        None,
        &containers.discovery_executors(),
    )
    .await;
    containers.remove().await;
    listed
}

/// The suites `selection` can select tests of, each with how the selection
/// applies to it (a suite that no path pattern lies in is left out).
pub fn plan_suites(config: &Config, selection: &Selection) -> Vec<(SuiteConfig, SuiteSelection)> {
    config
        .suites
        .iter()
        .filter(|s| selection.wants_suite(&s.name))
        .map(|s| (s.clone(), selection.for_suite(&config.project_root, s)))
        .filter(|(_, sel)| sel.relevant)
        .collect()
}

/// Discovers each planned suite (concurrently) within its selection's
/// scope, answering from `cache` for suites whose inputs are unchanged, and
/// applies the selection.
pub async fn discover(
    planned: Vec<(SuiteConfig, SuiteSelection)>,
    support_dir: &std::path::Path,
    cache: Option<&DiscoveryCache>,
    executors: &HashMap<String, Arc<dyn Executor>>,
) -> Result<Vec<Discovered>, EngineError> {
    std::fs::create_dir_all(support_dir).map_err(|source| EngineError::Io {
        path: support_dir.to_owned(),
        source,
    })?;
    let mut tasks = Vec::new();
    for (suite, selection) in planned {
        let adapter: Arc<dyn Adapter> = Arc::from(adapter_for(&suite));
        let ctx = DiscoverCtx {
            suite: suite.clone(),
            support_dir: support_dir.to_owned(),
            env: suite.env.clone(),
            executor: executors.get(&suite.name).cloned(),
            scope: selection.scope.clone(),
        };
        let cache = cache.cloned();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let key = match &cache {
                Some(_) => {
                    let (suite, adapter, scope) =
                        (suite.clone(), adapter.clone(), selection.scope.clone());
                    tokio::task::spawn_blocking(move || {
                        DiscoveryCache::key(&suite, adapter.as_ref(), &scope)
                    })
                    .await
                    .ok()
                    .flatten()
                }
                None => None,
            };
            let name = &suite.name;
            let cached = match (&cache, &key) {
                (Some(cache), Some(key)) => cache.load(name, &selection.scope, key),
                _ => None,
            };
            let (res, duration, fresh_duration) = match cached {
                Some((tests, took)) => (Ok(tests), t0.elapsed().as_secs_f64(), took),
                None => {
                    let res = adapter.discover(&ctx).await;
                    let took = t0.elapsed().as_secs_f64();
                    if let (Some(cache), Some(key), Ok(tests)) = (&cache, &key, &res) {
                        cache.store(name, &selection.scope, key, tests, took);
                    }
                    (res, took, took)
                }
            };
            let tests = res.map_err(|source| EngineError::Discovery {
                suite: suite.name.clone(),
                source,
            })?;
            let selected: Vec<TestCase> = tests
                .iter()
                .filter(|t| selection.wants(adapter.as_ref(), &suite.root, t))
                .cloned()
                .collect();
            let collect = adapter.runner_scope(&selected, &tests, &selection.scope);
            Ok::<_, EngineError>(Discovered {
                suite: SuiteRuntime {
                    config: suite,
                    adapter,
                    collect,
                },
                discovered: tests.len(),
                selected,
                duration,
                fresh_duration,
                scope: selection.scope,
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| EngineError::Slots(format!("discovery task failed: {e}")))??,
        );
    }
    Ok(out)
}
