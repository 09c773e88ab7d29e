//! The containers of a local run. For every selected suite with an
//! `environment`, each slot gets either one container for the whole run
//! (`isolation = "slot"`) or a fresh container per batch (`"batch"`), with
//! the project mounted at the suite's `workdir`. They are started before
//! discovery, which then runs in slot 0's container, so the tools need not
//! be installed on this host. Everything is labeled with the run, slot,
//! worker and this process; at start, leftovers of runs whose process died
//! (a `kill -9`) are reaped first.
//!
//! A suite with `services` gets, per slot, a private network on which each
//! service runs in its own container, reachable by its name; the slot's
//! test container joins that network. The slot is ready once every service
//! passed its readiness check. Tests learn where the services are from
//! `SHOAL_SERVICE_<NAME>_HOST` and `_PORT` (and `_PORT_<container port>`):
//! the service's name and container port inside a container, `127.0.0.1`
//! and the published port for suites (and hooks) that run on this host.

use crate::EngineError;
use shoal_core::config::SuiteConfig;
use shoal_core::environment::{Environment, ImageSource, Isolation};
use shoal_docker::{
    BindMount, BuildRequest, ComposeOpts, ComposeProject, ContainerOpts, Docker, DockerError,
    DockerExecutor, PathMap, PerBatchExecutor, ServiceContainer, ServiceOpts, SlotContainer,
};
use shoal_exec::Executor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One suite's environment on one slot (cheap to clone: handles).
#[derive(Debug, Default, Clone)]
struct SlotSuite {
    /// The slot's container (`isolation = "slot"`).
    container: Option<Arc<SlotContainer>>,
    /// Where the suite's processes run; this host's if `None`.
    executor: Option<Arc<dyn Executor>>,
    /// The slot's services of this suite, and their private network (when
    /// shoal made it: a compose project brings its own).
    services: Vec<Arc<ServiceContainer>>,
    compose: Option<Arc<ComposeProject>>,
    network: Option<String>,
    /// How the suite's tests reach the services.
    test_env: BTreeMap<String, String>,
    /// How processes on this host (hooks) reach them.
    host_env: BTreeMap<String, String>,
}

/// A service whose recent log lines go with the failing tests of its slot.
#[derive(Debug, Clone)]
pub enum ServiceLog {
    /// A service shoal started from `[suites.X.services.NAME]`.
    Container(Arc<ServiceContainer>),
    /// A service of the suite's compose file.
    Compose {
        project: Arc<ComposeProject>,
        service: String,
    },
}

impl ServiceLog {
    /// The service's name.
    pub fn name(&self) -> &str {
        match self {
            ServiceLog::Container(c) => c.service(),
            ServiceLog::Compose { service, .. } => service,
        }
    }

    /// Its log lines written since `since` (unix seconds), at most `max`.
    pub async fn since(&self, since: f64, max: usize) -> String {
        match self {
            ServiceLog::Container(c) => c.logs_since(since, max).await,
            ServiceLog::Compose { project, service } => {
                project.logs_since(service, since, max).await
            }
        }
    }
}

/// The run's containers, by slot and suite.
#[derive(Debug, Default)]
pub struct SlotContainers {
    by_slot: HashMap<u32, HashMap<String, SlotSuite>>,
}

/// Where a run's containers come from and what they carry.
#[derive(Debug)]
pub struct Placement<'a> {
    pub run_id: &'a str,
    pub worker: &'a str,
    /// The project on this host, mounted at each suite's `workdir`.
    pub root: &'a Path,
    /// The run's directory (slot scratch, support files); mounted too when
    /// it is not under `root`.
    pub run_dir: &'a Path,
}

