//! The config schema (`shoal.toml`), its embedded defaults, and validation
//! with source spans. Parsing is pure: callers read files and pass text in.
//!
//! Errors in user-written config are [`miette`] diagnostics that point at the
//! offending key (file:line:col).

use crate::model::TestId;
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The documented defaults, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

/// The adapters shoal knows.
pub const ADAPTERS: &[&str] = &["pytest", "cargo", "command"];

/// An error in user-written config, with the span it refers to.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(shoal::config))]
pub struct ConfigError {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl ConfigError {
    /// `line:col` (1-based) of the error, when it has a span.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let span = self.span?;
        let text = self.src.inner();
        let upto = &text[..span.offset().min(text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rfind('\n').map_or(upto.len(), |i| upto.len() - i - 1) + 1;
        Some((line, col))
    }
}

/// A command from config: a string runs through `sh -c` (it is the user's
/// own shell code), an array is an argv run directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a shell command string or an array of arguments")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CommandLine, E> {
                Ok(CommandLine::Shell(s.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                if v.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least the program name"));
                }
                Ok(CommandLine::Argv(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"30s"`, `"2m"`, `"1h 5m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"2m\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s)
                    .map(HumanDuration)
                    .map_err(|e| E::custom(format!("invalid duration {s:?}: {e}")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                u64::try_from(n)
                    .map(|n| HumanDuration(Duration::from_secs(n)))
                    .map_err(|_| E::custom("duration must not be negative"))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Duration::try_from_secs_f64(n)
                    .map(HumanDuration)
                    .map_err(|_| E::custom("duration must be a non-negative number of seconds"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size written as `"1MiB"`, `"512KB"`, `"100"` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1024,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"1MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("size must not be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `shoal.toml` as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub hooks: HooksSection,
    #[serde(default)]
    pub suites: BTreeMap<String, Spanned<SuiteSection>>,
    #[serde(default)]
    pub quarantine: QuarantineSection,
}

/// `[quarantine]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSection {
    /// `SUITE::NAME` entries.
    pub tests: Option<Vec<Spanned<String>>>,
    /// Thresholds for automatic quarantine; absent: none. (Not `Spanned`:
    /// toml cannot span a table written with dotted keys.)
    pub auto: Option<AutoQuarantineSection>,
}

/// `[quarantine] auto = { ... }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoQuarantineSection {
    pub min_runs: Option<Spanned<u64>>,
    pub min_rate: Option<Spanned<f64>>,
    pub max_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub slots: Option<usize>,
    pub retries: Option<u32>,
    pub retry_threshold: Option<Spanned<f64>>,
    pub repeat: Option<Spanned<u32>>,
    pub timeout: Option<HumanDuration>,
    pub kill_grace: Option<HumanDuration>,
    pub output_cap: Option<ByteSize>,
    pub slow_threshold: Option<HumanDuration>,
    pub max_batch: Option<Spanned<usize>>,
    pub default_duration: Option<HumanDuration>,
    pub fail_on_flaky: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// Runs once per run before any test, in the project root.
    pub worker_setup: Option<CommandLine>,
    /// Runs once per slot before its first test, with `SHOAL_SLOT` set.
    pub slot_setup: Option<CommandLine>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSection {
    pub adapter: Option<Spanned<String>>,
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout: Option<HumanDuration>,
    pub retries: Option<u32>,
    pub max_batch: Option<Spanned<usize>>,
    pub default_duration: Option<HumanDuration>,
    /// Extra arguments: to pytest (pytest) or to `cargo test --no-run` (cargo).
    pub args: Option<Spanned<Vec<String>>>,
    /// pytest: the Python interpreter.
    pub python: Option<Spanned<String>>,
    /// pytest: one long-lived pytest per slot (true) or one per batch.
    pub persistent: Option<Spanned<bool>>,
    /// cargo: whether tests of one binary may share a process.
    pub share_processes: Option<Spanned<String>>,
    /// command: prints one test id per line.
    pub list: Option<Spanned<CommandLine>>,
    /// command: runs tests; `{tests}` expands to one argv entry per id and
    /// `{junit}` to the path shoal reads the JUnit report from.
    pub run: Option<Spanned<Vec<String>>>,
    /// command: where the tool writes JUnit, when it cannot be told.
    pub junit: Option<Spanned<PathBuf>>,
    /// Run the suite's tests in a container.
    pub environment: Option<Spanned<crate::environment::EnvironmentSection>>,
    /// Private services per slot (containers).
    pub services: Option<crate::environment::ServicesSection>,
    /// Where the suite's tests run: `"shared"` (the suite root) or
    /// `"slot"` (a directory of the slot's own: root files copied,
    /// directories linked).
    pub workdir: Option<Spanned<String>>,
    /// The order tests are queued in: `"collection"` or `"duration"`.
    pub order: Option<Spanned<String>>,
}

/// Where a suite's test processes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Workdir {
    /// In the suite root, every slot alike.
    #[default]
    Shared,
    /// In a directory of the slot's own holding copies of the suite root's
    /// top-level files and links to its directories: files a test writes
    /// in its working directory stay the slot's (docs/config.md).
    Slot,
}

/// The order a suite's tests are queued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOrder {
    /// The order discovery listed them in, so every runner process runs its
    /// tests as a subsequence of it, as pytest-xdist's workers do (tests that
    /// are polluted by tests collected after them stay safe). The default
    /// for pytest.
    Collection,
    /// Longest first by history (per file for pytest, keeping a file's tests
    /// together), for the shortest run. The default for cargo and command.
    Duration,
}

impl TestOrder {
    /// The default for an adapter.
    pub fn default_for(adapter: &AdapterConfig) -> Self {
        match adapter {
            AdapterConfig::Pytest { .. } => TestOrder::Collection,
            _ => TestOrder::Duration,
        }
    }
}

/// Fully resolved run settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub slots: usize,
    pub retries: u32,
    pub retry_threshold: f64,
    pub repeat: u32,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_cap: u64,
    pub slow_threshold: Duration,
    pub max_batch: usize,
    pub default_duration: Duration,
    pub fail_on_flaky: bool,
}

/// Whether a cargo suite's tests of one binary may share a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShareProcesses {
    /// Tests that history says take less than their binary's start-up do.
    #[default]
    Auto,
    /// A process per test, always (as cargo-nextest).
    Never,
    /// The tests of one binary in one batch always share a process.
    Always,
}

/// How a suite's tests are listed and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterConfig {
    Pytest {
        python: String,
        args: Vec<String>,
        /// One long-lived pytest per slot runs its batches (the default),
        /// rather than a fresh process per batch.
        persistent: bool,
    },
    Cargo {
        args: Vec<String>,
        share: ShareProcesses,
    },
    Command {
        list: CommandLine,
        run: Vec<String>,
        junit: Option<PathBuf>,
    },
}

impl AdapterConfig {
    pub fn name(&self) -> &'static str {
        match self {
            AdapterConfig::Pytest { .. } => "pytest",
            AdapterConfig::Cargo { .. } => "cargo",
            AdapterConfig::Command { .. } => "command",
        }
    }
}

