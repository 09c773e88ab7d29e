//! Compose projects per slot: two slots run one compose file side by side,
//! each reaching only its own services; everything carries shoal's labels,
//! `down` leaves nothing, a failing service fails `wait_healthy` with its
//! logs, and the reaper removes a dead run's project.

use crate::support::{Docker, IMAGE, Slot, engine, opts, run_id};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptions, ListVolumesOptions,
};
use shoal_docker::{ComposeOpts, ComposeProject, DockerError, ReapFilter, labels, reap};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// The engine, if a compose tool exists too (outside CI, its absence skips).
async fn compose_engine() -> Option<Docker> {
    let docker = engine().await?;
    let works = |argv: &[&str]| {
        std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker", "compose", "version"]) || works(&["docker-compose", "version"]) {
        return Some(docker);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, but neither `docker compose` nor `docker-compose` works");
    }
    eprintln!("SKIPPED: neither `docker compose` nor `docker-compose` works here");
    None
}

/// Two services: `web` (busybox httpd serving `$MARKER`, with a
/// healthcheck, a named volume) and `idle`.
fn two_services(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"services:
  web:
    image: {IMAGE}
    command:
      - sh
      - -c
      - mkdir -p /www && echo "$$MARKER" > /www/index.html && echo "serving $$MARKER" && exec httpd -f -p 8080 -h /www
    environment:
      MARKER: ${{MARKER}}
    healthcheck:
      test: ["CMD-SHELL", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 8080 | grep -q '200 OK'"]
      interval: 1s
      timeout: 2s
      retries: 30
    volumes:
      - data:/data
  idle:
    image: {IMAGE}
    command: ["sleep", "3600"]
volumes:
  data:
"#
        ),
    )
    .expect("write compose file");
    file
}

fn compose_opts(file: &Path, project: &str, labels: BTreeMap<String, String>) -> ComposeOpts {
    ComposeOpts {
        file: file.to_owned(),
        project: project.to_owned(),
        project_dir: file.parent().expect("dir").to_owned(),
        labels,
        env: BTreeMap::new(),
    }
}

fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])])
}

/// Names of the containers, networks and volumes carrying `key=value`.
async fn objects_with_label(docker: &Docker, key: &str, value: &str) -> Vec<String> {
    let filters = label_filter(key, value);
    let mut names = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers");
    names.extend(
        containers
            .into_iter()
            .filter_map(|c| c.names?.into_iter().next()),
    );
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .expect("list networks");
    names.extend(networks.into_iter().filter_map(|n| n.name));
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list volumes");
    names.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name),
    );
    names
}

