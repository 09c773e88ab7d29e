//! One long-lived container per slot: created from [`ContainerOpts`], kept
//! alive by an idle command, every batch of the slot exec'd into it, removed
//! at the end of the run.
//!
//! Besides the caller's mounts, the container gets a scratch directory of
//! this host at [`SCRATCH_MOUNT`]: the executor keeps each process's pid file,
//! exit status and progress FIFO there. The engine must therefore see this
//! host's filesystem (a local engine).

use crate::events::EventWatcher;
use crate::{DockerError, is_not_found, labels};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the slot's scratch directory is mounted in the container.
pub const SCRATCH_MOUNT: &str = "/.shoal-scratch";

/// A directory of this host mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path; must exist.
    pub host: PathBuf,
    /// Absolute path in the container.
    pub container: String,
    pub read_only: bool,
}

/// How to create a slot's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerOpts {
    /// Image reference (`name:tag` or an id); must be present on the engine.
    pub image: String,
    /// The container is named `<name_prefix>-<unique suffix>`.
    pub name_prefix: String,
    /// Default working directory in the container (the image's if `None`).
    pub workdir: Option<String>,
    pub mounts: Vec<BindMount>,
    /// Environment of the container, so of every process exec'd into it.
    pub env: BTreeMap<String, String>,
    /// `user`, `user:group`, `uid` or `uid:gid` (the image's if `None`).
    pub user: Option<String>,
    /// CPU limit in CPUs (`NanoCpus`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes, swap included (the kernel OOM killer acts
    /// at this limit; see [`SlotContainer::oom_kills`]).
    pub memory: Option<u64>,
    /// Network to attach to (`bridge` if `None`), e.g. the slot's private one.
    pub network: Option<String>,
    /// Names under which other containers on `network` reach this one.
    pub network_aliases: Vec<String>,
    /// Caller's labels (see [`labels::run_labels`]); `org.shoal.managed=1`
    /// and the owner labels are always added.
    pub labels: BTreeMap<String, String>,
    /// What keeps the container alive; default `sleep 2147483647`.
    pub command: Vec<String>,
    /// Run an init process as pid 1 (reaps zombies of detached processes).
    pub init: bool,
    /// Where the scratch directory is created (the system temp dir if `None`).
    pub scratch_parent: Option<PathBuf>,
}

impl ContainerOpts {
    /// Options for `image` with everything else at its default.
    pub fn new(image: impl Into<String>) -> Self {
        ContainerOpts {
            image: image.into(),
            name_prefix: "shoal".to_owned(),
            workdir: None,
            mounts: Vec::new(),
            env: BTreeMap::new(),
            user: None,
            cpus: None,
            memory: None,
            network: None,
            network_aliases: Vec::new(),
            labels: BTreeMap::new(),
            command: vec!["sleep".to_owned(), "2147483647".to_owned()],
            init: false,
            scratch_parent: None,
        }
    }
}

/// A running container serving one slot. Remove it with
/// [`stop_and_remove`](SlotContainer::stop_and_remove); dropping it without
/// that removes it in the background (best effort: the reaper removes what a
/// process that exits at once leaves behind).
#[derive(Debug)]
pub struct SlotContainer {
    docker: Docker,
    id: String,
    name: String,
    scratch: tempfile::TempDir,
    next_spawn: AtomicU64,
    events: EventWatcher,
    removed: AtomicBool,
}

impl SlotContainer {
    /// Creates and starts the container; on failure nothing is left behind.
    pub async fn start(docker: &Docker, opts: ContainerOpts) -> Result<SlotContainer, DockerError> {
        let scratch = make_scratch(opts.scratch_parent.as_deref())?;
        let name = format!("{}-{}", opts.name_prefix, unique_suffix());
        // Events are replayed from here, so none are missed before the
        // watcher's request reaches the engine.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let body = create_body(&opts, scratch.path())?;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(DockerError::api(format!(
                "create container `{name}` from image `{}`",
                opts.image
            )))?;
        let container = SlotContainer {
            docker: docker.clone(),
            events: EventWatcher::start(docker, &created.id, since),
            id: created.id,
            name,
            scratch,
            next_spawn: AtomicU64::new(0),
            removed: AtomicBool::new(false),
        };
        if let Err(error) = docker.start_container(&container.id, None).await {
            let _ = container.stop_and_remove().await;
            return Err(DockerError::Api {
                action: format!("start container `{}`", container.name),
                error,
            });
        }
        Ok(container)
    }

    /// The engine's id of the container.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// This host's side of the scratch directory ([`SCRATCH_MOUNT`]).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// How many processes in the container the kernel OOM killer has killed
    /// so far. Compare before and after a batch: once the batch's
    /// [`wait`](shoal_exec::RunningProcess::wait) has returned, its kills are
    /// counted.
    pub fn oom_kills(&self) -> u64 {
        self.events.oom_kills()
    }

    /// Whether the OOM killer has killed anything in the container.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills() > 0
    }

    /// The container's own state from the engine: whether it still runs
    /// and whether its main process was OOM-killed.
    pub async fn state(&self) -> Result<ContainerState, DockerError> {
        let inspect = self
            .docker
            .inspect_container(&self.id, None)
            .await
            .map_err(DockerError::api(format!(
                "inspect container `{}`",
                self.name
            )))?;
        let state = inspect.state.unwrap_or_default();
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
        })
    }

    /// Removes the container, killing whatever runs in it, with its anonymous
    /// volumes. Idempotent.
    pub async fn stop_and_remove(&self) -> Result<(), DockerError> {
        remove_container(&self.docker, &self.id)
            .await
            .map_err(DockerError::api(format!(
                "remove container `{}`",
                self.name
            )))?;
        self.removed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A fresh directory for one process: `(host path, container path)`.
    pub(crate) fn new_spawn_dir(&self) -> Result<(PathBuf, String), DockerError> {
        let n = self.next_spawn.fetch_add(1, Ordering::Relaxed);
        let host = self.scratch.path().join(n.to_string());
        std::fs::create_dir(&host)
            .and_then(|()| {
                // The process may run as any user.
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777))
            })
            .map_err(DockerError::io(format!(
                "create scratch directory `{}`",
                host.display()
            )))?;
        Ok((host, format!("{SCRATCH_MOUNT}/{n}")))
    }

    pub(crate) fn events(&self) -> &EventWatcher {
        &self.events
    }
}

