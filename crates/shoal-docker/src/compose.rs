//! A suite's compose file run as a compose project of its own per slot
//! ([`ComposeProject`]), by the compose tool (`docker compose`, else
//! `docker-compose`) as a child process.
//!
//! shoal's labels (managed, run, slot, worker, owner) go onto every
//! container, network and volume of the project through a generated override
//! file, so that the [`reap`](crate::reap)er removes what a killed run left.
//! The services, networks and volumes to label are read from the tool's
//! `config` output; external networks and volumes are not the project's and
//! are left alone. Containers, the default network and health are looked up
//! through the engine by compose's own labels, not derived from names.

use crate::{DockerError, is_not_found, labels, logs};
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptions};
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Compose's labels on what it creates.
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const NUMBER_LABEL: &str = "com.docker.compose.container-number";
const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
const NETWORK_LABEL: &str = "com.docker.compose.network";

/// How many lines of a tool's stderr an error shows.
const STDERR_LINES: usize = 40;
/// How many log lines of a failed service an error shows.
const LOG_LINES: usize = 30;
/// How often [`ComposeProject::wait_healthy`] looks at the containers.
const POLL: Duration = Duration::from_millis(200);

/// How to run a compose file as one slot's project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeOpts {
    /// The compose file.
    pub file: PathBuf,
    /// Project name, unique per run and slot: lowercase `[a-z0-9_-]`,
    /// starting with a letter or digit.
    pub project: String,
    /// Relative paths of the file (build contexts, bind mounts, `.env`)
    /// resolve against this directory.
    pub project_dir: PathBuf,
    /// Caller's labels (see [`labels::run_labels`]); `org.shoal.managed=1`
    /// and the owner labels are always added.
    pub labels: BTreeMap<String, String>,
    /// Environment of the compose tool, for `${VAR}` in the file.
    pub env: BTreeMap<String, String>,
}

/// A running compose project. Stop it with [`down`](ComposeProject::down);
/// dropping it without that runs `down` on a thread of its own (best effort:
/// the reaper removes what a process that exits at once leaves behind).
#[derive(Debug)]
pub struct ComposeProject {
    docker: Docker,
    invocation: Invocation,
    network: String,
    services: Vec<String>,
    /// Service name to its first replica's container id.
    first_containers: BTreeMap<String, String>,
    /// Every container of the project: (service, id).
    containers: Vec<(String, String)>,
    down: AtomicBool,
}

impl ComposeProject {
    /// Starts the project (`up -d`), shoal's labels added; on failure it is
    /// taken down again and the error shows the tool's stderr.
    pub async fn up(docker: &Docker, opts: ComposeOpts) -> Result<ComposeProject, DockerError> {
        check_project_name(&opts.project)?;
        let tool = compose_tool().await?.to_vec();
        let override_dir = tempfile::Builder::new()
            .prefix("shoal-compose-")
            .tempdir()
            .map_err(DockerError::io(
                "create a directory for a compose override file",
            ))?;
        let mut invocation = Invocation {
            tool,
            project: opts.project.clone(),
            project_dir: opts.project_dir.clone(),
            file: opts.file.clone(),
            override_file: None,
            override_dir: Some(override_dir),
            env: opts.env.clone(),
        };

        let config = invocation
            .run(
                &["config"],
                &format!("read the compose file `{}`", opts.file.display()),
            )
            .await?;
        let config = ComposeConfig::parse(&config).map_err(|message| DockerError::Compose {
            project: opts.project.clone(),
            action: format!("read the compose file `{}`", opts.file.display()),
            message,
        })?;
        let labels: BTreeMap<String, String> = labels::complete(&opts.labels).into_iter().collect();
        let override_file = invocation
            .override_dir
            .as_ref()
            .map(|d| d.path().join("shoal-labels.json"))
            .unwrap_or_default();
        let text = serde_json::to_string_pretty(&config.label_override(&labels))
            .map_err(|e| DockerError::io("write a compose override file")(e.into()))?;
        std::fs::write(&override_file, text).map_err(DockerError::io(format!(
            "write `{}`",
            override_file.display()
        )))?;
        invocation.override_file = Some(override_file);

        let mut project = ComposeProject {
            docker: docker.clone(),
            invocation,
            network: String::new(),
            services: config.services.clone(),
            first_containers: BTreeMap::new(),
            containers: Vec::new(),
            down: AtomicBool::new(false),
        };
        let started = async {
            project
                .invocation
                .run(&["up", "-d", "--remove-orphans"], "start the services")
                .await?;
            project.containers = project.find_containers().await?;
            project.first_containers = first_replicas(&project.containers);
            project.network = project.find_network(&config).await?;
            Ok(())
        };
        match started.await {
            Ok(()) => Ok(project),
            Err(e) => {
                if let Err(down) = project.down().await {
                    tracing::warn!(project = %opts.project, "failed to take down a project that did not start: {down}");
                }
                Err(e)
            }
        }
    }

