//! The command adapter: any tool that can list its tests one per line and
//! write a JUnit report. Also home of the helpers every adapter uses to run a
//! listing command.
//!
//! `list` prints one test id per non-empty line. `run` is an argv template:
//! an argument that is exactly `{tests}` becomes one argument per test id,
//! and `{junit}` anywhere in an argument becomes the report path, which is
//! `<slot scratch>/junit-<batch>.xml` unless the suite's `junit` setting names
//! the file the tool always writes (relative to the suite root).
//!
//! Report test cases are matched to ids by `name`, `classname.name`,
//! `classname::name`, `classname/name` or `classname name`, in that order.

use crate::junit::{self, Assignment};
use crate::{Adapter, AdapterError, BatchCtx, DiscoverCtx, Invocation, Progress};
use async_trait::async_trait;
use shoal_core::config::CommandLine;
use shoal_core::{Outcome, TestCase, TestId, TestResult};
use shoal_exec::{ExitStatus, ProcessExit, ProcessSpec};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

/// Bytes of a failed listing command's output quoted in the error.
const LIST_OUTPUT_TAIL: usize = 8 * 1024;
/// A report older than the process by more than this is a leftover.
const STALE_SLACK: Duration = Duration::from_secs(60);

/// Runs tests through a user-configured command that writes JUnit.
#[derive(Debug, Clone)]
pub struct CommandAdapter {
    list: CommandLine,
    run: Vec<String>,
    junit: Option<PathBuf>,
}

impl CommandAdapter {
    pub fn new(list: CommandLine, run: Vec<String>, junit: Option<PathBuf>) -> Self {
        Self { list, run, junit }
    }

    /// Where the tool writes its report for batch `ctx`.
    fn report_path(&self, ctx: &BatchCtx) -> PathBuf {
        match &self.junit {
            Some(path) => ctx.suite.root.join(path),
            None => {
                let path = ctx.scratch_dir.join(format!("junit-{}.xml", ctx.batch_seq));
                std::path::absolute(&path).unwrap_or(path)
            }
        }
    }
}

#[async_trait]
impl Adapter for CommandAdapter {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn discover(&self, ctx: &DiscoverCtx) -> Result<Vec<TestCase>, AdapterError> {
        let argv = self.list.argv();
        let env = ctx.suite.env.iter().chain(&ctx.env);
        let output = run_listing(&argv, &ctx.suite.root, env, &[]).await?;
        if !output.status.success() {
            return Err(list_failed(&argv, &output));
        }
        let stdout = String::from_utf8(output.stdout).map_err(|e| AdapterError::BadListOutput {
            command: display_argv(&argv),
            detail: format!(
                "the test list is not valid utf-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        let mut seen = HashSet::new();
        Ok(parse_list(&stdout)
            .filter(|id| seen.insert(*id))
            .map(|id| TestCase {
                id: TestId::new(ctx.suite.name.clone(), id),
                group: group_of(id).to_owned(),
                runner: None,
            })
            .collect())
    }

    fn plan(&self, tests: &[TestCase], ctx: &BatchCtx) -> Vec<Invocation> {
        if tests.is_empty() {
            return Vec::new();
        }
        let report = self.report_path(ctx);
        let report_arg = report.to_string_lossy();
        let mut argv = Vec::with_capacity(self.run.len() + tests.len());
        for arg in &self.run {
            if arg == "{tests}" {
                argv.extend(tests.iter().map(|t| t.id.name.clone()));
            } else {
                argv.push(arg.replace("{junit}", &report_arg));
            }
        }
        let spec = ProcessSpec {
            argv,
            cwd: ctx.suite.root.clone(),
            env: ctx.env.clone(),
            progress_pipe: false,
            stdin_pipe: false,
            output_cap: ctx.output_cap,
        };
        vec![Invocation {
            spec,
            tests: tests.to_vec(),
            junit: Some(report),
            time_limit: None,
        }]
    }

    /// Reads the report unless it is older than the process (a leftover of an
    /// earlier run in a reused directory). A report at a configured fixed path
    /// is removed once read, so the next batch cannot mistake it for its own.
    fn collect(
        &self,
        inv: &Invocation,
        exit: &ProcessExit,
        _progress: &[Progress],
    ) -> Vec<TestResult> {
        let Some(path) = &inv.junit else {
            return Vec::new();
        };
        if is_stale(path, exit.wall) {
            return Vec::new();
        }
        let report = match junit::parse_file(path, inv.spec.output_cap) {
            Ok(report) => report,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open junit report");
                }
                return Vec::new();
            }
        };
        if let Some(error) = &report.error {
            tracing::warn!(path = %path.display(), %error, "junit report read only in part");
        }
        if self.junit.is_some() {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove junit report after reading it");
            }
        }
        let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, test) in inv.tests.iter().enumerate() {
            by_id.entry(test.id.name.as_str()).or_default().push(i);
        }
        let mut assignment = Assignment::new(inv.tests.len());
        for case in &report.cases {
            let matched = case_keys(case.classname.as_deref(), &case.name)
                .iter()
                .find_map(|key| by_id.get(key.as_str()))
                .is_some_and(|candidates| assignment.assign(candidates, case));
            if !matched {
                tracing::debug!(classname = ?case.classname, name = %case.name, "junit test case matches no test of the batch");
            }
        }
        // A broken report is the tool's fault, not the tests': say so on
        // every test it left out instead of a bare "no result".
        let broken = report.error.as_ref().map(|e| {
            format!(
                "the JUnit report {} is malformed ({e}); it has no result for this test",
                path.display()
            )
        });
        inv.tests
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                assignment
                    .take(i, t.id.clone(), inv.spec.output_cap)
                    .or_else(|| {
                        broken.as_ref().map(|message| TestResult {
                            id: t.id.clone(),
                            outcome: Outcome::Lost,
                            duration: exit.wall,
                            message: Some(message.clone()),
                            output: exit.output.clone(),
                        })
                    })
            })
            .collect()
    }
}

