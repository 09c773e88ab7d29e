//! A suite's container environment and its per-slot services, as
//! `shoal.toml` writes them (`[suites.NAME.environment]`,
//! `[suites.NAME.services.SERVICE]`, `[suites.NAME.services] compose = ...`)
//! and as the engine uses them once resolved. Validation happens here so a
//! mistake points at its file:line:col.

use crate::config::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Where the workspace is mounted in the container unless `workdir` says.
pub const DEFAULT_WORKDIR: &str = "/workspace";
/// How long a service may take to become ready unless `ready.timeout` says.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `[suites.NAME.environment]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSection {
    pub image: Option<Spanned<String>>,
    pub dockerfile: Option<Spanned<PathBuf>>,
    /// Build context of `dockerfile` (default: the project root).
    pub context: Option<PathBuf>,
    /// `slot` (one container per slot, the default) or `batch`.
    pub isolation: Option<Spanned<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub cpus: Option<Spanned<f64>>,
    pub memory: Option<ByteSize>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[suites.NAME.services]` as written: `compose = "path"` and/or one table
/// per service.
#[derive(Debug, Default)]
pub struct ServicesSection {
    pub compose: Option<Spanned<PathBuf>>,
    pub services: BTreeMap<String, Spanned<ServiceSection>>,
}

// By hand, not `#[serde(flatten)]`: flattening buffers the values, and
// buffered values lose the spans errors point at.
impl<'de> Deserialize<'de> for ServicesSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ServicesSection;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`compose = \"path\"` and/or one table per service")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ServicesSection, A::Error> {
                let mut out = ServicesSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "compose" {
                        out.compose = Some(map.next_value()?);
                    } else {
                        let service = map.next_value()?;
                        out.services.insert(key, service);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `[suites.NAME.services.SERVICE]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub image: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub ready: Option<Spanned<ReadySection>>,
    pub memory: Option<ByteSize>,
    /// Container ports published on this host's loopback (random host
    /// ports), for tests and hooks that run outside containers.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `"host:container"` or `"host:container:ro"`; host paths are relative
    /// to the project root.
    #[serde(default)]
    pub volumes: Vec<Spanned<String>>,
}

/// `ready = { ... }` as written: exactly one of `tcp`, `http`, `log`,
/// `command`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadySection {
    /// A TCP port that accepts a connection.
    pub tcp: Option<u16>,
    /// An HTTP path answering 2xx on `port`.
    pub http: Option<String>,
    pub port: Option<u16>,
    /// A regular expression a line of the service's log matches.
    pub log: Option<Spanned<String>>,
    /// A command run in the service's container that exits 0.
    pub command: Option<Vec<String>>,
    pub timeout: Option<HumanDuration>,
}

/// The image a suite's tests run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An image by name, e.g. `python:3.12` (must exist on, or be pullable
    /// by, the engine).
    Image(String),
    /// Built from a Dockerfile (absolute path) and context directory,
    /// cached by a digest of the context.
    Dockerfile { path: PathBuf, context: PathBuf },
}

/// How long a test container lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// One container per slot for the whole run; batches run inside it.
    #[default]
    Slot,
    /// A fresh container per batch.
    Batch,
}

/// A suite's resolved container environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub image: ImageSource,
    pub isolation: Isolation,
    /// Where the workspace is mounted (and the tests' working directory).
    pub workdir: String,
    pub user: Option<String>,
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub env: BTreeMap<String, String>,
}

/// When a service counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Tcp(u16),
    Http {
        port: u16,
        path: String,
    },
    /// A regular expression (validated) matched against log lines.
    Log(String),
    Command(Vec<String>),
}

/// A host directory mounted into a service's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute path in the container.
    pub container: String,
    pub read_only: bool,
}

/// One per-slot service, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// `None`: a service of the suite's compose file, for which this table
    /// only adds a readiness check.
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub ready: Option<Readiness>,
    pub ready_timeout: Duration,
    pub memory: Option<u64>,
    /// Container ports published on this host's loopback; readiness ports
    /// are published too.
    pub ports: Vec<u16>,
    pub volumes: Vec<Volume>,
}

impl Service {
    /// Every container port to publish: `ports` and the readiness port.
    pub fn published_ports(&self) -> Vec<u16> {
        let mut ports = self.ports.clone();
        match self.ready {
            Some(Readiness::Tcp(p)) | Some(Readiness::Http { port: p, .. }) => ports.push(p),
            _ => {}
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// A suite's per-slot services, resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Services {
    /// A compose file (absolute path), run as its own project per slot.
    pub compose: Option<PathBuf>,
    pub services: Vec<Service>,
}

impl Services {
    pub fn is_empty(&self) -> bool {
        self.compose.is_none() && self.services.is_empty()
    }
}

/// A validation failure: message, label, span, help.
pub(crate) type Invalid = (
    String,
    String,
    Option<std::ops::Range<usize>>,
    Option<String>,
);

fn invalid(
    message: impl Into<String>,
    label: &str,
    span: Option<std::ops::Range<usize>>,
    help: Option<&str>,
) -> Invalid {
    (
        message.into(),
        label.to_owned(),
        span,
        help.map(str::to_owned),
    )
}

/// Resolves `[suites.NAME.environment]`; relative paths are against `root`.
pub(crate) fn resolve_environment(
    suite: &str,
    section: &Spanned<EnvironmentSection>,
    root: &std::path::Path,
) -> Result<Environment, Invalid> {
    let e = section.get_ref();
    let image = match (&e.image, &e.dockerfile) {
        (Some(image), None) => {
            if image.get_ref().trim().is_empty() {
                return Err(invalid(
                    format!("suite `{suite}`: `environment.image` is empty"),
                    "empty",
                    Some(image.span()),
                    None,
                ));
            }
            ImageSource::Image(image.get_ref().clone())
        }
        (None, Some(file)) => ImageSource::Dockerfile {
            path: root.join(file.get_ref()),
            context: root.join(e.context.clone().unwrap_or_default()),
        },
        (Some(_), Some(file)) => {
            return Err(invalid(
                format!(
                    "suite `{suite}`: give `environment.image` or `environment.dockerfile`, not both"
                ),
                "second image source",
                Some(file.span()),
                None,
            ));
        }
        (None, None) => {
            return Err(invalid(
                format!("suite `{suite}`: `environment` needs `image` or `dockerfile`"),
                "this environment",
                Some(section.span()),
                Some("e.g. `image = \"python:3.12\"` or `dockerfile = \"ci/test.Dockerfile\"`"),
            ));
        }
    };
    let isolation = match &e.isolation {
        None => Isolation::Slot,
        Some(v) => match v.get_ref().as_str() {
            "slot" => Isolation::Slot,
            "batch" => Isolation::Batch,
            other => {
                return Err(invalid(
                    format!("`isolation` must be \"slot\" or \"batch\", not {other:?}"),
                    "unknown value",
                    Some(v.span()),
                    None,
                ));
            }
        },
    };
    if let Some(c) = &e.cpus {
        if c.get_ref().is_nan() || *c.get_ref() <= 0.0 {
            return Err(invalid(
                "`cpus` must be more than 0",
                "not positive",
                Some(c.span()),
                Some("e.g. `cpus = 1.5`"),
            ));
        }
    }
    let workdir = e
        .workdir
        .clone()
        .unwrap_or_else(|| DEFAULT_WORKDIR.to_owned());
    if !workdir.starts_with('/') {
        return Err(invalid(
            format!(
                "suite `{suite}`: `environment.workdir` must be an absolute path in the container, not {workdir:?}"
            ),
            "relative path",
            Some(section.span()),
            None,
        ));
    }
    Ok(Environment {
        image,
        isolation,
        workdir,
        user: e.user.clone(),
        cpus: e.cpus.as_ref().map(|c| *c.get_ref()),
        memory: e.memory.as_ref().map(|m| m.0),
        env: e.env.clone(),
    })
}