    /// The project's name.
    pub fn name(&self) -> &str {
        &self.invocation.project
    }

    /// The project's default network (as the engine names it), to attach
    /// the slot's test container to; if the services use no default
    /// network, the first network (by name) their containers are on.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The services of the compose file, sorted.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// The container id of `service`'s first replica, if it has one.
    pub fn container_of(&self, service: &str) -> Option<&str> {
        self.first_containers.get(service).map(String::as_str)
    }

    /// Waits until every container of the project is ready: running, and
    /// `healthy` if it has a healthcheck (one that exited with status 0 is
    /// done, not failed). A container that exited non-zero or turned
    /// unhealthy fails at once with its last log lines; so does the timeout,
    /// naming what it was waiting for.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), DockerError> {
        let started = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for (service, id) in &self.containers {
                match self.readiness(id).await? {
                    Readiness::Ready => {}
                    Readiness::Waiting(why) => waiting.push((service, id, why)),
                    Readiness::Failed(reason) => {
                        return Err(self.not_ready(service, id, reason, started).await);
                    }
                }
            }
            let Some((service, id, why)) = waiting.first() else {
                return Ok(());
            };
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                let mut reason = format!("it is still {why} after {:.1}s", elapsed.as_secs_f64());
                for (other, _, why) in &waiting[1..] {
                    reason.push_str(&format!("; service `{other}` is still {why}"));
                }
                return Err(self.not_ready(service, id, reason, started).await);
            }
            tokio::time::sleep(POLL.min(timeout - elapsed)).await;
        }
    }

    /// The last `max_lines` lines `service` (its first replica) wrote to
    /// stdout and stderr at or after `since_unix` (seconds since the epoch);
    /// a note in parentheses if they cannot be read.
    pub async fn logs_since(&self, service: &str, since_unix: f64, max_lines: usize) -> String {
        let Some(id) = self.container_of(service) else {
            return format!(
                "(service `{service}` has no container in compose project `{}`)",
                self.name()
            );
        };
        match logs::logs_since(&self.docker, id, since_unix, max_lines).await {
            Ok(lines) => lines.join("\n"),
            Err(e) => format!("(cannot read the logs of service `{service}`: {e})"),
        }
    }

    /// Removes the project's containers (killed, not stopped gracefully:
    /// their data is thrown away anyway), networks and volumes (`down -v`).
    /// Calling it again is fine. Containers of the caller attached to the
    /// project's network must be removed or disconnected first.
    pub async fn down(&self) -> Result<(), DockerError> {
        self.invocation
            .run(
                &["down", "--volumes", "--remove-orphans", "--timeout", "0"],
                "take down",
            )
            .await?;
        self.down.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn readiness(&self, id: &str) -> Result<Readiness, DockerError> {
        let info = match self.docker.inspect_container(id, None).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                return Ok(Readiness::Failed("its container was removed".to_owned()));
            }
            Err(error) => {
                return Err(DockerError::Api {
                    action: format!("inspect container `{id}`"),
                    error,
                });
            }
        };
        let state = info.state.unwrap_or_default();
        let status = state.status.map(|s| s.to_string()).unwrap_or_default();
        let exit_code = state.exit_code.unwrap_or(0);
        let health = state
            .health
            .and_then(|h| Some((h.status?.to_string(), h.log.unwrap_or_default())));
        Ok(match (status.as_str(), health) {
            ("exited" | "dead", _) if exit_code != 0 => {
                Readiness::Failed(format!("it exited with status {exit_code}"))
            }
            ("exited", _) => Readiness::Ready,
            ("dead", _) => Readiness::Failed("its container is dead".to_owned()),
            ("running", Some((health, log))) if health == "unhealthy" => {
                let last = log
                    .last()
                    .and_then(|l| l.output.as_deref())
                    .map(str::trim)
                    .unwrap_or_default();
                Readiness::Failed(format!("its healthcheck failed: {last}"))
            }
            ("running", Some((health, _))) if health == "starting" => {
                Readiness::Waiting("starting (healthcheck not passed yet)".to_owned())
            }
            ("running", _) => Readiness::Ready,
            ("restarting", _) => {
                Readiness::Waiting(format!("restarting (last exit status {exit_code})"))
            }
            (other, _) => Readiness::Waiting(format!("`{other}`")),
        })
    }

    async fn not_ready(
        &self,
        service: &str,
        id: &str,
        reason: String,
        started: Instant,
    ) -> DockerError {
        let last_logs = logs::tail_logs(&self.docker, id, LOG_LINES)
            .await
            .unwrap_or_else(|e| vec![format!("(cannot read its logs: {e})")]);
        DockerError::NotReady {
            service: service.to_owned(),
            reason: format!("{reason} (compose project `{}`)", self.name()),
            waited: started.elapsed(),
            last_logs,
        }
    }

    /// The project's containers, by compose's labels: (service, id), sorted
    /// by service and replica number.
    async fn find_containers(&self) -> Result<Vec<(String, String)>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{PROJECT_LABEL}={}", self.name()),
                format!("{ONEOFF_LABEL}=False"),
            ],
        )]);
        let listed = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(DockerError::api(format!(
                "list the containers of compose project `{}`",
                self.name()
            )))?;
        let mut found: Vec<(String, u64, String)> = listed
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let service = labels.get(SERVICE_LABEL)?.clone();
                let number = labels
                    .get(NUMBER_LABEL)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                Some((service, number, c.id?))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(s, _, id)| (s, id)).collect())
    }

    /// The default network as the engine names it; else the external
    /// network the file names as default; else the first network the
    /// containers are on.
    async fn find_network(&self, config: &ComposeConfig) -> Result<String, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{PROJECT_LABEL}={}", self.name()),
                format!("{NETWORK_LABEL}=default"),
            ],
        )]);
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(DockerError::api(format!(
                "list the networks of compose project `{}`",
                self.name()
            )))?;
        if let Some(name) = networks.into_iter().find_map(|n| n.name) {
            return Ok(name);
        }
        if let Some(name) = &config.external_default_network {
            return Ok(name.clone());
        }
        let mut attached = Vec::new();
        for (_, id) in &self.containers {
            let info = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(DockerError::api(format!("inspect container `{id}`")))?;
            attached.extend(
                info.network_settings
                    .and_then(|s| s.networks)
                    .unwrap_or_default()
                    .into_keys(),
            );
        }
        attached.sort();
        attached
            .into_iter()
            .next()
            .ok_or_else(|| DockerError::Compose {
                project: self.name().to_owned(),
                action: "find the network".to_owned(),
                message: "it has no default network and its containers are on none".to_owned(),
            })
    }
}

