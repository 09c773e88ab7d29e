//! The containers of a local run: for every suite with an `environment`,
//! one container per slot (`isolation = "slot"`), started before the slots
//! and removed after them, with the project mounted at the suite's
//! `workdir`. Every container is labeled with the run, slot, worker and this
//! process; at start, leftovers of runs whose process died (a `kill -9`) are
//! reaped first.

use crate::{Discovered, EngineError};
use shoal_core::environment::ImageSource;
use shoal_docker::{BindMount, ContainerOpts, DockerExecutor, PathMap, SlotContainer};
use shoal_exec::Executor;
use shoal_sched::SlotId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The run's containers, by (slot, suite).
#[derive(Debug, Default)]
pub(crate) struct SlotContainers {
    by_slot: HashMap<u32, HashMap<String, Arc<SlotContainer>>>,
    paths: HashMap<String, PathMap>,
}

impl SlotContainers {
    /// Starts the containers every selected suite with an environment needs.
    pub(crate) async fn start(
        discovered: &[Discovered],
        slots: &[SlotId],
        run_id: &str,
        worker: &str,
        root: &Path,
        run_dir: &Path,
    ) -> Result<SlotContainers, EngineError> {
        let suites: Vec<_> = discovered
            .iter()
            .filter_map(|d| Some((&d.suite.config.name, d.suite.config.environment.as_ref()?)))
            .collect();
        let mut out = SlotContainers::default();
        if suites.is_empty() {
            return Ok(out);
        }
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
                return Err(EngineError::Unsupported(format!(
                    "suite `{name}`: building images is not available yet"
                )));
            };
            let mut paths = PathMap::new(root, env.workdir.clone());
            let mut mounts = vec![BindMount {
                host: root.to_owned(),
                container: env.workdir.clone(),
                read_only: false,
            }];
            if !run_dir.starts_with(root) {
                paths = paths.with(run_dir, "/.shoal-run");
                mounts.push(BindMount {
                    host: run_dir.to_owned(),
                    container: "/.shoal-run".to_owned(),
                    read_only: false,
                });
            }
            for slot in slots {
                let mut labels =
                    shoal_docker::labels::run_labels(run_id, Some(slot.index), Some(worker));
                labels.insert("org.shoal.suite".to_owned(), name.clone());
                let opts = ContainerOpts {
                    name_prefix: format!(
                        "shoal-{}-{name}-s{}",
                        &run_id[run_id.len().saturating_sub(8)..],
                        slot.index
                    ),
                    workdir: Some(env.workdir.clone()),
                    mounts: mounts.clone(),
                    env: env.env.clone(),
                    user: env.user.clone(),
                    cpus: env.cpus,
                    memory: env.memory,
                    labels,
                    scratch_parent: Some(run_dir.to_owned()),
                    ..ContainerOpts::new(image.clone())
                };
                let container = match SlotContainer::start(&docker, opts).await {
                    Ok(c) => c,
                    Err(e) => {
                        out.remove().await;
                        return Err(EngineError::Containers(format!(
                            "suite `{name}`, slot {}: {e}",
                            slot.index
                        )));
                    }
                };
                out.by_slot
                    .entry(slot.index)
                    .or_default()
                    .insert(name.clone(), Arc::new(container));
            }
            out.paths.insert(name.clone(), paths);
        }
        Ok(out)
    }

    /// The executors of one slot's containers, by suite.
    pub(crate) fn executors(&self, slot: u32) -> HashMap<String, Arc<dyn Executor>> {
        let Some(containers) = self.by_slot.get(&slot) else {
            return HashMap::new();
        };
        containers
            .iter()
            .filter_map(|(suite, c)| {
                let paths = self.paths.get(suite)?.clone();
                let executor: Arc<dyn Executor> = Arc::new(DockerExecutor::new(c.clone(), paths));
                Some((suite.clone(), executor))
            })
            .collect()
    }

    /// Removes every container (the run ended, or was interrupted).
    pub(crate) async fn remove(&self) {
        for containers in self.by_slot.values() {
            for c in containers.values() {
                if let Err(e) = c.stop_and_remove().await {
                    tracing::warn!("could not remove container {}: {e}", c.name());
                }
            }
        }
    }
}
