//! cargo adapter against real fixtures: `fixtures/cargo-project`, built into
//! this crate's target tmp dir, compared with what `cargo test` itself says.

use shoal_adapters::cargo::{CargoAdapter, CargoRunner};
use shoal_adapters::{Adapter, AdapterError, BatchCtx, DiscoverCtx, Invocation};
use shoal_core::config::{AdapterConfig, SuiteConfig};
use shoal_core::{CapturedOutput, Outcome, TestCase, TestResult};
use shoal_exec::{ExitStatus, ProcessExit, ProcessSpec};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const FIXTURE_VARS: [&str; 3] = [
    "SHOAL_FIXTURE_STATE",
    "SHOAL_FIXTURE_SEED",
    "SHOAL_FIXTURE_CHAOS",
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/cargo-project")
        .canonicalize()
        .expect("fixtures/cargo-project exists")
}

/// Where the fixture is built: under this crate's target dir, never in the repo.
fn target_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn suite(root: PathBuf) -> SuiteConfig {
    SuiteConfig {
        name: "fixture".to_owned(),
        adapter: AdapterConfig::Cargo {
            args: Vec::new(),
            share: Default::default(),
        },
        root,
        env: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        retries: 0,
        max_batch: 1,
        default_duration: Duration::from_secs(1),
        environment: None,
        services: Default::default(),
        workdir: Default::default(),
        order: shoal_core::config::TestOrder::Duration,
    }
}

fn discover_in(root: PathBuf, target: &str) -> Result<Vec<TestCase>, AdapterError> {
    let ctx = DiscoverCtx {
        suite: suite(root),
        support_dir: std::env::temp_dir(),
        env: BTreeMap::from([(
            "CARGO_TARGET_DIR".to_owned(),
            target_dir(target).display().to_string(),
        )]),
        executor: None,
        scope: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(CargoAdapter::new(Vec::new()).discover(&ctx))
}

/// The fixture's tests, discovered once per test process.
fn discovered() -> &'static [TestCase] {
    static TESTS: OnceLock<Vec<TestCase>> = OnceLock::new();
    TESTS.get_or_init(|| {
        discover_in(fixture_dir(), "fixture-cargo-project").expect("fixture discovery")
    })
}

fn test_named(name: &str) -> &'static TestCase {
    discovered()
        .iter()
        .find(|t| t.id.name == name)
        .unwrap_or_else(|| panic!("no test named {name:?}"))
}

fn batch_ctx(env: &[(&str, &str)], output_cap: u64) -> BatchCtx {
    BatchCtx {
        suite: suite(fixture_dir()),
        support_dir: std::env::temp_dir(),
        scratch_dir: std::env::temp_dir(),
        batch_seq: 0,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        output_cap,
        estimates: Default::default(),
        collect: Vec::new(),
    }
}

/// A stand-in for the process executor: runs `spec` with stdout and stderr
/// in one file, keeps the head and tail halves of `output_cap` bytes, and
/// kills the process after `timeout`.
fn execute(spec: &ProcessSpec, timeout: Option<Duration>) -> ProcessExit {
    let mut file = tempfile::tempfile().expect("temp file");
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .stdin(Stdio::null());
    for var in FIXTURE_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(&spec.env)
        .stdout(file.try_clone().expect("clone"))
        .stderr(file.try_clone().expect("clone"));
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn test binary");
    let mut terminated = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            child.kill().expect("kill");
            terminated = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    let len = file.seek(SeekFrom::End(0)).expect("seek");
    let half = spec.output_cap / 2;
    let mut read_at = |offset: u64, n: u64| {
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(offset)).expect("seek");
        (&mut file)
            .take(n)
            .read_to_end(&mut buf)
            .expect("read output");
        buf
    };
    let output = if len <= spec.output_cap {
        let all = read_at(0, len);
        CapturedOutput {
            text: String::from_utf8_lossy(&all).into_owned(),
            truncated_bytes: 0,
        }
    } else {
        let (head, tail) = (read_at(0, half), read_at(len - half, half));
        CapturedOutput {
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&head),
                String::from_utf8_lossy(&tail)
            ),
            truncated_bytes: len - 2 * half,
        }
    };
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        (None, None) => unreachable!("a process ends with a code or a signal"),
    };
    ProcessExit {
        status,
        output,
        wall,
        terminated,
        oom_killed: false,
    }
}

/// Plans `test` alone and runs it.
fn run_one(
    test: &TestCase,
    ctx: &BatchCtx,
    timeout: Option<Duration>,
) -> (Invocation, ProcessExit, Vec<TestResult>) {
    let adapter = CargoAdapter::new(Vec::new());
    let mut invocations = adapter.plan(std::slice::from_ref(test), ctx);
    assert_eq!(invocations.len(), 1, "one process per test");
    let inv = invocations.remove(0);
    let exit = execute(&inv.spec, timeout);
    let results = adapter.collect(&inv, &exit, &[]);
    (inv, exit, results)
}

