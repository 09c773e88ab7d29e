//! pytest adapter against the real `fixtures/pytest-project`, compared with
//! what pytest itself reports. Also home of [`execute`], a minimal stand-in
//! for the process executor (fd 3 progress pipe included). The persistent
//! runner's tests use the real [`ProcessExecutor`] (they need its stdin pipe).

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use shoal_adapters::pytest::PytestAdapter;
use shoal_adapters::{Adapter, AdapterError, BatchCtx, DiscoverCtx, Invocation, Progress};
use shoal_core::config::{AdapterConfig, SuiteConfig};
use shoal_core::{CapturedOutput, Outcome, TestCase, TestResult};
use shoal_exec::{Executor, ExitStatus, PROGRESS_FD, ProcessExecutor, ProcessExit, RunningProcess};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Variables that change what the fixtures do; the tests set them explicitly.
const CONTROLLED_VARS: [&str; 6] = [
    "SHOAL_FIXTURE_STATE",
    "SHOAL_FIXTURE_SEED",
    "SHOAL_FIXTURE_CHAOS",
    "SHOAL_PROGRESS_FD",
    "SHOAL_PROGRESS_FILE",
    "PYTEST_ADDOPTS",
];
const CAP: u64 = 64 * 1024;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .canonicalize()
        .expect("fixtures/ exists")
}

fn project() -> PathBuf {
    fixtures().join("pytest-project")
}

/// The interpreter under test: `SHOAL_TEST_PYTHON` (e.g. a venv with another
/// pytest version), else `python3`.
fn python() -> String {
    std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Fails (rather than skips) every pytest test when pytest is missing.
fn require_pytest() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let out = Command::new(python()).args(["-c", "import pytest; print(pytest.__version__)"]).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "pytest is not importable by {}; install it (pip install pytest) to run these tests:\n{}",
                python(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("{} cannot be started ({e}); these tests need python3 with pytest installed", python()),
        }
    });
}

fn suite(root: &Path, env: BTreeMap<String, String>) -> SuiteConfig {
    SuiteConfig {
        name: "py".into(),
        adapter: AdapterConfig::Pytest {
            python: python(),
            args: Vec::new(),
            persistent: true,
        },
        root: root.to_owned(),
        env,
        timeout: Duration::from_secs(60),
        retries: 0,
        max_batch: 100,
        default_duration: Duration::from_secs(1),
        environment: None,
        services: Default::default(),
        workdir: Default::default(),
        order: shoal_core::config::TestOrder::Duration,
    }
}

fn discover_ctx(root: &Path, support: &Path) -> DiscoverCtx {
    DiscoverCtx {
        suite: suite(root, BTreeMap::new()),
        support_dir: support.to_owned(),
        env: BTreeMap::new(),
        executor: None,
        scope: Vec::new(),
    }
}

fn batch_ctx(root: &Path, dir: &Path, env: &[(&str, &str)]) -> BatchCtx {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    BatchCtx {
        suite: suite(root, env.clone()),
        support_dir: dir.join("support"),
        scratch_dir: dir.join("scratch"),
        batch_seq: 1,
        env,
        output_cap: CAP,
        estimates: Default::default(),
        collect: Vec::new(),
    }
}

fn discover(adapter: &PytestAdapter, ctx: &DiscoverCtx) -> Result<Vec<TestCase>, AdapterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(adapter.discover(ctx))
}

/// What running an invocation produced.
pub struct Executed {
    pub exit: ProcessExit,
    /// Lines written to the progress pipe, in order.
    pub lines: Vec<String>,
}

