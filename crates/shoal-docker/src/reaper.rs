//! The reaper: removes the containers, networks and volumes that runs which
//! are no longer alive left behind (a `kill -9`, a crash, a lost worker).
//!
//! Only objects labelled `org.shoal.managed=1` are considered. One is a
//! leftover when its owner process ran on this host and is dead (pid gone or
//! recycled, see [`labels`](crate::labels)), or, when the caller knows every
//! live run (a coordinator does), when its `org.shoal.run` is not one of them.
//! A local run cannot know the runs of other shoal processes on the machine,
//! so it passes no run set and only dead owners are reaped.

use crate::slot_container::remove_container;
use crate::{DockerError, is_not_found, labels};
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which managed objects [`reap`] may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapFilter {
    /// The runs still in progress: objects of any other run are removed.
    /// `None`: only objects whose owner is known dead are removed.
    pub live_runs: Option<BTreeSet<String>>,
    /// Only objects carrying all these labels are considered (a worker's
    /// label, say).
    pub labels: BTreeMap<String, String>,
}

impl ReapFilter {
    /// Whether an object with `labels` is a leftover.
    fn is_leftover(&self, labels: &HashMap<String, String>) -> bool {
        let selected = labels.get(labels::MANAGED).is_some_and(|v| v == "1")
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        if !selected {
            return false;
        }
        let dead_run = self.live_runs.as_ref().is_some_and(|live| {
            labels
                .get(labels::RUN)
                .is_none_or(|run| !live.contains(run))
        });
        dead_run || labels::owner_is_dead(labels)
    }

    /// The engine-side label filter: managed plus the caller's labels.
    fn engine_filter(&self) -> HashMap<String, Vec<String>> {
        let mut wanted = vec![format!("{}=1", labels::MANAGED)];
        wanted.extend(self.labels.iter().map(|(k, v)| format!("{k}={v}")));
        HashMap::from([("label".to_owned(), wanted)])
    }
}

/// What [`reap`] removed (names, or ids for unnamed containers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Reaped {
    /// How many objects were removed.
    pub fn total(&self) -> usize {
        self.containers.len() + self.networks.len() + self.volumes.len()
    }
}

/// Removes the leftovers `filter` selects: containers first (with their
/// anonymous volumes), then networks, then volumes. An object that cannot be
/// removed is logged and skipped; only listing failures are errors.
pub async fn reap(docker: &Docker, filter: &ReapFilter) -> Result<Reaped, DockerError> {
    let engine_filter = filter.engine_filter();
    let mut reaped = Reaped::default();

    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&engine_filter)
                .build(),
        ))
        .await
        .map_err(DockerError::api("list containers"))?;
    for container in containers {
        let (Some(id), Some(labels)) = (container.id, container.labels) else {
            continue;
        };
        if !filter.is_leftover(&labels) {
            continue;
        }
        let name = container
            .names
            .and_then(|names| names.into_iter().next())
            .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
        match remove_container(docker, &id).await {
            Ok(()) => reaped.containers.push(name),
            Err(e) => {
                tracing::warn!(container = %name, "failed to remove a leftover container: {e}")
            }
        }
    }

    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(engine_filter.clone()),
        }))
        .await
        .map_err(DockerError::api("list networks"))?;
    for network in networks {
        let (Some(id), Some(labels)) = (network.id, network.labels) else {
            continue;
        };
        if !filter.is_leftover(&labels) {
            continue;
        }
        let name = network.name.unwrap_or_else(|| id.clone());
        match docker.remove_network(&id).await {
            Ok(()) => reaped.networks.push(name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(network = %name, "failed to remove a leftover network: {e}"),
        }
    }

    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(engine_filter),
        }))
        .await
        .map_err(DockerError::api("list volumes"))?;
    for volume in volumes.volumes.unwrap_or_default() {
        if !filter.is_leftover(&volume.labels) {
            continue;
        }
        let options = RemoveVolumeOptions { force: true };
        match docker.remove_volume(&volume.name, Some(options)).await {
            Ok(()) => reaped.volumes.push(volume.name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(volume = %volume.name, "failed to remove a leftover volume: {e}")
            }
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(run: &str, owner: BTreeMap<String, String>) -> HashMap<String, String> {
        let mut labels: HashMap<_, _> = owner.into_iter().collect();
        labels.insert(labels::MANAGED.to_owned(), "1".to_owned());
        labels.insert(labels::RUN.to_owned(), run.to_owned());
        labels
    }

    fn dead_owner() -> BTreeMap<String, String> {
        let mut owner = labels::owner_labels();
        owner.insert(labels::PID_START.to_owned(), "1".to_owned());
        owner
    }

    #[test]
    fn without_a_run_set_only_dead_owners_are_leftovers() {
        let filter = ReapFilter::default();
        assert!(!filter.is_leftover(&object("r1", labels::owner_labels())));
        assert!(filter.is_leftover(&object("r1", dead_owner())));
    }

    #[test]
    fn with_a_run_set_runs_not_in_it_are_leftovers_too() {
        let filter = ReapFilter {
            live_runs: Some(BTreeSet::from(["live".to_owned()])),
            ..Default::default()
        };
        assert!(!filter.is_leftover(&object("live", labels::owner_labels())));
        assert!(filter.is_leftover(&object("gone", labels::owner_labels())));
        assert!(filter.is_leftover(&object("live", dead_owner())));
    }

    #[test]
    fn unmanaged_or_unselected_objects_are_never_leftovers() {
        let mut unmanaged = object("r1", dead_owner());
        unmanaged.remove(labels::MANAGED);
        let filter = ReapFilter {
            live_runs: Some(BTreeSet::new()),
            labels: BTreeMap::from([(labels::WORKER.to_owned(), "w1".to_owned())]),
        };
        assert!(!filter.is_leftover(&unmanaged));
        assert!(
            !filter.is_leftover(&object("r1", dead_owner())),
            "no worker label"
        );
        let mut mine = object("r1", dead_owner());
        mine.insert(labels::WORKER.to_owned(), "w1".to_owned());
        assert!(filter.is_leftover(&mine));
    }
}
