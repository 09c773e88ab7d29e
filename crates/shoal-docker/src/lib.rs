//! Docker for shoal: a long-lived container per slot ([`SlotContainer`]) or
//! one per batch ([`PerBatchExecutor`]), the [`DockerExecutor`] running
//! processes in it through the exec API with the same contract as the local
//! process executor, per-slot networks, and the [`reap`]er that removes what
//! crashed runs left behind. A slot's services run in [`ServiceContainer`]s
//! on the slot's network, and [`wait_ready`] waits until a service (any
//! container) is ready; a compose file runs as a [`ComposeProject`] per
//! slot; [`ensure_image`] builds a Dockerfile's image unless one of the same
//! context digest exists.
//!
//! Everything shoal creates carries the [`labels`] `org.shoal.managed=1`,
//! the run, slot and worker, and the owner process. The engine is reached
//! with [`connect`], which negotiates the API version, so any engine from
//! API 1.24 on works.

mod batch_executor;
mod build;
mod compose;
mod docker_executor;
mod error;
mod events;
pub mod labels;
mod logs;
mod network;
mod path_map;
mod readiness;
mod reaper;
mod service;
mod slot_container;

pub use batch_executor::PerBatchExecutor;
pub use bollard::Docker;
pub use build::{
    BuildRequest, BuiltImage, DIGEST_LABEL, build_repository, context_digest, ensure_image,
};
pub use compose::{ComposeOpts, ComposeProject};
pub use docker_executor::{DockerExecutor, WRAPPER};
pub use error::DockerError;
pub(crate) use error::is_not_found;
pub use logs::{logs_since, tail_logs};
pub use network::{create_network, remove_network};
pub use path_map::PathMap;
pub use readiness::wait_ready;
pub use reaper::{ReapFilter, Reaped, reap};
pub use service::{ServiceContainer, ServiceOpts};
pub use slot_container::{BindMount, ContainerOpts, ContainerState, SCRATCH_MOUNT, SlotContainer};

/// Connects to the local engine (`DOCKER_HOST`, or the default socket) and
/// agrees on the newest API version both sides speak.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|error| DockerError::Connect { error })?;
    docker
        .negotiate_version()
        .await
        .map_err(|error| DockerError::Connect { error })
}