/// Runs `inv` as the process executor would: argv without a shell, its cwd
/// and env, the progress pipe at fd 3, output captured (the last `CAP`
/// bytes), killed after `timeout`.
pub fn execute(inv: &Invocation, timeout: Duration) -> Executed {
    let spec = &inv.spec;
    if let Some(dir) = inv.junit.as_ref().and_then(|j| j.parent()) {
        std::fs::create_dir_all(dir).expect("create the report directory");
    }
    let log = tempfile::tempfile().expect("output file");
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .stdin(Stdio::null());
    command
        .stdout(log.try_clone().expect("dup output"))
        .stderr(log.try_clone().expect("dup output"));
    for var in CONTROLLED_VARS {
        command.env_remove(var);
    }
    command.envs(&spec.env);
    let pipe = spec
        .progress_pipe
        .then(|| nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe"));
    if let Some((_, write)) = &pipe {
        let raw = write.as_raw_fd();
        command.env("SHOAL_PROGRESS_FD", PROGRESS_FD.to_string());
        // SAFETY: the closure only calls async-signal-safe dup2 and fcntl.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::dup2(raw, PROGRESS_FD)?;
                fcntl(PROGRESS_FD, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", spec.argv));
    let reader = pipe.map(|(read, write)| {
        drop(write);
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(File::from(read));
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                lines.push(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\n')
                        .to_owned(),
                );
                line.clear();
            }
            lines
        })
    });
    let mut terminated = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > timeout {
            terminated = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let lines = reader
        .map(|r| r.join().expect("progress reader"))
        .unwrap_or_default();
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (_, Some(signal)) => ExitStatus::Signal(signal),
        _ => unreachable!("a process ends with a code or a signal"),
    };
    Executed {
        exit: ProcessExit {
            status,
            output: tail_of(log),
            wall,
            terminated,
            oom_killed: false,
        },
        lines,
    }
}

fn tail_of(mut file: File) -> CapturedOutput {
    let len = file.seek(SeekFrom::End(0)).expect("seek");
    let start = len.saturating_sub(CAP);
    file.seek(SeekFrom::Start(start)).expect("seek");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read output");
    CapturedOutput {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        truncated_bytes: start,
    }
}

/// pytest's own verdict: outcome counts from a plain `pytest --junitxml` run
/// of the whole project, counting each (classname, name) once at its worst.
fn pytest_reference_counts(dir: &Path) -> HashMap<String, usize> {
    let xml = dir.join("reference.xml");
    let status = Command::new(python())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "junit_family=xunit1",
        ])
        .arg(format!("--junitxml={}", xml.display()))
        .current_dir(project())
        .env_remove("SHOAL_FIXTURE_STATE")
        .env_remove("SHOAL_FIXTURE_CHAOS")
        .env_remove("PYTEST_ADDOPTS")
        .stdout(Stdio::null())
        .status()
        .expect("run pytest");
    assert_eq!(
        status.code(),
        Some(1),
        "the fixture has failing tests, so pytest exits 1"
    );
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
rank = {"pass": 0, "skip": 1, "fail": 2}
worst = {}
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    key = (case.get("classname"), case.get("name"))
    if case.find("failure") is not None or case.find("error") is not None:
        outcome = "fail"
    elif case.find("skipped") is not None:
        outcome = "skip"
    else:
        outcome = "pass"
    if rank[outcome] >= rank.get(worst.get(key), -1):
        worst[key] = outcome
print(json.dumps({o: sum(1 for v in worst.values() if v == o) for o in rank}))
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&xml)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("counts json")
}

fn counts(results: &[TestResult]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = ["pass", "skip", "fail"]
        .iter()
        .map(|o| (o.to_string(), 0))
        .collect();
    for r in results {
        *counts.entry(r.outcome.to_string()).or_default() += 1;
    }
    counts
}

fn by_name(tests: &[TestCase], names: &[&str]) -> Vec<TestCase> {
    names
        .iter()
        .map(|n| {
            tests
                .iter()
                .find(|t| t.id.name == *n)
                .unwrap_or_else(|| panic!("{n} was not discovered"))
                .clone()
        })
        .collect()
}

fn parse_all(adapter: &PytestAdapter, lines: &[String]) -> Vec<Progress> {
    lines
        .iter()
        .map(|l| {
            adapter
                .parse_progress(l)
                .unwrap_or_else(|| panic!("unparsable progress line {l:?}"))
        })
        .collect()
}