/// A fully resolved suite.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteConfig {
    pub name: String,
    pub adapter: AdapterConfig,
    /// Absolute directory the suite's commands run in.
    pub root: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub retries: u32,
    pub max_batch: usize,
    pub default_duration: Duration,
    /// The container the tests run in (`None`: on the worker itself).
    pub environment: Option<crate::environment::Environment>,
    /// Services started per slot.
    pub services: crate::environment::Services,
    /// Where the tests run.
    pub workdir: Workdir,
    /// The order the tests are queued in.
    pub order: TestOrder,
}

/// Tests that run and are reported as usual but whose failures do not fail
/// the run (`[quarantine]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quarantine {
    /// `[quarantine] tests`, in file order, without duplicates. An entry
    /// need not name a test that exists (it may on another branch).
    pub tests: Vec<TestId>,
    /// Automatic quarantine of flaky tests; `None`: off.
    pub auto: Option<AutoQuarantine>,
}

/// Thresholds for automatic quarantine (the same meaning as
/// `shoal_stats::QuarantinePolicy`): a test history calls flaky, with at
/// least `min_runs` observations and a failure rate within
/// `[min_rate, max_rate]`. A test that fails consistently is broken, not
/// flaky, and never quarantined automatically.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AutoQuarantine {
    pub min_runs: u64,
    pub min_rate: f64,
    pub max_rate: f64,
}

impl Default for AutoQuarantine {
    /// The values of keys left out of `auto = { ... }`.
    fn default() -> Self {
        Self {
            min_runs: 20,
            min_rate: 0.01,
            max_rate: 0.5,
        }
    }
}

/// Separates suite and test name in a quarantine entry: `SUITE::NAME`.
pub const TEST_ENTRY_SEPARATOR: &str = "::";

/// `id` written as a quarantine entry, `SUITE::NAME`.
pub fn test_entry(id: &TestId) -> String {
    format!("{}{TEST_ENTRY_SEPARATOR}{}", id.suite, id.name)
}

/// A quarantine entry that cannot name a test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestEntryError {
    #[error("`{entry}` is not a test id: expected SUITE::NAME")]
    Syntax { entry: String, suites: String },
    #[error("`{entry}` names no suite of this config (it defines: {suites})")]
    UnknownSuite { entry: String, suites: String },
    #[error("`{entry}` has no test name after `{suite}::`")]
    EmptyName { entry: String, suite: String },
}

impl TestEntryError {
    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            TestEntryError::Syntax { entry, suites } => format!(
                "write the suite, `::`, then the test's name as `shoal list` prints it (`shoal list` prints `SUITE NAME`), e.g. \"{}::{entry}\"",
                first_suite(suites)
            ),
            TestEntryError::UnknownSuite { entry, suites } => format!(
                "an entry starts with one of this config's suites and `::`; if `{entry}` is a test's name, write \"{}::{entry}\"",
                first_suite(suites)
            ),
            TestEntryError::EmptyName { .. } => {
                "add the test's name as `shoal list` prints it".into()
            }
        }
    }
}

