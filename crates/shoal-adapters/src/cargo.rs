//! The cargo adapter: builds test binaries with `cargo test --no-run`, lists
//! each binary's tests with libtest's `--list`, and runs them through
//! libtest, one process per test (as cargo-nextest does) unless the
//! binary's start-up is dear next to its tests' durations, so a crash, a
//! hang or a flood of output is pinned on exactly one test.
//!
//! # Test names
//!
//! A test's [`TestId::name`] is `<binary-id> <test-path>`, for example
//! `my-crate::api tests::parses_empty_input`. The binary id follows
//! cargo-nextest and is also the test's [`TestCase::group`]:
//!
//! | test target                             | binary id              |
//! | --------------------------------------- | ---------------------- |
//! | library (also proc-macro) unit tests    | `my-crate`             |
//! | integration test `tests/api.rs`         | `my-crate::api`        |
//! | binary `cli`                            | `my-crate::bin/cli`    |
//! | example `demo`, bench `speed`           | `my-crate::example/demo`, `my-crate::bench/speed` |
//!
//! Package names never contain spaces, so the name splits at its first space.
//!
//! # Running
//!
//! Tests run as `<exe> --exact <test-path>... --test-threads=1
//! --color=never` in their package directory, with the `CARGO*` variables
//! `cargo test` sets at run time (`CARGO`, `CARGO_MANIFEST_DIR`,
//! `CARGO_MANIFEST_PATH`, `CARGO_PKG_NAME`, `CARGO_PKG_VERSION[_MAJOR|_MINOR|_PATCH|_PRE]`,
//! `CARGO_CRATE_NAME`). Ignored tests are run without `--ignored`, so libtest
//! reports them ignored and they count as skipped.
//!
//! **Process per test or batch**, decided per binary from measurements:
//! listing a binary's tests times its start-up, which becomes the tests'
//! batch overhead ([`Adapter::batch_overhead`]). The scheduler sizes a
//! batch to at least twice that overhead, so a test that takes longer than
//! that gets a process of its own, while history-known tiny tests of one
//! binary share one libtest process (`docs/benchmarks.md` measures both
//! ways). A one-test process's outcome comes from libtest's last
//! `test result:` summary (which raw output written straight to fd 1 cannot
//! break, unlike the `test <path> ... ok` line), the ignore reason and
//! failure message from the lines above it; a process that died before the
//! summary (signal, `exit()` mid-test, timeout) or whose exit code
//! contradicts it yields no result, and the engine attributes the test. A
//! batch's tests are read from their `test <path> ... <status>` lines (each
//! failure keeps its own captured output); if the process dies, the test
//! whose line has no status is the crash, and the tests it never reached
//! get no result, so the engine reruns them one process each.
//!
//! # Limitations
//!
//! Doctests are not run (nextest does not run them either). Targets with
//! `harness = false` must understand libtest's `--list --format terse` and
//! `--exact` (libtest-mimic does). The dynamic-library search path cargo adds
//! for `dylib` dependencies is not set.

use crate::command;
use crate::slash_path;
use crate::{Adapter, AdapterError, BatchCtx, DiscoverCtx, Invocation, Progress};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_core::config::ShareProcesses;
use shoal_core::{Outcome, TestCase, TestId, TestResult};
use shoal_exec::{ExitStatus, ProcessExit, ProcessSpec};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of a failed command's output kept in [`AdapterError::ListFailed`].
const ERROR_TAIL_BYTES: usize = 16 * 1024;
/// Lines of a panic message kept as a failure message.
const MESSAGE_MAX_LINES: usize = 12;

/// Lists and runs the tests of a cargo project through libtest.
#[derive(Debug, Clone)]
pub struct CargoAdapter {
    /// Extra arguments for `cargo test --no-run` (`-p`, `--features`, ...).
    args: Vec<String>,
    share: ShareProcesses,
}

impl CargoAdapter {
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            share: ShareProcesses::Auto,
        }
    }

    /// Sets whether tests of one binary may share a process.
    pub fn sharing(mut self, share: ShareProcesses) -> Self {
        self.share = share;
        self
    }

    /// Builds the test binaries with `cargo test --no-run` in `root`.
    /// The workspace packages a collection limited to `scope` (paths
    /// relative to `root`) reaches: those inside a scope path, or holding
    /// one. `None`: build what the suite's arguments say (no scope, or the
    /// arguments already pick packages).
    async fn packages_in_scope(
        &self,
        root: &Path,
        env: &BTreeMap<String, String>,
        scope: &[String],
    ) -> Result<Option<Vec<String>>, AdapterError> {
        let picks_packages = self
            .args
            .iter()
            .any(|a| a == "-p" || a.starts_with("--package") || a.starts_with("-p"));
        if scope.is_empty() || picks_packages {
            return Ok(None);
        }
        let argv: Vec<String> = [
            cargo_program(env).as_str(),
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
        ]
        .map(str::to_owned)
        .to_vec();
        let out = run(&argv, root, env).await?;
        let bad = |detail: String| AdapterError::BadListOutput {
            command: command::display_argv(&argv),
            detail,
        };
        if !out.status.success() {
            return Err(AdapterError::ListFailed {
                command: command::display_argv(&argv),
                status: describe_status(out.status),
                output: tail(&String::from_utf8_lossy(&out.stderr), ERROR_TAIL_BYTES),
            });
        }
        #[derive(Deserialize)]
        struct Metadata {
            packages: Vec<Package>,
            workspace_members: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Package {
            name: String,
            id: String,
            manifest_path: PathBuf,
        }
        let meta: Metadata =
            serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("{e}")))?;
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        let mut names: Vec<String> = meta
            .packages
            .into_iter()
            .filter(|p| meta.workspace_members.contains(&p.id))
            .filter(|p| {
                let dir = p.manifest_path.parent().unwrap_or(Path::new(""));
                let rel = dir.strip_prefix(&root).map(slash_path).ok();
                rel.is_some_and(|rel| scope.iter().any(|s| package_meets_path(&rel, s)))
            })
            .map(|p| p.name)
            .collect();
        names.sort();
        names.dedup();
        Ok(Some(names))
    }

    async fn build(
        &self,
        root: &Path,
        env: &BTreeMap<String, String>,
        packages: Option<&[String]>,
    ) -> Result<Vec<TestBinary>, AdapterError> {
        let mut argv = vec![cargo_program(env)];
        argv.extend(
            [
                "test",
                "--no-run",
                "--message-format",
                "json-render-diagnostics",
            ]
            .map(String::from),
        );
        match packages {
            None => argv.extend(self.args.iter().cloned()),
            Some(packages) => {
                argv.extend(
                    self.args
                        .iter()
                        .filter(|a| *a != "--workspace" && *a != "--all")
                        .cloned(),
                );
                for p in packages {
                    argv.extend(["-p".to_owned(), p.clone()]);
                }
            }
        }
        let out = run(&argv, root, env).await?;
        if !out.status.success() {
            return Err(AdapterError::ListFailed {
                command: command::display_argv(&argv),
                status: describe_status(out.status),
                output: tail(&String::from_utf8_lossy(&out.stderr), ERROR_TAIL_BYTES),
            });
        }
        parse_build_messages(&String::from_utf8_lossy(&out.stdout)).map_err(|detail| {
            AdapterError::BadListOutput {
                command: command::display_argv(&argv),
                detail,
            }
        })
    }
}