impl SlotContainers {
    /// Starts what every suite with an environment needs on `slots` (a
    /// local run: all of them at once; a remote worker: each slot as its
    /// first batch arrives). On failure, what was started is removed.
    pub async fn start(
        suites: &[&SuiteConfig],
        slots: &[u32],
        at: &Placement<'_>,
    ) -> Result<SlotContainers, EngineError> {
        let suites: Vec<&SuiteConfig> = suites
            .iter()
            .copied()
            .filter(|s| s.environment.is_some() || !s.services.is_empty())
            .collect();
        let mut out = SlotContainers::default();
        if suites.is_empty() {
            return Ok(out);
        }
        std::fs::create_dir_all(at.run_dir).map_err(|source| EngineError::Io {
            path: at.run_dir.to_owned(),
            source,
        })?;
        let docker = shoal_docker::connect()
            .await
            .map_err(|e| EngineError::Containers(format!("cannot reach the Docker engine: {e}")))?;
        match shoal_docker::reap(&docker, &shoal_docker::ReapFilter::default()).await {
            Ok(r) if r.total() > 0 => tracing::info!(
                "removed {} containers, {} networks and {} volumes left by runs that died",
                r.containers.len(),
                r.networks.len(),
                r.volumes.len()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not look for leftover containers: {e}"),
        }
        for suite in suites {
            let name = &suite.name;
            let image = match suite.environment.as_ref().map(|e| &e.image) {
                None => None,
                Some(ImageSource::Image(image)) => Some(image.clone()),
                Some(ImageSource::Dockerfile { path, context }) => {
                    match build_image(&docker, name, path, context).await {
                        Ok(image) => Some(image),
                        Err(e) => {
                            out.remove().await;
                            return Err(EngineError::Containers(format!("suite `{name}`: {e}")));
                        }
                    }
                }
            };
            // Slots start side by side: a start is mostly waiting.
            let mut started = tokio::task::JoinSet::new();
            for &slot in slots {
                let (docker, suite, at) = (docker.clone(), suite.clone(), at.owned());
                let image = image.clone();
                started.spawn(async move {
                    (slot, start_slot(&docker, &suite, image, slot, &at).await)
                });
            }
            let mut failure = None;
            while let Some(joined) = started.join_next().await {
                match joined {
                    Ok((slot, Ok(s))) => {
                        out.by_slot.entry(slot).or_default().insert(name.clone(), s);
                    }
                    Ok((slot, Err(e))) => {
                        failure.get_or_insert(format!("suite `{name}`, slot {slot}: {e}"));
                    }
                    Err(e) => {
                        failure
                            .get_or_insert(format!("suite `{name}`: a start-up task failed: {e}"));
                    }
                }
            }
            if let Some(message) = failure {
                out.remove().await;
                return Err(EngineError::Containers(message));
            }
        }
        Ok(out)
    }

    /// Where suites list their tests: slot 0's executor of each suite with
    /// an environment (the others list on this host).
    pub fn discovery_executors(&self) -> HashMap<String, Arc<dyn Executor>> {
        self.executors(0)
    }

    /// The executors of one slot, by suite (suites that run in containers).
    pub fn executors(&self, slot: u32) -> HashMap<String, Arc<dyn Executor>> {
        self.by_slot.get(&slot).map_or_else(HashMap::new, |suites| {
            suites
                .iter()
                .filter_map(|(suite, s)| Some((suite.clone(), s.executor.clone()?)))
                .collect()
        })
    }

    /// The environment of one slot's tests, by suite: where its services are.
    pub fn test_env(&self, slot: u32) -> HashMap<String, BTreeMap<String, String>> {
        self.by_slot.get(&slot).map_or_else(HashMap::new, |suites| {
            suites
                .iter()
                .filter(|(_, s)| !s.test_env.is_empty())
                .map(|(suite, s)| (suite.clone(), s.test_env.clone()))
                .collect()
        })
    }

    /// Where one slot's services are, for processes on this host (hooks).
    pub fn host_env(&self, slot: u32) -> BTreeMap<String, String> {
        self.by_slot
            .get(&slot)
            .into_iter()
            .flat_map(|suites| suites.values())
            .flat_map(|s| s.host_env.clone())
            .collect()
    }

    /// One slot's services, by suite, for their logs.
    pub fn service_logs(&self, slot: u32) -> HashMap<String, Vec<ServiceLog>> {
        self.by_slot.get(&slot).map_or_else(HashMap::new, |suites| {
            suites
                .iter()
                .filter(|(_, s)| !s.services.is_empty() || s.compose.is_some())
                .map(|(suite, s)| {
                    let mut logs: Vec<ServiceLog> = s
                        .services
                        .iter()
                        .cloned()
                        .map(ServiceLog::Container)
                        .collect();
                    if let Some(project) = &s.compose {
                        logs.extend(
                            project
                                .services()
                                .iter()
                                .map(|service| ServiceLog::Compose {
                                    project: project.clone(),
                                    service: service.clone(),
                                }),
                        );
                    }
                    (suite.clone(), logs)
                })
                .collect()
        })
    }

    /// Removes the containers of slots `slots..` (fewer tests than slots).
    pub async fn keep_slots(&mut self, slots: u32) {
        let surplus: Vec<u32> = self
            .by_slot
            .keys()
            .copied()
            .filter(|s| *s >= slots)
            .collect();
        for slot in surplus {
            if let Some(suites) = self.by_slot.remove(&slot) {
                remove_slot(suites.values()).await;
            }
        }
    }

    /// Removes every container (the run ended, or was interrupted).
    pub async fn remove(&self) {
        remove_slot(self.by_slot.values().flat_map(|suites| suites.values())).await;
    }
}

/// Removes every slot's containers side by side: each removal is mostly
/// waiting for the engine (0.1-0.2 s a container, measured).
async fn remove_slot<'a>(suites: impl Iterator<Item = &'a SlotSuite>) {
    let mut removals = tokio::task::JoinSet::new();
    for s in suites {
        let s = s.clone();
        removals.spawn(async move { s.remove().await });
    }
    while removals.join_next().await.is_some() {}
}