fn first_suite(suites: &str) -> &str {
    suites
        .split(", ")
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("SUITE")
}

/// Parses a quarantine entry `SUITE::NAME`, where `SUITE` must be one of
/// `suites` (the longest that fits, should one suite name be a prefix of
/// another) and `NAME` is the adapter's exact test name, which may itself
/// contain `::` (pytest node ids do).
pub fn parse_test_entry<'a>(
    entry: &str,
    suites: impl IntoIterator<Item = &'a str>,
) -> Result<TestId, TestEntryError> {
    let suites: Vec<&str> = suites.into_iter().collect();
    let suite = suites
        .iter()
        .filter(|s| {
            entry
                .strip_prefix(**s)
                .is_some_and(|rest| rest.starts_with(TEST_ENTRY_SEPARATOR))
        })
        .max_by_key(|s| s.len());
    match suite {
        Some(suite) => {
            let name = &entry[suite.len() + TEST_ENTRY_SEPARATOR.len()..];
            if name.is_empty() {
                return Err(TestEntryError::EmptyName {
                    entry: entry.to_owned(),
                    suite: (*suite).to_owned(),
                });
            }
            Ok(TestId::new(*suite, name))
        }
        None => match entry.split_once(TEST_ENTRY_SEPARATOR) {
            Some((prefix, _)) if !prefix.is_empty() => Err(TestEntryError::UnknownSuite {
                entry: entry.to_owned(),
                suites: suites.join(", "),
            }),
            _ => Err(TestEntryError::Syntax {
                entry: entry.to_owned(),
                suites: suites.join(", "),
            }),
        },
    }
}

/// The resolved configuration of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the config came from (`None`: detected, zero config).
    pub path: Option<PathBuf>,
    pub project_root: PathBuf,
    pub run: RunSettings,
    pub hooks: HooksSection,
    pub suites: Vec<SuiteConfig>,
    pub quarantine: Quarantine,
}

impl PartialEq for HooksSection {
    fn eq(&self, other: &Self) -> bool {
        self.worker_setup == other.worker_setup && self.slot_setup == other.slot_setup
    }
}

struct Ctx<'a> {
    name: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> Box<ConfigError> {
        Box::new(ConfigError {
            message: message.into(),
            src: NamedSource::new(self.name, self.text.to_owned()),
            span: span.map(|r| SourceSpan::from(r.start..r.end)),
            label: label.into(),
            help,
        })
    }
}

fn parse_file(name: &str, text: &str) -> Result<ConfigFile, Box<ConfigError>> {
    toml::from_str::<ConfigFile>(text).map_err(|e| {
        let ctx = Ctx { name, text };
        let msg = e.message().to_owned();
        let help = if msg.contains("unknown field") {
            Some("see docs/config.md for every key shoal accepts".to_owned())
        } else {
            None
        };
        ctx.err(e.span(), format!("invalid config: {msg}"), "here", help)
    })
}

fn default_file() -> ConfigFile {
    parse_file("<built-in defaults>", DEFAULT_CONFIG).expect("built-in default config is valid")
}

impl Config {
    /// Parses and validates a `shoal.toml`. `display_name` names the file in
    /// diagnostics; relative suite roots resolve against `project_root`.
    pub fn parse(
        display_name: &str,
        text: &str,
        project_root: &Path,
    ) -> Result<Config, Box<ConfigError>> {
        let file = parse_file(display_name, text)?;
        let ctx = Ctx {
            name: display_name,
            text,
        };
        let run = resolve_run(&ctx, &file.run, &default_file().run)?;
        let mut suites = Vec::new();
        for (name, section) in &file.suites {
            suites.push(resolve_suite(&ctx, name, section, &run, project_root)?);
        }
        if suites.is_empty() {
            return Err(ctx.err(
                Some(0..0),
                "no suites defined",
                "expected at least one [suites.NAME] table",
                Some("add e.g.\n[suites.tests]\nadapter = \"pytest\"\n(or delete shoal.toml to let shoal detect pytest and cargo projects)".into()),
            ));
        }
        let quarantine = resolve_quarantine(&ctx, &file.quarantine, &suites)?;
        Ok(Config {
            path: Some(project_root.join(display_name)),
            project_root: project_root.to_owned(),
            run,
            hooks: file.hooks,
            suites,
            quarantine,
        })
    }

    /// Built-in run settings, with no suites.
    pub fn default_run() -> RunSettings {
        let ctx = Ctx {
            name: "<built-in defaults>",
            text: DEFAULT_CONFIG,
        };
        resolve_run(&ctx, &RunSection::default(), &default_file().run).expect("defaults are valid")
    }

    /// A config with the given (detected) suites and default settings.
    pub fn zero_config(
        project_root: &Path,
        suites: Vec<(String, AdapterConfig, PathBuf)>,
    ) -> Config {
        let run = Self::default_run();
        let suites = suites
            .into_iter()
            .map(|(name, adapter, root)| SuiteConfig {
                name,
                order: TestOrder::default_for(&adapter),
                adapter,
                root,
                env: BTreeMap::new(),
                timeout: run.timeout,
                retries: run.retries,
                max_batch: run.max_batch,
                default_duration: run.default_duration,
                environment: None,
                services: Default::default(),
                workdir: Workdir::Shared,
            })
            .collect();
        Config {
            path: None,
            project_root: project_root.to_owned(),
            run,
            hooks: HooksSection::default(),
            suites,
            quarantine: Quarantine::default(),
        }
    }
}