impl Drop for SlotContainer {
    /// Removes the container on a thread of its own with a client of its
    /// own, so that it happens even while the caller's runtime shuts down
    /// (a panic, Ctrl-C); if the process exits first, the reaper removes it.
    fn drop(&mut self) {
        if self.removed.load(Ordering::SeqCst) {
            return;
        }
        remove_in_background(self.id.clone(), self.name.clone());
    }
}

/// What the engine says about a container itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    /// The main process was killed by the OOM killer (`State.OOMKilled`).
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
}

/// Removes container `id` (called `name` in messages) on a thread of its own
/// with a client of its own, so that it happens even while the caller's
/// runtime shuts down (a panic, Ctrl-C); if the process exits first, the
/// reaper removes it. For the `Drop` of containers that were not removed.
pub(crate) fn remove_in_background(id: String, name: String) {
    let removal = move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let docker = crate::connect().await.map_err(|e| e.to_string())?;
            remove_container(&docker, &id)
                .await
                .map_err(|e| e.to_string())
        })
    };
    let thread_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name("shoal-docker-remove".to_owned())
        .spawn(move || {
            if let Err(e) = removal() {
                tracing::warn!(container = %thread_name, "failed to remove a dropped container: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(container = %name, "cannot remove a dropped container: {e}");
    }
}

/// Force-removes a container and its anonymous volumes; gone already is fine.
pub(crate) async fn remove_container(
    docker: &Docker,
    id: &str,
) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

fn make_scratch(parent: Option<&Path>) -> Result<tempfile::TempDir, DockerError> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let dir = tempfile::Builder::new()
        .prefix("shoal-docker-")
        .tempdir_in(&parent)
        .map_err(DockerError::io(format!(
            "create a scratch directory in `{}`",
            parent.display()
        )))?;
    // Traversable by the container's user, whoever it is.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(
        DockerError::io(format!("set permissions of `{}`", dir.path().display())),
    )?;
    Ok(dir)
}

fn create_body(opts: &ContainerOpts, scratch: &Path) -> Result<ContainerCreateBody, DockerError> {
    let mut mounts = vec![bind_mount(scratch, SCRATCH_MOUNT, false)?];
    for m in &opts.mounts {
        mounts.push(bind_mount(&m.host, &m.container, m.read_only)?);
    }
    let memory = opts.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let host_config = HostConfig {
        mounts: Some(mounts),
        nano_cpus: opts.cpus.map(|c| (c * 1e9).round() as i64),
        memory,
        // No swap beyond the limit, so that the limit is the limit.
        memory_swap: memory,
        network_mode: opts.network.clone(),
        init: Some(opts.init),
        ..Default::default()
    };
    let networking_config = match (&opts.network, opts.network_aliases.is_empty()) {
        (Some(network), false) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings {
                    aliases: Some(opts.network_aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        _ => None,
    };
    Ok(ContainerCreateBody {
        image: Some(opts.image.clone()),
        cmd: Some(opts.command.clone()),
        env: Some(opts.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: opts.user.clone(),
        working_dir: opts.workdir.clone(),
        labels: Some(labels::complete(&opts.labels)),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

/// A bind mount of host directory `host` at `container`.
pub(crate) fn bind_mount(
    host: &Path,
    container: &str,
    read_only: bool,
) -> Result<Mount, DockerError> {
    let source = host.to_str().ok_or_else(|| DockerError::Io {
        action: format!("mount `{}`", host.display()),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path is not UTF-8"),
    })?;
    Ok(Mount {
        target: Some(container.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    })
}

/// Unique among this host's containers: pid, a counter and the clock.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