#[test]
fn discovery_lists_what_pytest_collects() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests =
        discover(&adapter, &discover_ctx(&project(), dir.path())).expect("discovery succeeds");

    let out = Command::new(python())
        .args([
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(project())
        .output()
        .unwrap();
    let expected: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("::"))
        .map(str::to_owned)
        .collect();
    let found: Vec<String> = tests.iter().map(|t| t.id.name.clone()).collect();
    assert_eq!(found, expected);
    assert!(
        tests.len() > 50,
        "the fixture has over 50 tests, found {}",
        tests.len()
    );

    let weird = tests
        .iter()
        .find(|t| t.id.name.ends_with("[$(touch /tmp/shoal-pwned)]"))
        .expect("the shell-injection id is listed");
    assert_eq!(weird.group, "tests/test_params.py");
    assert_eq!(weird.id.suite, "py");
    assert!(
        tests
            .iter()
            .all(|t| t.runner.is_none() && t.id.name.starts_with(&format!("{}::", t.group)))
    );
    assert!(
        tests
            .iter()
            .any(|t| t.group == "tests/deep/nested/test_x.py")
    );
    // The listing file is cleaned up; only the plugin stays.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("pytest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("collect-")),
        "{left:?}"
    );
}

#[test]
fn running_everything_agrees_with_pytest_junit() {
    require_pytest();
    let _ = std::fs::remove_file("/tmp/shoal-pwned");
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover(
        &adapter,
        &discover_ctx(&project(), &dir.path().join("support")),
    )
    .expect("discovery succeeds");
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "0")]);
    let [inv] = &adapter.plan(&tests, &ctx)[..] else {
        panic!("pytest plans one invocation per batch")
    };
    let run = execute(inv, Duration::from_secs(120));
    assert_eq!(
        run.exit.status,
        ExitStatus::Code(1),
        "output:\n{}",
        run.exit.output.text
    );

    let progress = parse_all(&adapter, &run.lines);
    let results = adapter.collect(inv, &run.exit, &progress);
    assert_eq!(results.len(), tests.len(), "every test has a result");
    assert_eq!(counts(&results), pytest_reference_counts(dir.path()));
    assert!(
        !Path::new("/tmp/shoal-pwned").exists(),
        "a test id reached a shell"
    );

    let outcome = |suffix: &str| {
        results
            .iter()
            .find(|r| r.id.name.ends_with(suffix))
            .unwrap_or_else(|| panic!("no result for {suffix}"))
    };
    for (suffix, expected) in [
        ("::test_error_in_fixture_setup", Outcome::Fail),
        ("::test_error_in_fixture_teardown", Outcome::Fail),
        ("::test_fail_and_error_in_teardown", Outcome::Fail),
        ("::test_xfail", Outcome::Skip),
        ("::test_xpass", Outcome::Pass),
        ("::test_xpass_strict", Outcome::Fail),
        ("::test_skipif_true", Outcome::Skip),
        ("::test_skipif_false", Outcome::Pass),
        ("::TestThing::TestInner::test_inner", Outcome::Pass),
        ("::test_nested_fail", Outcome::Fail),
    ] {
        assert_eq!(outcome(suffix).outcome, expected, "{suffix}");
    }
    let weird: Vec<_> = results
        .iter()
        .filter(|r| r.id.name.contains("::test_weird_id["))
        .collect();
    assert_eq!(weird.len(), 15);
    assert!(weird.iter().all(|r| r.outcome == Outcome::Pass));
    assert!(outcome("::test_slow_1500ms").duration >= Duration::from_millis(1500));
    assert_eq!(
        outcome("::test_xfail").message.as_deref(),
        Some("xfail: known bug")
    );
    assert_eq!(
        outcome("::test_skip_marker").message.as_deref(),
        Some("skipped by marker")
    );
    let failed = outcome("::test_fail_assert");
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("assert [1, 2, 3] == [1, 2, 4]")),
        "{:?}",
        failed.message
    );
    for text in [
        "stdout before the failure",
        "stderr before the failure",
        "AssertionError",
    ] {
        assert!(
            failed.output.text.contains(text),
            "{text:?} missing from:\n{}",
            failed.output.text
        );
    }
    assert!(
        outcome("::test_pass_prints").output.text.is_empty(),
        "passing tests' output is not kept"
    );

    // The plugin's verdicts (the fallback when JUnit is missing) agree with
    // pytest's JUnit classification, and every test started and finished.
    let finished: HashMap<&str, Outcome> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Finished { name, outcome, .. } => Some((name.as_str(), *outcome)),
            _ => None,
        })
        .collect();
    let started = progress
        .iter()
        .filter(|p| matches!(p, Progress::Started { .. }))
        .count();
    assert_eq!(started, tests.len());
    for r in &results {
        assert_eq!(
            finished.get(r.id.name.as_str()),
            Some(&r.outcome),
            "progress and junit disagree on {}",
            r.id.name
        );
    }
}

