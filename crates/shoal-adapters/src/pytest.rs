//! The pytest adapter: lists node ids with `--collect-only`, runs a batch as
//! one pytest process, and reads results from pytest's JUnit report, falling
//! back to the progress stream of shoal's plugin for tests the report lacks
//! (the process died before writing it).
//!
//! A batch's command line names the files its tests are in and selects the
//! exact node ids with the plugin's `--shoal-select=ID` option rather than
//! passing node ids as arguments: pytest stops the whole run ("not found",
//! exit 4) when one node id argument does not resolve, and before pytest 9 it
//! cannot resolve ids with `::` inside their parameters. Selected this way, a
//! vanished test is just missing from the results.
//!
//! The plugin ([`PLUGIN_SOURCE`], `shoal_pytest_plugin.py`) is written into
//! `<support_dir>/pytest/` and loaded with `-p shoal_pytest_plugin` from
//! PYTHONPATH. It reports collected items and per-test start/finish lines on
//! the progress pipe (`SHOAL_PROGRESS_FD`) or, for discovery, to a file
//! (`SHOAL_PROGRESS_FILE`).
//!
//! A persistent runner ([`Adapter::persistent_runner`]) is one pytest run
//! with the plugin's `--shoal-serve`: it collects what discovery collects,
//! once, then runs each batch requested on stdin as `{"run": [ids]}` and
//! answers with the usual start/finish lines and a `batch_done` line.
//!
//! A test's id is its pytest node id, relative to pytest's rootdir. When the
//! rootdir is not the suite root, [`TestCase::runner`] holds the id relative to
//! the suite root, which is what goes on the command line.

use crate::command::{display_argv, is_stale, list_failed, run_listing_on};
use crate::junit::{self, Assignment, JunitCase, JunitStatus};
use crate::{Adapter, AdapterError, BatchCtx, DiscoverCtx, Invocation, Progress};
use async_trait::async_trait;
use serde::Deserialize;
use shoal_core::{CapturedOutput, Outcome, TestCase, TestId, TestResult};
use shoal_exec::{ProcessExit, ProcessSpec};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Source of the pytest plugin shoal loads into every pytest it starts.
pub const PLUGIN_SOURCE: &str = include_str!("shoal_pytest_plugin.py");
const PLUGIN_MODULE: &str = "shoal_pytest_plugin";
/// Directory under the support dir that holds the plugin (and goes on PYTHONPATH).
const PLUGIN_DIR: &str = "pytest";
/// Exit code of pytest when no tests were collected.
const EXIT_NO_TESTS: i32 = 5;

/// Distinguishes temporary files of concurrent discoveries in one process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs pytest suites.
#[derive(Debug, Clone)]
pub struct PytestAdapter {
    python: String,
    args: Vec<String>,
    /// Offer a long-lived runner per slot (`persistent_runner`).
    persistent: bool,
}

impl PytestAdapter {
    /// `python` is the interpreter to run `-m pytest` with; `args` go to
    /// pytest both when listing and when running.
    pub fn new(python: String, args: Vec<String>) -> Self {
        Self {
            python,
            args,
            persistent: true,
        }
    }