fn resolve_quarantine(
    ctx: &Ctx,
    file: &QuarantineSection,
    suites: &[SuiteConfig],
) -> Result<Quarantine, Box<ConfigError>> {
    let mut tests: Vec<TestId> = Vec::new();
    for entry in file.tests.iter().flatten() {
        let id = parse_test_entry(entry.get_ref(), suites.iter().map(|s| s.name.as_str()))
            .map_err(|e| {
                ctx.err(
                    Some(entry.span()),
                    format!("invalid quarantine entry: {e}"),
                    "here",
                    Some(e.help()),
                )
            })?;
        if !tests.contains(&id) {
            tests.push(id);
        }
    }
    let auto = match &file.auto {
        None => None,
        Some(auto) => Some(resolve_auto_quarantine(ctx, auto)?),
    };
    Ok(Quarantine { tests, auto })
}

fn resolve_auto_quarantine(
    ctx: &Ctx,
    file: &AutoQuarantineSection,
) -> Result<AutoQuarantine, Box<ConfigError>> {
    let def = AutoQuarantine::default();
    if let Some(n) = &file.min_runs {
        if *n.get_ref() == 0 {
            return Err(ctx.err(
                Some(n.span()),
                "quarantine.auto.min_runs must be at least 1",
                "zero",
                Some(format!(
                    "the runs of a test history must show before it is quarantined (default {})",
                    def.min_runs
                )),
            ));
        }
    }
    let rate = |v: &Option<Spanned<f64>>, key: &str, default: f64| {
        let Some(v) = v else { return Ok(default) };
        if (0.0..=1.0).contains(v.get_ref()) {
            Ok(*v.get_ref())
        } else {
            Err(ctx.err(
                Some(v.span()),
                format!("quarantine.auto.{key} must be between 0.0 and 1.0"),
                "out of range",
                Some("a failure rate: 0.05 is 5% of runs".into()),
            ))
        }
    };
    let min_rate = rate(&file.min_rate, "min_rate", def.min_rate)?;
    let max_rate = rate(&file.max_rate, "max_rate", def.max_rate)?;
    if min_rate > max_rate {
        let span = file
            .max_rate
            .as_ref()
            .or(file.min_rate.as_ref())
            .map(|v| v.span());
        return Err(ctx.err(
            span,
            format!(
                "quarantine.auto.max_rate ({max_rate}) is below min_rate ({min_rate})"
            ),
            "below min_rate",
            Some(format!(
                "tests failing between min_rate and max_rate of their runs are quarantined; defaults: min_rate = {}, max_rate = {}",
                def.min_rate, def.max_rate
            )),
        ));
    }
    Ok(AutoQuarantine {
        min_runs: file
            .min_runs
            .as_ref()
            .map_or(def.min_runs, |n| *n.get_ref()),
        min_rate,
        max_rate,
    })
}

fn resolve_run(
    ctx: &Ctx,
    file: &RunSection,
    def: &RunSection,
) -> Result<RunSettings, Box<ConfigError>> {
    macro_rules! pick {
        ($f:ident) => {
            file.$f
                .clone()
                .or_else(|| def.$f.clone())
                .expect(concat!("default for ", stringify!($f)))
        };
    }
    let retry_threshold = pick!(retry_threshold);
    if !(0.0..=1.0).contains(retry_threshold.get_ref()) {
        return Err(ctx.err(
            Some(retry_threshold.span()),
            "retry_threshold must be between 0.0 and 1.0",
            "out of range",
            Some("e.g. 0.10 stops retrying once 10% of tests have failed".into()),
        ));
    }
    let repeat = pick!(repeat);
    if *repeat.get_ref() == 0 {
        return Err(ctx.err(
            Some(repeat.span()),
            "repeat must be at least 1",
            "zero",
            None,
        ));
    }
    let max_batch = pick!(max_batch);
    if *max_batch.get_ref() == 0 {
        return Err(ctx.err(
            Some(max_batch.span()),
            "max_batch must be at least 1",
            "zero",
            None,
        ));
    }
    Ok(RunSettings {
        slots: pick!(slots),
        retries: pick!(retries),
        retry_threshold: *retry_threshold.get_ref(),
        repeat: *repeat.get_ref(),
        timeout: pick!(timeout).0,
        kill_grace: pick!(kill_grace).0,
        output_cap: pick!(output_cap).0,
        slow_threshold: pick!(slow_threshold).0,
        max_batch: *max_batch.get_ref(),
        default_duration: pick!(default_duration).0,
        fail_on_flaky: pick!(fail_on_flaky),
    })
}

