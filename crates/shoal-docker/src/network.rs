//! Per-slot private networks: a bridge network per slot, on which the slot's
//! container and its services reach each other by name.

use crate::{DockerError, is_not_found, labels};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use std::collections::BTreeMap;

/// Creates a bridge network `name` carrying `labels` plus
/// `org.shoal.managed=1` and the owner labels; returns its id.
pub async fn create_network(
    docker: &Docker,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String, DockerError> {
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(labels::complete(labels)),
        ..Default::default()
    };
    let created = docker
        .create_network(request)
        .await
        .map_err(DockerError::api(format!("create network `{name}`")))?;
    Ok(created.id)
}

/// Removes network `name` (or id). Gone already is fine; a network that
/// containers are still attached to is an error.
pub async fn remove_network(docker: &Docker, name: &str) -> Result<(), DockerError> {
    match docker.remove_network(name).await {
        Err(e) if !is_not_found(&e) => Err(DockerError::Api {
            action: format!("remove network `{name}`"),
            error: e,
        }),
        _ => Ok(()),
    }
}