impl SlotSuite {
    /// Removes the test container and the services (together), then the
    /// compose project and the network.
    async fn remove(&self) {
        let mut removals = tokio::task::JoinSet::new();
        if let Some(c) = self.container.clone() {
            removals.spawn(async move {
                if let Err(e) = c.stop_and_remove().await {
                    tracing::warn!("could not remove container {}: {e}", c.name());
                }
            });
        }
        for c in &self.services {
            let c = Arc::clone(c);
            removals.spawn(async move {
                if let Err(e) = c.stop_and_remove().await {
                    tracing::warn!("could not remove service container {}: {e}", c.name());
                }
            });
        }
        while removals.join_next().await.is_some() {}
        if let Some(project) = &self.compose {
            if let Err(e) = project.down().await {
                tracing::warn!(
                    "could not take compose project {} down: {e}",
                    project.name()
                );
            }
        }
        if let (Some(network), Ok(docker)) = (&self.network, shoal_docker::connect().await) {
            if let Err(e) = shoal_docker::remove_network(&docker, network).await {
                tracing::warn!("could not remove network {network}: {e}");
            }
        }
    }
}

/// The project's mounts into a suite's containers, and how paths map.
fn workspace(env: &Environment, at: &OwnedPlacement) -> (PathMap, Vec<BindMount>) {
    let mut paths = PathMap::new(&at.root, env.workdir.clone());
    let mut mounts = vec![BindMount {
        host: at.root.clone(),
        container: env.workdir.clone(),
        read_only: false,
    }];
    if !at.run_dir.starts_with(&at.root) {
        paths = paths.with(&at.run_dir, "/.shoal-run");
        mounts.push(BindMount {
            host: at.run_dir.clone(),
            container: "/.shoal-run".to_owned(),
            read_only: false,
        });
    }
    (paths, mounts)
}

/// [`Placement`] owned, for start-up tasks.
#[derive(Debug, Clone)]
struct OwnedPlacement {
    run_id: String,
    worker: String,
    root: PathBuf,
    run_dir: PathBuf,
}

impl Placement<'_> {
    fn owned(&self) -> OwnedPlacement {
        OwnedPlacement {
            run_id: self.run_id.to_owned(),
            worker: self.worker.to_owned(),
            root: self.root.to_owned(),
            run_dir: self.run_dir.to_owned(),
        }
    }
}

/// One suite on one slot: its services (ready), then its container (or,
/// per batch, the recipe for them). On failure, what was started is removed.
async fn start_slot(
    docker: &Docker,
    suite: &SuiteConfig,
    image: Option<String>,
    slot: u32,
    at: &OwnedPlacement,
) -> Result<SlotSuite, DockerError> {
    let mut out = SlotSuite::default();
    let result = start_slot_into(docker, suite, image, slot, at, &mut out).await;
    if result.is_err() {
        out.remove().await;
    }
    result.map(|()| out)
}

