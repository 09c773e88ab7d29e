//! Per-slot services: reachable by name on their slot's network and only
//! there, readiness by tcp, http, log line, command and healthcheck, fast
//! failure of a service that exits, timeouts that show the service's log,
//! published ports, labels and removal.

use crate::support::{IMAGE, Slot, engine, opts, run_id};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HealthConfig, HealthStatusEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use shoal_core::environment::Readiness;
use shoal_docker::{
    Docker, DockerError, ServiceContainer, ServiceOpts, create_network, labels, remove_network,
    tail_logs, wait_ready,
};
use shoal_exec::ExitStatus;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

/// Serves `body` at `/index.html` on port 8080, after `delay` seconds.
fn web_server(body: &str, delay: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p /www && echo {body} > /www/index.html && sleep {delay} && \
         echo serving && exec httpd -f -p 8080 -h /www"
    );
    vec!["sh".into(), "-c".into(), script]
}

fn http(port: u16, path: &str) -> Readiness {
    Readiness::Http {
        port,
        path: path.to_owned(),
    }
}

/// A private network for one test's slot, labelled with the test's run.
struct Network {
    docker: Docker,
    name: String,
}

impl Network {
    async fn create(docker: &Docker, test: &str, slot: u32) -> Network {
        let name = format!("shoal-test-{test}-{slot}-{}", std::process::id());
        let labels = labels::run_labels(&run_id(test), Some(slot), None);
        create_network(docker, &name, &labels)
            .await
            .expect("create network");
        Network {
            docker: docker.clone(),
            name,
        }
    }

    /// Options for service `service` of test `test` on this network.
    fn service(&self, test: &str, service: &str, command: Vec<String>) -> ServiceOpts {
        let mut opts = ServiceOpts::new(service, IMAGE, &self.name);
        opts.command = Some(command);
        opts.labels = labels::run_labels(&run_id(test), Some(0), None);
        opts.name_prefix = format!("shoal-test-{test}");
        opts
    }

    /// A slot container of test `test` on this network.
    async fn slot(&self, test: &str) -> Slot {
        let mut opts = opts(test);
        opts.network = Some(self.name.clone());
        Slot::start(&self.docker, opts).await
    }

    async fn remove(self) {
        remove_network(&self.docker, &self.name)
            .await
            .expect("remove network");
    }
}