/// What [`CargoAdapter::plan`] needs to run one test, stored as JSON in
/// [`TestCase::runner`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CargoRunner {
    /// The test binary.
    pub exe: String,
    /// The package directory, where cargo runs its tests.
    pub cwd: String,
    pub package: String,
    pub version: String,
    /// The target's crate name (`-` replaced by `_`).
    pub crate_name: String,
    /// The libtest test path, e.g. `tests::adds`.
    pub test: String,
    /// Marked `#[ignore]`: libtest reports it ignored unless run with `--ignored`.
    pub ignored: bool,
    /// Microseconds the binary took to start and list its tests: what one
    /// more process costs, measured at discovery (0 when unknown).
    #[serde(default)]
    pub start_us: u64,
}

impl CargoRunner {
    /// The runner data of a test discovered by this adapter.
    pub fn of(test: &TestCase) -> Result<Self, String> {
        let json = test
            .runner
            .as_deref()
            .ok_or("the test has no cargo runner data")?;
        serde_json::from_str(json).map_err(|e| format!("bad cargo runner data: {e}"))
    }

    /// The argv that runs this one test.
    pub fn argv(&self) -> Vec<String> {
        batch_argv(&self.exe, [self.test.as_str()])
    }

    /// The variables `cargo test` gives a test binary at run time.
    fn cargo_env(&self, cargo: &str) -> BTreeMap<String, String> {
        let cwd = Path::new(&self.cwd);
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| env.insert(k.to_owned(), v);
        set("CARGO", cargo.to_owned());
        set("CARGO_MANIFEST_DIR", self.cwd.clone());
        set(
            "CARGO_MANIFEST_PATH",
            cwd.join("Cargo.toml").display().to_string(),
        );
        set("CARGO_PKG_NAME", self.package.clone());
        set("CARGO_PKG_VERSION", self.version.clone());
        let (major, minor, patch, pre) = version_parts(&self.version);
        set("CARGO_PKG_VERSION_MAJOR", major.to_owned());
        set("CARGO_PKG_VERSION_MINOR", minor.to_owned());
        set("CARGO_PKG_VERSION_PATCH", patch.to_owned());
        set("CARGO_PKG_VERSION_PRE", pre.to_owned());
        set("CARGO_CRATE_NAME", self.crate_name.clone());
        env
    }
}

/// `<exe> --exact <path>... --test-threads=1 --color=never`: the listed
/// tests, one after another, in one process.
fn batch_argv<'a>(exe: &str, tests: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut argv = vec![exe.to_owned(), "--exact".to_owned()];
    argv.extend(tests.into_iter().map(str::to_owned));
    argv.extend(["--test-threads=1", "--color=never"].map(String::from));
    argv
}

/// Splits `1.2.3-rc.1+build` into `("1", "2", "3", "rc.1")`.
fn version_parts(version: &str) -> (&str, &str, &str, &str) {
    let core_and_pre = version.split_once('+').map_or(version, |(v, _)| v);
    let (core, pre) = core_and_pre.split_once('-').unwrap_or((core_and_pre, ""));
    let mut parts = core.splitn(3, '.');
    let mut next = || parts.next().unwrap_or("");
    (next(), next(), next(), pre)
}

/// Whether a package in directory `package` (relative to the suite root)
/// is reached by path `path`: it lies inside `path`, or `path` is inside it.
fn package_meets_path(package: &str, path: &str) -> bool {
    crate::located_in(package, path, None) || crate::located_in(path, package, None)
}

/// The cargo program: `CARGO` from the suite's environment, then from ours
/// (set when shoal itself runs under cargo), else `cargo` from `PATH`.
fn cargo_program(env: &BTreeMap<String, String>) -> String {
    env.get("CARGO")
        .cloned()
        .or_else(|| std::env::var("CARGO").ok())
        .unwrap_or_else(|| "cargo".to_owned())
}

#[async_trait]
impl Adapter for CargoAdapter {
    /// libtest exits 101 when tests failed: that is the tool working.
    fn exit_is_abnormal(&self, status: &shoal_exec::ExitStatus) -> bool {
        !status.success() && *status != shoal_exec::ExitStatus::Code(101)
    }