    /// Whether to offer a long-lived runner per slot (the default) or run
    /// every batch in a fresh pytest process.
    #[must_use]
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Writes the plugin into `support_dir` unless it is already there with
    /// the same content, and returns the directory to put on PYTHONPATH.
    /// Safe to call concurrently: the file is replaced atomically.
    pub fn install_plugin(support_dir: &Path) -> io::Result<PathBuf> {
        let dir = std::path::absolute(support_dir.join(PLUGIN_DIR))?;
        let path = dir.join(format!("{PLUGIN_MODULE}.py"));
        if std::fs::read(&path).is_ok_and(|current| current == PLUGIN_SOURCE.as_bytes()) {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(
            ".{PLUGIN_MODULE}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&tmp, PLUGIN_SOURCE)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(dir)
    }

    /// The plugin directory for a batch: normally already there from
    /// discovery; a worker that did not discover needs it too.
    fn batch_plugin_dir(ctx: &BatchCtx) -> PathBuf {
        Self::install_plugin(&ctx.support_dir).unwrap_or_else(|e| {
            tracing::warn!(dir = %ctx.support_dir.display(), error = %e, "cannot write the shoal pytest plugin");
            let dir = ctx.support_dir.join(PLUGIN_DIR);
            std::path::absolute(&dir).unwrap_or(dir)
        })
    }

    /// The batch's environment: the plugin directory on PYTHONPATH, and the
    /// slot presented as a pytest-xdist worker (see [`xdist_env`]).
    fn batch_env(ctx: &BatchCtx) -> BTreeMap<String, String> {
        let plugin_dir = Self::batch_plugin_dir(ctx);
        let mut env = ctx.env.clone();
        env.insert("PYTHONPATH".into(), pythonpath(&plugin_dir, &ctx.env));
        for (key, value) in xdist_env(&ctx.env) {
            env.entry(key.to_owned()).or_insert(value);
        }
        env
    }

    /// `<python> -m pytest -p shoal_pytest_plugin -p no:cacheprovider`.
    fn base_argv(&self) -> Vec<String> {
        [
            self.python.as_str(),
            "-m",
            "pytest",
            "-p",
            PLUGIN_MODULE,
            "-p",
            "no:cacheprovider",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// PYTHONPATH with the plugin directory first, then whatever `env` (or, if it
/// has none, this process) has.
fn pythonpath(plugin_dir: &Path, env: &BTreeMap<String, String>) -> String {
    let existing = env
        .get("PYTHONPATH")
        .cloned()
        .or_else(|| std::env::var("PYTHONPATH").ok())
        .filter(|p| !p.is_empty());
    let mut joined = OsString::from(plugin_dir);
    if let Some(existing) = existing {
        joined.push(":");
        joined.push(existing);
    }
    joined.to_string_lossy().into_owned()
}

/// The variables pytest-xdist sets in its workers, for the slot `env`
/// describes (`SHOAL_SLOT`, `SHOAL_SLOT_COUNT`, `SHOAL_RUN_ID`): worker
/// `gw<slot>` of the slot count, with a run-wide uid. The plugin fills
/// `config.workerinput` from them, so suites that keep per-worker databases
/// and files under xdist keep them per slot under shoal.
fn xdist_env(env: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    let Some(slot) = env.get("SHOAL_SLOT") else {
        return Vec::new();
    };
    let count = env
        .get("SHOAL_SLOT_COUNT")
        .cloned()
        .unwrap_or_else(|| "1".to_owned());
    let uid: String = env
        .get("SHOAL_RUN_ID")
        .map(|id| id.chars().filter(char::is_ascii_hexdigit).collect())
        .unwrap_or_default();
    vec![
        ("PYTEST_XDIST_WORKER", format!("gw{slot}")),
        ("PYTEST_XDIST_WORKER_COUNT", count),
        ("PYTEST_XDIST_TESTRUNUID", uid),
    ]
}

/// Appends `paths` as positional arguments after `--` (nothing when empty).
fn push_paths(argv: &mut Vec<String>, paths: &[String]) {
    if !paths.is_empty() {
        argv.push("--".into());
        argv.extend(paths.iter().map(|p| command_line_path(p)));
    }
}

/// The path a test is named by on a command line run in the suite root.
fn test_location(test: &TestCase) -> &str {
    test.runner.as_deref().unwrap_or(&test.id.name)
}

/// The narrowest paths that collect every file of `selected` and no file
/// of `discovered` beyond them, within `scope` (empty: the suite root): a
/// directory stands for its files when all of them are selected.
fn narrowest_paths(
    selected: &[TestCase],
    discovered: &[TestCase],
    scope: &[String],
) -> Vec<String> {
    fn file_of(t: &TestCase) -> &str {
        let at = test_location(t);
        at.split_once("::").map_or(at, |(file, _)| file)
    }
    fn parent(path: &str) -> Option<&str> {
        match path.rfind('/') {
            Some(i) => Some(&path[..i]),
            None if path.is_empty() => None,
            None => Some(""),
        }
    }
    let wanted: HashSet<&str> = selected.iter().map(file_of).collect();
    // Directories holding a discovered file that is not selected.
    let mut partial: HashSet<&str> = HashSet::new();
    for t in discovered {
        let file = file_of(t);
        if wanted.contains(file) {
            continue;
        }
        let mut dir = parent(file);
        while let Some(d) = dir {
            if !partial.insert(d) {
                break;
            }
            dir = parent(d);
        }
    }
    // A directory may stand for its files only inside a collected directory.
    let may_widen = |dir: &str| {
        if scope.is_empty() {
            return true;
        }
        scope.iter().any(|s| crate::located_in(dir, s, None))
    };
    let mut paths: Vec<String> = Vec::new();
    for file in &wanted {
        let mut best = *file;
        let mut dir = parent(file);
        while let Some(d) = dir {
            if partial.contains(d) || !may_widen(d) {
                break;
            }
            best = d;
            dir = parent(d);
        }
        paths.push(best.to_owned());
    }
    paths.sort();
    paths.dedup();
    if paths.iter().any(String::is_empty) {
        return scope.to_vec();
    }
    paths
}

/// A line the plugin writes (schema version 1).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum PluginEvent {
    Collected {
        nodeid: String,
        file: String,
        #[serde(default)]
        arg: Option<String>,
    },
    CollectionFinished {
        count: usize,
    },
    /// Serve mode: collection is over, requests are read from now on.
    Ready {
        count: usize,
    },
    /// Serve mode: a requested id that was not collected.
    Unknown {
        nodeid: String,
    },
    /// Serve mode: the last request's tests are done.
    BatchDone {},
    Start {
        nodeid: String,
    },
    Finish {
        nodeid: String,
        outcome: String,
        duration: f64,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        output: Option<String>,
        #[serde(default)]
        output_dropped: u64,
    },
}

#[async_trait]
impl Adapter for PytestAdapter {
    fn name(&self) -> &'static str {
        "pytest"
    }

    async fn discover(&self, ctx: &DiscoverCtx) -> Result<Vec<TestCase>, AdapterError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AdapterError::Io { path, source }
        };
        let plugin_dir =
            Self::install_plugin(&ctx.support_dir).map_err(io_err(&ctx.support_dir))?;
        let listing = plugin_dir.join(format!(
            "collect-{}-{}.jsonl",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut argv = self.base_argv();
        argv.extend(["--collect-only".into(), "-q".into()]);
        argv.extend(self.args.iter().cloned());
        push_paths(&mut argv, &ctx.scope);

        let mut env: BTreeMap<String, String> = ctx.suite.env.clone();
        env.extend(ctx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert("PYTHONPATH".into(), pythonpath(&plugin_dir, &env));
        env.insert(
            "SHOAL_PROGRESS_FILE".into(),
            listing.to_string_lossy().into_owned(),
        );
        let output = run_listing_on(
            ctx.executor.as_ref(),
            &argv,
            &ctx.suite.root,
            &env,
            &["SHOAL_PROGRESS_FD"],
        )
        .await;
        let lines = std::fs::read_to_string(&listing);
        let _ = std::fs::remove_file(&listing);
        let output = output?;
        match output.status.code() {
            Some(0) => {}
            Some(EXIT_NO_TESTS) => return Ok(Vec::new()),
            _ => return Err(list_failed(&argv, &output)),
        }
        let bad = |detail: String| AdapterError::BadListOutput {
            command: display_argv(&argv),
            detail,
        };
        let lines = lines.map_err(|e| {
            bad(format!(
                "the shoal pytest plugin wrote no test list ({e}); was it loaded?"
            ))
        })?;
        let mut tests = Vec::new();
        let mut seen = HashSet::new();
        let mut finished = None;
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<PluginEvent>(line) {
                Ok(PluginEvent::Collected { nodeid, file, arg }) => {
                    if seen.insert(nodeid.clone()) {
                        tests.push(TestCase {
                            id: TestId::new(ctx.suite.name.clone(), nodeid),
                            group: file,
                            runner: arg,
                        });
                    }
                }
                Ok(PluginEvent::CollectionFinished { count }) => finished = Some(count),
                Ok(_) => {}
                Err(e) => return Err(bad(format!("unreadable plugin line {line:?}: {e}"))),
            }
        }
        match finished {
            Some(_) => Ok(tests),
            None => Err(bad(
                "the shoal pytest plugin did not report the end of collection".into(),
            )),
        }
    }

    fn plan(&self, tests: &[TestCase], ctx: &BatchCtx) -> Vec<Invocation> {
        if tests.is_empty() {
            return Vec::new();
        }
        // pytest runs in the suite root: a relative path would land elsewhere.
        let junit = ctx.scratch_dir.join(format!("junit-{}.xml", ctx.batch_seq));
        let junit = std::path::absolute(&junit).unwrap_or(junit);
        let mut argv = self.base_argv();
        argv.push(format!("--junitxml={}", junit.display()));
        for option in [
            "junit_family=xunit1",
            "junit_logging=all",
            "junit_log_passing_tests=False",
        ] {
            argv.extend(["-o".to_owned(), option.to_owned()]);
        }
        argv.push("-q".into());
        let (tests, files) = group_by_file(tests);
        argv.extend(
            tests
                .iter()
                .map(|t| format!("--shoal-select={}", t.id.name)),
        );
        argv.extend(self.args.iter().cloned());
        argv.push("--".into());
        argv.extend(files.into_iter().map(command_line_path));

        let spec = ProcessSpec {
            argv,
            cwd: ctx.suite.root.clone(),
            env: Self::batch_env(ctx),
            progress_pipe: true,
            stdin_pipe: false,
            output_cap: ctx.output_cap,
        };
        vec![Invocation {
            spec,
            tests,
            junit: Some(junit),
            time_limit: None,
        }]
    }

    fn discovery_inputs(&self) -> Option<&'static [&'static str]> {
        // Test modules, conftest.py, and pytest's config files.
        Some(&[
            "*.py",
            "pytest.ini",
            "pyproject.toml",
            "setup.cfg",
            "tox.ini",
        ])
    }

    fn persistent_runner(&self, ctx: &BatchCtx) -> Option<Invocation> {
        if !self.persistent {
            return None;
        }
        let mut argv = self.base_argv();
        argv.extend(["-q".into(), "--shoal-serve".into()]);
        argv.extend(self.args.iter().cloned());
        push_paths(&mut argv, &ctx.collect);
        Some(Invocation {
            spec: ProcessSpec {
                argv,
                cwd: ctx.suite.root.clone(),
                env: Self::batch_env(ctx),
                progress_pipe: true,
                stdin_pipe: true,
                output_cap: ctx.output_cap,
            },
            tests: Vec::new(),
            junit: None,
            time_limit: None,
        })
    }

    fn batch_request(&self, tests: &[TestCase]) -> String {
        let ids: Vec<&str> = tests.iter().map(|t| t.id.name.as_str()).collect();
        serde_json::json!({ "run": ids }).to_string()
    }

    fn reports_progress(&self) -> bool {
        true
    }

    fn locality(&self, test: &TestCase) -> Option<String> {
        Some(test.group.clone())
    }

    fn test_in_path(&self, test: &TestCase, _root: &Path, path: &str, node: Option<&str>) -> bool {
        crate::located_in(test_location(test), path, node)
    }

    fn runner_scope(
        &self,
        selected: &[TestCase],
        discovered: &[TestCase],
        scope: &[String],
    ) -> Vec<String> {
        if selected.len() == discovered.len() {
            return scope.to_vec();
        }
        narrowest_paths(selected, discovered, scope)
    }

    fn parse_progress(&self, line: &str) -> Option<Progress> {
        match serde_json::from_str::<PluginEvent>(line.trim_end()).ok()? {
            PluginEvent::Start { nodeid } => Some(Progress::Started { name: nodeid }),
            PluginEvent::Finish {
                nodeid,
                outcome,
                duration,
                message,
                output,
                output_dropped,
            } => Some(Progress::Finished {
                name: nodeid,
                outcome: Outcome::parse(&outcome)
                    .filter(|o| matches!(o, Outcome::Pass | Outcome::Fail | Outcome::Skip))?,
                duration: Duration::try_from_secs_f64(duration).unwrap_or_default(),
                message,
                output: output.map(|text| CapturedOutput {
                    text,
                    truncated_bytes: output_dropped,
                }),
            }),
            PluginEvent::BatchDone {} => Some(Progress::BatchDone),
            PluginEvent::Unknown { nodeid } => Some(Progress::Unknown { name: nodeid }),
            PluginEvent::Ready { count } => {
                tracing::debug!(count, "the persistent pytest runner is ready");
                None
            }
            PluginEvent::Collected { .. } | PluginEvent::CollectionFinished { .. } => None,
        }
    }

    fn collect(
        &self,
        inv: &Invocation,
        exit: &ProcessExit,
        progress: &[Progress],
    ) -> Vec<TestResult> {
        let cap = inv.spec.output_cap;
        let mut assignment = Assignment::new(inv.tests.len());
        if let Some(path) = inv.junit.as_ref().filter(|p| !is_stale(p, exit.wall)) {
            match junit::parse_file(path, cap) {
                Ok(report) => {
                    if let Some(error) = &report.error {
                        tracing::warn!(path = %path.display(), %error, "pytest junit report read only in part");
                    }
                    assign_cases(&inv.tests, &report.cases, &mut assignment);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open pytest junit report")
                }
            }
        }
        let mut finished: HashMap<&str, &Progress> = HashMap::new();
        for p in progress {
            if let Progress::Finished { name, .. } = p {
                finished.insert(name.as_str(), p);
            }
        }
        inv.tests
            .iter()
            .enumerate()
            .filter_map(|(i, test)| {
                assignment
                    .take(i, test.id.clone(), cap)
                    .map(|mut r| {
                        r.output.text = drop_empty_captured_sections(&r.output.text);
                        r
                    })
                    .or_else(|| match finished.get(test.id.name.as_str()) {
                        Some(Progress::Finished {
                            outcome,
                            duration,
                            message,
                            output,
                            ..
                        }) => Some(TestResult {
                            id: test.id.clone(),
                            outcome: *outcome,
                            duration: *duration,
                            message: message.clone(),
                            output: output
                                .as_ref()
                                .map(|o| junit::recap_output(o, cap))
                                .unwrap_or_default(),
                        }),
                        _ => None,
                    })
            })
            .collect()
    }
}

/// pytest's JUnit output (`junit_logging=all`) has a banner for every
/// capture kind, also when it caught nothing; keeps only sections with text.
fn drop_empty_captured_sections(text: &str) -> String {
    fn is_banner(line: &str) -> bool {
        let t = line.trim_matches('-').trim();
        line.starts_with("---") && line.ends_with("---") && t.starts_with("Captured ")
    }
    let mut out = String::with_capacity(text.len());
    let mut section: Option<String> = None;
    let flush = |section: &mut Option<String>, out: &mut String| {
        if let Some(sec) = section.take() {
            if sec.lines().skip(1).any(|l| !l.trim().is_empty()) {
                out.push_str(&sec);
            }
        }
    };
    for line in text.split_inclusive('\n') {
        if is_banner(line.trim_end_matches(['\n', '\r'])) {
            flush(&mut section, &mut out);
            section = Some(line.to_owned());
        } else if let Some(sec) = section.as_mut() {
            sec.push_str(line);
        } else {
            out.push_str(line);
        }
    }
    flush(&mut section, &mut out);
    out.trim_end().to_owned()
}

/// The tests reordered so each file's tests are contiguous (files in order of
/// first appearance, tests in their given order within a file), which is the
/// order pytest runs them in, and the files to name on the command line.
fn group_by_file(tests: &[TestCase]) -> (Vec<TestCase>, Vec<&str>) {
    fn file_of(t: &TestCase) -> &str {
        let arg = t.runner.as_deref().unwrap_or(&t.id.name);
        arg.split_once("::").map_or(arg, |(file, _)| file)
    }
    let mut files: Vec<&str> = Vec::new();
    let mut members: HashMap<&str, Vec<&TestCase>> = HashMap::new();
    for test in tests {
        let file = file_of(test);
        let group = members.entry(file).or_default();
        if group.is_empty() {
            files.push(file);
        }
        group.push(test);
    }
    let ordered = files
        .iter()
        .flat_map(|f| members[f].iter().map(|t| (*t).clone()))
        .collect();
    (ordered, files)
}

/// A path as a command-line argument: pytest reads `@file` arguments as
/// argument files, so such paths get a `./` prefix (paths starting with `-`
/// are safe after `--`).
fn command_line_path(path: &str) -> String {
    if path.starts_with('@') {
        format!("./{path}")
    } else {
        path.to_owned()
    }
}

/// Matches report cases to the invocation's tests by the (classname, name)
/// pytest derives from each node id, falling back to the name alone when the
/// classname differs (a `junit_prefix`, another rootdir) and the match is
/// unambiguous.
fn assign_cases(tests: &[TestCase], cases: &[JunitCase], assignment: &mut Assignment) {
    let mut exact: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut by_name: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (i, test) in tests.iter().enumerate() {
        let addresses = junit_addresses(&test.id.name);
        for address in &addresses {
            let indices = exact.entry(address.clone()).or_default();
            if !indices.contains(&i) {
                indices.push(i);
            }
        }
        if let Some((classname, name)) = addresses.into_iter().next() {
            by_name.entry(name).or_default().push((i, classname));
        }
    }
    for case in cases {
        let classname = case.classname.as_deref().unwrap_or("");
        if let Some(indices) = exact.get(&(classname.to_owned(), case.name.clone())) {
            assignment.assign(indices, case);
            continue;
        }
        let same_name = by_name
            .get(&case.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let related: Vec<usize> = same_name
            .iter()
            .filter(|(_, expected)| {
                dotted_suffix(classname, expected) || dotted_suffix(expected, classname)
            })
            .map(|(i, _)| *i)
            .collect();
        let unassigned: Vec<usize> = same_name
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| !assignment.is_assigned(i))
            .collect();
        let pick = match (related.as_slice(), unassigned.as_slice()) {
            ([one], _) | (_, [one]) => Some(*one),
            _ => None,
        };
        if let Some(index) = pick {
            assignment.assign(&[index], case);
        } else if !assign_collection_error(tests, case, assignment) {
            tracing::debug!(classname, name = %case.name, "pytest junit test case matches no test of the batch");
        }
    }
}

/// A module that failed to import is reported as one case named after the
/// module (or directory) in dotted form; it fails every test of the batch
/// below it that has no result of its own.
fn assign_collection_error(
    tests: &[TestCase],
    case: &JunitCase,
    assignment: &mut Assignment,
) -> bool {
    let is_collection_error = case.status == JunitStatus::Errored
        && case.message.as_deref() == Some("collection failure")
        && case.classname.as_deref().unwrap_or("").is_empty();
    if !is_collection_error || case.name.is_empty() {
        return false;
    }
    let mut assigned = false;
    for (i, test) in tests.iter().enumerate() {
        let file = dotted_path(test.id.name.split("::").next().unwrap_or_default());
        let below = file == case.name
            || file
                .strip_prefix(case.name.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
        if below && !assignment.is_assigned(i) {
            assignment.assign(&[i], case);
            assigned = true;
        }
    }
    assigned
}

/// Whether `long` is `short` with a dotted prefix (`a.b.c` vs `b.c`).
fn dotted_suffix(long: &str, short: &str) -> bool {
    long.len() > short.len()
        && long.ends_with(short)
        && long.as_bytes()[long.len() - short.len() - 1] == b'.'
}

/// The (classname, name) pairs pytest's JUnit writer produces for `nodeid`:
/// pytest ≥ 9 peels the parameters off first; earlier versions split at the
/// first `[`. Usually both agree and one pair is returned.
fn junit_addresses(nodeid: &str) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(2);
    for names in [mangle(nodeid), mangle_legacy(nodeid)] {
        let Some((last, classes)) = names.split_last() else {
            continue;
        };
        let pair = (classes.join("."), bin_xml_escape(last));
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// pytest's `mangle_test_address` (pytest ≥ 9).
fn mangle(nodeid: &str) -> Vec<String> {
    let Some((path, tail)) = nodeid.split_once("::") else {
        return vec![dotted_path(nodeid)];
    };
    let (name_part, params) = match tail.split_once('[') {
        Some((names, params)) => (names, Some(params.strip_suffix(']').unwrap_or(params))),
        None => (tail, None),
    };
    let mut names = vec![dotted_path(path)];
    names.extend(name_part.split("::").map(str::to_owned));
    if let (Some(params), Some(last)) = (params, names.last_mut()) {
        last.push('[');
        last.push_str(params);
        last.push(']');
    }
    names
}

/// pytest's `mangle_test_address` (pytest 7 and 8).
fn mangle_legacy(nodeid: &str) -> Vec<String> {
    let (path, params) = match nodeid.find('[') {
        Some(at) => nodeid.split_at(at),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    names[0] = dotted_path(&names[0]);
    if let Some(last) = names.last_mut() {
        last.push_str(params);
    }
    names
}

/// `tests/sub/test_x.py` → `tests.sub.test_x`.
fn dotted_path(path: &str) -> String {
    let dotted = path.replace('/', ".");
    match dotted.strip_suffix(".py") {
        Some(stem) => stem.to_owned(),
        None => dotted,
    }
}

/// pytest's `bin_xml_escape`: characters XML cannot hold become `#xNN`.
fn bin_xml_escape(text: &str) -> String {
    let legal = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{80}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
    if text.chars().all(legal) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if legal(c) => out.push(c),
            c if u32::from(c) <= 0xFF => out.push_str(&format!("#x{:02X}", u32::from(c))),
            c => out.push_str(&format!("#x{:04X}", u32::from(c))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_capture_sections_are_dropped() {
        let text = "E   assert 1 == 2\n----- Captured Log -----\n\n----- Captured Out -----\nhello\n\n----- Captured Err -----\n\n";
        assert_eq!(
            super::drop_empty_captured_sections(text),
            "E   assert 1 == 2\n----- Captured Out -----\nhello"
        );
        assert_eq!(
            super::drop_empty_captured_sections("plain\ntext\n"),
            "plain\ntext"
        );
    }

    use super::*;
    use shoal_core::config::{AdapterConfig, Config};

    fn adapter() -> PytestAdapter {
        PytestAdapter::new("python3".into(), vec!["-x".into()])
    }

    fn test(nodeid: &str) -> TestCase {
        TestCase {
            id: TestId::new("py", nodeid),
            group: nodeid.split("::").next().unwrap_or("").into(),
            runner: None,
        }
    }

    fn batch(dir: &Path) -> BatchCtx {
        let cfg = AdapterConfig::Pytest {
            python: "python3".into(),
            args: vec![],
            persistent: true,
        };
        let suite = Config::zero_config(dir, vec![("py".into(), cfg, dir.to_owned())])
            .suites
            .remove(0);
        BatchCtx {
            suite,
            support_dir: dir.join("support"),
            scratch_dir: dir.join("scratch"),
            batch_seq: 3,
            env: BTreeMap::from([
                ("PYTHONPATH".into(), "/user/lib".into()),
                ("SHOAL_SLOT".into(), "2".into()),
            ]),
            output_cap: 4096,
            estimates: Default::default(),
            collect: Vec::new(),
        }
    }

    fn case(classname: &str, name: &str, status: JunitStatus) -> JunitCase {
        JunitCase {
            suite: Some("pytest".into()),
            classname: Some(classname.into()),
            name: name.into(),
            file: None,
            time: Some(Duration::from_millis(10)),
            status,
            message: None,
            kind: None,
            details: CapturedOutput::default(),
            system_out: CapturedOutput::default(),
            system_err: CapturedOutput::default(),
            reruns: 0,
        }
    }

    #[test]
    fn mangles_like_pytest() {
        assert_eq!(
            junit_addresses("tests/test_a.py::test_x"),
            [("tests.test_a".to_owned(), "test_x".to_owned())]
        );
        assert_eq!(
            junit_addresses("tests/deep/test_b.py::TestK::Inner::test_y[a b-1]"),
            [(
                "tests.deep.test_b.TestK.Inner".to_owned(),
                "test_y[a b-1]".to_owned()
            )]
        );
        assert_eq!(
            junit_addresses("t.py::test_w[a::b]"),
            [("t".to_owned(), "test_w[a::b]".to_owned())]
        );
        assert_eq!(
            junit_addresses("t.py::test_w[br[ack]ets]"),
            [("t".to_owned(), "test_w[br[ack]ets]".to_owned())]
        );
        // A bracket in the path: pytest 9 and earlier versions disagree.
        assert_eq!(
            junit_addresses("dir[1]/test_z.py::test_z"),
            [
                ("dir[1].test_z".to_owned(), "test_z".to_owned()),
                ("".to_owned(), "dir[1]/test_z.py::test_z".to_owned())
            ]
        );
        assert_eq!(
            bin_xml_escape("a\u{7}b\u{7f}c\u{fffe}"),
            "a#x07b#x7Fc#xFFFE"
        );
        assert_eq!(bin_xml_escape("ünï 日本"), "ünï 日本");
    }

    #[test]
    fn plan_builds_one_invocation_with_safe_argv() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = batch(dir.path());
        let mut moved = test("tests/sub/test_m.py::test_m");
        moved.runner = Some("sub/test_m.py::test_m".into());
        let tests = [
            test("tests/test_a.py::test_x[$(touch /tmp/shoal-pwned)]"),
            test("@odd/test_o.py::test_o"),
            moved,
            test("tests/test_a.py::test_w[a::b]"),
        ];
        let [inv] = &adapter().plan(&tests, &ctx)[..] else {
            panic!("one invocation")
        };
        let junit = dir.path().join("scratch/junit-3.xml");
        let expected: Vec<String> = [
            "python3",
            "-m",
            "pytest",
            "-p",
            "shoal_pytest_plugin",
            "-p",
            "no:cacheprovider",
            &format!("--junitxml={}", junit.display()),
            "-o",
            "junit_family=xunit1",
            "-o",
            "junit_logging=all",
            "-o",
            "junit_log_passing_tests=False",
            "-q",
            "--shoal-select=tests/test_a.py::test_x[$(touch /tmp/shoal-pwned)]",
            "--shoal-select=tests/test_a.py::test_w[a::b]",
            "--shoal-select=@odd/test_o.py::test_o",
            "--shoal-select=tests/sub/test_m.py::test_m",
            "-x",
            "--",
            "tests/test_a.py",
            "./@odd/test_o.py",
            "sub/test_m.py",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(inv.spec.argv, expected);
        let order: Vec<_> = inv.tests.iter().map(|t| t.id.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "tests/test_a.py::test_x[$(touch /tmp/shoal-pwned)]",
                "tests/test_a.py::test_w[a::b]",
                "@odd/test_o.py::test_o",
                "tests/sub/test_m.py::test_m",
            ]
        );
        assert!(inv.spec.progress_pipe);
        assert_eq!(inv.junit.as_deref(), Some(junit.as_path()));
        let plugin_dir = dir.path().join("support/pytest");
        assert_eq!(
            inv.spec.env["PYTHONPATH"],
            format!("{}:/user/lib", plugin_dir.display())
        );
        assert_eq!(inv.spec.env["SHOAL_SLOT"], "2");
        assert_eq!(
            std::fs::read_to_string(plugin_dir.join("shoal_pytest_plugin.py")).unwrap(),
            PLUGIN_SOURCE
        );
    }

    #[test]
    fn persistent_runner_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = batch(dir.path());
        assert!(
            adapter()
                .with_persistent(false)
                .persistent_runner(&ctx)
                .is_none()
        );
    }

    #[test]
    fn persistent_runner_serves_what_discovery_collects() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = batch(dir.path());
        let inv = adapter().persistent_runner(&ctx).expect("pytest has one");
        let expected: Vec<String> = [
            "python3",
            "-m",
            "pytest",
            "-p",
            "shoal_pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "--shoal-serve",
            "-x",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(inv.spec.argv, expected);
        assert_eq!(inv.spec.cwd, ctx.suite.root);
        assert!(inv.spec.progress_pipe && inv.spec.stdin_pipe);
        assert_eq!(inv.spec.output_cap, 4096);
        assert!(inv.tests.is_empty() && inv.junit.is_none());
        assert_eq!(
            inv.spec.env["PYTHONPATH"],
            format!("{}:/user/lib", dir.path().join("support/pytest").display())
        );
        assert_eq!(inv.spec.env["SHOAL_SLOT"], "2");
        assert_eq!(
            inv.spec.env["PYTEST_XDIST_WORKER"], "gw2",
            "the slot as an xdist worker"
        );
    }

    #[test]
    fn persistent_runner_collects_only_its_scope() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = batch(dir.path());
        ctx.collect = vec!["pkg/sub".into(), "@odd/test_x.py".into()];
        let inv = adapter().persistent_runner(&ctx).expect("pytest has one");
        let tail: Vec<&str> = inv
            .spec
            .argv
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, ["--", "pkg/sub", "./@odd/test_x.py"]);
    }

    #[test]
    fn xdist_variables_follow_the_slot_and_keep_the_users() {
        let env = BTreeMap::from([
            ("SHOAL_SLOT".to_owned(), "1".to_owned()),
            ("SHOAL_SLOT_COUNT".to_owned(), "4".to_owned()),
            ("SHOAL_RUN_ID".to_owned(), "0197a2c4-5b1e-7c3d".to_owned()),
        ]);
        assert_eq!(
            xdist_env(&env),
            [
                ("PYTEST_XDIST_WORKER", "gw1".to_owned()),
                ("PYTEST_XDIST_WORKER_COUNT", "4".to_owned()),
                ("PYTEST_XDIST_TESTRUNUID", "0197a2c45b1e7c3d".to_owned()),
            ]
        );
        assert!(
            xdist_env(&BTreeMap::new()).is_empty(),
            "discovery is no worker"
        );
    }

    fn cases(names: &[&str]) -> Vec<TestCase> {
        names
            .iter()
            .map(|n| TestCase {
                id: TestId::new("py", *n),
                group: String::new(),
                runner: None,
            })
            .collect()
    }

    #[test]
    fn runners_collect_the_narrowest_paths_holding_the_selection() {
        let all = cases(&[
            "a/x/test_1.py::t",
            "a/x/test_2.py::t",
            "a/y/test_3.py::t",
            "a/y/test_3.py::u",
            "b/test_4.py::t",
        ]);
        let pick =
            |idx: &[usize]| -> Vec<TestCase> { idx.iter().map(|&i| all[i].clone()).collect() };
        let a = adapter();
        // Everything: what discovery collected.
        assert!(a.runner_scope(&all, &all, &[]).is_empty());
        assert_eq!(a.runner_scope(&all, &all, &["a".into()]), ["a"]);
        // A whole directory stands for its files; a partial one does not.
        assert_eq!(a.runner_scope(&pick(&[0, 1]), &all, &[]), ["a/x"]);
        assert_eq!(
            a.runner_scope(&pick(&[0, 2]), &all, &[]),
            ["a/x/test_1.py", "a/y"],
            "a/y holds only test_3.py"
        );
        // One test of a file: the file.
        assert_eq!(a.runner_scope(&pick(&[2]), &all, &[]), ["a/y"]);
        assert_eq!(a.runner_scope(&pick(&[4]), &all, &[]), ["b"]);
        // Never wider than the collected scope: a file scope stays a file.
        let scoped = pick(&[0, 1]);
        assert_eq!(
            a.runner_scope(
                &pick(&[0]),
                &scoped,
                &["a/x/test_1.py".into(), "a/x/test_2.py".into()]
            ),
            ["a/x/test_1.py"]
        );
        assert_eq!(
            a.runner_scope(
                &scoped,
                &all,
                &["a/x/test_1.py".into(), "a/x/test_2.py".into()]
            )
            .len(),
            2
        );
    }

    #[test]
    fn batch_request_is_one_json_line_of_ids_in_order() {
        let mut moved = test("tests/sub/test_m.py::test_m");
        moved.runner = Some("sub/test_m.py::test_m".into());
        let tests = [
            test("t.py::test_b[a\nb \"q\"]"),
            moved,
            test("t.py::test_a[$(x)]"),
        ];
        let line = adapter().batch_request(&tests);
        assert!(!line.contains('\n'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"run": [
                "t.py::test_b[a\nb \"q\"]",
                "tests/sub/test_m.py::test_m",
                "t.py::test_a[$(x)]",
            ]})
        );
        assert_eq!(adapter().batch_request(&[]), r#"{"run":[]}"#);
    }

    #[test]
    fn install_plugin_is_idempotent_and_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let first = PytestAdapter::install_plugin(dir.path()).unwrap();
        let file = first.join("shoal_pytest_plugin.py");
        std::fs::write(&file, "stale").unwrap();
        let second = PytestAdapter::install_plugin(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), PLUGIN_SOURCE);
        let entries = std::fs::read_dir(&first).unwrap().count();
        assert_eq!(entries, 1, "no temporary files are left behind");
    }

