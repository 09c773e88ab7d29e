//! The containers of a local run. For every selected suite with an
//! `environment`, each slot gets either one container for the whole run
//! (`isolation = "slot"`) or a fresh container per batch (`"batch"`), with
//! the project mounted at the suite's `workdir`. They are started before
//! discovery, which then runs in slot 0's container, so the tools need not
//! be installed on this host. Everything is labeled with the run, slot,
//! worker and this process; at start, leftovers of runs whose process died
//! (a `kill -9`) are reaped first.

use crate::EngineError;
use shoal_core::config::SuiteConfig;
use shoal_core::environment::{Environment, ImageSource, Isolation};
use shoal_docker::{
    BindMount, ContainerOpts, DockerExecutor, PathMap, PerBatchExecutor, SlotContainer,
};
use shoal_exec::Executor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// One suite's environment on one slot.
#[derive(Debug)]
struct SlotSuite {
    /// The slot's container (`isolation = "slot"`).
    container: Option<Arc<SlotContainer>>,
    executor: Arc<dyn Executor>,
}

/// The run's containers, by slot and suite.
#[derive(Debug, Default)]
pub(crate) struct SlotContainers {
    by_slot: HashMap<u32, HashMap<String, SlotSuite>>,
}

/// Where a run's containers come from and what they carry.
pub(crate) struct Placement<'a> {
    pub run_id: &'a str,
    pub worker: &'a str,
    /// The project on this host, mounted at each suite's `workdir`.
    pub root: &'a Path,
    /// The run's directory (slot scratch, support files); mounted too when
    /// it is not under `root`.
    pub run_dir: &'a Path,
}

impl SlotContainers {
    /// Starts what every suite with an environment needs on slots
    /// `0..slots`. On failure, what was started is removed.
    pub(crate) async fn start(
        suites: &[&SuiteConfig],
        slots: u32,
        at: &Placement<'_>,
    ) -> Result<SlotContainers, EngineError> {
        let suites: Vec<(&String, &Environment)> = suites
            .iter()
            .filter_map(|s| Some((&s.name, s.environment.as_ref()?)))
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
        for (name, env) in suites {
            let ImageSource::Image(image) = &env.image else {
                out.remove().await;
                return Err(EngineError::Unsupported(format!(
                    "suite `{name}`: building images is not available yet"
                )));
            };
            let (paths, mounts) = workspace(env, at);
            // Slots start side by side: a container start is mostly waiting.
            let mut started = tokio::task::JoinSet::new();
            for slot in 0..slots {
                let mut labels =
                    shoal_docker::labels::run_labels(at.run_id, Some(slot), Some(at.worker));
                labels.insert("org.shoal.suite".to_owned(), name.clone());
                let opts = ContainerOpts {
                    name_prefix: format!(
                        "shoal-{}-{name}-s{slot}",
                        &at.run_id[at.run_id.len().saturating_sub(8)..],
                    ),
                    workdir: Some(env.workdir.clone()),
                    mounts: mounts.clone(),
                    env: env.env.clone(),
                    user: env.user.clone(),
                    cpus: env.cpus,
                    memory: env.memory,
                    labels,
                    scratch_parent: Some(at.run_dir.to_owned()),
                    ..ContainerOpts::new(image.clone())
                };
                let (docker, paths, isolation) = (docker.clone(), paths.clone(), env.isolation);
                started.spawn(
                    async move { (slot, start_slot(&docker, opts, isolation, paths).await) },
                );
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
    pub(crate) fn discovery_executors(&self) -> HashMap<String, Arc<dyn Executor>> {
        self.executors(0)
    }

    /// The executors of one slot, by suite.
    pub(crate) fn executors(&self, slot: u32) -> HashMap<String, Arc<dyn Executor>> {
        self.by_slot.get(&slot).map_or_else(HashMap::new, |suites| {
            suites
                .iter()
                .map(|(suite, s)| (suite.clone(), s.executor.clone()))
                .collect()
        })
    }

    /// Removes the containers of slots `slots..` (fewer tests than slots).
    pub(crate) async fn keep_slots(&mut self, slots: u32) {
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
    pub(crate) async fn remove(&self) {
        for suites in self.by_slot.values() {
            remove_slot(suites.values()).await;
        }
    }
}

async fn remove_slot(suites: impl Iterator<Item = &SlotSuite>) {
    for s in suites {
        if let Some(c) = &s.container {
            if let Err(e) = c.stop_and_remove().await {
                tracing::warn!("could not remove container {}: {e}", c.name());
            }
        }
    }
}

/// The project's mounts into a suite's containers, and how paths map.
fn workspace(env: &Environment, at: &Placement<'_>) -> (PathMap, Vec<BindMount>) {
    let mut paths = PathMap::new(at.root, env.workdir.clone());
    let mut mounts = vec![BindMount {
        host: at.root.to_owned(),
        container: env.workdir.clone(),
        read_only: false,
    }];
    if !at.run_dir.starts_with(at.root) {
        paths = paths.with(at.run_dir, "/.shoal-run");
        mounts.push(BindMount {
            host: at.run_dir.to_owned(),
            container: "/.shoal-run".to_owned(),
            read_only: false,
        });
    }
    (paths, mounts)
}

/// One slot's container (or, per batch, the recipe for them).
async fn start_slot(
    docker: &shoal_docker::Docker,
    opts: ContainerOpts,
    isolation: Isolation,
    paths: PathMap,
) -> Result<SlotSuite, shoal_docker::DockerError> {
    match isolation {
        Isolation::Slot => {
            let container = Arc::new(SlotContainer::start(docker, opts).await?);
            let executor = Arc::new(DockerExecutor::new(container.clone(), paths));
            Ok(SlotSuite {
                container: Some(container),
                executor,
            })
        }
        Isolation::Batch => Ok(SlotSuite {
            container: None,
            executor: Arc::new(PerBatchExecutor::new(docker.clone(), opts, paths)),
        }),
    }
}