#[test]
fn a_runner_crash_is_pinned_on_the_running_test() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover(
        &adapter,
        &discover_ctx(&project(), &dir.path().join("support")),
    )
    .unwrap();
    let batch = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_pass",
            "tests/test_slow.py::test_slow_500ms",
            "tests/test_outcomes.py::test_fail_assert",
            "tests/test_chaos.py::test_chaos_exit",
            "tests/test_outcomes.py::test_skip_marker",
            "tests/test_params.py::test_numbers[1]",
        ],
    );
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "1")]);
    let inv = &adapter.plan(&batch, &ctx)[0];
    // pytest runs a batch file by file.
    let order: Vec<_> = inv.tests.iter().map(|t| t.id.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "tests/test_outcomes.py::test_pass",
            "tests/test_outcomes.py::test_fail_assert",
            "tests/test_outcomes.py::test_skip_marker",
            "tests/test_slow.py::test_slow_500ms",
            "tests/test_chaos.py::test_chaos_exit",
            "tests/test_params.py::test_numbers[1]",
        ]
    );
    let run = execute(inv, Duration::from_secs(60));
    assert_eq!(run.exit.status, ExitStatus::Code(1));
    assert!(
        !inv.junit.as_ref().unwrap().exists(),
        "pytest died before writing its report"
    );

    let progress = parse_all(&adapter, &run.lines);
    let last_started = progress.iter().rev().find_map(|p| match p {
        Progress::Started { name } => Some(name.as_str()),
        _ => None,
    });
    assert_eq!(last_started, Some("tests/test_chaos.py::test_chaos_exit"));
    assert!(!progress.iter().any(
        |p| matches!(p, Progress::Finished { name, .. } if name.ends_with("test_chaos_exit"))
    ));

    let results = adapter.collect(inv, &run.exit, &progress);
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.id.name.as_str(), r.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("tests/test_outcomes.py::test_pass", Outcome::Pass),
            ("tests/test_outcomes.py::test_fail_assert", Outcome::Fail),
            ("tests/test_outcomes.py::test_skip_marker", Outcome::Skip),
            ("tests/test_slow.py::test_slow_500ms", Outcome::Pass),
        ]
    );
    assert!(results[3].duration >= Duration::from_millis(500));
    assert!(
        results[1]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("assert"))
    );
    // With no JUnit report, the failure's traceback still comes through.
    assert!(
        results[1].output.text.contains("def test_fail_assert"),
        "{:?}",
        results[1].output
    );
    assert!(results[0].output.text.is_empty());
}

#[test]
fn a_segfault_is_pinned_on_the_running_test() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover(
        &adapter,
        &discover_ctx(&project(), &dir.path().join("support")),
    )
    .unwrap();
    let batch = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_pass",
            "tests/test_chaos.py::test_chaos_segfault",
            "tests/test_params.py::test_numbers[1]",
        ],
    );
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "1")]);
    let inv = &adapter.plan(&batch, &ctx)[0];
    let run = execute(inv, Duration::from_secs(60));
    assert_eq!(
        run.exit.status,
        ExitStatus::Signal(nix::sys::signal::Signal::SIGSEGV as i32),
        "{}",
        run.exit.output.text
    );
    let progress = parse_all(&adapter, &run.lines);
    assert_eq!(
        progress.last(),
        Some(&Progress::Started {
            name: "tests/test_chaos.py::test_chaos_segfault".into()
        })
    );
    let results = adapter.collect(inv, &run.exit, &progress);
    assert_eq!(
        results
            .iter()
            .map(|r| (r.id.name.as_str(), r.outcome))
            .collect::<Vec<_>>(),
        [("tests/test_outcomes.py::test_pass", Outcome::Pass)]
    );
}