    #[test]
    fn progress_lines() {
        let a = adapter();
        assert_eq!(
            a.parse_progress(r#"{"event": "start", "nodeid": "t.py::a b", "v": 1}"#),
            Some(Progress::Started {
                name: "t.py::a b".into()
            })
        );
        assert_eq!(
            a.parse_progress("{\"event\": \"finish\", \"nodeid\": \"t.py::x\", \"outcome\": \"skip\", \"duration\": 0.25, \"message\": \"xfail: bug\", \"v\": 1}\n"),
            Some(Progress::Finished { name: "t.py::x".into(), outcome: Outcome::Skip, duration: Duration::from_millis(250), message: Some("xfail: bug".into()), output: None })
        );
        assert_eq!(
            a.parse_progress(r#"{"event": "collected", "nodeid": "t.py::x", "file": "t.py"}"#),
            None
        );
        assert_eq!(
            a.parse_progress(
                r#"{"event": "finish", "nodeid": "t", "outcome": "crash", "duration": 1}"#
            ),
            None
        );
        assert_eq!(a.parse_progress("not json"), None);
        assert_eq!(
            a.parse_progress(r#"{"event": "batch_done", "v": 1}"#),
            Some(Progress::BatchDone)
        );
        assert_eq!(
            a.parse_progress(r#"{"event": "ready", "count": 3, "v": 1}"#),
            None
        );
        assert_eq!(
            a.parse_progress(r#"{"event": "unknown", "nodeid": "t.py::gone", "v": 1}"#),
            Some(Progress::Unknown {
                name: "t.py::gone".into()
            })
        );
        assert_eq!(
            a.parse_progress(
                r#"{"event": "finish", "nodeid": "t", "outcome": "pass", "duration": -1}"#
            )
            .map(|p| matches!(p, Progress::Finished { duration, .. } if duration.is_zero())),
            Some(true)
        );
    }

    #[test]
    fn assigns_exact_prefixed_and_double_cases() {
        let tests = [
            test("tests/test_a.py::test_x"),
            test("tests/test_a.py::TestK::test_y[p]"),
            test("tests/b/test_c.py::test_z"),
            test("tests/test_a.py::test_t"),
        ];
        let mut fail = case("tests.test_a", "test_t", JunitStatus::Failed);
        fail.message = Some("assert 0".into());
        let mut teardown = case("tests.test_a", "test_t", JunitStatus::Errored);
        teardown.message = Some("teardown".into());
        let cases = [
            case("tests.test_a", "test_x", JunitStatus::Passed),
            case(
                "prefix.tests.test_a.TestK",
                "test_y[p]",
                JunitStatus::Skipped,
            ),
            case("other.root", "test_z", JunitStatus::Passed),
            fail,
            teardown,
            case("tests.test_a", "not_in_batch", JunitStatus::Passed),
        ];
        let mut assignment = Assignment::new(tests.len());
        assign_cases(&tests, &cases, &mut assignment);
        let results: Vec<_> = (0..tests.len())
            .filter_map(|i| assignment.take(i, tests[i].id.clone(), 100))
            .collect();
        let summary: Vec<_> = results
            .iter()
            .map(|r| {
                (
                    r.id.name.as_str(),
                    r.outcome,
                    r.message.as_deref(),
                    r.duration,
                )
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            summary,
            [
                ("tests/test_a.py::test_x", Outcome::Pass, None, ms(10)),
                (
                    "tests/test_a.py::TestK::test_y[p]",
                    Outcome::Skip,
                    None,
                    ms(10)
                ),
                ("tests/b/test_c.py::test_z", Outcome::Pass, None, ms(10)),
                (
                    "tests/test_a.py::test_t",
                    Outcome::Fail,
                    Some("assert 0"),
                    ms(20)
                ),
            ]
        );
    }

    #[test]
    fn collection_errors_fail_the_tests_below_them() {
        let tests = [
            test("tests/test_bad.py::test_a"),
            test("tests/test_bad.py::K::test_b[1]"),
            test("tests/test_bad_too.py::test_c"),
            test("tests/test_ok.py::test_d"),
        ];
        let mut error = case("", "tests.test_bad", JunitStatus::Errored);
        error.message = Some("collection failure".into());
        let mut assignment = Assignment::new(tests.len());
        assign_cases(&tests, &[error], &mut assignment);
        let assigned: Vec<bool> = (0..tests.len())
            .map(|i| assignment.is_assigned(i))
            .collect();
        assert_eq!(assigned, [true, true, false, false]);
        let result = assignment.take(0, tests[0].id.clone(), 100).unwrap();
        assert_eq!(
            (result.outcome, result.message.as_deref()),
            (Outcome::Fail, Some("collection failure"))
        );

        let mut dir_error = case("", "tests", JunitStatus::Errored);
        dir_error.message = Some("collection failure".into());
        let mut assignment = Assignment::new(tests.len());
        assign_cases(&tests, &[dir_error], &mut assignment);
        assert!((0..tests.len()).all(|i| assignment.is_assigned(i)));
    }

    #[test]
    fn ambiguous_name_only_matches_are_dropped() {
        let tests = [
            test("a/test_m.py::test_same"),
            test("b/test_m.py::test_same"),
        ];
        let cases = [case("elsewhere", "test_same", JunitStatus::Passed)];
        let mut assignment = Assignment::new(tests.len());
        assign_cases(&tests, &cases, &mut assignment);
        assert!(!assignment.is_assigned(0) && !assignment.is_assigned(1));
    }

    #[test]
    fn collect_falls_back_to_progress() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = batch(dir.path());
        let tests = [
            test("t.py::done"),
            test("t.py::running"),
            test("t.py::never"),
        ];
        let inv = &adapter().plan(&tests, &ctx)[0];
        let progress = [
            Progress::Started {
                name: "t.py::done".into(),
            },
            Progress::Finished {
                name: "t.py::done".into(),
                outcome: Outcome::Fail,
                duration: Duration::from_secs(1),
                message: Some("boom".into()),
                output: Some(CapturedOutput {
                    text: "E   assert 1 == 2".into(),
                    truncated_bytes: 0,
                }),
            },
            Progress::Started {
                name: "t.py::running".into(),
            },
        ];
        let exit = ProcessExit {
            status: shoal_exec::ExitStatus::Code(1),
            output: Default::default(),
            wall: Duration::from_secs(2),
            terminated: false,
            oom_killed: false,
        };
        let results = adapter().collect(inv, &exit, &progress);
        assert_eq!(results.len(), 1);
        assert_eq!(
            (
                results[0].id.name.as_str(),
                results[0].outcome,
                results[0].message.as_deref()
            ),
            ("t.py::done", Outcome::Fail, Some("boom"))
        );
    }
}
