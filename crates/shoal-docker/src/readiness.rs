//! Waiting until a service's container is ready ([`wait_ready`]): running
//! (and healthy), accepting TCP connections, answering HTTP, having logged a
//! line, or passing a command. Works on any container, also those shoal did
//! not create (a compose file's services).
//!
//! Probes go from this host to the container's own IP address, never to a
//! published port: docker-proxy accepts connections on a published port even
//! while nothing in the container listens. The engine must therefore be local
//! (as for slot containers). Probes are retried every 50 ms at first, backing
//! off to 500 ms; a container that stops while being waited for fails the
//! wait at once, with its exit code.

use crate::DockerError;
use crate::logs::{LogFollower, tail_logs};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::WaitContainerOptions;
use shoal_core::environment::Readiness;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;

/// The first pause between probes.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between probes.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// The longest a single TCP or HTTP probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many log lines a [`DockerError::NotReady`] carries.
const LAST_LOG_LINES: usize = 20;
/// How much of an HTTP answer or a command's output is kept.
const MAX_ANSWER: usize = 4096;

/// Waits until `container` (id or name), which runs service `service`, is
/// ready by `ready` (`None`: running, and healthy if its image has a
/// HEALTHCHECK), for at most `timeout`; returns how long that took.
///
/// Fails with [`DockerError::NotReady`] (carrying the container's last log
/// lines) when the time is up or the container stops, and with
/// [`DockerError::Api`] when the engine cannot be asked.
pub async fn wait_ready(
    docker: &Docker,
    container: &str,
    service: &str,
    ready: Option<&Readiness>,
    timeout: Duration,
) -> Result<Duration, DockerError> {
    let waiter = Waiter {
        docker,
        container,
        start: Instant::now(),
        timeout,
    };
    let outcome = match ready {
        Some(Readiness::Log(pattern)) => waiter.log_line(pattern).await,
        _ => waiter.poll(ready).await,
    };
    match outcome {
        Ok(()) => Ok(waiter.start.elapsed()),
        Err(Stop::Api(error)) => Err(error),
        Err(Stop::NotReady(reason)) => {
            let waited = waiter.start.elapsed();
            let last_logs = tail_logs(docker, container, LAST_LOG_LINES)
                .await
                .unwrap_or_else(|e| vec![format!("(its log cannot be read: {e})")]);
            Err(DockerError::NotReady {
                service: service.to_owned(),
                reason,
                waited,
                last_logs,
            })
        }
    }
}

/// Why waiting ended without the service being ready.
enum Stop {
    /// The service failed: it exited, or the time is up.
    NotReady(String),
    /// The engine could not be asked.
    Api(DockerError),
}

/// What the engine says about the container between probes.
struct Observed {
    status: ContainerStateStatusEnum,
    health: Option<HealthStatusEnum>,
    address: Option<IpAddr>,
}

/// One wait for one container.
struct Waiter<'a> {
    docker: &'a Docker,
    container: &'a str,
    start: Instant,
    timeout: Duration,
}