#[test]
fn a_vanished_test_costs_only_itself() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover(
        &adapter,
        &discover_ctx(&project(), &dir.path().join("support")),
    )
    .unwrap();
    let mut batch = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_pass",
            "tests/test_params.py::test_weird_id[a::b]",
        ],
    );
    let mut gone = batch[0].clone();
    gone.id.name = "tests/test_outcomes.py::test_renamed_since_discovery".into();
    batch.insert(1, gone);
    let inv = &adapter.plan(&batch, &batch_ctx(&project(), dir.path(), &[]))[0];
    let run = execute(inv, Duration::from_secs(60));
    assert_eq!(
        run.exit.status,
        ExitStatus::Code(0),
        "{}",
        run.exit.output.text
    );
    let progress = parse_all(&adapter, &run.lines);
    let results = adapter.collect(inv, &run.exit, &progress);
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.id.name.as_str(), r.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("tests/test_outcomes.py::test_pass", Outcome::Pass),
            ("tests/test_params.py::test_weird_id[a::b]", Outcome::Pass),
        ]
    );
}

#[test]
fn huge_and_non_utf8_output_is_capped_and_decoded() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), vec!["--tb=short".into()]);
    let tests = discover(
        &adapter,
        &discover_ctx(&project(), &dir.path().join("support")),
    )
    .unwrap();
    let batch = by_name(
        &tests,
        &[
            "tests/test_chaos.py::test_chaos_big_output",
            "tests/test_chaos.py::test_chaos_non_utf8",
            "tests/test_outcomes.py::test_pass",
        ],
    );
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "1")]);
    let inv = &adapter.plan(&batch, &ctx)[0];
    let run = execute(inv, Duration::from_secs(300));
    assert_eq!(run.exit.status, ExitStatus::Code(1));
    let progress = parse_all(&adapter, &run.lines);
    let results = adapter.collect(inv, &run.exit, &progress);
    assert_eq!(
        results.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Fail, Outcome::Fail, Outcome::Pass]
    );

    let big = &results[0];
    assert!(
        big.output.text.len() < CAP as usize + 100,
        "output kept: {} bytes",
        big.output.text.len()
    );
    assert!(
        big.output.truncated_bytes >= (100 << 20) - CAP,
        "truncated: {}",
        big.output.truncated_bytes
    );
    assert!(big.output.text.contains("xxxxxxxx"));
    assert_eq!(
        big.message.as_deref(),
        Some("AssertionError: printed 100 MB\nassert False")
    );

    let bad = &results[1];
    assert!(
        bad.output.text.contains("bad bytes: \u{FFFD}"),
        "{}",
        bad.output.text
    );
    assert!(bad.output.text.contains(" end"));
}

#[test]
fn rootdir_above_the_suite_root_runs_by_relative_path() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let root = project().join("tests").join("deep");
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover(&adapter, &discover_ctx(&root, &dir.path().join("support"))).unwrap();
    let ids: Vec<_> = tests
        .iter()
        .map(|t| (t.id.name.as_str(), t.runner.as_deref()))
        .collect();
    assert_eq!(
        ids,
        [
            (
                "tests/deep/nested/test_x.py::test_nested_pass",
                Some("nested/test_x.py::test_nested_pass")
            ),
            (
                "tests/deep/nested/test_x.py::test_nested_fail",
                Some("nested/test_x.py::test_nested_fail")
            ),
            (
                "tests/deep/nested/test_x.py::TestNested::test_in_class",
                Some("nested/test_x.py::TestNested::test_in_class")
            ),
        ]
    );
    let ctx = batch_ctx(&root, dir.path(), &[]);
    let inv = &adapter.plan(&tests, &ctx)[0];
    let run = execute(inv, Duration::from_secs(60));
    let progress = parse_all(&adapter, &run.lines);
    let results = adapter.collect(inv, &run.exit, &progress);
    assert_eq!(
        results.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Pass, Outcome::Fail, Outcome::Pass]
    );
    assert_eq!(
        results[1].message.as_deref(),
        Some("AssertionError: nested failure\nassert 0")
    );
}