/// `cargo test` in the fixture with `args`; its stdout.
fn cargo_test(args: &[&str]) -> String {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.arg("test")
        .args(args)
        .current_dir(fixture_dir())
        .env("CARGO_TARGET_DIR", target_dir("fixture-cargo-project"));
    for var in FIXTURE_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run cargo test");
    String::from_utf8(out.stdout).expect("cargo test prints UTF-8")
}

fn terse_paths(listing: &str) -> Vec<String> {
    let mut paths: Vec<String> = listing
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths
}

#[test]
fn discovers_the_tests_cargo_test_lists() {
    let tests = discovered();
    let mut ours: Vec<String> = tests
        .iter()
        .map(|t| CargoRunner::of(t).unwrap().test)
        .collect();
    ours.sort();
    let theirs = terse_paths(&cargo_test(&["--", "--list", "--format", "terse"]));
    assert!(!theirs.is_empty());
    assert_eq!(ours, theirs);

    let ignored: Vec<&TestCase> = tests
        .iter()
        .filter(|t| CargoRunner::of(t).unwrap().ignored)
        .collect();
    let theirs_ignored = terse_paths(&cargo_test(&[
        "--",
        "--list",
        "--format",
        "terse",
        "--ignored",
    ]));
    assert_eq!(ignored.len(), theirs_ignored.len());
}

#[test]
fn names_tests_by_binary_id_and_path() {
    for (name, group) in [
        ("cargo-fixture tests::text::grüße", "cargo-fixture"),
        ("cargo-fixture tests::arithmetic::adds", "cargo-fixture"),
        (
            "cargo-fixture::bin/fixture-cli tests::parses_name",
            "cargo-fixture::bin/fixture-cli",
        ),
        ("cargo-fixture::api half_second", "cargo-fixture::api"),
        ("cargo-fixture::chaos abort", "cargo-fixture::chaos"),
    ] {
        let test = test_named(name);
        assert_eq!(test.group, group);
        assert_eq!(test.id.suite, "fixture");
    }
    let runner = CargoRunner::of(test_named("cargo-fixture::api half_second")).unwrap();
    assert_eq!(Path::new(&runner.cwd), fixture_dir());
    assert_eq!(
        (runner.package.as_str(), runner.version.as_str()),
        ("cargo-fixture", "0.1.0")
    );
}

/// Sums `passed`, `failed` and `ignored` over every `test result:` line.
fn summary_counts(stdout: &str) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for summary in stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
    {
        let (_, parts) = summary.split_once(". ").expect("summary has a verdict");
        for part in parts.split("; ") {
            let (n, what) = part.split_once(' ').expect("count and label");
            let n: usize = n.parse().unwrap_or(0);
            match what {
                "passed" => counts.0 += n,
                "failed" => counts.1 += n,
                "ignored" => counts.2 += n,
                _ => {}
            }
        }
    }
    counts
}

#[test]
fn outcomes_match_cargo_test_summary() {
    let expected = summary_counts(&cargo_test(&["--no-fail-fast"]));
    assert!(
        expected.0 > 0 && expected.1 > 0 && expected.2 > 0,
        "{expected:?}"
    );

    let ctx = batch_ctx(&[], 1 << 20);
    let adapter = CargoAdapter::new(Vec::new());
    let invocations = adapter.plan(discovered(), &ctx);
    assert_eq!(invocations.len(), discovered().len());
    let mut results = Vec::new();
    for inv in &invocations {
        let exit = execute(&inv.spec, Some(Duration::from_secs(60)));
        let collected = adapter.collect(inv, &exit, &[]);
        assert_eq!(
            collected.len(),
            1,
            "no result for {}:\n{}",
            inv.tests[0].id,
            exit.output.text
        );
        assert_eq!(collected[0].id, inv.tests[0].id);
        assert_eq!(collected[0].duration, exit.wall);
        results.extend(collected);
    }
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    assert_eq!(
        (
            count(Outcome::Pass),
            count(Outcome::Fail),
            count(Outcome::Skip)
        ),
        expected
    );

    let result = |name: &str| results.iter().find(|r| r.id.name == name).unwrap();
    let failed = result("cargo-fixture tests::arithmetic::subtracts_wrongly");
    let message = failed.message.as_deref().unwrap();
    assert_eq!(
        message.lines().next(),
        Some("assertion `left == right` failed"),
        "{message}"
    );
    assert!(
        failed
            .output
            .text
            .contains("---- tests::arithmetic::subtracts_wrongly stdout ----")
    );
    let no_panic = result("cargo-fixture::api did_not_panic");
    assert_eq!(no_panic.outcome, Outcome::Fail);
    assert!(
        no_panic
            .message
            .as_deref()
            .unwrap()
            .starts_with("test did not panic as expected")
    );
    assert_eq!(
        result("cargo-fixture tests::arithmetic::divide_by_zero_panics").outcome,
        Outcome::Pass
    );
    let ignored = result("cargo-fixture tests::ignored::with_reason");
    assert_eq!(
        (ignored.outcome, ignored.message.as_deref()),
        (Outcome::Skip, Some("needs a network"))
    );
    assert_eq!(
        result("cargo-fixture tests::text::grüße").outcome,
        Outcome::Pass
    );
    assert_eq!(
        result("cargo-fixture::api checks_cwd_and_env").outcome,
        Outcome::Pass
    );
    assert!(result("cargo-fixture tests::slow::one_second").duration >= Duration::from_secs(1));
}

