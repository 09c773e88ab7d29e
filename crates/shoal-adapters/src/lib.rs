//! Adapters: each knows one test tool — how to list its tests, how to run a
//! batch of them as processes, and how to read the results back.

use async_trait::async_trait;
use shoal_core::config::SuiteConfig;
use shoal_core::{CapturedOutput, Outcome, TestCase, TestResult};
use shoal_exec::{ProcessExit, ProcessSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Inputs to discovery.
#[derive(Debug, Clone)]
pub struct DiscoverCtx {
    pub suite: SuiteConfig,
    /// Per-run directory for adapter support files (e.g. the pytest plugin).
    pub support_dir: PathBuf,
    /// Extra environment for listing commands.
    pub env: BTreeMap<String, String>,
    /// Where listing commands run when not on this host: a container of
    /// the suite's `environment`, so that the tools need not be installed
    /// here. Adapters that cannot list through an executor (they need
    /// stdout apart from stderr) list on this host.
    pub executor: Option<std::sync::Arc<dyn shoal_exec::Executor>>,
    /// Paths relative to the suite root (`/`-separated) that the selection
    /// limits collection to; empty: the whole suite. Adapters that can
    /// collect less (pytest: path arguments; cargo: packages) do.
    pub scope: Vec<String>,
}

/// Inputs to planning one batch on one slot.
#[derive(Debug, Clone)]
pub struct BatchCtx {
    pub suite: SuiteConfig,
    pub support_dir: PathBuf,
    /// The slot's scratch directory (JUnit files and such go here).
    pub scratch_dir: PathBuf,
    /// A number unique within the slot, for naming per-batch files.
    pub batch_seq: u64,
    /// Environment for the test processes (suite env + SHOAL_* variables).
    pub env: BTreeMap<String, String>,
    pub output_cap: u64,
    /// What history says each test of the batch takes (by test name);
    /// tests missing here have no history.
    pub estimates: HashMap<String, Duration>,
    /// What a long-lived runner collects: paths relative to the suite root
    /// from [`Adapter::runner_scope`]; empty: the whole suite.
    pub collect: Vec<String>,
}

/// One process of a batch, and the tests it runs.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub spec: ProcessSpec,
    /// The tests (by `TestCase`) this process runs, in order.
    pub tests: Vec<TestCase>,
    /// Where the process writes a JUnit report, if it does.
    pub junit: Option<PathBuf>,
    /// The whole process's time limit when it reports no per-test progress;
    /// `None`: the suite's timeout for each of its tests.
    pub time_limit: Option<Duration>,
}

/// A message a runner sent on the progress pipe.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Started {
        name: String,
    },
    Finished {
        name: String,
        outcome: Outcome,
        duration: Duration,
        message: Option<String>,
        /// The failure report and captured output, for failed tests.
        output: Option<CapturedOutput>,
    },
    /// The persistent runner finished the batch it was sent.
    BatchDone,
    /// The persistent runner did not collect this requested test (it lies
    /// outside what the runner collected); it ran nothing for it.
    Unknown {
        name: String,
    },
}