#[test]
fn discovery_failures_are_reported() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("test_syntax.py"), "def test_x(:\n    pass\n").unwrap();
    match discover(
        &adapter,
        &discover_ctx(&broken, &dir.path().join("support")),
    ) {
        Err(AdapterError::ListFailed {
            status,
            output,
            command,
        }) => {
            assert_eq!(status, "exit code 2");
            assert!(output.contains("SyntaxError"), "{output}");
            assert!(command.contains("--collect-only"), "{command}");
        }
        other => panic!("expected ListFailed, got {other:?}"),
    }

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(
        discover(&adapter, &discover_ctx(&empty, &dir.path().join("support"))).unwrap(),
        []
    );

    let missing = PytestAdapter::new("/nonexistent/python3".into(), Vec::new());
    assert!(matches!(
        discover(&missing, &discover_ctx(&empty, &dir.path().join("support"))),
        Err(AdapterError::Spawn { .. })
    ));
}

/// Discovers the fixture project from within a runtime.
async fn discover_async(adapter: &PytestAdapter, support: &Path) -> Vec<TestCase> {
    adapter
        .discover(&discover_ctx(&project(), support))
        .await
        .expect("discovery succeeds")
}

/// Whether `pid` runs (exists and is not a zombie).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// The progress lines a persistent runner writes for one batch.
struct Served {
    /// Parsed messages, `BatchDone` excluded.
    progress: Vec<Progress>,
    /// Every line, parsed or not.
    lines: Vec<String>,
    /// Whether the batch ended with `BatchDone` (rather than end of input).
    done: bool,
}

/// Asks `runner` to run `tests` and reads its progress until `BatchDone` or
/// the end of the pipe.
async fn serve(
    adapter: &PytestAdapter,
    runner: &mut Box<dyn RunningProcess>,
    tests: &[TestCase],
) -> Served {
    runner
        .send_line(&adapter.batch_request(tests))
        .await
        .expect("send a batch request");
    let mut served = Served {
        progress: Vec::new(),
        lines: Vec::new(),
        done: false,
    };
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), runner.next_progress())
            .await
            .expect("progress within 60 s");
        let Some(line) = line else { break };
        let parsed = adapter.parse_progress(&line);
        served.lines.push(line);
        match parsed {
            Some(Progress::BatchDone) => {
                served.done = true;
                break;
            }
            Some(p) => served.progress.push(p),
            None => {}
        }
    }
    served
}