impl Drop for ComposeProject {
    /// Takes the project down in the background if [`down`] was not called.
    ///
    /// [`down`]: ComposeProject::down
    fn drop(&mut self) {
        if self.down.load(Ordering::SeqCst) {
            return;
        }
        let mut invocation = self.invocation.clone_args();
        invocation.override_dir = self.invocation.override_dir.take();
        let project = invocation.project.clone();
        let spawned = std::thread::Builder::new()
            .name("shoal-compose-down".to_owned())
            .spawn(move || {
                let args = ["down", "--volumes", "--remove-orphans", "--timeout", "0"];
                let mut command = std::process::Command::new(&invocation.tool[0]);
                command
                    .args(invocation.argv(&args))
                    .envs(&invocation.env)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                match command.output() {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => tracing::warn!(
                        project = %invocation.project,
                        "failed to take down a dropped compose project: {}",
                        tail(&String::from_utf8_lossy(&out.stderr))
                    ),
                    Err(e) => tracing::warn!(
                        project = %invocation.project,
                        "failed to take down a dropped compose project: {e}"
                    ),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(project = %project, "cannot take down a dropped compose project: {e}");
        }
    }
}

enum Readiness {
    Ready,
    Waiting(String),
    Failed(String),
}

/// How the compose tool is run for one project.
#[derive(Debug)]
struct Invocation {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    tool: Vec<String>,
    project: String,
    project_dir: PathBuf,
    file: PathBuf,
    /// The generated labels override, once written.
    override_file: Option<PathBuf>,
    /// Holds the override file.
    override_dir: Option<tempfile::TempDir>,
    env: BTreeMap<String, String>,
}

impl Invocation {
    /// Everything but the override directory.
    fn clone_args(&self) -> Invocation {
        Invocation {
            tool: self.tool.clone(),
            project: self.project.clone(),
            project_dir: self.project_dir.clone(),
            file: self.file.clone(),
            override_file: self.override_file.clone(),
            override_dir: None,
            env: self.env.clone(),
        }
    }

    /// The arguments after the program: the tool's subcommand if any, the
    /// project, directory and files, then `args`.
    fn argv(&self, args: &[&str]) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = self.tool[1..].iter().map(Into::into).collect();
        argv.extend(["-p".into(), self.project.clone().into()]);
        argv.extend([
            "--project-directory".into(),
            self.project_dir.clone().into_os_string(),
        ]);
        argv.extend(["-f".into(), self.file.clone().into_os_string()]);
        if let Some(file) = &self.override_file {
            argv.extend(["-f".into(), file.clone().into_os_string()]);
        }
        argv.extend(args.iter().map(Into::into));
        argv
    }

    /// Runs the tool with `args`; its stdout, or an error showing its stderr.
    async fn run(&self, args: &[&str], action: &str) -> Result<String, DockerError> {
        let output = Command::new(&self.tool[0])
            .args(self.argv(args))
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(DockerError::io(format!("run `{}`", self.tool.join(" "))))?;
        if !output.status.success() {
            return Err(DockerError::Compose {
                project: self.project.clone(),
                action: action.to_owned(),
                message: format!(
                    "`{} {}` failed ({}):\n{}",
                    self.tool.join(" "),
                    args.join(" "),
                    output.status,
                    tail(&String::from_utf8_lossy(&output.stderr))
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The last [`STDERR_LINES`] lines of `text`, trimmed.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n")
}

/// The compose tool of this machine: the v2 plugin if `docker compose
/// version` works, else `docker-compose` (v1). Looked up once.
async fn compose_tool() -> Result<&'static [String], DockerError> {
    static TOOL: OnceCell<Option<Vec<String>>> = OnceCell::const_new();
    let tool = TOOL
        .get_or_init(|| async {
            for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
                let works = Command::new(candidate[0])
                    .args(&candidate[1..])
                    .arg("version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success());
                if works {
                    return Some(candidate.iter().map(|s| (*s).to_owned()).collect());
                }
            }
            None
        })
        .await;
    tool.as_deref().ok_or(DockerError::ComposeMissing)
}

/// Compose project names: lowercase letters, digits, `_` and `-`, starting
/// with a letter or digit.
fn check_project_name(name: &str) -> Result<(), DockerError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(DockerError::Compose {
            project: name.to_owned(),
            action: "name the project".to_owned(),
            message: "a project name is lowercase letters, digits, `_` and `-`, starting with a letter or digit".to_owned(),
        })
    }
}

/// What `<tool> config` says about a compose file.
#[derive(Debug, Default, PartialEq)]
struct ComposeConfig {
    /// The file format version (`version:`), if the tool prints one.
    version: Option<String>,
    services: Vec<String>,
    /// Networks the project creates, `default` included if declared.
    networks: Vec<String>,
    volumes: Vec<String>,
    /// Whether the file declares the default network external.
    default_external: bool,
    /// The name of that external default network.
    external_default_network: Option<String>,
}

impl ComposeConfig {
    fn parse(yaml: &str) -> Result<ComposeConfig, String> {
        let doc: Value = serde_yaml::from_str(yaml)
            .map_err(|e| format!("cannot parse the output of `config`: {e}"))?;
        let keys = |section: &str| -> Vec<(String, Value)> {
            doc.get(section)
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let external = |v: &Value| {
            v.get("external")
                .is_some_and(|e| e.as_bool().unwrap_or(!e.is_null()))
        };
        let mut config = ComposeConfig {
            version: doc.get("version").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            ..Default::default()
        };
        config.services = keys("services").into_iter().map(|(k, _)| k).collect();
        config.services.sort();
        if config.services.is_empty() {
            return Err("the compose file has no services".to_owned());
        }
        for (name, value) in keys("networks") {
            if name == "default" && external(&value) {
                config.default_external = true;
                config.external_default_network = value
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        value
                            .get("external")
                            .and_then(|e| e.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
            } else if !external(&value) {
                config.networks.push(name);
            }
        }
        config.volumes = keys("volumes")
            .into_iter()
            .filter(|(_, v)| !external(v))
            .map(|(k, _)| k)
            .collect();
        Ok(config)
    }

    /// An override file (JSON, which is YAML) adding `labels` to every
    /// service, the default network and every network and volume the
    /// project creates.
    fn label_override(&self, labels: &BTreeMap<String, String>) -> serde_json::Value {
        let labelled = |names: &mut dyn Iterator<Item = &String>| -> serde_json::Value {
            names
                .map(|n| (n.clone(), serde_json::json!({ "labels": labels })))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let mut networks: Vec<&String> = self.networks.iter().collect();
        let default = "default".to_owned();
        if !self.default_external && !self.networks.contains(&default) {
            networks.push(&default);
        }
        let mut out = serde_json::Map::new();
        if let Some(version) = &self.version {
            out.insert("version".into(), version.clone().into());
        }
        out.insert("services".into(), labelled(&mut self.services.iter()));
        out.insert("networks".into(), labelled(&mut networks.into_iter()));
        if !self.volumes.is_empty() {
            out.insert("volumes".into(), labelled(&mut self.volumes.iter()));
        }
        out.into()
    }
}

/// Service to the id of its lowest-numbered replica (`containers` is sorted).
fn first_replicas(containers: &[(String, String)]) -> BTreeMap<String, String> {
    let mut first = BTreeMap::new();
    for (service, id) in containers {
        first.entry(service.clone()).or_insert_with(|| id.clone());
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_CONFIG: &str = "\
networks:
  extra: {}
  outside:
    external: true
    name: corp
services:
  web:
    image: busybox
  idle:
    image: busybox
version: '3.9'
volumes:
  data: {}
  shared:
    external: true
";

    #[test]
    fn config_output_yields_services_and_the_projects_own_networks_and_volumes() {
        let config = ComposeConfig::parse(V1_CONFIG).expect("parse");
        assert_eq!(config.version.as_deref(), Some("3.9"));
        assert_eq!(config.services, ["idle", "web"]);
        assert_eq!(config.networks, ["extra"]);
        assert_eq!(config.volumes, ["data"]);
        assert!(!config.default_external);
    }

    #[test]
    fn the_override_labels_services_the_default_network_and_owned_volumes() {
        let config = ComposeConfig::parse(V1_CONFIG).expect("parse");
        let labels = BTreeMap::from([("org.shoal.run".to_owned(), "r1".to_owned())]);
        let json = config.label_override(&labels);
        let want = serde_json::json!({ "labels": { "org.shoal.run": "r1" } });
        assert_eq!(json["version"], "3.9");
        assert_eq!(json["services"]["web"], want);
        assert_eq!(json["services"]["idle"], want);
        assert_eq!(json["networks"]["default"], want);
        assert_eq!(json["networks"]["extra"], want);
        assert!(json["networks"].get("outside").is_none());
        assert_eq!(json["volumes"]["data"], want);
        assert!(json["volumes"].get("shared").is_none());
    }

    #[test]
    fn an_external_default_network_is_not_labelled_but_remembered() {
        let config = ComposeConfig::parse(
            "services:\n  a: {image: x}\nnetworks:\n  default:\n    external: true\n    name: bridge\n",
        )
        .expect("parse");
        assert!(config.default_external);
        assert_eq!(config.external_default_network.as_deref(), Some("bridge"));
        let json = config.label_override(&BTreeMap::new());
        assert!(json["networks"].get("default").is_none());
        assert!(json.get("version").is_none());
        assert!(json.get("volumes").is_none());
    }

    #[test]
    fn a_file_without_services_is_refused() {
        let err = ComposeConfig::parse("version: '3'\n").expect_err("no services");
        assert!(err.contains("no services"), "{err}");
    }

    #[test]
    fn project_names_are_checked() {
        assert!(check_project_name("shoal-r1_s0").is_ok());
        assert!(check_project_name("0abc").is_ok());
        for bad in ["", "Upper", "-lead", "sp ace", "dot.ted"] {
            let err = check_project_name(bad).expect_err(bad);
            assert!(err.to_string().contains("lowercase"), "{err}");
        }
    }

    #[test]
    fn first_replicas_are_the_lowest_numbered() {
        let containers = [
            ("db".to_owned(), "d1".to_owned()),
            ("web".to_owned(), "w1".to_owned()),
            ("web".to_owned(), "w2".to_owned()),
        ];
        let first = first_replicas(&containers);
        assert_eq!(first["web"], "w1");
        assert_eq!(first["db"], "d1");
    }

    #[test]
    fn the_tools_stderr_is_cut_to_its_end() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let cut = tail(&long);
        assert_eq!(cut.lines().count(), STDERR_LINES);
        assert!(cut.ends_with("line 99"));
    }
}