/// Resolves `[suites.NAME.services]`.
pub(crate) fn resolve_services(
    suite: &str,
    s: &ServicesSection,
    root: &std::path::Path,
) -> Result<Services, Invalid> {
    let mut services = Vec::new();
    for (name, spanned) in &s.services {
        if !valid_name(name) {
            return Err(invalid(
                format!("service name {name:?} is not a valid host name"),
                "this service",
                Some(spanned.span()),
                Some("use letters, digits and `-` (it is how tests reach the service)"),
            ));
        }
        let svc = spanned.get_ref();
        if svc.image.is_none() && s.compose.is_none() {
            return Err(invalid(
                format!("suite `{suite}`: service `{name}` has no `image`"),
                "this service",
                Some(spanned.span()),
                Some(
                    "e.g. `image = \"postgres:16\"` (without an image, the table names a service of `services.compose`)",
                ),
            ));
        }
        if svc.image.is_none()
            && (svc.command.is_some() || !svc.env.is_empty() || !svc.volumes.is_empty())
        {
            return Err(invalid(
                format!(
                    "suite `{suite}`: service `{name}` has no `image`, so it is a service of the compose file; set its command, env and volumes there"
                ),
                "this service",
                Some(spanned.span()),
                None,
            ));
        }
        let mut volumes = Vec::new();
        for v in &svc.volumes {
            volumes.push(resolve_volume(name, v, root)?);
        }
        let (ready, ready_timeout) = match &svc.ready {
            None => (None, DEFAULT_READY_TIMEOUT),
            Some(r) => {
                let (ready, timeout) = resolve_ready(name, r)?;
                (Some(ready), timeout)
            }
        };
        services.push(Service {
            name: name.clone(),
            image: svc.image.as_ref().map(|i| i.get_ref().clone()),
            env: svc.env.clone(),
            command: svc.command.clone(),
            ready,
            ready_timeout,
            memory: svc.memory.as_ref().map(|m| m.0),
            ports: svc.ports.clone(),
            volumes,
        });
    }
    Ok(Services {
        compose: s.compose.as_ref().map(|c| root.join(c.get_ref())),
        services,
    })
}