fn resolve_suite(
    ctx: &Ctx,
    name: &str,
    spanned: &Spanned<SuiteSection>,
    run: &RunSettings,
    project_root: &Path,
) -> Result<SuiteConfig, Box<ConfigError>> {
    let s = spanned.get_ref();
    let Some(adapter) = &s.adapter else {
        return Err(ctx.err(
            Some(spanned.span()),
            format!("suite `{name}` has no adapter"),
            "this suite",
            Some(format!(
                "add `adapter = \"...\"`, one of: {}",
                ADAPTERS.join(", ")
            )),
        ));
    };
    // Keys that belong to one adapter only.
    let reject = |key: &str,
                  span: Option<std::ops::Range<usize>>,
                  a: &str|
     -> Result<(), Box<ConfigError>> {
        match span {
            Some(span) => Err(ctx.err(
                Some(span),
                format!("`{key}` is not a key of the {a} adapter"),
                "not valid here",
                Some(format!("see the {a} section of docs/config.md")),
            )),
            None => Ok(()),
        }
    };
    let adapter_cfg = match adapter.get_ref().as_str() {
        "pytest" => {
            reject("list", s.list.as_ref().map(|v| v.span()), "pytest")?;
            reject("run", s.run.as_ref().map(|v| v.span()), "pytest")?;
            reject("junit", s.junit.as_ref().map(|v| v.span()), "pytest")?;
            reject(
                "share_processes",
                s.share_processes.as_ref().map(|v| v.span()),
                "pytest",
            )?;
            AdapterConfig::Pytest {
                python: s
                    .python
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_else(|| "python3".into()),
                args: s
                    .args
                    .as_ref()
                    .map(|a| a.get_ref().clone())
                    .unwrap_or_default(),
                persistent: s.persistent.as_ref().is_none_or(|p| *p.get_ref()),
            }
        }
        "cargo" => {
            reject("python", s.python.as_ref().map(|v| v.span()), "cargo")?;
            let share = match &s.share_processes {
                None => ShareProcesses::Auto,
                Some(v) => match v.get_ref().as_str() {
                    "auto" => ShareProcesses::Auto,
                    "never" => ShareProcesses::Never,
                    "always" => ShareProcesses::Always,
                    other => {
                        return Err(ctx.err(
                            Some(v.span()),
                            format!("`share_processes` must be \"auto\", \"never\" or \"always\", not {other:?}"),
                            "unknown value",
                            None,
                        ));
                    }
                },
            };
            reject(
                "persistent",
                s.persistent.as_ref().map(|v| v.span()),
                "cargo",
            )?;
            reject("list", s.list.as_ref().map(|v| v.span()), "cargo")?;
            reject("run", s.run.as_ref().map(|v| v.span()), "cargo")?;
            reject("junit", s.junit.as_ref().map(|v| v.span()), "cargo")?;
            AdapterConfig::Cargo {
                args: s
                    .args
                    .as_ref()
                    .map(|a| a.get_ref().clone())
                    .unwrap_or_default(),
                share,
            }
        }
        "command" => {
            reject("python", s.python.as_ref().map(|v| v.span()), "command")?;
            reject(
                "persistent",
                s.persistent.as_ref().map(|v| v.span()),
                "command",
            )?;
            reject("args", s.args.as_ref().map(|v| v.span()), "command")?;
            reject(
                "share_processes",
                s.share_processes.as_ref().map(|v| v.span()),
                "command",
            )?;
            let Some(list) = &s.list else {
                return Err(ctx.err(
                    Some(adapter.span()),
                    format!("suite `{name}` uses the command adapter but has no `list` command"),
                    "command adapter",
                    Some(
                        "add `list = [\"./list-tests\"]`: a command printing one test id per line"
                            .into(),
                    ),
                ));
            };
            let Some(runc) = &s.run else {
                return Err(ctx.err(
                    Some(adapter.span()),
                    format!("suite `{name}` uses the command adapter but has no `run` command"),
                    "command adapter",
                    Some(
                        "add `run = [\"./run-tests\", \"--junit\", \"{junit}\", \"{tests}\"]`"
                            .into(),
                    ),
                ));
            };
            if runc.get_ref().is_empty() {
                return Err(ctx.err(
                    Some(runc.span()),
                    "`run` must name a program",
                    "empty",
                    None,
                ));
            }
            if !runc.get_ref().iter().any(|a| a == "{tests}") {
                return Err(ctx.err(
                    Some(runc.span()),
                    "`run` must contain a `{tests}` argument",
                    "no {tests} here",
                    Some("`{tests}` expands to one argument per test id".into()),
                ));
            }
            if s.junit.is_none() && !runc.get_ref().iter().any(|a| a.contains("{junit}")) {
                return Err(ctx.err(Some(runc.span()), "shoal cannot tell where this command writes JUnit", "no {junit} here", Some("pass `{junit}` in `run`, or set `junit = \"path/written/by/the/tool.xml\"`".into())));
            }
            AdapterConfig::Command {
                list: list.get_ref().clone(),
                run: runc.get_ref().clone(),
                junit: s.junit.as_ref().map(|j| j.get_ref().clone()),
            }
        }
        other => {
            return Err(ctx.err(
                Some(adapter.span()),
                format!("unknown adapter `{other}` in suite `{name}`"),
                "unknown adapter",
                Some(format!("known adapters: {}", ADAPTERS.join(", "))),
            ));
        }
    };
    let max_batch = match &s.max_batch {
        Some(m) if *m.get_ref() == 0 => {
            return Err(ctx.err(Some(m.span()), "max_batch must be at least 1", "zero", None));
        }
        Some(m) => *m.get_ref(),
        None => run.max_batch,
    };
    let root = match &s.root {
        Some(r) if r.is_absolute() => r.clone(),
        Some(r) => project_root.join(r),
        None => project_root.to_owned(),
    };
    let invalid = |(message, label, span, help): crate::environment::Invalid| {
        ctx.err(span, message, label, help)
    };
    let environment = s
        .environment
        .as_ref()
        .map(|e| crate::environment::resolve_environment(name, e, project_root))
        .transpose()
        .map_err(invalid)?;
    let services = s
        .services
        .as_ref()
        .map(|sv| crate::environment::resolve_services(name, sv, project_root))
        .transpose()
        .map_err(invalid)?
        .unwrap_or_default();
    let workdir = match s.workdir.as_ref() {
        None => Workdir::Shared,
        Some(w) => match w.get_ref().as_str() {
            "shared" => Workdir::Shared,
            "slot" if environment.is_some() => {
                return Err(ctx.err(
                    Some(w.span()),
                    format!("`workdir = \"slot\"` is not supported with an `environment` (suite `{name}`)"),
                    "not with a container",
                    Some("each slot's container is already its own; write into the slot's TMPDIR instead".into()),
                ));
            }
            "slot" => Workdir::Slot,
            other => {
                return Err(ctx.err(
                    Some(w.span()),
                    format!("`workdir` must be \"shared\" or \"slot\", not {other:?}"),
                    "unknown workdir",
                    None,
                ));
            }
        },
    };
    let order = match s.order.as_ref() {
        None => TestOrder::default_for(&adapter_cfg),
        Some(o) => match o.get_ref().as_str() {
            "collection" => TestOrder::Collection,
            "duration" => TestOrder::Duration,
            other => {
                return Err(ctx.err(
                    Some(o.span()),
                    format!("`order` must be \"collection\" or \"duration\", not {other:?}"),
                    "unknown order",
                    None,
                ));
            }
        },
    };
    Ok(SuiteConfig {
        name: name.to_owned(),
        order,
        adapter: adapter_cfg,
        root,
        env: s.env.clone(),
        timeout: s.timeout.map_or(run.timeout, |d| d.0),
        retries: s.retries.unwrap_or(run.retries),
        max_batch,
        default_duration: s.default_duration.map_or(run.default_duration, |d| d.0),
        environment,
        services,
        workdir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Box<ConfigError>> {
        Config::parse("shoal.toml", text, Path::new("/proj"))
    }

    #[test]
    fn defaults_parse() {
        let run = Config::default_run();
        assert_eq!(run.retries, 0);
        assert_eq!(run.output_cap, 1 << 20);
        assert_eq!(run.retry_threshold, 0.10);
    }

    #[test]
    fn full_config_resolves() {
        let c = parse(
            r#"
[run]
retries = 2
timeout = "30s"
output_cap = "64KiB"
[hooks]
slot_setup = "createdb test_$SHOAL_SLOT"
[suites.py]
adapter = "pytest"
root = "python"
args = ["-x"]
timeout = "10s"
[suites.tools]
adapter = "command"
list = ["./list.sh"]
run = ["./run.sh", "--junit", "{junit}", "{tests}"]
"#,
        )
        .unwrap();
        assert_eq!(c.run.retries, 2);
        assert_eq!(c.run.output_cap, 64 * 1024);
        assert_eq!(c.suites.len(), 2);
        let py = c.suites.iter().find(|s| s.name == "py").unwrap();
        assert_eq!(py.root, Path::new("/proj/python"));
        assert_eq!(py.timeout, Duration::from_secs(10));
        assert!(matches!(
            py.adapter,
            AdapterConfig::Pytest {
                persistent: true,
                ..
            }
        ));
        assert_eq!(py.retries, 2);
        assert_eq!(
            c.hooks.slot_setup,
            Some(CommandLine::Shell("createdb test_$SHOAL_SLOT".into()))
        );
    }

    #[test]
    fn unknown_key_points_at_line_and_column() {
        let e = parse("[run]\nretries = 1\nretires = 2\n").unwrap_err();
        assert!(
            e.message.contains("unknown field `retires`"),
            "{}",
            e.message
        );
        assert_eq!(e.line_col(), Some((3, 1)));
    }

    #[test]
    fn unknown_adapter_is_labelled() {
        let e = parse("[suites.a]\nadapter = \"jest\"\n").unwrap_err();
        assert!(e.message.contains("unknown adapter `jest`"));
        assert_eq!(e.line_col(), Some((2, 11)));
        assert!(e.help.unwrap().contains("pytest"));
    }

    #[test]
    fn malformed_toml_is_located() {
        let e = parse("[run\nretries = 1\n").unwrap_err();
        assert!(e.line_col().is_some());
    }

    #[test]
    fn wrong_type_is_located() {
        let e = parse("[run]\nretries = \"two\"\n").unwrap_err();
        assert_eq!(e.line_col().map(|l| l.0), Some(2));
    }

    #[test]
    fn command_adapter_requires_tests_placeholder() {
        let e = parse(
            "[suites.c]\nadapter = \"command\"\nlist = \"ls\"\nrun = [\"run\", \"{junit}\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("{tests}"), "{}", e.message);
    }

    #[test]
    fn adapter_specific_key_rejected_elsewhere() {
        let e = parse("[suites.c]\nadapter = \"cargo\"\npython = \"python3\"\n").unwrap_err();
        assert!(
            e.message
                .contains("`python` is not a key of the cargo adapter")
        );
        assert_eq!(e.line_col().map(|l| l.0), Some(3));
    }

    #[test]
    fn pytest_runner_can_be_per_batch() {
        let c = parse("[suites.rs]\nadapter = \"cargo\"\nshare_processes = \"never\"\n").unwrap();
        assert_eq!(
            c.suites[0].adapter,
            AdapterConfig::Cargo {
                args: Vec::new(),
                share: ShareProcesses::Never,
            }
        );
        let e =
            parse("[suites.rs]\nadapter = \"cargo\"\nshare_processes = \"some\"\n").unwrap_err();
        assert!(e.message.contains("share_processes"), "{}", e.message);
        assert!(parse("[suites.py]\nadapter = \"pytest\"\nshare_processes = \"never\"\n").is_err());
        let c = parse("[suites.py]\nadapter = \"pytest\"\npersistent = false\n").unwrap();
        assert!(matches!(
            c.suites[0].adapter,
            AdapterConfig::Pytest {
                persistent: false,
                ..
            }
        ));
        let c = parse("[suites.py]\nadapter = \"pytest\"\nworkdir = \"slot\"\n").unwrap();
        assert_eq!(c.suites[0].workdir, Workdir::Slot);
        assert_eq!(c.suites[0].order, TestOrder::Collection, "pytest's default");
        let c = parse("[suites.py]\nadapter = \"pytest\"\norder = \"duration\"\n").unwrap();
        assert_eq!(c.suites[0].order, TestOrder::Duration);
        let e = parse("[suites.py]\nadapter = \"pytest\"\norder = \"fast\"\n").unwrap_err();
        assert_eq!(e.line_col(), Some((3, 9)), "{}", e.message);
        let e = parse("[suites.py]\nadapter = \"pytest\"\nworkdir = \"mine\"\n").unwrap_err();
        assert_eq!(e.line_col(), Some((3, 11)), "{}", e.message);
        let e = parse("[suites.rs]\nadapter = \"cargo\"\npersistent = false\n").unwrap_err();
        assert!(
            e.message
                .contains("`persistent` is not a key of the cargo adapter"),
            "{}",
            e.message
        );
    }

    #[test]
    fn out_of_range_threshold() {
        let e = parse("[run]\nretry_threshold = 1.5\n[suites.a]\nadapter=\"cargo\"\n").unwrap_err();
        assert!(e.message.contains("retry_threshold"));
    }

    const TWO_SUITES: &str =
        "[suites.py]\nadapter = \"pytest\"\n[suites.rs]\nadapter = \"cargo\"\n";

    #[test]
    fn quarantine_entries_resolve_to_test_ids() {
        let c = parse(&format!(
            "{TWO_SUITES}[quarantine]\ntests = [\n  \"py::tests/test_a.py::test_x[a b]\",\n  \"rs::shoal-core config::tests::t\",\n  \"py::tests/test_a.py::test_x[a b]\",\n]\n"
        ))
        .unwrap();
        assert_eq!(
            c.quarantine.tests,
            [
                TestId::new("py", "tests/test_a.py::test_x[a b]"),
                TestId::new("rs", "shoal-core config::tests::t"),
            ],
            "names keep their own `::` and spaces; duplicates collapse"
        );
        assert_eq!(c.quarantine.auto, None, "no auto table: no auto-quarantine");
        assert_eq!(
            test_entry(&c.quarantine.tests[0]),
            "py::tests/test_a.py::test_x[a b]"
        );
        assert_eq!(parse(TWO_SUITES).unwrap().quarantine, Quarantine::default());
    }

    #[test]
    fn quarantine_entry_without_suite_is_located() {
        let e = parse(&format!(
            "{TWO_SUITES}[quarantine]\ntests = [\"py::ok\", \"tests/test_a.py\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.message
                .contains("`tests/test_a.py` is not a test id: expected SUITE::NAME"),
            "{}",
            e.message
        );
        assert_eq!(e.line_col(), Some((6, 20)));
        let help = e.help.unwrap();
        assert!(help.contains("shoal list"), "{help}");
        assert!(help.contains("\"py::tests/test_a.py\""), "{help}");
    }

    #[test]
    fn quarantine_entry_of_unknown_suite_is_located() {
        let e = parse(&format!(
            "{TWO_SUITES}[quarantine]\ntests = [\n    \"pyy::tests/test_a.py::t\",\n]\n"
        ))
        .unwrap_err();
        assert!(
            e.message
                .contains("names no suite of this config (it defines: py, rs)"),
            "{}",
            e.message
        );
        assert_eq!(e.line_col(), Some((7, 5)));
        // The `shoal list` spelling (a space) is not an entry.
        let e = parse(&format!(
            "{TWO_SUITES}[quarantine]\ntests = [\"py tests/test_a.py::t\"]\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("names no suite"), "{}", e.message);
        let e = parse(&format!("{TWO_SUITES}[quarantine]\ntests = [\"py::\"]\n")).unwrap_err();
        assert!(e.message.contains("no test name"), "{}", e.message);
        assert_eq!(e.line_col(), Some((6, 10)));
    }

    #[test]
    fn quarantine_unknown_key_and_wrong_type_are_located() {
        let e = parse(&format!("{TWO_SUITES}[quarantine]\ntest = []\n")).unwrap_err();
        assert!(e.message.contains("unknown field `test`"), "{}", e.message);
        assert_eq!(e.line_col(), Some((6, 1)));
        let e = parse(&format!("{TWO_SUITES}[quarantine]\ntests = \"py::a\"\n")).unwrap_err();
        assert_eq!(e.line_col().map(|l| l.0), Some(6), "{}", e.message);
    }

    #[test]
    fn longest_suite_prefix_wins() {
        let id = parse_test_entry("a::b::c", ["a", "a::b"]).unwrap();
        assert_eq!(id, TestId::new("a::b", "c"));
        assert_eq!(
            parse_test_entry("nope", ["a"]).unwrap_err(),
            TestEntryError::Syntax {
                entry: "nope".into(),
                suites: "a".into(),
            }
        );
        assert!(matches!(
            parse_test_entry("::x", ["a"]),
            Err(TestEntryError::Syntax { .. })
        ));
    }

    #[test]
    fn auto_quarantine_defaults_and_overrides() {
        let c = parse(&format!("{TWO_SUITES}[quarantine]\nauto = {{}}\n")).unwrap();
        assert_eq!(c.quarantine.auto, Some(AutoQuarantine::default()));
        let c = parse(&format!(
            "{TWO_SUITES}[quarantine]\nauto = {{ min_runs = 50, min_rate = 0, max_rate = 0.25 }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.quarantine.auto,
            Some(AutoQuarantine {
                min_runs: 50,
                min_rate: 0.0,
                max_rate: 0.25
            })
        );
        for auto in [
            "[quarantine.auto]\nmin_runs = 30\n",
            "[quarantine]\nauto.min_runs = 30\n",
            "quarantine.auto.min_runs = 30\n",
        ] {
            let text = if auto.starts_with('[') {
                format!("{TWO_SUITES}{auto}")
            } else {
                format!("{auto}{TWO_SUITES}")
            };
            let c = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(c.quarantine.auto.unwrap().min_runs, 30, "{auto}");
        }
        let e = parse(&format!("{TWO_SUITES}[quarantine]\nauto.min_rate = 2.0\n")).unwrap_err();
        assert_eq!(e.line_col(), Some((6, 17)), "{}", e.message);
    }

    #[test]
    fn auto_quarantine_ranges_are_located() {
        let at = |auto: &str| {
            let e = parse(&format!("{TWO_SUITES}[quarantine]\nauto = {auto}\n")).unwrap_err();
            let (line, col) = e.line_col().expect("located");
            assert_eq!(line, 6, "{}", e.message);
            (col, e.message)
        };
        let (col, msg) = at("{ min_rate = 1.5 }");
        assert_eq!(col, 21);
        assert!(
            msg.contains("min_rate must be between 0.0 and 1.0"),
            "{msg}"
        );
        let (col, msg) = at("{ min_rate = 0.2, max_rate = 0.1 }");
        assert_eq!(col, 37);
        assert!(
            msg.contains("max_rate (0.1) is below min_rate (0.2)"),
            "{msg}"
        );
        let (col, msg) = at("{ min_runs = 0 }");
        assert_eq!(col, 21);
        assert!(msg.contains("min_runs must be at least 1"), "{msg}");
        let (col, msg) = at("{ min_runs = -3 }");
        assert_eq!(col, 21);
        assert!(msg.contains("invalid config"), "{msg}");
        let (col, msg) = at("{ max_runs = 3 }");
        assert_eq!(col, 10);
        assert!(msg.contains("unknown field `max_runs`"), "{msg}");
        // Only max_rate given, below the default min_rate.
        let (_, msg) = at("{ max_rate = 0.001 }");
        assert!(msg.contains("below min_rate (0.01)"), "{msg}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("1MiB").unwrap().0, 1 << 20);
        assert_eq!(ByteSize::parse("100").unwrap().0, 100);
        assert_eq!(ByteSize::parse("2 KB").unwrap().0, 2000);
        assert!(ByteSize::parse("3 parsecs").is_err());
    }
}