/// From a probe container on `network`, `GET /` of `host:8080`: whether it
/// answered, and the body (else what `nc` said). (`nc`, not busybox's static
/// `wget`, which crashes in these containers.)
async fn fetch(docker: &Docker, network: &str, host: &str) -> (bool, String) {
    let mut options = opts("compose-probe");
    options.network = Some(network.to_owned());
    let probe = Slot::start(docker, options).await;
    let script = r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 "$0" 8080"#;
    let exit = probe.run(&["sh", "-c", script, host]).await;
    probe.remove().await;
    let text = exit.output.text;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if exit.status.success() && head.contains("200 OK") => {
            (true, body.to_owned())
        }
        _ => (false, text),
    }
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn two_slots_run_the_compose_file_as_separate_labelled_projects() {
    let Some(docker) = compose_engine().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = two_services(dir.path());
    let run = run_id("compose");
    let pid = std::process::id();
    let slot_opts = |slot: u32| {
        let mut o = compose_opts(
            &file,
            &format!("shoal-test-{pid}-s{slot}"),
            labels::run_labels(&run, Some(slot), None),
        );
        o.env.insert("MARKER".to_owned(), format!("slot-{slot}"));
        o
    };
    let (a, b) = tokio::join!(
        ComposeProject::up(&docker, slot_opts(0)),
        ComposeProject::up(&docker, slot_opts(1))
    );
    let (a, b) = (a.expect("up slot 0"), b.expect("up slot 1"));
    let (ready_a, ready_b) = tokio::join!(
        a.wait_healthy(Duration::from_secs(60)),
        b.wait_healthy(Duration::from_secs(60))
    );
    ready_a.expect("slot 0 healthy");
    ready_b.expect("slot 1 healthy");

    assert_eq!(a.services(), ["idle", "web"]);
    assert_ne!(a.network(), b.network());
    docker
        .inspect_network(a.network(), None)
        .await
        .expect("the network exists under that name");

    // Each slot reaches its own `web` by name, and not the other's.
    let web_b = docker
        .inspect_container(b.container_of("web").expect("web of b"), None)
        .await
        .expect("inspect")
        .name
        .expect("name");
    let (ok, body) = fetch(&docker, a.network(), "web").await;
    assert!(ok, "{body}");
    assert_eq!(body, "slot-0\n");
    let (ok, body) = fetch(&docker, b.network(), "web").await;
    assert!(ok, "{body}");
    assert_eq!(body, "slot-1\n");
    let (ok, body) = fetch(&docker, a.network(), web_b.trim_start_matches('/')).await;
    assert!(!ok, "slot 0 must not reach slot 1's web: {body}");

    // Containers, networks and volumes carry shoal's labels.
    let web = docker
        .inspect_container(a.container_of("web").expect("web"), None)
        .await
        .expect("inspect");
    let health = web.state.as_ref().and_then(|s| s.health.as_ref());
    assert_eq!(
        health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .as_deref(),
        Some("healthy"),
        "wait_healthy waited for the healthcheck"
    );
    let container_labels = web.config.and_then(|c| c.labels).unwrap_or_default();
    let network_labels = docker
        .inspect_network(a.network(), None)
        .await
        .expect("inspect network")
        .labels
        .unwrap_or_default();
    let volume_labels = docker
        .inspect_volume(&format!("{}_data", a.name()))
        .await
        .expect("inspect volume")
        .labels;
    for labels_of in [&container_labels, &network_labels, &volume_labels] {
        assert_eq!(
            labels_of.get(labels::MANAGED).map(String::as_str),
            Some("1")
        );
        assert_eq!(labels_of.get(labels::RUN), Some(&run));
        assert_eq!(labels_of.get(labels::SLOT).map(String::as_str), Some("0"));
        assert_eq!(labels_of.get(labels::PID), Some(&pid.to_string()));
    }
    assert!(a.container_of("idle").is_some());
    assert_eq!(a.container_of("nope"), None);

    let logs = a.logs_since("web", 0.0, 10).await;
    assert_eq!(logs, "serving slot-0");
    let future = a.logs_since("web", 4_000_000_000.0, 10).await;
    assert_eq!(future, "");

    a.down().await.expect("down a");
    b.down().await.expect("down b");
    assert_eq!(
        objects_with_label(&docker, labels::RUN, &run).await,
        Vec::<String>::new(),
        "down leaves nothing of the run"
    );
    a.down().await.expect("down again is fine");
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_that_exits_fails_wait_healthy_with_its_logs() {
    let Some(docker) = compose_engine().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("compose.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  broken:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo shoal-compose-boom; exit 3\"]\n"
        ),
    )
    .expect("write");
    let run = run_id("compose-exit");
    let project = ComposeProject::up(
        &docker,
        compose_opts(
            &file,
            &format!("shoal-test-{}-exit", std::process::id()),
            labels::run_labels(&run, Some(0), None),
        ),
    )
    .await
    .expect("up");
    let error = project
        .wait_healthy(Duration::from_secs(60))
        .await
        .expect_err("the service exits with 3");
    assert!(matches!(error, DockerError::NotReady { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("`broken`"), "{message}");
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(
        message.contains(project.name()),
        "names the project: {message}"
    );
    assert!(message.contains("shoal-compose-boom"), "{message}");
    project.down().await.expect("down");
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_that_never_turns_healthy_fails_at_the_timeout() {
    let Some(docker) = compose_engine().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("compose.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  stuck:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 1000\n"
        ),
    )
    .expect("write");
    let run = run_id("compose-stuck");
    let project = ComposeProject::up(
        &docker,
        compose_opts(
            &file,
            &format!("shoal-test-{}-stuck", std::process::id()),
            labels::run_labels(&run, Some(0), None),
        ),
    )
    .await
    .expect("up");
    let error = project
        .wait_healthy(Duration::from_secs(2))
        .await
        .expect_err("the healthcheck never passes");
    let DockerError::NotReady { waited, .. } = &error else {
        panic!("not NotReady: {error}");
    };
    assert!(*waited >= Duration::from_secs(2), "{waited:?}");
    let message = error.to_string();
    assert!(message.contains("`stuck`"), "{message}");
    assert!(message.contains("still starting"), "{message}");
    project.down().await.expect("down");
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_broken_compose_file_fails_with_the_tools_message() {
    let Some(docker) = compose_engine().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("compose.yml");
    std::fs::write(&file, "services:\n  a:\n    image: [not, a, string]\n").expect("write");
    let error = ComposeProject::up(
        &docker,
        compose_opts(
            &file,
            &format!("shoal-test-{}-broken", std::process::id()),
            BTreeMap::new(),
        ),
    )
    .await
    .expect_err("an invalid file");
    let message = error.to_string();
    assert!(matches!(error, DockerError::Compose { .. }), "{message}");
    assert!(message.contains("config"), "{message}");
    assert!(message.contains("image"), "the tool's complaint: {message}");

    let error = ComposeProject::up(&docker, compose_opts(&file, "Bad Name", BTreeMap::new()))
        .await
        .expect_err("an invalid project name");
    assert!(error.to_string().contains("lowercase"), "{error}");
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn the_reaper_removes_a_dead_runs_compose_project() {
    let Some(docker) = compose_engine().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = two_services(dir.path());
    let marker = format!("compose-reap-{}", std::process::id());

    // Labels as a shoal process that has since died would have set.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("wait");
    let mut dead = labels::run_labels("crashed-compose-run", Some(2), None);
    dead.insert(labels::PID.into(), dead_pid.to_string());
    dead.insert(labels::HOST.into(), labels::this_host());
    dead.insert("org.shoal.test".into(), marker.clone());

    let mut opts = compose_opts(
        &file,
        &format!("shoal-test-{}-reap", std::process::id()),
        dead,
    );
    opts.env.insert("MARKER".to_owned(), "reap".to_owned());
    let project = ComposeProject::up(&docker, opts).await.expect("up");
    let network = project.network().to_owned();
    let volume = format!("{}_data", project.name());

    let reaped = reap(
        &docker,
        &ReapFilter {
            live_runs: None,
            labels: BTreeMap::from([("org.shoal.test".to_owned(), marker.clone())]),
        },
    )
    .await
    .expect("reap");
    assert_eq!(reaped.containers.len(), 2, "{reaped:?}");
    assert_eq!(reaped.networks, [network], "{reaped:?}");
    assert_eq!(reaped.volumes, [volume], "{reaped:?}");
    assert_eq!(
        objects_with_label(&docker, "org.shoal.test", &marker).await,
        Vec::<String>::new()
    );
    project.down().await.expect("down after the reaper is fine");
}