impl Waiter<'_> {
    fn deadline(&self) -> Instant {
        self.start + self.timeout
    }

    /// Probes until ready, the time is up or the container stops.
    async fn poll(&self, ready: Option<&Readiness>) -> Result<(), Stop> {
        if let Some(Readiness::Http { path, .. }) = ready {
            check_path(path)?;
        }
        let mut pause = FIRST_PAUSE;
        // The engine says at once when the container stops, so that a probe
        // or a pause in progress does not delay failing.
        let options = WaitContainerOptions {
            condition: "next-exit".to_owned(),
        };
        let mut stopped = self.docker.wait_container(self.container, Some(options));
        let mut stop_seen = false;
        loop {
            let observed = self.observe().await?;
            let attempt = async {
                let result = if observed.status == ContainerStateStatusEnum::RUNNING {
                    self.probe(ready, &observed).await
                } else {
                    Err(format!("the container is {}", observed.status))
                };
                if result.is_err() {
                    let left = self.deadline().saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                }
                result
            };
            let last_try = tokio::select! {
                result = attempt => match result {
                    Ok(()) => return Ok(()),
                    Err(why) => why,
                },
                _ = stopped.next(), if !stop_seen => {
                    // Whatever the wait says, the next inspect tells.
                    stop_seen = true;
                    continue;
                }
            };
            if Instant::now() >= self.deadline() {
                return Err(Stop::NotReady(format!(
                    "{} within {} (last try: {last_try})",
                    never(ready),
                    seconds(self.timeout)
                )));
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One probe of a running container: `Err(why)` if not ready yet.
    async fn probe(&self, ready: Option<&Readiness>, observed: &Observed) -> Result<(), String> {
        let left = self.deadline().saturating_duration_since(Instant::now());
        let probe_timeout = PROBE_TIMEOUT.min(left).max(Duration::from_millis(1));
        let address = || {
            observed
                .address
                .ok_or_else(|| "the container has no IP address".to_owned())
        };
        match ready {
            None | Some(Readiness::Log(_)) => match observed.health {
                Some(status @ (HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY)) => {
                    Err(format!("its healthcheck says {status}"))
                }
                _ => Ok(()),
            },
            Some(Readiness::Tcp(port)) => {
                tcp_connect(SocketAddr::new(address()?, *port), probe_timeout).await
            }
            Some(Readiness::Http { port, path }) => {
                http_get(SocketAddr::new(address()?, *port), path, probe_timeout).await
            }
            Some(Readiness::Command(argv)) => {
                // A command may take its time (it is the service's own
                // check): it gets what is left of the wait.
                match tokio::time::timeout(left, self.exec(argv)).await {
                    Ok(result) => result,
                    Err(_) => Err("it was still running when the time was up".to_owned()),
                }
            }
        }
    }

    /// Follows the log from its first line until a line matches `pattern`.
    async fn log_line(&self, pattern: &str) -> Result<(), Stop> {
        let regex = regex::Regex::new(pattern).map_err(|e| {
            Stop::NotReady(format!(
                "the log pattern `{pattern}` is not a valid regular expression: {e}"
            ))
        })?;
        let search = async {
            let mut pause = FIRST_PAUSE;
            loop {
                // From the start, so that lines written before now count.
                let mut log = LogFollower::new(self.docker, self.container);
                while let Some(line) = log.next_line().await {
                    match line {
                        Ok(line) if regex.is_match(&line) => {
                            // Stopped right after saying it is ready is not ready.
                            self.observe().await?;
                            return Ok(());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(container = %self.container, "log stream broke off: {e}");
                            break;
                        }
                    }
                }
                // The log ends when the container stops, or at once if it
                // has not started yet.
                self.observe().await?;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        };
        match tokio::time::timeout_at(self.deadline().into(), search).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Stop::NotReady(format!(
                "no log line matched `{pattern}` within {}",
                seconds(self.timeout)
            ))),
        }
    }

    /// The container's state; a stopped container ends the wait.
    async fn observe(&self) -> Result<Observed, Stop> {
        let inspect = match self.docker.inspect_container(self.container, None).await {
            Ok(inspect) => inspect,
            Err(e) if crate::is_not_found(&e) => {
                return Err(Stop::NotReady(format!(
                    "its container `{}` no longer exists",
                    self.container
                )));
            }
            Err(error) => {
                return Err(Stop::Api(DockerError::Api {
                    action: format!("inspect container `{}`", self.container),
                    error,
                }));
            }
        };
        let address = address(&inspect);
        let state = inspect.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        match status {
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                let code = state
                    .exit_code
                    .map_or_else(|| "an unknown code".to_owned(), |c| format!("code {c}"));
                let oom = if state.oom_killed == Some(true) {
                    " (killed at its memory limit)"
                } else {
                    ""
                };
                Err(Stop::NotReady(format!(
                    "exited with {code}{oom} after {}",
                    seconds(self.start.elapsed())
                )))
            }
            ContainerStateStatusEnum::REMOVING => Err(Stop::NotReady(format!(
                "its container `{}` is being removed",
                self.container
            ))),
            _ => Ok(Observed {
                status,
                health: state.health.and_then(|h| h.status),
                address,
            }),
        }
    }

    /// Runs `argv` in the container (no shell): `Ok` if it exits 0.
    async fn exec(&self, argv: &[String]) -> Result<(), String> {
        let options = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(self.container, options)
            .await
            .map_err(|e| format!("cannot run it: {e}"))?;
        let mut output = Vec::new();
        match self.docker.start_exec(&exec.id, None).await {
            Ok(StartExecResults::Attached {
                output: mut stream, ..
            }) => {
                while let Some(frame) = stream.next().await {
                    match frame {
                        Ok(frame) => keep_tail(&mut output, &frame.into_bytes()),
                        Err(e) => return Err(format!("lost its output: {e}")),
                    }
                }
            }
            Ok(StartExecResults::Detached) => {}
            Err(e) => return Err(format!("cannot run it: {e}")),
        }
        // The engine may read the exec as running for a moment after its
        // output has ended.
        let mut pause = Duration::from_millis(5);
        let code = loop {
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| format!("cannot read its exit code: {e}"))?;
            if inspect.running != Some(true) {
                break inspect.exit_code;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        };
        let said = String::from_utf8_lossy(&output);
        let said = said.trim().lines().last().unwrap_or_default();
        match code {
            Some(0) => Ok(()),
            Some(code) if said.is_empty() => Err(format!("exited with code {code}")),
            Some(code) => Err(format!("exited with code {code}: {said}")),
            None => Err("its exit code is unknown".to_owned()),
        }
    }
}

