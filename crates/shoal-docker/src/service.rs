//! A slot's service (a database, a cache, ...) in a container of its own on
//! the slot's private network, where the slot's container reaches it by the
//! service's name; its ports optionally published on this host's loopback.
//!
//! Unlike a [`SlotContainer`](crate::SlotContainer), a service runs its
//! image's own command (or the configured one) and is never exec'd into by
//! the executor, so it gets no scratch directory and no init process.

use crate::slot_container::{bind_mount, remove_container, remove_in_background, unique_suffix};
use crate::{BindMount, DockerError, labels, logs, readiness};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use shoal_core::environment::{Readiness, Service};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How to start one service for one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOpts {
    /// The service's name: its alias on `network`, and part of the
    /// container's name (so a valid host name, as the config ensures).
    pub service: String,
    /// Image reference; must be present on the engine.
    pub image: String,
    pub env: BTreeMap<String, String>,
    /// The container's command (arguments of the image's entrypoint, if it
    /// has one); the image's default if `None`.
    pub command: Option<Vec<String>>,
    /// Memory limit in bytes, swap included.
    pub memory: Option<u64>,
    pub volumes: Vec<BindMount>,
    /// The slot's private network, created by the caller.
    pub network: String,
    /// Container ports (TCP) published on 127.0.0.1 at random host ports;
    /// see [`ServiceContainer::host_port`].
    pub publish: Vec<u16>,
    /// The caller's labels (run, slot, worker: see [`labels::run_labels`]);
    /// `org.shoal.service`, `org.shoal.managed` and the owner labels are added.
    pub labels: BTreeMap<String, String>,
    /// The container is named `<name_prefix>-<service>-<unique suffix>`.
    pub name_prefix: String,
}

impl ServiceOpts {
    /// Options for `service` from `image` on `network`, with nothing else.
    pub fn new(
        service: impl Into<String>,
        image: impl Into<String>,
        network: impl Into<String>,
    ) -> Self {
        ServiceOpts {
            service: service.into(),
            image: image.into(),
            env: BTreeMap::new(),
            command: None,
            memory: None,
            volumes: Vec::new(),
            network: network.into(),
            publish: Vec::new(),
            labels: BTreeMap::new(),
            name_prefix: "shoal".to_owned(),
        }
    }

    /// Options for a configured service on `network`: its image, env,
    /// command, memory, volumes and [published
    /// ports](Service::published_ports). `None` for a service of a compose
    /// file (it has no image of its own here).
    pub fn from_config(service: &Service, network: impl Into<String>) -> Option<Self> {
        let image = service.image.clone()?;
        let mut opts = ServiceOpts::new(service.name.clone(), image, network);
        opts.env = service.env.clone();
        opts.command = service.command.clone();
        opts.memory = service.memory;
        opts.volumes = service
            .volumes
            .iter()
            .map(|v| BindMount {
                host: v.host.clone(),
                container: v.container.clone(),
                read_only: v.read_only,
            })
            .collect();
        opts.publish = service.published_ports();
        Some(opts)
    }
}

/// A running service container of one slot. Remove it with
/// [`stop_and_remove`](ServiceContainer::stop_and_remove); dropping it
/// without that removes it in the background (best effort; the reaper
/// removes what a process that exits at once leaves behind).
#[derive(Debug)]
pub struct ServiceContainer {
    docker: Docker,
    service: String,
    id: String,
    name: String,
    host_ports: BTreeMap<u16, u16>,
    address: Option<IpAddr>,
    removed: AtomicBool,
}

impl ServiceContainer {
    /// Creates and starts the container and reads its address and
    /// published ports; on failure nothing is left behind. Does not wait
    /// for the service to be ready: see [`wait_ready`](Self::wait_ready).
    pub async fn start(docker: &Docker, opts: ServiceOpts) -> Result<Self, DockerError> {
        let name = format!("{}-{}-{}", opts.name_prefix, opts.service, unique_suffix());
        let body = create_body(&opts)?;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(DockerError::api(format!(
                "create container `{name}` for service `{}` from image `{}`",
                opts.service, opts.image
            )))?;
        let mut container = ServiceContainer {
            docker: docker.clone(),
            service: opts.service,
            id: created.id,
            name,
            host_ports: BTreeMap::new(),
            address: None,
            removed: AtomicBool::new(false),
        };
        if let Err(error) = docker.start_container(&container.id, None).await {
            let _ = container.stop_and_remove().await;
            return Err(DockerError::Api {
                action: format!(
                    "start container `{}` of service `{}`",
                    container.name, container.service
                ),
                error,
            });
        }
        match docker.inspect_container(&container.id, None).await {
            Ok(inspect) => {
                container.host_ports = host_ports(&inspect);
                container.address = address_on(&inspect, &opts.network);
            }
            Err(error) => {
                let _ = container.stop_and_remove().await;
                return Err(DockerError::Api {
                    action: format!("inspect container `{}`", container.name),
                    error,
                });
            }
        }
        Ok(container)
    }

