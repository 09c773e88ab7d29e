//! `isolation = "batch"`: a fresh container for every process. Each spawn
//! starts a [`SlotContainer`] from the same options, runs the process in it
//! through a [`DockerExecutor`], and removes the container once the process
//! has been waited for (or dropped), so no state carries from one batch to
//! the next. Costs one container start per batch (see docs/benchmarks.md).

use crate::{ContainerOpts, DockerExecutor, PathMap, SlotContainer};
use bollard::Docker;
use shoal_exec::{ExecError, Executor, ProcessExit, ProcessSpec, RunningProcess, Terminator};
use std::sync::Arc;

/// Starts a container from `opts` per spawned process.
#[derive(Debug, Clone)]
pub struct PerBatchExecutor {
    docker: Docker,
    opts: ContainerOpts,
    paths: PathMap,
}

impl PerBatchExecutor {
    /// Containers from `opts` (each named `<name_prefix>-<unique suffix>`),
    /// whose mounts `paths` describes.
    pub fn new(docker: Docker, opts: ContainerOpts, paths: PathMap) -> Self {
        PerBatchExecutor {
            docker,
            opts,
            paths,
        }
    }
}

#[async_trait::async_trait]
impl Executor for PerBatchExecutor {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Box<dyn RunningProcess>, ExecError> {
        let program = spec.argv.first().ok_or(ExecError::EmptyArgv)?.clone();
        let container = SlotContainer::start(&self.docker, self.opts.clone())
            .await
            .map_err(|e| ExecError::Spawn {
                program: program.clone(),
                error: std::io::Error::other(format!("could not start its container: {e}")),
            })?;
        let container = Arc::new(container);
        let inner = DockerExecutor::new(Arc::clone(&container), self.paths.clone())
            .spawn(spec)
            .await;
        match inner {
            Ok(inner) => Ok(Box::new(OwnContainerProcess {
                inner: Some(inner),
                container,
            })),
            Err(e) => {
                remove(&container).await;
                Err(e)
            }
        }
    }

    fn fresh_per_process(&self) -> bool {
        true
    }
}

async fn remove(container: &SlotContainer) {
    if let Err(e) = container.stop_and_remove().await {
        tracing::warn!(container = %container.name(), "could not remove a batch's container: {e}");
    }
}

/// A process and the container it has to itself; dropping it without
/// `wait` removes the container in the background ([`SlotContainer`]'s
/// drop).
struct OwnContainerProcess {
    /// Taken by `wait`.
    inner: Option<Box<dyn RunningProcess>>,
    container: Arc<SlotContainer>,
}

impl OwnContainerProcess {
    fn inner(&mut self) -> &mut Box<dyn RunningProcess> {
        self.inner.as_mut().expect("only `wait` takes the process")
    }
}

#[async_trait::async_trait]
impl RunningProcess for OwnContainerProcess {
    async fn next_progress(&mut self) -> Option<String> {
        self.inner().next_progress().await
    }

    async fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.inner().send_line(line).await
    }

    fn close_stdin(&mut self) {
        self.inner().close_stdin();
    }

    fn terminator(&self) -> Terminator {
        self.inner
            .as_ref()
            .expect("only `wait` takes the process")
            .terminator()
    }

    async fn wait(mut self: Box<Self>) -> Result<ProcessExit, ExecError> {
        let inner = self.inner.take().expect("only `wait` takes the process");
        let exit = inner.wait().await;
        remove(&self.container).await;
        exit
    }

    fn pid(&self) -> Option<u32> {
        self.inner.as_ref().and_then(|p| p.pid())
    }
}