/// What a readiness check that failed until the end never did.
fn never(ready: Option<&Readiness>) -> String {
    match ready {
        None | Some(Readiness::Log(_)) => {
            "the container did not become running and healthy".to_owned()
        }
        Some(Readiness::Tcp(port)) => format!("tcp port {port} never accepted a connection"),
        Some(Readiness::Http { port, path }) => {
            format!("http GET {path} on port {port} never answered 2xx")
        }
        Some(Readiness::Command(argv)) => {
            format!("command `{}` never exited 0", argv.join(" "))
        }
    }
}

/// The container's IP address on one of its networks (this host's loopback
/// for a container on the host's network).
fn address(inspect: &ContainerInspectResponse) -> Option<IpAddr> {
    let host_mode = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some("host");
    if host_mode {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let networks = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| {
        networks[name]
            .ip_address
            .as_deref()
            .and_then(|ip| ip.parse().ok())
    })
}

async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!(
            "connecting to {addr} took over {}",
            seconds(timeout)
        )),
    }
}

/// `GET path` over HTTP/1.0: `Ok` on a 2xx status.
async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: shoal\r\nAccept: */*\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(format!("GET http://{addr}{path}: {e}")),
        Err(_) => {
            return Err(format!(
                "GET http://{addr}{path} took over {}",
                seconds(timeout)
            ));
        }
    };
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default().trim();
    match status_code(status_line) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(_) => Err(format!("GET http://{addr}{path} answered `{status_line}`")),
        None if status_line.is_empty() => Err(format!("GET http://{addr}{path}: no answer")),
        None => Err(format!(
            "GET http://{addr}{path} answered `{status_line}`, which is not HTTP"
        )),
    }
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK`).
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// An HTTP path must be a request target that fits in a request line.
fn check_path(path: &str) -> Result<(), Stop> {
    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Ok(());
    }
    Err(Stop::NotReady(format!(
        "the http readiness path {path:?} is not a request path (one starting with `/`, \
         without spaces)"
    )))
}

/// Appends `bytes`, keeping only the last [`MAX_ANSWER`] bytes.
fn keep_tail(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(bytes);
    let excess = buffer.len().saturating_sub(MAX_ANSWER);
    buffer.drain(..excess);
}

/// `30s`, `0.4s`: whole seconds when whole, else one decimal.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(""), None);
    }

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(seconds(Duration::from_secs(30)), "30s");
        assert_eq!(seconds(Duration::from_millis(400)), "0.4s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::ZERO), "0.0s");
    }

    #[test]
    fn http_paths_must_fit_a_request_line() {
        assert!(check_path("/health?full=1").is_ok());
        assert!(check_path("health").is_err());
        assert!(check_path("/a b").is_err());
        assert!(check_path("/a\r\nX: y").is_err());
    }

    #[test]
    fn what_never_happened_names_the_check() {
        assert_eq!(
            never(Some(&Readiness::Tcp(5432))),
            "tcp port 5432 never accepted a connection"
        );
        assert_eq!(
            never(Some(&Readiness::Http {
                port: 80,
                path: "/ok".into()
            })),
            "http GET /ok on port 80 never answered 2xx"
        );
        assert_eq!(
            never(Some(&Readiness::Command(vec![
                "pg_isready".into(),
                "-q".into()
            ]))),
            "command `pg_isready -q` never exited 0"
        );
    }

    #[test]
    fn kept_output_is_the_end() {
        let mut buffer = vec![b'a'; MAX_ANSWER];
        keep_tail(&mut buffer, b"end");
        assert_eq!(buffer.len(), MAX_ANSWER);
        assert!(buffer.ends_with(b"aend"));
    }
}