/// The ids a JUnit case may stand for, most specific last.
fn case_keys(classname: Option<&str>, name: &str) -> Vec<String> {
    let mut keys = vec![name.to_owned()];
    if let Some(class) = classname.filter(|c| !c.is_empty()) {
        for sep in [".", "::", "/", " "] {
            keys.push(format!("{class}{sep}{name}"));
        }
    }
    keys
}

/// One id per non-empty line; a trailing `\r` is not part of the id.
fn parse_list(stdout: &str) -> impl Iterator<Item = &str> {
    stdout
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
}

/// The id up to its last `::`, `/` or `.` separator (a file, module or class),
/// or "" when it has none.
fn group_of(id: &str) -> &str {
    ["::", "/", "."]
        .iter()
        .filter_map(|sep| id.rfind(sep))
        .max()
        .map_or("", |at| &id[..at])
}

/// Whether the report at `path` predates the process that ran for `wall`
/// (with generous slack for a late `collect`): a leftover of an earlier run
/// in a reused directory, not this batch's report.
pub(crate) fn is_stale(path: &Path, wall: Duration) -> bool {
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    let stale = SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age > wall + STALE_SLACK);
    if stale {
        tracing::warn!(path = %path.display(), "ignoring a junit report older than the batch that should have written it");
    }
    stale
}

/// Runs a listing command to completion in `cwd` with `env` added, stdin
/// closed and both output streams captured. `remove` names inherited
/// variables to unset.
pub(crate) async fn run_listing<'a>(
    argv: &[String],
    cwd: &Path,
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
    remove: &[&str],
) -> Result<std::process::Output, AdapterError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(AdapterError::BadListOutput {
            command: String::new(),
            detail: "the listing command is empty".into(),
        });
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in remove {
        command.env_remove(name);
    }
    command
        .output()
        .await
        .map_err(|source| AdapterError::Spawn {
            program: program.clone(),
            source,
        })
}