/// `"host:container"` or `"host:container:ro"` (or `:rw`).
fn resolve_volume(
    service: &str,
    v: &Spanned<String>,
    root: &std::path::Path,
) -> Result<Volume, Invalid> {
    let bad = |why: &str| {
        invalid(
            format!("service `{service}`: volume {:?} {why}", v.get_ref()),
            "this volume",
            Some(v.span()),
            Some("e.g. `volumes = [\"server:/srv:ro\"]` (host path relative to the project root)"),
        )
    };
    let parts: Vec<&str> = v.get_ref().split(':').collect();
    let (host, container, read_only) = match parts[..] {
        [h, c] => (h, c, false),
        [h, c, "ro"] => (h, c, true),
        [h, c, "rw"] => (h, c, false),
        [_, _, _] => return Err(bad("ends in neither `:ro` nor `:rw`")),
        _ => return Err(bad("is not `host:container[:ro]`")),
    };
    if host.is_empty() {
        return Err(bad("has an empty host path"));
    }
    if !container.starts_with('/') {
        return Err(bad("needs an absolute container path"));
    }
    Ok(Volume {
        host: root.join(host),
        container: container.to_owned(),
        read_only,
    })
}

fn resolve_ready(
    service: &str,
    r: &Spanned<ReadySection>,
) -> Result<(Readiness, Duration), Invalid> {
    let ready = r.get_ref();
    let given = [
        ready.tcp.is_some(),
        ready.http.is_some(),
        ready.log.is_some(),
        ready.command.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(invalid(
            format!(
                "service `{service}`: `ready` needs exactly one of `tcp`, `http`, `log`, `command`"
            ),
            "readiness check",
            Some(r.span()),
            Some(
                "e.g. `ready = { tcp = 5432 }`, `ready = { http = \"/health\", port = 8080 }`, `ready = { log = \"ready to accept\" }`",
            ),
        ));
    }
    let check = if let Some(port) = ready.tcp {
        Readiness::Tcp(port)
    } else if let Some(path) = &ready.http {
        let Some(port) = ready.port else {
            return Err(invalid(
                format!("service `{service}`: an `http` readiness check needs `port`"),
                "readiness check",
                Some(r.span()),
                None,
            ));
        };
        let path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        Readiness::Http { port, path }
    } else if let Some(log) = &ready.log {
        if let Err(e) = regex::Regex::new(log.get_ref()) {
            return Err(invalid(
                format!("service `{service}`: `ready.log` is not a valid regular expression: {e}"),
                "bad regular expression",
                Some(log.span()),
                None,
            ));
        }
        Readiness::Log(log.get_ref().clone())
    } else {
        let command = ready.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(invalid(
                format!("service `{service}`: `ready.command` is empty"),
                "readiness check",
                Some(r.span()),
                None,
            ));
        }
        Readiness::Command(command)
    };
    Ok((
        check,
        ready
            .timeout
            .as_ref()
            .map_or(DEFAULT_READY_TIMEOUT, |t| t.0),
    ))
}