fn started(progress: &[Progress]) -> Vec<&str> {
    progress
        .iter()
        .filter_map(|p| match p {
            Progress::Started { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

fn finished(progress: &[Progress]) -> Vec<(&str, Outcome)> {
    progress
        .iter()
        .filter_map(|p| match p {
            Progress::Finished { name, outcome, .. } => Some((name.as_str(), *outcome)),
            _ => None,
        })
        .collect()
}

fn names(tests: &[TestCase]) -> Vec<&str> {
    tests.iter().map(|t| t.id.name.as_str()).collect()
}

/// Outcomes of `tests` from a plain batch (pytest's JUnit report), in order.
async fn plain_batch_outcomes(
    adapter: &PytestAdapter,
    tests: &[TestCase],
    ctx: &BatchCtx,
) -> Vec<(String, Outcome)> {
    let [inv] = &adapter.plan(tests, ctx)[..] else {
        panic!("one invocation")
    };
    let mut process = ProcessExecutor.spawn(&inv.spec).await.expect("spawn");
    let mut lines = Vec::new();
    while let Some(line) = process.next_progress().await {
        lines.push(line);
    }
    let exit = process.wait().await.expect("wait");
    let progress = parse_all(adapter, &lines);
    let mut results: Vec<_> = adapter
        .collect(inv, &exit, &progress)
        .into_iter()
        .map(|r| (r.id.name, r.outcome))
        .collect();
    let order = names(tests);
    results.sort_by_key(|(name, _)| order.iter().position(|n| n == name));
    results
}

#[tokio::test]
async fn a_persistent_runner_runs_batch_after_batch_in_one_process() {
    require_pytest();
    let _ = std::fs::remove_file("/tmp/shoal-pwned");
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover_async(&adapter, &dir.path().join("support")).await;
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "0")]);
    let inv = adapter
        .persistent_runner(&ctx)
        .expect("pytest has a persistent runner");
    let mut runner = ProcessExecutor.spawn(&inv.spec).await.expect("spawn");
    let pid = runner.pid().expect("running");

    let first = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_xfail",
            "tests/test_classes.py::TestThing::TestInner::test_inner",
            "tests/test_outcomes.py::test_pass",
        ],
    );
    let second = by_name(
        &tests,
        &[
            "tests/test_params.py::test_weird_id[a::b]",
            "tests/test_outcomes.py::test_fail_assert",
            "tests/test_params.py::test_weird_id[$(touch /tmp/shoal-pwned)]",
            "tests/test_outcomes.py::test_error_in_fixture_teardown",
        ],
    );
    let mut served = Vec::new();
    for batch in [&first, &second] {
        let run = serve(&adapter, &mut runner, batch).await;
        assert!(run.done, "no batch_done; progress: {:?}", run.lines);
        assert_eq!(runner.pid(), Some(pid), "one process serves every batch");
        assert!(is_alive(pid), "the runner stays up between batches");
        assert_eq!(
            started(&run.progress),
            names(batch),
            "run in the order sent"
        );
        served.push(run);
    }
    let ready: serde_json::Value = serde_json::from_str(&served[0].lines[0]).expect("a json line");
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["count"], tests.len(), "it collected the whole suite");

    // Each test finished once, with pytest's own verdict.
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    let reference = plain_batch_outcomes(&adapter, &both, &ctx).await;
    let got: Vec<(String, Outcome)> = served
        .iter()
        .flat_map(|run| finished(&run.progress))
        .map(|(name, outcome)| (name.to_owned(), outcome))
        .collect();
    assert_eq!(got, reference);
    assert_eq!(
        got.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        [
            Outcome::Skip,
            Outcome::Pass,
            Outcome::Pass,
            Outcome::Pass,
            Outcome::Fail,
            Outcome::Pass,
            Outcome::Fail,
        ]
    );
    assert!(
        !Path::new("/tmp/shoal-pwned").exists(),
        "a test id reached a shell"
    );
    // The failure comes with its traceback and the test's captured output.
    let failure = served[1]
        .progress
        .iter()
        .find_map(|p| match p {
            Progress::Finished {
                name,
                message,
                output,
                ..
            } if name.ends_with("::test_fail_assert") => Some((message, output)),
            _ => None,
        })
        .expect("test_fail_assert finished");
    assert!(
        failure
            .0
            .as_deref()
            .is_some_and(|m| m.contains("assert [1, 2, 3] == [1, 2, 4]")),
        "{:?}",
        failure.0
    );
    let output = &failure.1.as_ref().expect("failure output").text;
    for text in [
        "def test_fail_assert",
        "stdout before the failure",
        "stderr before the failure",
    ] {
        assert!(output.contains(text), "{text:?} missing from:\n{output}");
    }

    // A test runs again when asked again; an id it never collected is
    // skipped without costing the rest of the batch.
    let mut again = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_fail_assert",
            "tests/test_outcomes.py::test_pass",
        ],
    );
    let mut gone = again[1].clone();
    gone.id.name = "tests/test_outcomes.py::test_renamed_since_discovery".into();
    again.insert(1, gone);
    let run = serve(&adapter, &mut runner, &again).await;
    assert!(run.done, "{:?}", run.lines);
    assert_eq!(
        finished(&run.progress),
        [
            ("tests/test_outcomes.py::test_fail_assert", Outcome::Fail),
            ("tests/test_outcomes.py::test_pass", Outcome::Pass),
        ]
    );
    assert!(
        run.lines
            .iter()
            .any(|l| l.contains("\"unknown\"") && l.contains("test_renamed_since_discovery")),
        "{:?}",
        run.lines
    );

    // End of input ends the session, failed tests making it exit 1.
    runner.close_stdin();
    let exit = tokio::time::timeout(Duration::from_secs(10), runner.wait())
        .await
        .expect("the runner exits promptly at end of input")
        .expect("wait");
    assert_eq!(exit.status, ExitStatus::Code(1), "{}", exit.output.text);
    assert!(!exit.terminated);
}