#[test]
fn chaos_crashes_leave_no_result() {
    let ctx = batch_ctx(&[("SHOAL_FIXTURE_CHAOS", "1")], 1 << 20);
    for (name, signal) in [
        ("cargo-fixture::chaos abort", 6),
        ("cargo-fixture::chaos segfault", 11),
    ] {
        let (_, exit, results) = run_one(test_named(name), &ctx, Some(Duration::from_secs(60)));
        assert_eq!(
            exit.status,
            ExitStatus::Signal(signal),
            "{name}: {}",
            exit.output.text
        );
        assert_eq!(results, Vec::new(), "{name}");
    }
}

#[test]
fn chaos_hang_killed_leaves_no_result() {
    let ctx = batch_ctx(&[("SHOAL_FIXTURE_CHAOS", "1")], 1 << 20);
    let test = test_named("cargo-fixture::chaos hang");
    let (_, exit, results) = run_one(test, &ctx, Some(Duration::from_millis(500)));
    assert!(exit.terminated);
    assert_eq!(results, Vec::new());
}

#[test]
fn chaos_non_utf8_output_still_parses() {
    let ctx = batch_ctx(&[("SHOAL_FIXTURE_CHAOS", "1")], 1 << 20);
    let (_, exit, results) = run_one(
        test_named("cargo-fixture::chaos prints_non_utf8"),
        &ctx,
        None,
    );
    assert!(
        exit.output.text.contains('\u{FFFD}'),
        "{}",
        exit.output.text
    );
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::Pass);
}

#[test]
fn chaos_100_mb_of_output_capped_still_parses() {
    let cap = 64 * 1024;
    let ctx = batch_ctx(&[("SHOAL_FIXTURE_CHAOS", "1")], cap);
    let (_, exit, results) = run_one(test_named("cargo-fixture::chaos prints_100_mb"), &ctx, None);
    assert!(exit.output.truncated_bytes > 100 * 1024 * 1024 - cap);
    assert_eq!(results.len(), 1, "{}", exit.output.text);
    assert_eq!(results[0].outcome, Outcome::Pass);
}

/// The fixture's documented draw: SplitMix64 of `seed ^ count * golden`.
fn flaky_draw(seed: u64, count: u64) -> f64 {
    let mut x =
        (seed ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn seeded_flaky_test_follows_its_draws() {
    let state = tempfile::tempdir().expect("temp dir");
    let state_path = state.path().display().to_string();
    let ctx = batch_ctx(
        &[
            ("SHOAL_FIXTURE_STATE", &state_path),
            ("SHOAL_FIXTURE_SEED", "3"),
        ],
        1 << 20,
    );
    let test = test_named("cargo-fixture tests::flaky::thirty_percent");
    let runs = 12;
    let outcomes: Vec<Outcome> = (0..runs)
        .map(|_| run_one(test, &ctx, None).2[0].outcome)
        .collect();
    let expected: Vec<Outcome> = (1..=runs)
        .map(|count| {
            if flaky_draw(3, count) < 0.3 {
                Outcome::Fail
            } else {
                Outcome::Pass
            }
        })
        .collect();
    assert_eq!(outcomes, expected);
    assert!(outcomes.contains(&Outcome::Fail) && outcomes.contains(&Outcome::Pass));
    let counter = std::fs::read_to_string(state.path().join("thirty_percent")).unwrap();
    assert_eq!(counter.trim(), runs.to_string());
}

#[test]
fn compile_error_is_list_failed_with_diagnostics() {
    let copy = tempfile::tempdir().expect("temp dir");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "src/main.rs",
        "tests/api.rs",
        "tests/chaos.rs",
    ] {
        let to = copy.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture_dir().join(file), to).unwrap();
    }
    let lib = copy.path().join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("a / b", "a / not_defined")).unwrap();

    let err = discover_in(copy.path().to_owned(), "fixture-cargo-project-broken").unwrap_err();
    let AdapterError::ListFailed {
        command,
        status,
        output,
    } = err
    else {
        panic!("expected ListFailed, got {err:?}");
    };
    assert!(
        command.contains("test --no-run --message-format json-render-diagnostics"),
        "{command}"
    );
    assert_eq!(status, "exit code 101");
    assert!(
        output.contains("cannot find value `not_defined`"),
        "{output}"
    );
}