/// A DNS label: what a service is reached by on the slot's network.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, Box<ConfigError>> {
        Config::parse("shoal.toml", text, Path::new("/proj"))
    }

    const SUITE: &str = "[suites.api]\nadapter = \"pytest\"\n";

    #[test]
    fn an_environment_and_services_resolve() {
        let c = parse(&format!(
            "{SUITE}[suites.api.environment]\nimage = \"python:3.12\"\nisolation = \"batch\"\ncpus = 1.5\nmemory = \"512MiB\"\nuser = \"1000\"\nenv = {{ A = \"1\" }}\n\
             [suites.api.services.db]\nimage = \"postgres:16\"\nenv = {{ POSTGRES_PASSWORD = \"x\" }}\nready = {{ tcp = 5432, timeout = \"30s\" }}\n\
             [suites.api.services.web]\nimage = \"web:1\"\ncommand = [\"serve\", \"--port\", \"8080\"]\nready = {{ http = \"health\", port = 8080 }}\n"
        ))
        .unwrap();
        let s = &c.suites[0];
        let env = s.environment.as_ref().unwrap();
        assert_eq!(env.image, ImageSource::Image("python:3.12".into()));
        assert_eq!(env.isolation, Isolation::Batch);
        assert_eq!(env.workdir, DEFAULT_WORKDIR);
        assert_eq!(env.cpus, Some(1.5));
        assert_eq!(env.memory, Some(512 * 1024 * 1024));
        assert_eq!(env.user.as_deref(), Some("1000"));
        let names: Vec<&str> = s
            .services
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(s.services.services[0].ready, Some(Readiness::Tcp(5432)));
        assert_eq!(
            s.services.services[0].ready_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(
            s.services.services[1].ready,
            Some(Readiness::Http {
                port: 8080,
                path: "/health".into()
            })
        );
        assert_eq!(s.services.services[1].ready_timeout, DEFAULT_READY_TIMEOUT);
    }

    #[test]
    fn a_dockerfile_and_a_compose_file_resolve_against_the_root() {
        let c = parse(&format!(
            "{SUITE}[suites.api.environment]\ndockerfile = \"ci/test.Dockerfile\"\ncontext = \"ci\"\n[suites.api.services]\ncompose = \"ci/compose.yml\"\n"
        ))
        .unwrap();
        let s = &c.suites[0];
        assert_eq!(
            s.environment.as_ref().unwrap().image,
            ImageSource::Dockerfile {
                path: "/proj/ci/test.Dockerfile".into(),
                context: "/proj/ci".into()
            }
        );
        assert_eq!(
            s.services.compose.as_deref(),
            Some(Path::new("/proj/ci/compose.yml"))
        );
        assert!(s.services.services.is_empty());
        assert!(parse(SUITE).unwrap().suites[0].services.is_empty());
    }

    #[test]
    fn service_ports_volumes_and_compose_services_resolve() {
        let c = parse(&format!(
            "{SUITE}[suites.api.services]\ncompose = \"compose.yml\"\n\
             [suites.api.services.db]\nready = {{ tcp = 5432 }}\n\
             [suites.api.services.web]\nimage = \"web:1\"\nports = [9000, 8080]\nvolumes = [\"srv:/srv:ro\", \"/data:/data\"]\nready = {{ http = \"/\", port = 8080 }}\n"
        ))
        .unwrap();
        let s = &c.suites[0].services.services;
        assert_eq!(s[0].image, None);
        assert_eq!(s[0].published_ports(), [5432]);
        assert_eq!(s[1].published_ports(), [8080, 9000]);
        assert_eq!(
            s[1].volumes,
            [
                Volume {
                    host: "/proj/srv".into(),
                    container: "/srv".into(),
                    read_only: true
                },
                Volume {
                    host: "/data".into(),
                    container: "/data".into(),
                    read_only: false
                }
            ]
        );
    }

    #[track_caller]
    fn error_at(text: &str, needle: &str, line: usize) {
        let e = parse(&format!("{SUITE}{text}")).unwrap_err();
        assert!(
            e.message.contains(needle),
            "{:?} lacks {needle:?}",
            e.message
        );
        assert_eq!(e.line_col().map(|(l, _)| l), Some(line), "{}", e.message);
    }

    #[test]
    fn mistakes_point_at_their_line() {
        error_at(
            "[suites.api.environment]\nisolation = \"slot\"\n",
            "needs `image` or `dockerfile`",
            3,
        );
        error_at(
            "[suites.api.environment]\nimage = \"a\"\ndockerfile = \"b\"\n",
            "not both",
            5,
        );
        error_at(
            "[suites.api.environment]\nimage = \"a\"\nisolation = \"run\"\n",
            "isolation",
            5,
        );
        error_at(
            "[suites.api.environment]\nimage = \"a\"\ncpus = 0\n",
            "cpus",
            5,
        );
        error_at("[suites.api.services.db]\nenv = {}\n", "has no `image`", 3);
        error_at(
            "[suites.api.services.db]\nimage = \"p\"\nready = { tcp = 1, log = \"x\" }\n",
            "exactly one of",
            5,
        );
        error_at(
            "[suites.api.services.db]\nimage = \"p\"\nready = { log = \"(unclosed\" }\n",
            "regular expression",
            5,
        );
        error_at(
            "[suites.api.services.db]\nimage = \"p\"\nready = { http = \"/\" }\n",
            "needs `port`",
            5,
        );
        error_at(
            "[suites.api.services.\"my_db\"]\nimage = \"p\"\n",
            "host name",
            3,
        );
        error_at(
            "[suites.api.services.db]\nimage = \"p\"\nvolumes = [\"a:b\"]\n",
            "absolute container path",
            5,
        );
        error_at(
            "[suites.api.services.db]\nimage = \"p\"\nvolumes = [\"a:/b:rx\"]\n",
            "neither `:ro`",
            5,
        );
        error_at(
            "[suites.api.services]\ncompose = \"c.yml\"\n[suites.api.services.db]\ncommand = [\"x\"]\n",
            "service of the compose file",
            5,
        );
        error_at(
            "[suites.api.environment]\nimage = \"a\"\nimgae = \"b\"\n",
            "imgae",
            5,
        );
    }
}