    fn name(&self) -> &'static str {
        "cargo"
    }

    async fn discover(&self, ctx: &DiscoverCtx) -> Result<Vec<TestCase>, AdapterError> {
        let mut env = ctx.suite.env.clone();
        env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let packages = self
            .packages_in_scope(&ctx.suite.root, &env, &ctx.scope)
            .await?;
        if packages.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let binaries = self
            .build(&ctx.suite.root, &env, packages.as_deref())
            .await?;
        let mut tests = Vec::new();
        for (binary, runners) in list_all(binaries, env).await? {
            for runner in runners {
                let name = format!("{} {}", binary.id, runner.test);
                let runner =
                    serde_json::to_string(&runner).map_err(|e| AdapterError::BadListOutput {
                        command: binary.exe.clone(),
                        detail: format!("cannot encode runner data: {e}"),
                    })?;
                tests.push(TestCase {
                    id: TestId::new(ctx.suite.name.clone(), name),
                    group: binary.id.clone(),
                    runner: Some(runner),
                });
            }
        }
        Ok(tests)
    }

    fn test_in_path(&self, test: &TestCase, root: &Path, path: &str, node: Option<&str>) -> bool {
        let Ok(runner) = CargoRunner::of(test) else {
            return false;
        };
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        let package = Path::new(&runner.cwd);
        let Ok(rel) = package.strip_prefix(&root).map(slash_path) else {
            return false;
        };
        package_meets_path(&rel, path) && node.is_none_or(|n| runner.test.starts_with(n))
    }

    fn plan(&self, tests: &[TestCase], ctx: &BatchCtx) -> Vec<Invocation> {
        let cargo = cargo_program(&ctx.env);
        let mut runs: Vec<(CargoRunner, Vec<TestCase>)> = Vec::new();
        // Binary -> the run its tiny tests share.
        let mut shared: HashMap<String, usize> = HashMap::new();
        for test in tests {
            let runner = match CargoRunner::of(test) {
                Ok(runner) => runner,
                Err(e) => {
                    tracing::error!(test = %test.id, "cannot plan cargo test: {e}");
                    continue;
                }
            };
            // The tests of one binary that history says take less than the
            // binary's start-up share a process (placed where the first of
            // them was): there a process per test would mostly measure
            // start-ups. (A test's time from a process of its own includes
            // that start-up.)
            let start_up = Duration::from_micros(runner.start_us);
            let tiny = match self.share {
                ShareProcesses::Never => false,
                ShareProcesses::Always => true,
                ShareProcesses::Auto => ctx
                    .estimates
                    .get(&test.id.name)
                    .is_some_and(|e| *e < start_up * 2),
            };
            match shared.get(&runner.exe) {
                Some(&at) if tiny => runs[at].1.push(test.clone()),
                _ => {
                    if tiny {
                        shared.insert(runner.exe.clone(), runs.len());
                    }
                    runs.push((runner, vec![test.clone()]));
                }
            }
        }
        runs.into_iter()
            .map(|(runner, group)| {
                let mut env = runner.cargo_env(&cargo);
                env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let paths: Vec<String> = group.iter().filter_map(test_path).collect();
                Invocation {
                    spec: ProcessSpec {
                        argv: batch_argv(&runner.exe, paths.iter().map(String::as_str)),
                        cwd: PathBuf::from(&runner.cwd),
                        env,
                        progress_pipe: false,
                        stdin_pipe: false,
                        output_cap: ctx.output_cap,
                    },
                    // Batches hold tests history says are tiny next to
                    // the binary's start-up: one timeout covers the batch,
                    // so a test that hangs in one costs one timeout (then
                    // the batch's unfinished tests run one process each).
                    time_limit: (group.len() > 1).then_some(ctx.suite.timeout),
                    tests: group,
                    junit: None,
                }
            })
            .collect()
    }

    fn batch_overhead(&self, test: &TestCase, _discovery: Duration) -> Duration {
        // The start-up of the test's own binary, measured when listing it.
        CargoRunner::of(test)
            .map(|r| Duration::from_micros(r.start_us))
            .unwrap_or_default()
    }

    fn collect(
        &self,
        inv: &Invocation,
        exit: &ProcessExit,
        _progress: &[Progress],
    ) -> Vec<TestResult> {
        if inv.tests.len() == 1 {
            return collect_single(&inv.tests[0], exit);
        }
        collect_batch(&inv.tests, exit)
    }
}

/// The result of a process that ran one test.
fn collect_single(test: &TestCase, exit: &ProcessExit) -> Vec<TestResult> {
    if exit.terminated {
        return Vec::new();
    }
    let report = LibtestReport::new(&exit.output.text);
    let Some(verdict) = test_path(test).and_then(|path| report.verdict(&path, true)) else {
        return Vec::new();
    };
    // libtest exits 0 when nothing failed and 101 when something did;
    // anything else means the process did not end the way libtest ends.
    match (exit.status, verdict.outcome) {
        (ExitStatus::Code(0), outcome) if outcome != Outcome::Fail => {}
        (ExitStatus::Code(101), Outcome::Fail) => {}
        _ => return Vec::new(),
    }
    vec![TestResult {
        id: test.id.clone(),
        outcome: verdict.outcome,
        duration: exit.wall,
        message: verdict.message,
        output: exit.output.clone(),
    }]
}

/// The results of a process that ran several tests one after another:
/// every test with a `test <path> ... <status>` line (libtest prints it when
/// the test ends), and, if the process died, a crash for the test it was
/// running (the last `test <path> ... ` line without a status). Tests it
/// never reached get no result, so the engine runs them again.
fn collect_batch(tests: &[TestCase], exit: &ProcessExit) -> Vec<TestResult> {
    let report = LibtestReport::new(&exit.output.text);
    let mut results = Vec::new();
    let mut unfinished = None;
    // Raw output written straight to fd 1 can break a `test <path> ...`
    // line; when libtest ended saying every test passed, those passed too.
    let all_passed = exit.status == ExitStatus::Code(0)
        && !exit.terminated
        && report.summary_counts() == Some((tests.len() as u64, 0, 0));
    for test in tests {
        let Some(path) = test_path(test) else {
            continue;
        };
        match report.verdict(&path, false) {
            Some(verdict) => {
                let section = report
                    .section(&path)
                    .map(|text| shoal_core::CapturedOutput {
                        text,
                        truncated_bytes: 0,
                    });
                results.push((test, verdict, section));
            }
            None if all_passed => {
                let verdict = Verdict {
                    outcome: Outcome::Pass,
                    message: None,
                };
                // Which test printed what cannot be told: it gets it all.
                results.push((test, verdict, Some(exit.output.clone())));
            }
            None if report.started(&path) => unfinished = Some(test),
            None => {}
        }
    }
    // Tests finished in order: without per-test times, share the wall time
    // evenly among the tests that ran.
    let ran = results.len() + usize::from(unfinished.is_some());
    let each = exit.wall / ran.max(1) as u32;
    let mut out: Vec<TestResult> = results
        .into_iter()
        .map(|(test, verdict, section)| TestResult {
            id: test.id.clone(),
            outcome: verdict.outcome,
            duration: each,
            message: verdict.message,
            output: section.unwrap_or_default(),
        })
        .collect();
    let ended_as_libtest = matches!(exit.status, ExitStatus::Code(0 | 101));
    if let Some(test) = unfinished.filter(|_| !exit.terminated && !ended_as_libtest) {
        out.push(TestResult {
            id: test.id.clone(),
            outcome: Outcome::Crash,
            duration: each,
            message: Some(format!(
                "the test binary died ({}) while this test was running",
                exit.status
            )),
            output: exit.output.clone(),
        });
    }
    out
}

/// The libtest path of a test: from its runner data, else from its name.
fn test_path(test: &TestCase) -> Option<String> {
    match CargoRunner::of(test) {
        Ok(runner) => Some(runner.test),
        Err(_) => test
            .id
            .name
            .split_once(' ')
            .map(|(_, path)| path.to_owned()),
    }
}