/// Discovery failed: the listing command could not run or its output made no sense.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("failed to start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}\n{output}")]
    ListFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("could not understand the output of `{command}`: {detail}")]
    BadListOutput { command: String, detail: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[async_trait]
pub trait Adapter: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Lists the suite's tests.
    async fn discover(&self, ctx: &DiscoverCtx) -> Result<Vec<TestCase>, AdapterError>;
    /// Plans the processes that run `tests` (all of this suite), run in order.
    fn plan(&self, tests: &[TestCase], ctx: &BatchCtx) -> Vec<Invocation>;
    /// What starting one batch holding `test` costs, given how long the
    /// suite's discovery took. The default takes discovery's time (an
    /// interpreter's start-up plus collection) as the estimate; adapters
    /// that measured a better figure per test (cargo: the start-up of the
    /// test's binary) return that. The scheduler sizes batches to at least
    /// twice this, so a cheap start-up means one process per test.
    fn batch_overhead(&self, _test: &TestCase, discovery: Duration) -> Duration {
        discovery
    }
    /// File-name globs of the files under the suite root whose contents
    /// decide what discovery finds (e.g. `*.py` for pytest). With them,
    /// shoal caches the listing by a digest of those files; `None` (the
    /// default) means the inputs are unknown and discovery always runs.
    fn discovery_inputs(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Whether `test` lies at or below `path` (relative to the suite root
    /// `root`, `/`-separated, empty for the root), and, with `node` (what a
    /// pattern had after `::`), within that node of the file. The default
    /// reads the test name as a path (`path/to/file::node`).
    fn test_in_path(&self, test: &TestCase, _root: &Path, path: &str, node: Option<&str>) -> bool {
        located_in(&test.id.name, path, node)
    }
    /// The paths (relative to the suite root) a long-lived runner must
    /// collect to serve `selected`, out of `discovered` (every test the
    /// suite's discovery listed, within `scope`); empty: the whole suite.
    /// The default collects what discovery collected.
    fn runner_scope(
        &self,
        _selected: &[TestCase],
        _discovered: &[TestCase],
        scope: &[String],
    ) -> Vec<String> {
        scope.to_vec()
    }
    /// What `test` shares set-up with, such that running the tests of one
    /// locality together (in collection order) saves repeating it: pytest
    /// returns the test's file (module- and class-scoped fixtures). `None`
    /// (the default): nothing worth keeping together; the queue is plain
    /// longest-first. See `shoal_sched::PlannedTest::locality`.
    fn locality(&self, _test: &TestCase) -> Option<String> {
        None
    }
    /// What a test process's exit status says about the tool itself: `true`
    /// when it stopped abnormally (crashed, was killed, failed to start),
    /// `false` when it ran and exited as the tool does, whether or not
    /// tests failed. The default reads exit 0 and 1 as normal (pytest,
    /// JUnit-writing tools); an adapter whose tool marks failed tests with
    /// another code says so (libtest exits 101).
    fn exit_is_abnormal(&self, status: &shoal_exec::ExitStatus) -> bool {
        !status.success() && *status != shoal_exec::ExitStatus::Code(1)
    }
    /// Whether invocations report per-test progress on the progress pipe.
    fn reports_progress(&self) -> bool {
        false
    }
    /// A long-lived runner for one slot that runs batches sent on its stdin
    /// (one [`batch_request`] line each), reporting progress and
    /// [`Progress::BatchDone`] after each; `None` when the adapter has none.
    /// The invocation has no tests and no JUnit report; its spec has
    /// `progress_pipe` and `stdin_pipe` set.
    ///
    /// [`batch_request`]: Adapter::batch_request
    fn persistent_runner(&self, _ctx: &BatchCtx) -> Option<Invocation> {
        None
    }
    /// The stdin line (without newline) asking a persistent runner to run
    /// `tests`, in order.
    fn batch_request(&self, _tests: &[TestCase]) -> String {
        String::new()
    }
    /// Parses one line from the progress pipe.
    fn parse_progress(&self, _line: &str) -> Option<Progress> {
        None
    }
    /// Reads the results of a finished invocation: every test of `inv` for
    /// which a result can be determined. Tests with no result are left out;
    /// the engine attributes them (crash, timeout, requeue or lost).
    fn collect(
        &self,
        inv: &Invocation,
        exit: &ProcessExit,
        progress: &[Progress],
    ) -> Vec<TestResult>;
}

pub mod cargo;
pub mod command;
pub mod junit;
pub mod pytest;

/// A relative path with `/` separators (how paths appear in test names,
/// patterns and scopes).
pub fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `located` (`path/to/file::node::...`, `/`-separated) lies at or
/// below `path` and, with `node`, in that node: `f.py::TestA` holds
/// `f.py::TestA::test_x` and `f.py::TestA[1]`, not `f.py::TestAB`.
pub fn located_in(located: &str, path: &str, node: Option<&str>) -> bool {
    let (file, rest) = located.split_once("::").unwrap_or((located, ""));
    let in_path = path.is_empty()
        || file == path
        || file.strip_prefix(path).is_some_and(|r| r.starts_with('/'));
    in_path
        && match node {
            None => true,
            Some(node) => {
                file == path
                    && rest
                        .strip_prefix(node)
                        .is_some_and(|r| r.is_empty() || r.starts_with("::") || r.starts_with('['))
            }
        }
}

/// The adapter for a suite.
pub fn adapter_for(suite: &SuiteConfig) -> Box<dyn Adapter> {
    use shoal_core::config::AdapterConfig;
    match &suite.adapter {
        AdapterConfig::Pytest {
            python,
            args,
            persistent,
        } => Box::new(
            pytest::PytestAdapter::new(python.clone(), args.clone()).with_persistent(*persistent),
        ),
        AdapterConfig::Cargo { args, share } => {
            Box::new(cargo::CargoAdapter::new(args.clone()).sharing(*share))
        }
        AdapterConfig::Command { list, run, junit } => Box::new(command::CommandAdapter::new(
            list.clone(),
            run.clone(),
            junit.clone(),
        )),
    }
}
