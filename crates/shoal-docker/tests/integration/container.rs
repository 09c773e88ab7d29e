//! Slot containers: labels and limits as created, removal, failed starts,
//! and a per-slot private network where containers find each other by name.

use crate::support::{Slot, engine, opts, run_id};
use shoal_docker::{SlotContainer, create_network, labels, remove_network};
use shoal_exec::ExitStatus;
use std::collections::HashMap;
use std::time::Instant;

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_container_carries_its_labels_limits_and_env_and_is_removed() {
    let Some(docker) = engine().await else { return };
    let mut opts = opts("labels");
    opts.cpus = Some(0.5);
    opts.memory = Some(64 << 20);
    opts.env.insert("SHOAL_SLOT".into(), "0".into());
    let begun = Instant::now();
    let container = SlotContainer::start(&docker, opts).await.expect("start");
    println!("container start: {:?}", begun.elapsed());

    let inspect = docker
        .inspect_container(container.id(), None)
        .await
        .expect("inspect");
    let config = inspect.config.expect("config");
    let labels = config.labels.expect("labels");
    assert_eq!(labels[labels::MANAGED], "1");
    assert_eq!(labels[labels::RUN], run_id("labels"));
    assert_eq!(labels[labels::SLOT], "0");
    assert_eq!(labels[labels::PID], std::process::id().to_string());
    assert_eq!(labels[labels::HOST], labels::this_host());
    assert!(
        config
            .env
            .expect("env")
            .contains(&"SHOAL_SLOT=0".to_owned())
    );
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.memory_swap, Some(64 << 20));
    assert!(inspect.state.expect("state").running.expect("running"));
    assert!(container.name().starts_with("shoal-test-labels-"));

    container.stop_and_remove().await.expect("remove");
    let gone = docker.inspect_container(container.id(), None).await;
    assert!(gone.is_err(), "the container is gone");
    container
        .stop_and_remove()
        .await
        .expect("removing twice is fine");
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_container_that_cannot_start_leaves_nothing_behind() {
    let Some(docker) = engine().await else { return };
    let mut missing_image = opts("no-image");
    missing_image.image = "shoal-test/no-such-image:0".into();
    let err = SlotContainer::start(&docker, missing_image)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-image"), "{err}");

    let mut bad_command = opts("bad-command");
    bad_command.command = vec!["/no/such/program".into()];
    let err = SlotContainer::start(&docker, bad_command)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("failed to start container"),
        "{err}"
    );

    for run in [run_id("no-image"), run_id("bad-command")] {
        let filters = HashMap::from([("label", vec![format!("{}={run}", labels::RUN)])]);
        let left = docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list");
        assert!(left.is_empty(), "{run}: {left:?}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn containers_on_a_slot_network_reach_each_other_by_alias_and_others_do_not() {
    let Some(docker) = engine().await else { return };
    let network = format!("shoal-test-net-{}", std::process::id());
    let labels = labels::run_labels(&run_id("network"), Some(0), None);
    create_network(&docker, &network, &labels)
        .await
        .expect("create network");

    let mut service = opts("network-svc");
    service.network = Some(network.clone());
    service.network_aliases = vec!["svc".into()];
    service.command = [
        "sh",
        "-c",
        "echo hello > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
    ]
    .map(String::from)
    .to_vec();
    let service = SlotContainer::start(&docker, service)
        .await
        .expect("start service");

    let mut client = opts("network-client");
    client.network = Some(network.clone());
    let client = Slot::start(&docker, client).await;
    let fetch = [
        "sh",
        "-c",
        "for i in $(seq 50); do wget -q -O - http://svc:8080/ && exit 0; sleep 0.1; done; exit 1",
    ];
    let exit = client.run(&fetch).await;
    assert_eq!(exit.status, ExitStatus::Code(0), "{}", exit.output.text);
    assert_eq!(exit.output.text, "hello\n");

    let outsider = Slot::start(&docker, opts("network-outsider")).await;
    let exit = outsider
        .run(&["wget", "-q", "-T", "2", "-O", "-", "http://svc:8080/"])
        .await;
    assert!(
        !exit.status.success(),
        "not on the slot's network: {}",
        exit.output.text
    );

    client.remove().await;
    outsider.remove().await;
    service.stop_and_remove().await.expect("remove service");
    remove_network(&docker, &network)
        .await
        .expect("remove network");
    remove_network(&docker, &network)
        .await
        .expect("removing twice is fine");
}