/// A finished `cargo` or test-binary command.
struct CommandOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `argv` in `cwd` with `env` added to ours, capturing its output.
async fn run(
    argv: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<CommandOutput, AdapterError> {
    let (program, args) = argv.split_first().expect("argv has a program");
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| AdapterError::Spawn {
            program: program.clone(),
            source,
        })?;
    Ok(CommandOutput {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// A test binary that cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TestBinary {
    id: String,
    exe: String,
    package_dir: String,
    package: String,
    version: String,
    crate_name: String,
}

/// One line of `cargo --message-format json`; only artifacts matter here.
#[derive(Debug, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum CargoMessage {
    CompilerArtifact(Artifact),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Artifact {
    package_id: String,
    manifest_path: PathBuf,
    target: Target,
    profile: Profile,
    executable: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Profile {
    test: bool,
}

/// The test binaries in cargo's JSON messages, sorted by binary id.
fn parse_build_messages(stdout: &str) -> Result<Vec<TestBinary>, String> {
    let mut binaries = Vec::new();
    let mut seen = HashSet::new();
    for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let message: CargoMessage =
            serde_json::from_str(line).map_err(|e| format!("bad cargo message ({e}): {line}"))?;
        let CargoMessage::CompilerArtifact(artifact) = message else {
            continue;
        };
        let Some(exe) = artifact.executable.filter(|_| artifact.profile.test) else {
            continue;
        };
        if !seen.insert(exe.clone()) {
            continue;
        }
        let (package, version) = parse_package_id(&artifact.package_id)
            .ok_or_else(|| format!("unrecognized package id `{}`", artifact.package_id))?;
        let package_dir = artifact.manifest_path.parent().unwrap_or(Path::new("/"));
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("path is not UTF-8: {}", p.display()))
        };
        let kind = artifact.target.kind.first().map_or("", String::as_str);
        binaries.push(TestBinary {
            id: binary_id(&package, kind, &artifact.target.name),
            exe: utf8(&exe)?,
            package_dir: utf8(package_dir)?,
            crate_name: artifact.target.name.replace('-', "_"),
            package,
            version,
        });
    }
    binaries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(binaries)
}

/// `(name, version)` from a cargo package id, in either the package-id-spec
/// form (`path+file:///p/foo#bar@1.0.0`, or `...#1.0.0` when the name is the
/// last path segment) or the older `bar 1.0.0 (source)` form.
fn parse_package_id(id: &str) -> Option<(String, String)> {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        if let Some((name, version)) = fragment.rsplit_once('@') {
            return Some((name.to_owned(), version.to_owned()));
        }
        let path = url.split(['?', '#']).next()?.trim_end_matches('/');
        let name = path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !n.contains(':'))?;
        return Some((name.to_owned(), fragment.to_owned()));
    }
    let mut words = id.split_whitespace();
    let (name, version) = (words.next()?, words.next()?);
    Some((name.to_owned(), version.to_owned()))
}

/// nextest's binary id: `pkg` for library unit tests, `pkg::name` for
/// integration tests, `pkg::kind/name` for the rest.
fn binary_id(package: &str, kind: &str, target: &str) -> String {
    match kind {
        "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro" => package.to_owned(),
        "test" => format!("{package}::{target}"),
        kind => format!("{package}::{kind}/{target}"),
    }
}

/// Lists every binary's tests, a few binaries at a time, in binary order.
async fn list_all(
    binaries: Vec<TestBinary>,
    env: BTreeMap<String, String>,
) -> Result<Vec<(TestBinary, Vec<CargoRunner>)>, AdapterError> {
    let cargo: Arc<str> = cargo_program(&env).into();
    let env = Arc::new(env);
    let limit = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .min(16);
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, binary) in binaries.into_iter().enumerate() {
        let (permits, env, cargo) = (permits.clone(), env.clone(), cargo.clone());
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _permit = permits.acquire_owned().await.ok();
            (index, list_binary(binary, &env, &cargo).await)
        });
    }
    let mut listed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => listed.push((index, result?)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => unreachable!("listing task cancelled: {e}"),
        }
    }
    listed.sort_by_key(|(index, _)| *index);
    Ok(listed.into_iter().map(|(_, item)| item).collect())
}

/// Lists one binary's tests, marking the `#[ignore]`d ones.
async fn list_binary(
    binary: TestBinary,
    env: &BTreeMap<String, String>,
    cargo: &str,
) -> Result<(TestBinary, Vec<CargoRunner>), AdapterError> {
    let runner = |test: String, ignored: bool| CargoRunner {
        exe: binary.exe.clone(),
        cwd: binary.package_dir.clone(),
        package: binary.package.clone(),
        version: binary.version.clone(),
        crate_name: binary.crate_name.clone(),
        test,
        ignored,
        start_us: 0,
    };
    let mut run_env = runner(String::new(), false).cargo_env(cargo);
    run_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let t0 = std::time::Instant::now();
    let all = list_tests(&binary, &run_env, false).await?;
    let start_us = t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
    let ignored: HashSet<String> = list_tests(&binary, &run_env, true)
        .await?
        .into_iter()
        .collect();
    let runners = all
        .into_iter()
        .map(|test| {
            let is_ignored = ignored.contains(&test);
            CargoRunner {
                start_us,
                ..runner(test, is_ignored)
            }
        })
        .collect();
    Ok((binary, runners))
}

/// Runs `<exe> --list --format terse [--ignored]` and returns the test paths.
async fn list_tests(
    binary: &TestBinary,
    env: &BTreeMap<String, String>,
    ignored: bool,
) -> Result<Vec<String>, AdapterError> {
    let mut argv = vec![binary.exe.clone()];
    argv.extend(["--list", "--format", "terse"].map(String::from));
    if ignored {
        argv.push("--ignored".to_owned());
    }
    let out = run(&argv, Path::new(&binary.package_dir), env).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        return Err(AdapterError::ListFailed {
            command: command::display_argv(&argv),
            status: describe_status(out.status),
            output: tail(&output, ERROR_TAIL_BYTES),
        });
    }
    parse_list(&stdout).map_err(|detail| AdapterError::BadListOutput {
        command: command::display_argv(&argv),
        detail,
    })
}

/// Test paths from libtest's terse listing (`path: test`); benchmarks are dropped.
fn parse_list(stdout: &str) -> Result<Vec<String>, String> {
    let mut tests = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        match line.rsplit_once(": ") {
            Some((path, "test")) => tests.push(path.to_owned()),
            Some((_, "benchmark" | "bench")) => {}
            _ => return Err(format!("expected `<path>: test`, found {line:?}")),
        }
    }
    Ok(tests)
}

/// `exit code 101` or `killed by signal 9`, as [`ExitStatus`] says it.
fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code).to_string(),
        (None, Some(signal)) => ExitStatus::Signal(signal).to_string(),
        (None, None) => status.to_string(),
    }
}

/// The end of `text` (see [`command::tail`]), saying how much was left out.
fn tail(text: &str, max: usize) -> String {
    let kept = command::tail(text, max);
    match text.len() - kept.len() {
        0 => kept.to_owned(),
        omitted => format!("[{omitted} bytes omitted]\n{kept}"),
    }
}

/// What the output of a libtest process says about one test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    outcome: Outcome,
    /// The panic message of a failure, the reason of an ignored test.
    message: Option<String>,
}

