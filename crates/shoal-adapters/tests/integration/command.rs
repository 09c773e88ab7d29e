//! command adapter against the real `fixtures/command-project`: a list script
//! and a run script that writes JUnit, with ids that break shells.

use crate::pytest::{execute, fixtures};
use shoal_adapters::command::CommandAdapter;
use shoal_adapters::{Adapter, AdapterError, BatchCtx, DiscoverCtx};
use shoal_core::config::{AdapterConfig, CommandLine, SuiteConfig};
use shoal_core::{Outcome, TestCase};
use shoal_exec::ExitStatus;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn project() -> PathBuf {
    fixtures().join("command-project")
}

fn list() -> CommandLine {
    CommandLine::Argv(vec!["python3".into(), "list_tests.py".into()])
}

fn run_template(junit: &str) -> Vec<String> {
    [
        "python3",
        "run_tests.py",
        &format!("--junit={junit}"),
        "--",
        "{tests}",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn suite(root: &Path, list: CommandLine, run: Vec<String>, junit: Option<PathBuf>) -> SuiteConfig {
    SuiteConfig {
        name: "cmd".into(),
        adapter: AdapterConfig::Command { list, run, junit },
        root: root.to_owned(),
        env: BTreeMap::new(),
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

fn discover(
    adapter: &CommandAdapter,
    suite: SuiteConfig,
    dir: &Path,
) -> Result<Vec<TestCase>, AdapterError> {
    let ctx = DiscoverCtx {
        suite,
        support_dir: dir.join("support"),
        env: BTreeMap::new(),
        executor: None,
        scope: Vec::new(),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(adapter.discover(&ctx))
}

fn batch(suite: SuiteConfig, dir: &Path, seq: u64) -> BatchCtx {
    BatchCtx {
        suite,
        support_dir: dir.join("support"),
        scratch_dir: dir.join("scratch"),
        batch_seq: seq,
        env: BTreeMap::new(),
        output_cap: 4096,
        estimates: Default::default(),
        collect: Vec::new(),
    }
}

const IDS: [&str; 10] = [
    "plain_pass",
    "pkg.Klass.test_dotted",
    "suite::colons_fail",
    "dir/slash_skip",
    "Spaced name with space",
    "$(touch /tmp/shoal-pwned-command)",
    "quote'and\"double <xml> & `tick`",
    "-dash-first",
    "ünïcödé 日本",
    "never_reported",
];

#[test]
fn lists_runs_and_matches_every_id() {
    let _ = std::fs::remove_file("/tmp/shoal-pwned-command");
    let dir = tempfile::tempdir().unwrap();
    let run = run_template("{junit}");
    let adapter = CommandAdapter::new(list(), run.clone(), None);
    let suite = suite(&project(), list(), run, None);
    let tests = discover(&adapter, suite.clone(), dir.path()).expect("listing succeeds");
    assert_eq!(
        tests.iter().map(|t| t.id.name.as_str()).collect::<Vec<_>>(),
        IDS
    );
    assert_eq!(tests[1].group, "pkg.Klass");

    let ctx = batch(suite, dir.path(), 4);
    let [inv] = &adapter.plan(&tests, &ctx)[..] else {
        panic!("one invocation")
    };
    assert_eq!(
        inv.junit.as_deref(),
        Some(dir.path().join("scratch/junit-4.xml").as_path())
    );
    let ran = execute(inv, Duration::from_secs(60));
    assert_eq!(
        ran.exit.status,
        ExitStatus::Code(1),
        "{}",
        ran.exit.output.text
    );
    assert!(
        ran.exit
            .output
            .text
            .contains("running $(touch /tmp/shoal-pwned-command)")
    );

    let results = adapter.collect(inv, &ran.exit, &[]);
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.id.name.as_str(), r.outcome))
        .collect();
    use Outcome::*;
    let expected = [Pass, Pass, Fail, Skip, Pass, Pass, Fail, Pass, Pass];
    assert_eq!(
        got,
        IDS[..9].iter().copied().zip(expected).collect::<Vec<_>>()
    );
    assert!(
        !Path::new("/tmp/shoal-pwned-command").exists(),
        "a test id reached a shell"
    );

    let fail = &results[2];
    assert_eq!(fail.message.as_deref(), Some("suite::colons_fail failed"));
    assert_eq!(
        fail.output.text,
        "Traceback: it broke\noutput of suite::colons_fail\n"
    );
    assert_eq!(fail.duration, Duration::from_millis(125));
    assert_eq!(results[3].message.as_deref(), Some("not today"));
}

#[test]
fn a_fixed_report_path_is_read_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir(&root).unwrap();
    for file in ["cases.py", "list_tests.py", "run_tests.py"] {
        std::fs::copy(project().join(file), root.join(file)).unwrap();
    }
    let run = run_template("reports/out.xml");
    let adapter = CommandAdapter::new(list(), run.clone(), Some("reports/out.xml".into()));
    let suite = suite(&root, list(), run, Some("reports/out.xml".into()));
    let tests = discover(&adapter, suite.clone(), dir.path()).unwrap();
    let selected: Vec<_> = tests
        .into_iter()
        .filter(|t| t.id.name.contains("pass"))
        .collect();
    let inv = &adapter.plan(&selected, &batch(suite, dir.path(), 1))[0];
    let report = root.join("reports/out.xml");
    assert_eq!(inv.junit.as_deref(), Some(report.as_path()));

    let ran = execute(inv, Duration::from_secs(60));
    assert_eq!(ran.exit.status, ExitStatus::Code(0));
    let results = adapter.collect(inv, &ran.exit, &[]);
    assert_eq!(
        results
            .iter()
            .map(|r| r.id.name.as_str())
            .collect::<Vec<_>>(),
        ["plain_pass"]
    );
    assert!(!report.exists(), "the fixed report is removed once read");
    assert!(
        adapter.collect(inv, &ran.exit, &[]).is_empty(),
        "no report, no results"
    );
}

#[test]
fn no_report_means_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let run = vec![
        "python3".into(),
        "-c".into(),
        "print('ran without a report')".into(),
        "{junit}".into(),
        "{tests}".into(),
    ];
    let adapter = CommandAdapter::new(list(), run.clone(), None);
    let suite = suite(&project(), list(), run, None);
    let tests = discover(&adapter, suite.clone(), dir.path()).unwrap();
    let inv = &adapter.plan(&tests, &batch(suite, dir.path(), 9))[0];
    let ran = execute(inv, Duration::from_secs(60));
    assert_eq!(ran.exit.status, ExitStatus::Code(0));
    assert!(adapter.collect(inv, &ran.exit, &[]).is_empty());
}

#[test]
fn listing_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let failing = CommandLine::Shell("echo listing broke; echo details >&2; exit 3".into());
    let run = run_template("{junit}");
    let adapter = CommandAdapter::new(failing.clone(), run.clone(), None);
    match discover(
        &adapter,
        suite(&project(), failing, run.clone(), None),
        dir.path(),
    ) {
        Err(AdapterError::ListFailed {
            command,
            status,
            output,
        }) => {
            assert_eq!(
                command,
                "sh -c 'echo listing broke; echo details >&2; exit 3'"
            );
            assert_eq!(status, "exit code 3");
            assert_eq!(output, "listing broke\ndetails\n");
        }
        other => panic!("expected ListFailed, got {other:?}"),
    }

    let missing = CommandLine::Argv(vec!["/nonexistent/lister".into()]);
    let adapter = CommandAdapter::new(missing.clone(), run.clone(), None);
    assert!(matches!(
        discover(
            &adapter,
            suite(&project(), missing, run.clone(), None),
            dir.path()
        ),
        Err(AdapterError::Spawn { .. })
    ));

    let binary = CommandLine::Argv(vec!["printf".into(), r"ok\n\377\n".into()]);
    let adapter = CommandAdapter::new(binary.clone(), run.clone(), None);
    match discover(&adapter, suite(&project(), binary, run, None), dir.path()) {
        Err(AdapterError::BadListOutput { detail, .. }) => {
            assert!(detail.contains("not valid utf-8"), "{detail}")
        }
        other => panic!("expected BadListOutput, got {other:?}"),
    }
}