/// [`run_listing`] through `executor` when given: stdout then holds stdout
/// and stderr both, in arrival order (an executor does not keep them apart),
/// so only callers that read their listing from a file should pass one.
pub(crate) async fn run_listing_on<'a>(
    executor: Option<&std::sync::Arc<dyn shoal_exec::Executor>>,
    argv: &[String],
    cwd: &Path,
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
    remove: &[&str],
) -> Result<std::process::Output, AdapterError> {
    use std::os::unix::process::ExitStatusExt;
    let Some(executor) = executor else {
        return run_listing(argv, cwd, env, remove).await;
    };
    let program = argv.first().cloned().unwrap_or_default();
    let spec = shoal_exec::ProcessSpec {
        argv: argv.to_vec(),
        cwd: cwd.to_owned(),
        env: env
            .into_iter()
            .filter(|(k, _)| !remove.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        progress_pipe: false,
        stdin_pipe: false,
        output_cap: 4 << 20,
    };
    let failed = |e: shoal_exec::ExecError| AdapterError::Spawn {
        program: program.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    let exit = executor
        .spawn(&spec)
        .await
        .map_err(failed)?
        .wait()
        .await
        .map_err(failed)?;
    let status = match exit.status {
        ExitStatus::Code(code) => std::process::ExitStatus::from_raw((code & 0xff) << 8),
        ExitStatus::Signal(signal) => std::process::ExitStatus::from_raw(signal & 0x7f),
    };
    Ok(std::process::Output {
        status,
        stdout: exit.output.text.into_bytes(),
        stderr: Vec::new(),
    })
}

/// The error for a listing command that exited unsuccessfully.
pub(crate) fn list_failed(argv: &[String], output: &std::process::Output) -> AdapterError {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    AdapterError::ListFailed {
        command: display_argv(argv),
        status: exit_status(output.status).to_string(),
        output: tail(&text, LIST_OUTPUT_TAIL).to_owned(),
    }
}

pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// The last `max` bytes of `text`, starting at a line (or character) boundary.
pub(crate) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match text[start..].find('\n') {
        Some(nl) if nl + 1 < text.len() - start => &text[start + nl + 1..],
        _ => &text[start..],
    }
}

/// argv quoted for display in messages (never executed).
pub(crate) fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::{AdapterConfig, Config};
    use std::collections::BTreeMap;

    fn ctx(
        root: &Path,
        scratch: &Path,
        junit: Option<PathBuf>,
        run: &[&str],
    ) -> (CommandAdapter, BatchCtx) {
        let run: Vec<String> = run.iter().map(|s| s.to_string()).collect();
        let adapter_cfg = AdapterConfig::Command {
            list: CommandLine::Shell("true".into()),
            run: run.clone(),
            junit: junit.clone(),
        };
        let suite = Config::zero_config(root, vec![("cmd".into(), adapter_cfg, root.to_owned())])
            .suites
            .remove(0);
        let batch = BatchCtx {
            suite,
            support_dir: scratch.join("support"),
            scratch_dir: scratch.to_owned(),
            batch_seq: 7,
            env: BTreeMap::from([("A".into(), "1".into())]),
            output_cap: 1000,
            estimates: Default::default(),
            collect: Vec::new(),
        };
        (
            CommandAdapter::new(CommandLine::Shell("true".into()), run, junit),
            batch,
        )
    }

    fn case(id: &str) -> TestCase {
        TestCase {
            id: TestId::new("cmd", id),
            group: String::new(),
            runner: None,
        }
    }

    #[test]
    fn plan_expands_tests_and_junit_placeholders() {
        let (adapter, batch) = ctx(
            Path::new("/proj"),
            Path::new("/scratch"),
            None,
            &["./run", "--out={junit}", "{tests}", "--", "{tests}x"],
        );
        let tests = [case("a b"), case("$(touch /tmp/x)"), case("-dash")];
        let [inv] = &adapter.plan(&tests, &batch)[..] else {
            panic!("one invocation")
        };
        assert_eq!(
            inv.spec.argv,
            [
                "./run",
                "--out=/scratch/junit-7.xml",
                "a b",
                "$(touch /tmp/x)",
                "-dash",
                "--",
                "{tests}x"
            ]
        );
        assert_eq!(
            inv.junit.as_deref(),
            Some(Path::new("/scratch/junit-7.xml"))
        );
        assert_eq!(inv.spec.cwd, Path::new("/proj"));
        assert_eq!(inv.spec.env.get("A").map(String::as_str), Some("1"));
        assert!(!inv.spec.progress_pipe);
        assert_eq!(inv.tests.len(), 3);
        assert!(adapter.plan(&[], &batch).is_empty());
    }

    #[test]
    fn configured_junit_path_is_relative_to_the_root() {
        let (adapter, batch) = ctx(
            Path::new("/proj"),
            Path::new("/scratch"),
            Some("out/report.xml".into()),
            &["./run", "{tests}", "{junit}"],
        );
        let inv = &adapter.plan(&[case("t")], &batch)[0];
        assert_eq!(
            inv.junit.as_deref(),
            Some(Path::new("/proj/out/report.xml"))
        );
        assert_eq!(inv.spec.argv, ["./run", "t", "/proj/out/report.xml"]);
    }

    #[test]
    fn list_lines() {
        let ids: Vec<_> = parse_list("a\r\n\n  \nb c\r\n$(x)\n").collect();
        assert_eq!(ids, ["a", "b c", "$(x)"]);
    }

    #[test]
    fn groups() {
        assert_eq!(group_of("pkg.mod.Class.test"), "pkg.mod.Class");
        assert_eq!(group_of("suite/file::test"), "suite/file");
        assert_eq!(group_of("plain"), "");
    }

    #[test]
    fn case_keys_cover_common_joins() {
        assert_eq!(
            case_keys(Some("K"), "n"),
            ["n", "K.n", "K::n", "K/n", "K n"]
        );
        assert_eq!(case_keys(Some(""), "n"), ["n"]);
    }

    #[test]
    fn a_malformed_report_names_itself_on_the_tests_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (adapter, batch) = ctx(
            dir.path(),
            dir.path(),
            None,
            &["./run", "{junit}", "{tests}"],
        );
        let tests = [case("a"), case("b")];
        let inv = &adapter.plan(&tests, &batch)[0];
        std::fs::write(
            inv.junit.as_ref().unwrap(),
            r#"<testsuite><testcase name="a" time="0.1"/><testcase name="b"><failure"#,
        )
        .unwrap();
        let exit = ProcessExit {
            status: ExitStatus::Code(0),
            output: Default::default(),
            wall: Duration::from_secs(1),
            terminated: false,
            oom_killed: false,
        };
        let results = adapter.collect(inv, &exit, &[]);
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0].id.name.as_str(), results[0].outcome),
            ("a", Outcome::Pass)
        );
        assert_eq!(results[1].outcome, Outcome::Lost);
        let msg = results[1].message.as_deref().unwrap();
        assert!(msg.contains("malformed"), "{msg}");
    }

    #[test]
    fn collect_matches_ids_and_leaves_unknown_out() {
        let dir = tempfile::tempdir().unwrap();
        let (adapter, batch) = ctx(
            dir.path(),
            dir.path(),
            None,
            &["./run", "{junit}", "{tests}"],
        );
        let tests = [
            case("K.pass"),
            case("K::fail"),
            case("skip me"),
            case("lost"),
        ];
        let inv = &adapter.plan(&tests, &batch)[0];
        std::fs::write(
            inv.junit.as_ref().unwrap(),
            r#"<testsuite><testcase classname="K" name="pass" time="0.5"/><testcase classname="K" name="fail"><failure message="bad">trace</failure><system-out>out</system-out></testcase><testcase classname="skip" name="me"><skipped message="why"/></testcase><testcase name="stranger"/></testsuite>"#,
        )
        .unwrap();
        let exit = ProcessExit {
            status: ExitStatus::Code(1),
            output: Default::default(),
            wall: Duration::from_secs(1),
            terminated: false,
            oom_killed: false,
        };
        let results = adapter.collect(inv, &exit, &[]);
        let summary: Vec<_> = results
            .iter()
            .map(|r| (r.id.name.as_str(), r.outcome, r.message.as_deref()))
            .collect();
        use shoal_core::Outcome::*;
        assert_eq!(
            summary,
            [
                ("K.pass", Pass, None),
                ("K::fail", Fail, Some("bad")),
                ("skip me", Skip, Some("why"))
            ]
        );
        assert_eq!(results[0].duration, Duration::from_millis(500));
        assert_eq!(results[1].output.text, "trace\nout");
        // The scratch report is left in place; a missing one yields nothing.
        assert!(inv.junit.as_ref().unwrap().exists());
        std::fs::remove_file(inv.junit.as_ref().unwrap()).unwrap();
        assert!(adapter.collect(inv, &exit, &[]).is_empty());
    }

    #[test]
    fn stale_reports_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (adapter, batch) = ctx(
            dir.path(),
            dir.path(),
            None,
            &["./run", "{junit}", "{tests}"],
        );
        let inv = &adapter.plan(&[case("t")], &batch)[0];
        let path = inv.junit.as_ref().unwrap();
        std::fs::write(path, r#"<testsuite><testcase name="t"/></testsuite>"#).unwrap();
        let exit = ProcessExit {
            status: ExitStatus::Code(0),
            output: Default::default(),
            wall: Duration::from_secs(5),
            terminated: false,
            oom_killed: false,
        };
        assert_eq!(adapter.collect(inv, &exit, &[]).len(), 1);
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(adapter.collect(inv, &exit, &[]).is_empty());
    }

    #[test]
    fn tail_starts_at_a_line() {
        assert_eq!(tail("short", 100), "short");
        assert_eq!(tail("line one\nline two\nline three", 14), "line three");
        assert_eq!(tail("ééééé", 3), "é");
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let argv = [
            "python3".to_string(),
            "-m".into(),
            "a b".into(),
            "it's".into(),
            "$(x)".into(),
        ];
        assert_eq!(display_argv(&argv), r"python3 -m 'a b' 'it'\''s' '$(x)'");
    }
}