/// The output of a libtest process, read for results.
struct LibtestReport<'a> {
    lines: Vec<&'a str>,
}

impl<'a> LibtestReport<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            lines: text.lines().collect(),
        }
    }

    /// The verdict on `path`, from its `test <path> ... <status>` line or,
    /// when the process ran only that test, from the `test result:` summary.
    fn verdict(&self, path: &str, single: bool) -> Option<Verdict> {
        let from_line = self.status_line(path);
        let outcome = match (&from_line, single) {
            (_, true) => self.summary_outcome().or(from_line.as_ref().map(|v| v.0))?,
            (Some((outcome, _)), false) => *outcome,
            (None, false) => return None,
        };
        let message = match outcome {
            Outcome::Fail => self.failure_message(path),
            Outcome::Skip => from_line.and_then(|(_, reason)| reason),
            _ => None,
        };
        Some(Verdict { outcome, message })
    }

    /// The status on `test <path> ... <status>`, and an ignore reason. The
    /// first such line counts: later ones are the test's own output.
    fn status_line(&self, path: &str) -> Option<(Outcome, Option<String>)> {
        let plain = format!("test {path} ... ");
        let should_panic = format!("test {path} - should panic ... ");
        let status = self.lines.iter().find_map(|line| {
            line.strip_prefix(plain.as_str())
                .or_else(|| line.strip_prefix(should_panic.as_str()))
        })?;
        match status.trim_end() {
            "ok" => Some((Outcome::Pass, None)),
            "FAILED" => Some((Outcome::Fail, None)),
            "ignored" => Some((Outcome::Skip, None)),
            other => {
                let reason = other.strip_prefix("ignored, ")?;
                Some((Outcome::Skip, Some(reason.to_owned())))
            }
        }
    }

    /// Whether libtest began `path`: its `test <path> ... ` line is there,
    /// with or without a status.
    fn started(&self, path: &str) -> bool {
        let plain = format!("test {path} ...");
        let should_panic = format!("test {path} - should panic ...");
        self.lines
            .iter()
            .any(|l| l.starts_with(plain.as_str()) || l.starts_with(should_panic.as_str()))
    }

    /// The captured output libtest printed for a failed `path` (its
    /// `---- <path> stdout ----` section).
    fn section(&self, path: &str) -> Option<String> {
        let lines = self.section_lines(path)?;
        Some(lines.join("\n"))
    }

    fn section_lines(&self, path: &str) -> Option<Vec<&'a str>> {
        let header = format!("---- {path} stdout ----");
        let start = self.lines.iter().position(|l| *l == header)? + 1;
        Some(
            self.lines[start..]
                .iter()
                .copied()
                .take_while(|l| {
                    !(l.starts_with("---- ") && l.ends_with(" stdout ----")) && *l != "failures:"
                })
                .collect(),
        )
    }

    /// The outcome of a one-test run from the last `test result:` line.
    fn summary_outcome(&self) -> Option<Outcome> {
        match self.summary_counts()? {
            (1, 0, 0) => Some(Outcome::Pass),
            (0, 1, 0) => Some(Outcome::Fail),
            (0, 0, 1) => Some(Outcome::Skip),
            _ => None,
        }
    }

    /// Passed, failed and ignored counts of the last `test result:` line.
    fn summary_counts(&self) -> Option<(u64, u64, u64)> {
        let summary = self
            .lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("test result: "))?;
        let (_, counts) = summary.split_once(". ")?;
        let mut passed = None;
        let mut failed = None;
        let mut ignored = None;
        for part in counts.split("; ") {
            let Some((n, what)) = part.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => passed = Some(n),
                "failed" => failed = Some(n),
                "ignored" => ignored = Some(n),
                _ => {}
            }
        }
        Some((passed?, failed?, ignored?))
    }

    /// The panic message in the `---- <path> stdout ----` section, else the
    /// section's first line (`note: test did not panic as expected ...`,
    /// `Error: ...` from a test returning `Err`).
    fn failure_message(&self, path: &str) -> Option<String> {
        let section = self.section_lines(path)?;
        if let Some(message) = panic_message(&section) {
            return Some(message);
        }
        let first = section.iter().map(|l| l.trim()).find(|l| !l.is_empty())?;
        Some(first.strip_prefix("note: ").unwrap_or(first).to_owned())
    }
}