async fn start_slot_into(
    docker: &Docker,
    suite: &SuiteConfig,
    image: Option<String>,
    slot: u32,
    at: &OwnedPlacement,
    out: &mut SlotSuite,
) -> Result<(), DockerError> {
    let name = &suite.name;
    let prefix = format!(
        "shoal-{}-{name}-s{slot}",
        &at.run_id[at.run_id.len().saturating_sub(8)..]
    );
    let mut labels = shoal_docker::labels::run_labels(&at.run_id, Some(slot), Some(&at.worker));
    labels.insert("org.shoal.suite".to_owned(), name.clone());
    let in_container = suite.environment.is_some();
    if let Some(file) = &suite.services.compose {
        let project = ComposeProject::up(
            docker,
            ComposeOpts {
                file: file.clone(),
                project: format!("{prefix}-{}", unique_suffix()).to_ascii_lowercase(),
                project_dir: file.parent().unwrap_or(&at.root).to_owned(),
                labels: labels.clone(),
                env: BTreeMap::new(),
            },
        )
        .await?;
        let project = Arc::new(project);
        out.compose = Some(project.clone());
        let timeout = suite
            .services
            .services
            .iter()
            .map(|s| s.ready_timeout)
            .max()
            .unwrap_or(shoal_core::environment::DEFAULT_READY_TIMEOUT);
        project.wait_healthy(timeout).await?;
        for service in project.services() {
            out.test_env.insert(
                format!("SHOAL_SERVICE_{}_HOST", env_name(service)),
                service.clone(),
            );
        }
    }
    if !suite.services.services.is_empty() {
        let network = match &out.compose {
            // Services of both kinds share the compose project's network.
            Some(project) => project.network().to_owned(),
            None => {
                let network = format!("{prefix}-{}", unique_suffix());
                shoal_docker::create_network(docker, &network, &labels).await?;
                out.network = Some(network.clone());
                network
            }
        };
        // A slot's services start side by side (each start is mostly
        // waiting for the engine), then are waited for in turn, which costs
        // the slowest one.
        let mut starting = tokio::task::JoinSet::new();
        for (i, service) in suite.services.services.iter().enumerate() {
            let Some(mut opts) = ServiceOpts::from_config(service, network.clone()) else {
                continue;
            };
            opts.labels = labels.clone();
            opts.name_prefix = prefix.clone();
            let docker = docker.clone();
            starting.spawn(async move { (i, ServiceContainer::start(&docker, opts).await) });
        }
        let mut results = Vec::new();
        while let Some(joined) = starting.join_next().await {
            match joined {
                Ok((i, Ok(c))) => results.push((i, Arc::new(c))),
                Ok((_, Err(e))) => {
                    // What did start is in `out` for the caller to remove.
                    out.services.extend(results.into_iter().map(|(_, c)| c));
                    while let Some(Ok((_, Ok(c)))) = starting.join_next().await {
                        out.services.push(Arc::new(c));
                    }
                    return Err(e);
                }
                Err(e) => {
                    out.services.extend(results.into_iter().map(|(_, c)| c));
                    return Err(DockerError::Io {
                        action: "start a service".to_owned(),
                        error: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        results.sort_by_key(|(i, _)| *i);
        let mut started = Vec::new();
        for (i, container) in results {
            out.services.push(container.clone());
            started.push((&suite.services.services[i], container));
        }
        for service in &suite.services.services {
            let container = started.iter().find(|(s, _)| s.name == service.name);
            let took = match (container, &out.compose) {
                (Some((_, c)), _) => {
                    c.wait_ready(service.ready.as_ref(), service.ready_timeout)
                        .await?
                }
                (None, Some(project)) => {
                    let id = project.container_of(&service.name).ok_or_else(|| {
                        DockerError::NotReady {
                            service: service.name.clone(),
                            reason: format!(
                                "the compose file {} has no running service `{}` (it has: {})",
                                project.name(),
                                service.name,
                                project.services().join(", ")
                            ),
                            waited: std::time::Duration::ZERO,
                            last_logs: Vec::new(),
                        }
                    })?;
                    shoal_docker::wait_ready(
                        docker,
                        id,
                        &service.name,
                        service.ready.as_ref(),
                        service.ready_timeout,
                    )
                    .await?
                }
                (None, None) => continue,
            };
            tracing::debug!(slot, service = %service.name, "ready after {took:?}");
            let var = env_name(&service.name);
            out.test_env.insert(
                format!("SHOAL_SERVICE_{var}_HOST"),
                if in_container {
                    service.name.clone()
                } else {
                    "127.0.0.1".to_owned()
                },
            );
            out.host_env
                .insert(format!("SHOAL_SERVICE_{var}_HOST"), "127.0.0.1".to_owned());
            let Some((_, container)) = container else {
                // A compose service: its ports are the compose file's.
                for (i, port) in service.published_ports().iter().enumerate() {
                    if in_container {
                        out.test_env
                            .insert(format!("SHOAL_SERVICE_{var}_PORT_{port}"), port.to_string());
                        if i == 0 {
                            out.test_env
                                .insert(format!("SHOAL_SERVICE_{var}_PORT"), port.to_string());
                        }
                    }
                }
                continue;
            };
            for (i, port) in service.published_ports().iter().enumerate() {
                let host_port = container.host_port(*port).map(|p| p.to_string());
                let test_port = if in_container {
                    Some(port.to_string())
                } else {
                    host_port.clone()
                };
                let mut keys = vec![format!("SHOAL_SERVICE_{var}_PORT_{port}")];
                if i == 0 {
                    keys.push(format!("SHOAL_SERVICE_{var}_PORT"));
                }
                for key in keys {
                    if let Some(p) = &test_port {
                        out.test_env.insert(key.clone(), p.clone());
                    }
                    if let Some(p) = &host_port {
                        out.host_env.insert(key, p.clone());
                    }
                }
            }
        }
    }
    let (Some(env), Some(image)) = (&suite.environment, image) else {
        return Ok(());
    };
    let (paths, mounts) = workspace(env, at);
    let opts = ContainerOpts {
        name_prefix: prefix,
        workdir: Some(env.workdir.clone()),
        mounts,
        env: env.env.clone(),
        user: env.user.clone(),
        cpus: env.cpus,
        memory: env.memory,
        network: out
            .compose
            .as_ref()
            .map(|p| p.network().to_owned())
            .or_else(|| out.network.clone()),
        labels,
        scratch_parent: Some(at.run_dir.clone()),
        ..ContainerOpts::new(image)
    };
    match env.isolation {
        Isolation::Slot => {
            let container = Arc::new(SlotContainer::start(docker, opts).await?);
            out.executor = Some(Arc::new(DockerExecutor::new(container.clone(), paths)));
            out.container = Some(container);
        }
        Isolation::Batch => {
            out.executor = Some(Arc::new(PerBatchExecutor::new(docker.clone(), opts, paths)));
        }
    }
    Ok(())
}

/// The image of a suite's `dockerfile`: reused when one of the same
/// context digest exists, else built through the engine's API.
async fn build_image(
    docker: &Docker,
    suite: &str,
    dockerfile: &Path,
    context: &Path,
) -> Result<String, DockerError> {
    let repository = shoal_docker::build_repository(suite);
    let request = BuildRequest {
        dockerfile,
        context,
        repository: &repository,
        labels: BTreeMap::new(),
    };
    let mut progress = |line: &str| tracing::info!(suite, "build: {line}");
    let built = shoal_docker::ensure_image(docker, &request, &mut progress).await?;
    if built.reused {
        tracing::info!(suite, "image {} is up to date", built.reference);
    } else {
        tracing::info!(
            suite,
            "built image {} in {:.1}s",
            built.reference,
            built.duration.as_secs_f64()
        );
    }
    Ok(built.reference)
}

/// `SHOAL_SERVICE_<this>_HOST`: the service's name in upper case, `-` as `_`.
fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// Unique among this process's networks.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