#[tokio::test]
async fn a_persistent_runner_that_dies_ends_its_progress_mid_batch() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover_async(&adapter, &dir.path().join("support")).await;
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "1")]);
    let inv = adapter
        .persistent_runner(&ctx)
        .expect("a persistent runner");
    let mut runner = ProcessExecutor.spawn(&inv.spec).await.expect("spawn");

    let warm_up = by_name(&tests, &["tests/test_outcomes.py::test_pass"]);
    assert!(serve(&adapter, &mut runner, &warm_up).await.done);
    let batch = by_name(
        &tests,
        &[
            "tests/test_outcomes.py::test_skip_marker",
            "tests/test_chaos.py::test_chaos_exit",
            "tests/test_params.py::test_numbers[1]",
        ],
    );
    let run = serve(&adapter, &mut runner, &batch).await;
    assert!(!run.done, "the batch cannot complete: {:?}", run.lines);
    assert_eq!(
        started(&run.progress),
        [
            "tests/test_outcomes.py::test_skip_marker",
            "tests/test_chaos.py::test_chaos_exit",
        ],
        "nothing starts after the crash"
    );
    assert_eq!(
        finished(&run.progress),
        [("tests/test_outcomes.py::test_skip_marker", Outcome::Skip)]
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), runner.wait())
        .await
        .expect("exited")
        .expect("wait");
    assert_eq!(exit.status, ExitStatus::Code(1), "os._exit(1)");
}

#[tokio::test]
async fn a_persistent_runner_exits_with_a_message_when_collection_fails() {
    require_pytest();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("test_ok.py"), "def test_ok():\n    pass\n").unwrap();
    std::fs::write(broken.join("test_syntax.py"), "def test_x(:\n    pass\n").unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let inv = adapter
        .persistent_runner(&batch_ctx(&broken, dir.path(), &[]))
        .expect("a persistent runner");
    let mut runner = ProcessExecutor.spawn(&inv.spec).await.expect("spawn");
    let mut lines = Vec::new();
    while let Some(line) = runner.next_progress().await {
        lines.push(line);
    }
    assert!(
        !lines.iter().any(|l| l.contains("\"ready\"")),
        "it never serves: {lines:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), runner.wait())
        .await
        .expect("exited")
        .expect("wait");
    assert!(!exit.status.success());
    assert!(
        exit.output
            .text
            .contains("cannot serve: 1 error(s) during collection"),
        "{}",
        exit.output.text
    );
}

/// Not a check: prints what a persistent runner saves on small batches.
#[tokio::test]
async fn persistent_runner_versus_a_process_per_batch() {
    require_pytest();
    const BATCHES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let adapter = PytestAdapter::new(python(), Vec::new());
    let tests = discover_async(&adapter, &dir.path().join("support")).await;
    let quick: Vec<TestCase> = tests
        .iter()
        .filter(|t| t.id.name.contains("::test_weird_id["))
        .take(BATCHES)
        .cloned()
        .collect();
    assert_eq!(quick.len(), BATCHES);
    let ctx = batch_ctx(&project(), dir.path(), &[("SHOAL_FIXTURE_CHAOS", "0")]);

    let start = Instant::now();
    let inv = adapter
        .persistent_runner(&ctx)
        .expect("a persistent runner");
    let mut runner = ProcessExecutor.spawn(&inv.spec).await.expect("spawn");
    for test in &quick {
        let run = serve(&adapter, &mut runner, std::slice::from_ref(test)).await;
        assert!(run.done && finished(&run.progress).len() == 1);
    }
    runner.close_stdin();
    assert!(runner.wait().await.expect("wait").status.success());
    let persistent = start.elapsed();

    let start = Instant::now();
    for test in &quick {
        let outcomes = plain_batch_outcomes(&adapter, std::slice::from_ref(test), &ctx).await;
        assert_eq!(outcomes.len(), 1);
    }
    let plain = start.elapsed();
    println!(
        "{BATCHES} single-test batches: persistent runner {:.2?} (start-up included), \
         a process per batch {:.2?} ({:.1}x)",
        persistent,
        plain,
        plain.as_secs_f64() / persistent.as_secs_f64()
    );
}