/// Runs `argv` in `container` through the exec API; its exit code.
async fn exec_code(docker: &Docker, container: &str, argv: &[&str]) -> i64 {
    let options = CreateExecOptions {
        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .expect("create exec");
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.expect("start exec")
    {
        while output.next().await.is_some() {}
    }
    loop {
        let inspect = docker.inspect_exec(&exec.id).await.expect("inspect exec");
        if inspect.running != Some(true) {
            return inspect.exit_code.expect("exit code");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One HTTP/1.0 GET; the whole answer.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

fn not_ready(error: DockerError) -> (String, String, Duration, Vec<String>) {
    match error {
        DockerError::NotReady {
            service,
            reason,
            waited,
            last_logs,
        } => (service, reason, waited, last_logs),
        other => panic!("expected NotReady, got: {other}"),
    }
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_is_reached_by_its_name_from_the_slot_container() {
    let Some(docker) = engine().await else { return };
    let test = "svc-name";
    let network = Network::create(&docker, test, 0).await;
    let web = ServiceContainer::start(
        &docker,
        network.service(test, "web", web_server("hello", "0")),
    )
    .await
    .expect("start service");
    assert_eq!(web.service(), "web");
    assert!(web.address().is_some(), "an address on the slot network");
    web.wait_ready(Some(&http(8080, "/index.html")), Duration::from_secs(20))
        .await
        .expect("ready");

    let slot = network.slot(test).await;
    let exit = slot
        .run(&["wget", "-q", "-O", "-", "http://web:8080/index.html"])
        .await;
    assert_eq!(exit.status, ExitStatus::Code(0), "{}", exit.output.text);
    assert_eq!(exit.output.text, "hello\n");

    slot.remove().await;
    web.stop_and_remove().await.expect("remove service");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn the_slots_networks_are_isolated_from_each_other() {
    let Some(docker) = engine().await else { return };
    let test = "svc-isolated";
    let (net_a, net_b) = (
        Network::create(&docker, test, 0).await,
        Network::create(&docker, test, 1).await,
    );
    // Both slots have a `web`; only slot A has `only-a`.
    let web_a = ServiceContainer::start(&docker, net_a.service(test, "web", web_server("a", "0")))
        .await
        .expect("start web a");
    let web_b = ServiceContainer::start(&docker, net_b.service(test, "web", web_server("b", "0")))
        .await
        .expect("start web b");
    let only_a = ServiceContainer::start(
        &docker,
        net_a.service(test, "only-a", web_server("only", "0")),
    )
    .await
    .expect("start only-a");
    for service in [&web_a, &web_b, &only_a] {
        service
            .wait_ready(Some(&http(8080, "/index.html")), Duration::from_secs(20))
            .await
            .expect("ready");
    }

    let slot_b = net_b.slot(test).await;
    let own = slot_b
        .run(&["wget", "-q", "-O", "-", "http://web:8080/index.html"])
        .await;
    assert_eq!(own.status, ExitStatus::Code(0), "{}", own.output.text);
    assert_eq!(own.output.text, "b\n", "`web` is slot B's own service");
    let other = slot_b
        .run(&[
            "wget",
            "-q",
            "-T",
            "2",
            "-O",
            "-",
            "http://only-a:8080/index.html",
        ])
        .await;
    assert!(
        !other.status.success(),
        "slot A's service is not reachable from slot B: {}",
        other.output.text
    );

    slot_b.remove().await;
    for service in [web_a, web_b, only_a] {
        service.stop_and_remove().await.expect("remove service");
    }
    net_a.remove().await;
    net_b.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn tcp_and_http_readiness_wait_for_a_server_that_listens_late() {
    let Some(docker) = engine().await else { return };
    let test = "svc-late";
    let network = Network::create(&docker, test, 0).await;
    let by_tcp =
        ServiceContainer::start(&docker, network.service(test, "tcp", web_server("t", "1")))
            .await
            .expect("start tcp service");
    let by_http =
        ServiceContainer::start(&docker, network.service(test, "http", web_server("h", "1")))
            .await
            .expect("start http service");

    let waited = by_tcp
        .wait_ready(Some(&Readiness::Tcp(8080)), Duration::from_secs(20))
        .await
        .expect("tcp ready");
    println!("tcp ready after {waited:?}");
    // Ready means ready: the very first request after it is answered.
    let addr = SocketAddr::new(by_tcp.address().expect("address"), 8080);
    let answer = get(addr, "/index.html").await.expect("GET after tcp ready");
    assert!(
        answer.starts_with("HTTP/1.") && answer.ends_with("t\n"),
        "{answer}"
    );

    let waited = by_http
        .wait_ready(Some(&http(8080, "/index.html")), Duration::from_secs(20))
        .await
        .expect("http ready");
    println!("http ready after {waited:?}");
    let addr = SocketAddr::new(by_http.address().expect("address"), 8080);
    let answer = get(addr, "/index.html")
        .await
        .expect("GET after http ready");
    assert!(
        answer.contains(" 200 ") && answer.ends_with("h\n"),
        "{answer}"
    );

    by_tcp.stop_and_remove().await.expect("remove");
    by_http.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn http_readiness_wants_a_2xx_answer() {
    let Some(docker) = engine().await else { return };
    let test = "svc-404";
    let network = Network::create(&docker, test, 0).await;
    let web = ServiceContainer::start(&docker, network.service(test, "web", web_server("x", "0")))
        .await
        .expect("start service");
    let error = web
        .wait_ready(Some(&http(8080, "/missing")), Duration::from_secs(2))
        .await
        .unwrap_err();
    let (_, reason, _, _) = not_ready(error);
    assert!(
        reason.starts_with("http GET /missing on port 8080 never answered 2xx within 2s"),
        "{reason}"
    );
    assert!(reason.contains("404"), "{reason}");

    web.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn log_readiness_matches_lines_old_and_new() {
    let Some(docker) = engine().await else { return };
    let test = "svc-log";
    let network = Network::create(&docker, test, 0).await;
    let script = "echo starting; sleep 1; \
                  echo 'database system is ready to accept connections' >&2; exec sleep 1000";
    let late = ServiceContainer::start(
        &docker,
        network.service(test, "late", vec!["sh".into(), "-c".into(), script.into()]),
    )
    .await
    .expect("start");
    let ready = Readiness::Log("ready to accept connections$".into());
    late.wait_ready(Some(&ready), Duration::from_secs(20))
        .await
        .expect("ready by a line on stderr");
    let logged = tail_logs(&docker, late.id(), 10).await.expect("logs");
    assert_eq!(
        logged,
        ["starting", "database system is ready to accept connections"]
    );

    // A line written before anyone watched counts too.
    let early = ServiceContainer::start(
        &docker,
        network.service(
            test,
            "early",
            vec![
                "sh".into(),
                "-c".into(),
                "echo up and ready; exec sleep 1000".into(),
            ],
        ),
    )
    .await
    .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tail_logs(&docker, early.id(), 1)
        .await
        .expect("logs")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the service never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    early
        .wait_ready(
            Some(&Readiness::Log("^up and ready$".into())),
            Duration::from_secs(5),
        )
        .await
        .expect("ready by an earlier line");

    late.stop_and_remove().await.expect("remove");
    early.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn command_readiness_runs_the_check_in_the_container() {
    let Some(docker) = engine().await else { return };
    let test = "svc-command";
    let network = Network::create(&docker, test, 0).await;
    let script = "sleep 1; touch /tmp/ready; exec sleep 1000";
    let service = ServiceContainer::start(
        &docker,
        network.service(test, "cmd", vec!["sh".into(), "-c".into(), script.into()]),
    )
    .await
    .expect("start");
    let check = |path: &str| Readiness::Command(vec!["test".into(), "-e".into(), path.into()]);
    service
        .wait_ready(Some(&check("/tmp/ready")), Duration::from_secs(20))
        .await
        .expect("ready");
    assert_eq!(
        exec_code(&docker, service.id(), &["test", "-e", "/tmp/ready"]).await,
        0,
        "ready only once the file exists"
    );

    // What is tested is the verdict and its reason, not how many tries fit
    // in the time: on a loaded machine the last try may still be running
    // (issue 11 found the 1 s version of this flaky under load).
    let error = service
        .wait_ready(Some(&check("/tmp/never")), Duration::from_secs(5))
        .await
        .unwrap_err();
    let (_, reason, _, _) = not_ready(error);
    let last_try = reason
        .strip_prefix("command `test -e /tmp/never` never exited 0 within 5s (last try: ")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected reason: {reason}"));
    assert!(
        [
            "exited with code 1",
            "it was still running when the time was up"
        ]
        .contains(&last_try),
        "{reason}"
    );

    service.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_readiness_timeout_names_the_service_and_shows_its_log() {
    let Some(docker) = engine().await else { return };
    let test = "svc-timeout";
    let network = Network::create(&docker, test, 0).await;
    let script = "echo db-marker-one; echo db-marker-two >&2; exec sleep 1000";
    let service = ServiceContainer::start(
        &docker,
        network.service(test, "db", vec!["sh".into(), "-c".into(), script.into()]),
    )
    .await
    .expect("start");
    let timeout = Duration::from_millis(1500);
    let begun = Instant::now();
    let error = service
        .wait_ready(Some(&Readiness::Tcp(5432)), timeout)
        .await
        .unwrap_err();
    let took = begun.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "gave up after {took:?}"
    );
    let message = error.to_string();
    let (service_name, reason, waited, last_logs) = not_ready(error);
    assert_eq!(service_name, "db");
    assert!(
        reason.starts_with("tcp port 5432 never accepted a connection within 1.5s (last try: "),
        "{reason}"
    );
    assert!(waited >= timeout, "{waited:?}");
    // stdout and stderr: the engine copies each on its own, so lines
    // written at once may come in either order.
    let mut sorted = last_logs.clone();
    sorted.sort();
    assert_eq!(sorted, ["db-marker-one", "db-marker-two"]);
    assert!(
        message.starts_with("service `db` did not become ready: tcp port 5432"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "the end of its log:\n    {}\n    {}",
            last_logs[0], last_logs[1]
        )),
        "{message}"
    );

    // The same for a log line that never comes.
    let error = service
        .wait_ready(
            Some(&Readiness::Log("never printed".into())),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    let (_, reason, _, _) = not_ready(error);
    assert_eq!(reason, "no log line matched `never printed` within 1s");

    service.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_that_exits_fails_fast_with_its_exit_code() {
    let Some(docker) = engine().await else { return };
    let test = "svc-exits";
    let network = Network::create(&docker, test, 0).await;
    let script = "echo boom-marker >&2; sleep 0.5; exit 3";
    let timeout = Duration::from_secs(60);
    for ready in [
        Some(Readiness::Tcp(5432)),
        Some(http(8080, "/")),
        Some(Readiness::Log("never printed".into())),
        Some(Readiness::Command(vec!["false".into()])),
        Some(Readiness::Command(vec!["sleep".into(), "100".into()])),
    ] {
        let service = ServiceContainer::start(
            &docker,
            network.service(test, "dies", vec!["sh".into(), "-c".into(), script.into()]),
        )
        .await
        .expect("start");
        let begun = Instant::now();
        let error = service
            .wait_ready(ready.as_ref(), timeout)
            .await
            .unwrap_err();
        let took = begun.elapsed();
        assert!(took < Duration::from_secs(10), "{ready:?}: took {took:?}");
        let (service_name, reason, _, last_logs) = not_ready(error);
        assert_eq!(service_name, "dies");
        assert!(
            reason.starts_with("exited with code 3 after "),
            "{ready:?}: {reason}"
        );
        assert_eq!(last_logs, ["boom-marker"], "{ready:?}");
        service.stop_and_remove().await.expect("remove");
    }
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn published_ports_answer_on_this_hosts_loopback() {
    let Some(docker) = engine().await else { return };
    let test = "svc-publish";
    let network = Network::create(&docker, test, 0).await;
    let mut opts = network.service(test, "web", web_server("published", "0"));
    opts.publish = vec![8080];
    let web = ServiceContainer::start(&docker, opts).await.expect("start");
    let port = web.host_port(8080).expect("8080 is published");
    assert_eq!(web.host_port(9999), None);
    web.wait_ready(Some(&http(8080, "/index.html")), Duration::from_secs(20))
        .await
        .expect("ready");
    let answer = get(SocketAddr::from(([127, 0, 0, 1], port)), "/index.html")
        .await
        .expect("GET on the published port");
    assert!(
        answer.contains(" 200 ") && answer.ends_with("published\n"),
        "{answer}"
    );

    web.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn logs_since_a_moment_are_the_lines_written_after_it() {
    let Some(docker) = engine().await else { return };
    let test = "svc-logs-since";
    let network = Network::create(&docker, test, 0).await;
    let script = "echo before; while [ ! -e /tmp/go ]; do usleep 20000; done; \
                  echo after-1; echo after-2; exec sleep 1000";
    let service = ServiceContainer::start(
        &docker,
        network.service(
            test,
            "chatty",
            vec!["sh".into(), "-c".into(), script.into()],
        ),
    )
    .await
    .expect("start");
    service
        .wait_ready(
            Some(&Readiness::Log("^before$".into())),
            Duration::from_secs(20),
        )
        .await
        .expect("said before");
    let moment = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert_eq!(
        exec_code(&docker, service.id(), &["touch", "/tmp/go"]).await,
        0
    );
    service
        .wait_ready(
            Some(&Readiness::Log("^after-2$".into())),
            Duration::from_secs(20),
        )
        .await
        .expect("said after");

    assert_eq!(service.logs_since(moment, 20).await, "after-1\nafter-2");
    assert_eq!(service.logs_since(moment, 1).await, "after-2");
    assert_eq!(
        service.logs_since(0.0, 20).await,
        "before\nafter-1\nafter-2"
    );

    service.stop_and_remove().await.expect("remove");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_carries_its_labels_and_leaves_nothing_behind() {
    let Some(docker) = engine().await else { return };
    let test = "svc-labels";
    let network = Network::create(&docker, test, 0).await;
    let service = ServiceContainer::start(
        &docker,
        network.service(test, "db", vec!["sleep".into(), "1000".into()]),
    )
    .await
    .expect("start");
    assert!(service.name().starts_with("shoal-test-svc-labels-db-"));
    let inspect = docker
        .inspect_container(service.id(), None)
        .await
        .expect("inspect");
    let labels = inspect.config.and_then(|c| c.labels).expect("labels");
    assert_eq!(labels[labels::MANAGED], "1");
    assert_eq!(labels[labels::RUN], run_id(test));
    assert_eq!(labels[labels::SLOT], "0");
    assert_eq!(labels[labels::SERVICE], "db");
    assert_eq!(labels[labels::PID], std::process::id().to_string());

    // Dropped without being removed: removed in the background.
    let dropped = ServiceContainer::start(
        &docker,
        network.service(test, "dropped", vec!["sleep".into(), "1000".into()]),
    )
    .await
    .expect("start");
    let dropped_id = dropped.id().to_owned();
    drop(dropped);

    service.stop_and_remove().await.expect("remove");
    service
        .stop_and_remove()
        .await
        .expect("removing twice is fine");
    let filters = HashMap::from([("label", vec![format!("{}={}", labels::RUN, run_id(test))])]);
    let list = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = docker
            .list_containers(Some(list.clone()))
            .await
            .expect("list");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind (the dropped one is {dropped_id}): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_service_that_cannot_start_leaves_nothing_behind() {
    let Some(docker) = engine().await else { return };
    let test = "svc-no-start";
    let network = Network::create(&docker, test, 0).await;
    let mut missing_image = network.service(test, "db", vec!["true".into()]);
    missing_image.image = "shoal-test/no-such-image:0".into();
    let err = ServiceContainer::start(&docker, missing_image)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("service `db`") && err.to_string().contains("no-such-image"),
        "{err}"
    );
    let bad_command = network.service(test, "db", vec!["/no/such/program".into()]);
    let err = ServiceContainer::start(&docker, bad_command)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("failed to start container"),
        "{err}"
    );

    let filters = HashMap::from([("label", vec![format!("{}={}", labels::RUN, run_id(test))])]);
    let left = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    network.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn readiness_of_a_container_shoal_did_not_create_waits_for_its_healthcheck() {
    let Some(docker) = engine().await else { return };
    // As a compose file would make it: not through ServiceContainer.
    let name = format!("shoal-test-svc-health-{}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_owned()),
        cmd: Some(
            ["sh", "-c", "sleep 1; touch /tmp/healthy; exec sleep 1000"]
                .map(String::from)
                .to_vec(),
        ),
        healthcheck: Some(HealthConfig {
            test: Some(
                ["CMD", "test", "-e", "/tmp/healthy"]
                    .map(String::from)
                    .to_vec(),
            ),
            interval: Some(100_000_000),
            timeout: Some(1_000_000_000),
            retries: Some(100),
            ..Default::default()
        }),
        // Owner labels too, so that the reaper removes it after a panic.
        labels: Some(
            labels::owner_labels()
                .into_iter()
                .chain([
                    (labels::MANAGED.to_owned(), "1".to_owned()),
                    (labels::RUN.to_owned(), run_id("svc-health")),
                ])
                .collect(),
        ),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .expect("create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start");
    let outcome = wait_ready(&docker, &name, "health", None, Duration::from_secs(20)).await;
    let health = docker
        .inspect_container(&created.id, None)
        .await
        .expect("inspect")
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status);
    docker
        .remove_container(
            &created.id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .expect("remove");
    outcome.expect("ready");
    assert_eq!(health, Some(HealthStatusEnum::HEALTHY));
}