/// The message of the first panic in `lines`: the lines after
/// `thread '...' panicked at <location>:` up to a blank line, a `note:` or
/// a backtrace (or the quoted message of the pre-1.73 one-line format).
fn panic_message(lines: &[&str]) -> Option<String> {
    let (at, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.starts_with("thread '") && l.contains(" panicked at "))?;
    let rest = &line[line.find(" panicked at ")? + " panicked at ".len()..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        let message = quoted.rsplit_once("', ").map_or(quoted, |(m, _)| m);
        return Some(message.to_owned());
    }
    let message: Vec<&str> = lines[at + 1..]
        .iter()
        .copied()
        .take_while(|l| {
            !l.trim().is_empty() && !l.starts_with("note: ") && *l != "stack backtrace:"
        })
        .take(MESSAGE_MAX_LINES)
        .collect();
    (!message.is_empty()).then(|| message.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::CapturedOutput;
    use std::time::Duration;

    const ARTIFACTS: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","manifest_path":"/w/fx/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"cargo_fixture","src_path":"/w/fx/src/lib.rs","test":true},"profile":{"test":false},"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","manifest_path":"/w/fx/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"chaos","src_path":"/w/fx/tests/chaos.rs","test":true},"profile":{"test":true},"executable":"/t/debug/deps/chaos-e36f","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","manifest_path":"/w/fx/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"fixture-cli","src_path":"/w/fx/src/main.rs","test":true},"profile":{"test":false},"executable":"/t/debug/fixture-cli","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","manifest_path":"/w/fx/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"fixture-cli","src_path":"/w/fx/src/main.rs","test":true},"profile":{"test":true},"executable":"/t/debug/deps/fixture_cli-acc6","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","manifest_path":"/w/fx/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"cargo_fixture","src_path":"/w/fx/src/lib.rs","test":true},"profile":{"test":true},"executable":"/t/debug/deps/cargo_fixture-b4e5","fresh":true}
{"reason":"build-script-executed","package_id":"path+file:///w/fx#cargo-fixture@0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[],"out_dir":"/t/out"}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn build_messages_yield_test_binaries_sorted_by_id() {
        let binaries = parse_build_messages(ARTIFACTS).unwrap();
        let ids: Vec<(&str, &str, &str)> = binaries
            .iter()
            .map(|b| (b.id.as_str(), b.exe.as_str(), b.crate_name.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (
                    "cargo-fixture",
                    "/t/debug/deps/cargo_fixture-b4e5",
                    "cargo_fixture"
                ),
                (
                    "cargo-fixture::bin/fixture-cli",
                    "/t/debug/deps/fixture_cli-acc6",
                    "fixture_cli"
                ),
                ("cargo-fixture::chaos", "/t/debug/deps/chaos-e36f", "chaos"),
            ]
        );
        assert!(
            binaries
                .iter()
                .all(|b| b.package_dir == "/w/fx" && b.version == "0.1.0")
        );
    }

    #[test]
    fn duplicate_artifacts_are_listed_once() {
        let line = ARTIFACTS.lines().nth(1).unwrap();
        let twice = format!("{line}\n{line}\n");
        assert_eq!(parse_build_messages(&twice).unwrap().len(), 1);
    }

    #[test]
    fn malformed_build_message_is_an_error() {
        let err = parse_build_messages("{\"reason\":\"compiler-artifact\"}\n").unwrap_err();
        assert!(err.starts_with("bad cargo message"), "{err}");
    }

    #[test]
    fn package_ids_in_every_form() {
        let cases = [
            (
                "path+file:///w/fx#cargo-fixture@0.1.0",
                Some(("cargo-fixture", "0.1.0")),
            ),
            (
                "path+file:///w/my-crate#1.2.3-rc.1",
                Some(("my-crate", "1.2.3-rc.1")),
            ),
            (
                "path+file:///w/my-crate/#0.1.0",
                Some(("my-crate", "0.1.0")),
            ),
            (
                "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1",
                Some(("serde", "1.0.1")),
            ),
            ("git+https://h/r?branch=x#dep@0.2.0", Some(("dep", "0.2.0"))),
            (
                "my-crate 0.1.0 (path+file:///w/my-crate)",
                Some(("my-crate", "0.1.0")),
            ),
            ("nonsense", None),
        ];
        for (id, expected) in cases {
            let parsed = parse_package_id(id);
            let parsed = parsed.as_ref().map(|(n, v)| (n.as_str(), v.as_str()));
            assert_eq!(parsed, expected, "{id}");
        }
    }

    #[test]
    fn binary_ids_follow_nextest() {
        assert_eq!(binary_id("pkg", "lib", "pkg"), "pkg");
        assert_eq!(binary_id("pkg", "proc-macro", "pkg"), "pkg");
        assert_eq!(binary_id("pkg", "test", "api"), "pkg::api");
        assert_eq!(binary_id("pkg", "bin", "cli"), "pkg::bin/cli");
        assert_eq!(binary_id("pkg", "bench", "speed"), "pkg::bench/speed");
    }

    #[test]
    fn terse_list_drops_benchmarks_and_rejects_noise() {
        let out = "a::b: test\ntests::grüße: test\n\nbench_x: benchmark\n";
        assert_eq!(parse_list(out).unwrap(), ["a::b", "tests::grüße"]);
        assert!(parse_list("a: test\nhello from a static\n").is_err());
        assert_eq!(parse_list("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn version_parts_split_semver() {
        assert_eq!(version_parts("1.22.3"), ("1", "22", "3", ""));
        assert_eq!(version_parts("0.1.0-rc.1+build.5"), ("0", "1", "0", "rc.1"));
    }

    #[test]
    fn tail_keeps_the_end_at_a_line_boundary() {
        assert_eq!(tail("short", 100), "short");
        let text = "first line\nsecond line\nthird ü line\n";
        let kept = tail(text, 16);
        assert!(kept.ends_with("third ü line\n"), "{kept}");
        assert!(kept.starts_with("[23 bytes omitted]\n"), "{kept}");
    }

    #[test]
    fn display_command_quotes_what_a_shell_would_split() {
        let argv = ["cargo", "test", "--features", "a b", "it's"].map(String::from);
        assert_eq!(
            command::display_argv(&argv),
            r"cargo test --features 'a b' 'it'\''s'"
        );
    }

    fn runner(test: &str) -> CargoRunner {
        CargoRunner {
            exe: "/t/debug/deps/api-1".to_owned(),
            cwd: "/w/fx".to_owned(),
            package: "cargo-fixture".to_owned(),
            version: "0.1.0".to_owned(),
            crate_name: "api".to_owned(),
            test: test.to_owned(),
            ignored: false,
            start_us: 1500,
        }
    }

    fn case_in(exe: &str, test: &str) -> TestCase {
        let mut r = runner(test);
        r.exe = exe.to_owned();
        TestCase {
            runner: Some(serde_json::to_string(&r).unwrap()),
            ..case(test)
        }
    }

    fn case(test: &str) -> TestCase {
        TestCase {
            id: TestId::new("s", format!("cargo-fixture::api {test}")),
            group: "cargo-fixture::api".to_owned(),
            runner: Some(serde_json::to_string(&runner(test)).unwrap()),
        }
    }

    fn batch_ctx(env: &[(&str, &str)]) -> BatchCtx {
        use shoal_core::config::{AdapterConfig, SuiteConfig};
        BatchCtx {
            suite: SuiteConfig {
                name: "s".to_owned(),
                adapter: AdapterConfig::Cargo {
                    args: Vec::new(),
                    share: Default::default(),
                },
                root: PathBuf::from("/w/fx"),
                env: BTreeMap::new(),
                timeout: Duration::from_secs(1),
                retries: 0,
                max_batch: 1,
                default_duration: Duration::from_secs(1),
                environment: None,
                services: Default::default(),
                workdir: Default::default(),
                order: shoal_core::config::TestOrder::Duration,
            },
            support_dir: PathBuf::from("/support"),
            scratch_dir: PathBuf::from("/scratch"),
            batch_seq: 7,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            output_cap: 4096,
            estimates: Default::default(),
            collect: Vec::new(),
        }
    }

    #[test]
    fn plan_runs_a_lone_test_alone_with_cargo_env() {
        let tests = [case("a::one")];
        let ctx = batch_ctx(&[
            ("CARGO", "/bin/cargo"),
            ("SHOAL_SLOT", "3"),
            ("CARGO_PKG_NAME", "mine"),
        ]);
        let invocations = CargoAdapter::new(Vec::new()).plan(&tests, &ctx);
        assert_eq!(invocations.len(), 1);
        let inv = &invocations[0];
        assert_eq!(inv.tests, [tests[0].clone()]);
        assert_eq!(
            inv.spec.argv,
            [
                "/t/debug/deps/api-1",
                "--exact",
                "a::one",
                "--test-threads=1",
                "--color=never"
            ]
        );
        assert_eq!(inv.spec.cwd, Path::new("/w/fx"));
        assert!(!inv.spec.progress_pipe);
        assert_eq!(inv.spec.output_cap, 4096);
        assert_eq!(inv.junit, None);
        let env = &inv.spec.env;
        assert_eq!(env["CARGO"], "/bin/cargo");
        assert_eq!(env["CARGO_MANIFEST_DIR"], "/w/fx");
        assert_eq!(env["CARGO_MANIFEST_PATH"], "/w/fx/Cargo.toml");
        assert_eq!(env["CARGO_PKG_VERSION_MINOR"], "1");
        assert_eq!(env["SHOAL_SLOT"], "3");
        assert_eq!(env["CARGO_PKG_NAME"], "mine", "the suite's env wins");
        assert!(!env.contains_key("RUST_BACKTRACE"));
    }

    #[test]
    fn plan_shares_a_process_between_tiny_tests_of_one_binary() {
        let tests = [
            case_in("/t/a", "one"),
            case_in("/t/a", "two"),
            case_in("/t/b", "three"),
            case_in("/t/a", "four"),
        ];
        let mut ctx = batch_ctx(&[]);
        let argvs = |ctx: &BatchCtx| -> Vec<Vec<String>> {
            let invocations = CargoAdapter::new(Vec::new()).plan(&tests, ctx);
            invocations.iter().map(|i| i.spec.argv.clone()).collect()
        };
        // No history: a process each.
        let singles: Vec<Vec<String>> = ["one", "two", "three", "four"]
            .iter()
            .zip(["/t/a", "/t/a", "/t/b", "/t/a"])
            .map(|(t, exe)| batch_argv(exe, [*t]))
            .collect();
        assert_eq!(argvs(&ctx), singles);
        // Known to take less than the start-up (1.5 ms): shared.
        for t in &tests {
            ctx.estimates
                .insert(t.id.name.clone(), Duration::from_micros(200));
        }
        assert_eq!(
            argvs(&ctx),
            [
                batch_argv("/t/a", ["one", "two", "four"]),
                batch_argv("/t/b", ["three"]),
            ]
        );
        let invocations = CargoAdapter::new(Vec::new()).plan(&tests, &ctx);
        assert_eq!(
            invocations[0].tests,
            [tests[0].clone(), tests[1].clone(), tests[3].clone()]
        );
        assert_eq!(invocations[0].time_limit, Some(ctx.suite.timeout));
        assert_eq!(invocations[1].time_limit, None);
        // `share_processes` overrides the measurement either way.
        let plan_with = |share| -> Vec<Vec<String>> {
            let adapter = CargoAdapter::new(Vec::new()).sharing(share);
            adapter
                .plan(&tests, &ctx)
                .iter()
                .map(|i| i.spec.argv.clone())
                .collect()
        };
        assert_eq!(plan_with(ShareProcesses::Never), singles);
        let mut cold = batch_ctx(&[]);
        cold.estimates.clear();
        let always: Vec<Vec<String>> = CargoAdapter::new(Vec::new())
            .sharing(ShareProcesses::Always)
            .plan(&tests, &cold)
            .iter()
            .map(|i| i.spec.argv.clone())
            .collect();
        assert_eq!(
            always,
            [
                batch_argv("/t/a", ["one", "two", "four"]),
                batch_argv("/t/b", ["three"]),
            ]
        );
        // A slow one keeps its own process.
        ctx.estimates
            .insert(tests[1].id.name.clone(), Duration::from_millis(20));
        assert_eq!(
            argvs(&ctx),
            [
                batch_argv("/t/a", ["one", "four"]),
                batch_argv("/t/a", ["two"]),
                batch_argv("/t/b", ["three"]),
            ]
        );
    }

    #[test]
    fn batch_overhead_is_the_binarys_measured_start_up() {
        let adapter = CargoAdapter::new(Vec::new());
        let discovery = Duration::from_secs(30);
        assert_eq!(
            adapter.batch_overhead(&case("x"), discovery),
            Duration::from_micros(1500)
        );
        let unknown = TestCase {
            runner: None,
            ..case("x")
        };
        assert_eq!(adapter.batch_overhead(&unknown, discovery), Duration::ZERO);
    }

    #[test]
    fn plan_skips_tests_without_runner_data() {
        let mut broken = case("x");
        broken.runner = Some("{not json".to_owned());
        let invocations = CargoAdapter::new(Vec::new()).plan(&[broken, case("y")], &batch_ctx(&[]));
        assert_eq!(invocations.len(), 1);
        assert_eq!(invocations[0].spec.argv[2], "y");
    }

    fn exit(status: ExitStatus, text: &str) -> ProcessExit {
        ProcessExit {
            status,
            output: CapturedOutput {
                text: text.to_owned(),
                truncated_bytes: 0,
            },
            wall: Duration::from_millis(1234),
            terminated: false,
            oom_killed: false,
        }
    }

    fn collect(tests: &[TestCase], exit: &ProcessExit) -> Vec<TestResult> {
        let inv = Invocation {
            spec: ProcessSpec {
                argv: vec!["x".to_owned()],
                cwd: PathBuf::from("/"),
                env: BTreeMap::new(),
                progress_pipe: false,
                stdin_pipe: false,
                output_cap: 0,
            },
            tests: tests.to_vec(),
            junit: None,
            time_limit: None,
        };
        CargoAdapter::new(Vec::new()).collect(&inv, exit, &[])
    }

    fn outcome_and_message(results: &[TestResult]) -> Vec<(Outcome, Option<&str>)> {
        results
            .iter()
            .map(|r| (r.outcome, r.message.as_deref()))
            .collect()
    }

    const PASSED: &str = "\nrunning 1 test\ntest a::one ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out; finished in 0.00s\n\n";

    #[test]
    fn collect_reads_a_pass_with_duration_and_output() {
        let exit = exit(ExitStatus::Code(0), PASSED);
        let results = collect(&[case("a::one")], &exit);
        assert_eq!(outcome_and_message(&results), [(Outcome::Pass, None)]);
        assert_eq!(results[0].duration, Duration::from_millis(1234));
        assert_eq!(results[0].output, exit.output);
        assert_eq!(results[0].id, case("a::one").id);
    }

    #[test]
    fn collect_reads_a_failure_and_its_panic_message() {
        let out = "\nrunning 1 test\ntest a::one ... FAILED\n\nfailures:\n\n---- a::one stdout ----\nsome print\n\nthread 'a::one' (11302) panicked at src/lib.rs:90:13:\nassertion `left == right` failed\n  left: 2\n right: 3\nstack backtrace:\n   0: x\n\n\nfailures:\n    a::one\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 7 filtered out; finished in 0.00s\n\n";
        let results = collect(&[case("a::one")], &exit(ExitStatus::Code(101), out));
        let message = "assertion `left == right` failed\n  left: 2\n right: 3";
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Fail, Some(message))]
        );
    }

    #[test]
    fn collect_reads_should_panic_and_result_failures() {
        let out = "test two - should panic ... FAILED\n\nfailures:\n\n---- two stdout ----\nnote: test did not panic as expected at tests/api.rs:13:4\n\nfailures:\n    two\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 0.00s\n";
        let results = collect(&[case("two")], &exit(ExitStatus::Code(101), out));
        let message = "test did not panic as expected at tests/api.rs:13:4";
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Fail, Some(message))]
        );

        let out = "test two ... FAILED\n\nfailures:\n\n---- two stdout ----\nError: \"boom\"\n\nfailures:\n    two\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let results = collect(&[case("two")], &exit(ExitStatus::Code(101), out));
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Fail, Some("Error: \"boom\""))]
        );
    }

    #[test]
    fn collect_reads_the_old_one_line_panic_format() {
        let lines = [
            "thread 'x' panicked at 'it broke', src/lib.rs:1:2",
            "note: run with",
        ];
        assert_eq!(panic_message(&lines).as_deref(), Some("it broke"));
    }

    #[test]
    fn collect_reads_ignored_tests_and_their_reason_as_skips() {
        let out = "test two ... ignored, needs a network\n\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let results = collect(&[case("two")], &exit(ExitStatus::Code(0), out));
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Skip, Some("needs a network"))]
        );
        let out = "test two ... ignored\n\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let results = collect(&[case("two")], &exit(ExitStatus::Code(0), out));
        assert_eq!(outcome_and_message(&results), [(Outcome::Skip, None)]);
    }

    #[test]
    fn collect_falls_back_to_the_summary_when_raw_output_breaks_the_line() {
        let out = "test a::one ... \u{FFFD}\u{FFFD} raw bytes\u{FFFD}ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out; finished in 0.00s\n";
        let results = collect(&[case("a::one")], &exit(ExitStatus::Code(0), out));
        assert_eq!(outcome_and_message(&results), [(Outcome::Pass, None)]);
    }

    #[test]
    fn collect_ignores_result_lines_printed_by_the_test_itself() {
        let out = "test a::one ... FAILED\n\nfailures:\n\n---- a::one stdout ----\ntest a::one ... ok\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\nthread 'a::one' panicked at src/lib.rs:1:1:\nnested run passed\n\nfailures:\n    a::one\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let results = collect(&[case("a::one")], &exit(ExitStatus::Code(101), out));
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Fail, Some("nested run passed"))]
        );
    }

    #[test]
    fn collect_leaves_out_tests_without_a_determinable_result() {
        let started = "\nrunning 1 test\ntest a::one ... ";
        let one = [case("a::one")];
        // Killed by a signal mid-test, even if output looks complete.
        assert_eq!(collect(&one, &exit(ExitStatus::Signal(6), started)), []);
        assert_eq!(collect(&one, &exit(ExitStatus::Signal(9), PASSED)), []);
        // Terminated by shoal (timeout).
        let mut timed_out = exit(ExitStatus::Code(0), PASSED);
        timed_out.terminated = true;
        assert_eq!(collect(&one, &timed_out), []);
        // `exit()` called mid-test: no result line, no summary.
        assert_eq!(collect(&one, &exit(ExitStatus::Code(0), started)), []);
        assert_eq!(collect(&one, &exit(ExitStatus::Code(3), started)), []);
        // The test is gone (renamed since discovery): everything filtered out.
        let none = "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.00s\n";
        assert_eq!(collect(&one, &exit(ExitStatus::Code(0), none)), []);
        // Exit code contradicting the report.
        assert_eq!(collect(&one, &exit(ExitStatus::Code(101), PASSED)), []);
    }

    #[test]
    fn collect_reads_several_tests_from_their_lines() {
        let out = "running 3 tests\ntest a::one ... ok\ntest two ... FAILED\n\nfailures:\n\n---- two stdout ----\nthread 'two' panicked at tests/api.rs:3:5:\nboom\n\nfailures:\n    two\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let tests = [case("a::one"), case("two"), case("three")];
        let results = collect(&tests, &exit(ExitStatus::Code(101), out));
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Pass, None), (Outcome::Fail, Some("boom"))]
        );
    }

    #[test]
    fn a_batch_keeps_each_failures_own_output_and_shares_the_wall_time() {
        let out = "running 2 tests\ntest a::one ... ok\ntest two ... FAILED\n\nfailures:\n\n---- two stdout ----\nprinted by two\nthread 'two' panicked at tests/api.rs:3:5:\nboom\n\nfailures:\n    two\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let results = collect(
            &[case("a::one"), case("two")],
            &exit(ExitStatus::Code(101), out),
        );
        assert_eq!(results[0].output.text, "");
        assert!(results[1].output.text.starts_with("printed by two\n"));
        assert!(!results[1].output.text.contains("a::one"));
        assert_eq!(results[0].duration, Duration::from_millis(617));
    }

    #[test]
    fn a_batch_that_dies_blames_the_running_test_and_leaves_the_rest() {
        let out = "running 3 tests\ntest a::one ... ok\ntest two ... ";
        let tests = [case("a::one"), case("two"), case("three")];
        let results = collect(&tests, &exit(ExitStatus::Signal(11), out));
        assert_eq!(
            outcome_and_message(&results),
            [
                (Outcome::Pass, None),
                (
                    Outcome::Crash,
                    Some("the test binary died (killed by signal 11) while this test was running")
                )
            ]
        );
        assert_eq!(results[1].id, tests[1].id);
        // Stopped by shoal (timeout, interrupt): finished tests only.
        let mut stopped = exit(ExitStatus::Signal(15), out);
        stopped.terminated = true;
        let results = collect(&tests, &stopped);
        assert_eq!(outcome_and_message(&results), [(Outcome::Pass, None)]);
    }

    #[test]
    fn a_batch_whose_lines_raw_output_broke_passes_when_libtest_says_all_passed() {
        let out = "running 2 tests\ntest a::one ... raw\nbytes ok\ntest two ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let tests = [case("a::one"), case("two")];
        let results = collect(&tests, &exit(ExitStatus::Code(0), out));
        assert_eq!(
            outcome_and_message(&results),
            [(Outcome::Pass, None), (Outcome::Pass, None)]
        );
        // Unless something failed: then the broken one is unknown.
        let out = out.replace("2 passed; 0 failed", "1 passed; 1 failed");
        let results = collect(&tests, &exit(ExitStatus::Code(101), &out));
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].id, tests[1].id);
    }

    #[test]
    fn collect_finds_the_path_in_the_name_without_runner_data() {
        let mut test = case("a::one");
        test.runner = None;
        let results = collect(&[test], &exit(ExitStatus::Code(0), PASSED));
        assert_eq!(outcome_and_message(&results), [(Outcome::Pass, None)]);
    }
}
