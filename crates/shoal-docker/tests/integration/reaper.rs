//! The reaper removes what runs whose owner died left behind, and what runs
//! not in the live set left behind, and nothing else.

use crate::support::{Slot, engine, opts};
use bollard::models::VolumeCreateRequest;
use shoal_docker::{ReapFilter, SlotContainer, create_network, labels, reap};
use std::collections::{BTreeMap, BTreeSet};

/// Labels of a run whose shoal process has exited (a `kill -9`, say).
fn dead_owner(run: &str, marker: &str) -> BTreeMap<String, String> {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    let mut labels = labels::run_labels(run, Some(1), None);
    labels.insert(labels::PID.into(), pid.to_string());
    labels.insert(labels::HOST.into(), labels::this_host());
    labels.insert("org.shoal.test".into(), marker.into());
    labels
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn leftovers_of_a_dead_run_are_reaped_and_live_ones_kept() {
    let Some(docker) = engine().await else { return };
    let marker = format!("reaper-{}", std::process::id());
    let only_this_test = BTreeMap::from([("org.shoal.test".to_owned(), marker.clone())]);

    // A crashed run's container, network and volume.
    let dead_labels = dead_owner("crashed-run", &marker);
    let mut dead = opts("reap-dead");
    dead.labels = dead_labels.clone();
    let dead = SlotContainer::start(&docker, dead).await.expect("start");
    let network = format!("shoal-test-reap-{}", std::process::id());
    create_network(&docker, &network, &dead_labels)
        .await
        .expect("network");
    let mut volume_labels: std::collections::HashMap<_, _> =
        dead_labels.clone().into_iter().collect();
    volume_labels.insert(labels::MANAGED.into(), "1".into());
    let volume = docker
        .create_volume(VolumeCreateRequest {
            name: Some(format!("shoal-test-reap-{}", std::process::id())),
            labels: Some(volume_labels),
            ..Default::default()
        })
        .await
        .expect("volume");

    // A live run's container (this process owns it).
    let mut live = opts("reap-live");
    live.labels.insert("org.shoal.test".into(), marker.clone());
    let live = Slot::start(&docker, live).await;

    let reaped = reap(
        &docker,
        &ReapFilter {
            live_runs: None,
            labels: only_this_test.clone(),
        },
    )
    .await
    .expect("reap");
    // Another test process's start-up reaper (tests run as parallel
    // processes under shoal or nextest) may have reaped the dead run's
    // resources first: what is tested is that they are gone and that this
    // reaper took nothing else, not which reaper won (issue 11 found the
    // exact-list version flaky under shoal).
    let subset = |got: &[String], of: &str| got.iter().all(|g| g == of);
    assert!(subset(&reaped.containers, dead.name()), "{reaped:?}");
    assert!(subset(&reaped.networks, &network), "{reaped:?}");
    assert!(subset(&reaped.volumes, &volume.name), "{reaped:?}");
    assert!(docker.inspect_container(dead.id(), None).await.is_err());
    assert!(
        docker.inspect_network(&network, None).await.is_err(),
        "the dead run's network is gone"
    );
    assert!(
        docker.inspect_volume(&volume.name).await.is_err(),
        "the dead run's volume is gone"
    );
    assert!(
        live.run(&["true"]).await.status.success(),
        "the live run goes on"
    );

    // Reaping again finds nothing.
    let again = reap(
        &docker,
        &ReapFilter {
            live_runs: None,
            labels: only_this_test.clone(),
        },
    )
    .await
    .expect("reap");
    assert_eq!(again.total(), 0);

    // A coordinator that knows every live run reaps runs that are not among them.
    let filter = ReapFilter {
        live_runs: Some(BTreeSet::from(["some-other-run".to_owned()])),
        labels: only_this_test,
    };
    let reaped = reap(&docker, &filter).await.expect("reap");
    assert_eq!(reaped.containers, [live.container.name()]);
    drop(dead);
}