    /// The service's name (its alias on the slot's network).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The engine's id of the container.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port on this host's 127.0.0.1 at which container port
    /// `container_port` is published; `None` if it was not asked for in
    /// [`ServiceOpts::publish`] (or the container stopped before it was read).
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.host_ports.get(&container_port).copied()
    }

    /// The container's IP address on the slot's network, as read after start.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// Waits until the service is ready by `ready`, for at most `timeout`;
    /// returns how long that took. See [`readiness::wait_ready`].
    pub async fn wait_ready(
        &self,
        ready: Option<&Readiness>,
        timeout: Duration,
    ) -> Result<Duration, DockerError> {
        readiness::wait_ready(&self.docker, &self.id, &self.service, ready, timeout).await
    }

    /// The last `max_lines` lines the service wrote (stdout and stderr) at
    /// or after `since_unix` (seconds since the epoch), one per line; for
    /// attaching to a failing test. Best effort: empty if the engine cannot
    /// give them.
    pub async fn logs_since(&self, since_unix: f64, max_lines: usize) -> String {
        match logs::logs_since(&self.docker, &self.id, since_unix, max_lines).await {
            Ok(lines) => lines.join("\n"),
            Err(e) => {
                tracing::debug!(service = %self.service, "cannot read the service's log: {e}");
                String::new()
            }
        }
    }

    /// Removes the container, killing the service. Idempotent.
    pub async fn stop_and_remove(&self) -> Result<(), DockerError> {
        remove_container(&self.docker, &self.id)
            .await
            .map_err(DockerError::api(format!(
                "remove container `{}` of service `{}`",
                self.name, self.service
            )))?;
        self.removed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for ServiceContainer {
    /// Removes the container in the background unless it was removed.
    fn drop(&mut self) {
        if !self.removed.load(Ordering::SeqCst) {
            remove_in_background(self.id.clone(), self.name.clone());
        }
    }
}

fn create_body(opts: &ServiceOpts) -> Result<ContainerCreateBody, DockerError> {
    let mounts = opts
        .volumes
        .iter()
        .map(|m| bind_mount(&m.host, &m.container, m.read_only))
        .collect::<Result<Vec<_>, _>>()?;
    let memory = opts.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let exposed: Vec<String> = opts.publish.iter().map(|p| format!("{p}/tcp")).collect();
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = exposed
        .iter()
        .map(|port| {
            let binding = PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                // Empty: a free port chosen by the engine.
                host_port: Some(String::new()),
            };
            (port.clone(), Some(vec![binding]))
        })
        .collect();
    let host_config = HostConfig {
        mounts: Some(mounts),
        memory,
        // No swap beyond the limit, so that the limit is the limit.
        memory_swap: memory,
        network_mode: Some(opts.network.clone()),
        port_bindings: Some(port_bindings),
        ..Default::default()
    };
    let networking_config = NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            opts.network.clone(),
            EndpointSettings {
                aliases: Some(vec![opts.service.clone()]),
                ..Default::default()
            },
        )])),
    };
    let mut all_labels = opts.labels.clone();
    all_labels.insert(labels::SERVICE.to_owned(), opts.service.clone());
    Ok(ContainerCreateBody {
        image: Some(opts.image.clone()),
        cmd: opts.command.clone(),
        env: Some(opts.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: Some(exposed),
        labels: Some(labels::complete(&all_labels)),
        host_config: Some(host_config),
        networking_config: Some(networking_config),
        ..Default::default()
    })
}

/// Container port → host port of the TCP ports published on 127.0.0.1.
fn host_ports(inspect: &ContainerInspectResponse) -> BTreeMap<u16, u16> {
    let Some(ports) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
    else {
        return BTreeMap::new();
    };
    ports
        .iter()
        .filter_map(|(key, bindings)| {
            let container_port = key.strip_suffix("/tcp")?.parse().ok()?;
            let host_port = bindings
                .iter()
                .flatten()
                .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
                .find_map(|b| b.host_port.as_deref()?.parse().ok())?;
            Some((container_port, host_port))
        })
        .collect()
}

/// The container's IP address on `network`.
fn address_on(inspect: &ContainerInspectResponse, network: &str) -> Option<IpAddr> {
    let networks = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let endpoint = networks.get(network).or_else(|| {
        // Created by id: the map is keyed by name.
        networks.values().find(|e| {
            e.network_id
                .as_deref()
                .is_some_and(|id| id.starts_with(network))
        })
    })?;
    endpoint.ip_address.as_deref()?.parse().ok()
}
