//! The JUnit XML report: one `<testsuite>` per suite, one `<testcase>` per
//! final result of a (test, repetition), retries as reruns.
//!
//! Mapping:
//! - `name` is the test name, with ` (repeat N)` appended for repetitions
//!   after the first (N is the 0-based `repeat` of the events), so CI tools
//!   that key test cases by name keep every execution; `classname` is the
//!   suite.
//! - passed → success; skipped → `<skipped>` with the skip message.
//! - failed → `<failure type="fail|timeout|crash|lost">` with the last
//!   attempt's message (or a default saying what happened) and its output as
//!   `<system-out>`; the earlier failed attempts become `<rerunFailure>`s.
//! - flaky → success whose earlier failed attempts are `<flakyFailure>`s,
//!   each with its message and output.
//! - `time` is the final attempt's duration in seconds (reruns carry their
//!   own); a suite's `time` is the sum of its cases'.
//! - a quarantined test (it ran, but its failure does not fail the run)
//!   keeps its `<failure>`: it did fail, and dashboards that track flaky
//!   and failing tests over time should count it. JUnit has no status for
//!   "failed but excused", so the case says so twice: a
//!   `<property name="quarantined" value="true"/>` for tools that read
//!   test-case properties (as written by pytest's `record_property`), and,
//!   when it failed, a first line in `<system-out>`, which the dashboards
//!   most CI systems have (GitLab, Jenkins, Azure DevOps) show beside the
//!   failure while many ignore test-case properties. Turning the failure
//!   into `<skipped>` would hide it; changing its message would split its
//!   failure history in tools that group failures by message.
//!
//! `tests` counts final results only: a test cut off by an interrupt before
//! its final attempt is not listed (the run's `not_run` counts it). Suites
//! that were selected but produced no result appear empty. The file is
//! written atomically (a temporary file renamed over the destination), so
//! readers never see half a report.

use crate::error::JunitWriteError;
use crate::text::{test_label, truncation_note};
use crate::{ReportError, Reporter};
use chrono::{DateTime, FixedOffset};
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};
use shoal_core::event::AttemptFinished;
use shoal_core::{CapturedOutput, Event, FinalStatus, Outcome};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Collects final results and writes them as JUnit XML on
/// [`finish`](Reporter::finish).
#[derive(Debug)]
pub struct JunitReporter {
    path: PathBuf,
    run: Option<RunInfo>,
    /// Run start and end, once the run finished.
    span: Option<(f64, f64)>,
    suites: BTreeMap<String, Vec<CaseResult>>,
    /// Attempts of (suite, test, repeat) still waiting for their final one.
    pending: HashMap<(String, String, u32), Vec<AttemptRecord>>,
}

#[derive(Debug)]
struct RunInfo {
    run_id: String,
    commit: Option<String>,
    start: f64,
}

#[derive(Debug)]
struct CaseResult {
    test: String,
    repeat: u32,
    status: FinalStatus,
    /// The attempts before the final one, in order.
    earlier: Vec<AttemptRecord>,
    last: AttemptRecord,
    quarantined: bool,
}

/// What the report needs of one attempt. Output is kept only for failed
/// attempts: passes and skips never show theirs.
#[derive(Debug)]
struct AttemptRecord {
    outcome: Outcome,
    start: f64,
    duration: f64,
    message: Option<String>,
    output: Option<CapturedOutput>,
}

impl AttemptRecord {
    fn new(a: &AttemptFinished) -> Self {
        Self {
            outcome: a.outcome,
            start: a.start,
            duration: a.duration,
            message: a.message.clone(),
            output: a.outcome.is_failure().then(|| a.output.clone()),
        }
    }
}

impl JunitReporter {
    /// Reports to `path` (written at the end; missing directories are created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            run: None,
            span: None,
            suites: BTreeMap::new(),
            pending: HashMap::new(),
        }
    }

    fn record(&mut self, a: &AttemptFinished) {
        let key = (a.suite.clone(), a.test.clone(), a.repeat);
        let mut earlier = self.pending.remove(&key).unwrap_or_default();
        let attempt = AttemptRecord::new(a);
        match a.final_status {
            Some(status) => self
                .suites
                .entry(a.suite.clone())
                .or_default()
                .push(CaseResult {
                    test: a.test.clone(),
                    repeat: a.repeat,
                    status,
                    earlier,
                    last: attempt,
                    quarantined: a.quarantined,
                }),
            None => {
                earlier.push(attempt);
                self.pending.insert(key, earlier);
            }
        }
    }

    /// Builds the report from what has been seen so far.
    pub fn report(&self) -> Report {
        let mut report = Report::new("shoal");
        if let Some(run) = &self.run {
            if let Some(ts) = timestamp(run.start) {
                report.set_timestamp(ts);
            }
        }
        if let Some((start, end)) = self.span {
            report.set_time(seconds(end - start));
        }
        for (name, cases) in &self.suites {
            report.add_test_suite(self.suite(name, cases));
        }
        report
    }

    fn suite(&self, name: &str, cases: &[CaseResult]) -> TestSuite {
        let mut suite = TestSuite::new(name);
        if let Some(run) = &self.run {
            suite.add_property(Property::new("run_id", &run.run_id));
            if let Some(commit) = &run.commit {
                suite.add_property(Property::new("commit", commit));
            }
        }
        let mut sorted: Vec<&CaseResult> = cases.iter().collect();
        sorted.sort_by(|a, b| (&a.test, a.repeat).cmp(&(&b.test, b.repeat)));
        let first_start = sorted
            .iter()
            .map(|c| c.earlier.first().unwrap_or(&c.last).start)
            .reduce(f64::min);
        if let Some(ts) = first_start.and_then(timestamp) {
            suite.set_timestamp(ts);
        }
        let mut total = Duration::ZERO;
        for case in sorted {
            let case = test_case(name, case);
            total += case.time.unwrap_or_default();
            suite.add_test_case(case);
        }
        suite.set_time(total);
        // quick-junit counts skips as `disabled`; most CI tools (Jenkins,
        // GitLab, pytest's own reports) read `skipped`.
        let skipped = suite.disabled.to_string();
        suite.extra.insert("skipped".into(), skipped.into());
        suite
    }

    fn write(&self) -> Result<(), JunitWriteError> {
        let report = self.report();
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".shoal-junit-")
            .suffix(".xml.tmp")
            // A report is for CI tools and people to read, not a secret
            // (tempfile's default is 0600).
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)?;
        {
            let mut out = BufWriter::new(tmp.as_file_mut());
            report.serialize(&mut out)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

impl Reporter for JunitReporter {
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
        match event {
            Event::RunStarted(r) => {
                self.run = Some(RunInfo {
                    run_id: r.run_id.clone(),
                    commit: r.commit.clone(),
                    start: r.start,
                });
            }
            Event::SuiteDiscovered(s) if s.selected > 0 => {
                self.suites.entry(s.suite.clone()).or_default();
            }
            Event::AttemptFinished(a) => self.record(a),
            Event::RunFinished(r) => self.span = Some((r.start, r.end)),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        self.write().map_err(|source| ReportError::Junit {
            path: self.path.clone(),
            source,
        })
    }
}

fn test_case(suite: &str, case: &CaseResult) -> TestCase {
    let last = &case.last;
    let failed_earlier = case
        .earlier
        .iter()
        .filter(|a| a.outcome.is_failure())
        .map(rerun);
    let status = match case.status {
        FinalStatus::Passed | FinalStatus::Flaky => {
            let mut status = TestCaseStatus::success();
            status.add_reruns(failed_earlier);
            status
        }
        FinalStatus::Skipped => {
            let mut status = TestCaseStatus::skipped();
            if let Some(message) = &last.message {
                status.set_message(message.as_str());
            }
            status
        }
        FinalStatus::Failed => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_type(failure_type(last.outcome));
            status.set_message(failure_message(last));
            status.add_reruns(failed_earlier);
            status
        }
    };
    let mut tc = TestCase::new(test_label(&case.test, case.repeat), status);
    tc.set_classname(suite);
    tc.set_time(seconds(last.duration));
    if let Some(ts) = timestamp(last.start) {
        tc.set_timestamp(ts);
    }
    if case.quarantined {
        tc.add_property(Property::new("quarantined", "true"));
    }
    if case.status == FinalStatus::Failed {
        let out = output_text(last);
        if case.quarantined {
            let note = QUARANTINE_NOTE.to_owned();
            tc.set_system_out(match out {
                Some(out) => note + "\n" + &out,
                None => note,
            });
        } else if let Some(out) = out {
            tc.set_system_out(out);
        }
    }
    tc
}

/// The first line of a quarantined failure's `<system-out>`.
const QUARANTINE_NOTE: &str = "[shoal] this test is quarantined: its failure does not fail the run";

fn rerun(attempt: &AttemptRecord) -> TestRerun {
    let mut rerun = TestRerun::new(NonSuccessKind::Failure);
    rerun.set_type(failure_type(attempt.outcome));
    rerun.set_message(failure_message(attempt));
    rerun.set_time(seconds(attempt.duration));
    if let Some(ts) = timestamp(attempt.start) {
        rerun.set_timestamp(ts);
    }
    if let Some(out) = output_text(attempt) {
        rerun.set_system_out(out);
    }
    rerun
}

/// `fail`, `timeout`, `crash` or `lost`: the failure's `type` attribute.
fn failure_type(outcome: Outcome) -> &'static str {
    outcome.as_str()
}

fn failure_message(attempt: &AttemptRecord) -> String {
    if let Some(message) = &attempt.message {
        return message.clone();
    }
    match attempt.outcome {
        Outcome::Timeout => "test timed out".into(),
        Outcome::Crash => "test runner crashed".into(),
        Outcome::Lost => {
            "no result: the test's runner vanished or its report lacked the test".into()
        }
        _ => "test failed".into(),
    }
}

/// The captured output with a note when some was dropped; `None` when empty.
fn output_text(attempt: &AttemptRecord) -> Option<String> {
    let output = attempt.output.as_ref()?;
    if output.truncated_bytes == 0 {
        return (!output.text.is_empty()).then(|| output.text.clone());
    }
    let mut text = output.text.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&truncation_note(output.truncated_bytes, None));
    Some(text)
}

fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
}

fn timestamp(epoch: f64) -> Option<DateTime<FixedOffset>> {
    // Rounded to microseconds: an f64 near 1.7e9 holds about that much, and
    // rounding keeps `…20.1` from printing as `…20.099`.
    if !epoch.is_finite() {
        return None;
    }
    DateTime::from_timestamp_micros((epoch * 1e6).round() as i64).map(|t| t.fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Attempt, interrupted_run, scripted_run};
    use quick_junit::Report;

    fn run(events: &[Event], path: &Path) -> String {
        let mut reporter = JunitReporter::new(path);
        for event in events {
            reporter.on_event(event).unwrap();
        }
        reporter.finish().unwrap();
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn scripted_run_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let xml = run(&scripted_run(), &dir.path().join("junit.xml"));
        // Every time in the script is fixed, so no timestamp needs masking.
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn counts_match_final_results() {
        let dir = tempfile::tempdir().unwrap();
        let xml = run(&scripted_run(), &dir.path().join("junit.xml"));
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(report.tests, 8, "one case per final (test, repeat)");
        assert_eq!(report.failures, 4);
        assert_eq!(report.errors, 0);

        let py = &report.test_suites[0];
        assert_eq!(py.name.as_str(), "py");
        assert_eq!((py.tests, py.failures), (6, 3));
        let names: Vec<&str> = py.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tests/test_a.py::test_fail",
                "tests/test_a.py::test_ok",
                "tests/test_a.py::test_ok (repeat 1)",
                "tests/test_b.py::test_flaky",
                "tests/test_c.py::test_slow",
                "tests/test_d.py::test_gone",
            ]
        );
        let rs = &report.test_suites[1];
        assert_eq!((rs.tests, rs.failures, rs.disabled), (2, 1, 1));
        assert_eq!(rs.extra.get("skipped").map(|v| v.as_str()), Some("1"));
    }

    #[test]
    fn quarantined_failures_stay_failures_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let xml = run(&scripted_run(), &dir.path().join("junit.xml"));
        let report = Report::deserialize_from_str(&xml).unwrap();
        let case = |suite: usize, name: &str| {
            report.test_suites[suite]
                .test_cases
                .iter()
                .find(|c| c.name.as_str() == name)
                .unwrap()
                .clone()
        };
        let quarantined = |c: &TestCase| {
            c.properties
                .iter()
                .any(|p| p.name.as_str() == "quarantined" && p.value.as_str() == "true")
        };
        let crash = case(1, "net::tests::crashes");
        assert!(
            matches!(crash.status, TestCaseStatus::NonSuccess { .. }),
            "{crash:?}"
        );
        assert!(quarantined(&crash), "{crash:?}");
        let out = crash.system_out.as_ref().unwrap().as_str();
        assert!(out.starts_with(QUARANTINE_NOTE), "{out}");
        let flaky = case(0, "tests/test_b.py::test_flaky");
        assert!(quarantined(&flaky), "{flaky:?}");
        let fail = case(0, "tests/test_a.py::test_fail");
        assert!(!quarantined(&fail), "{fail:?}");
        assert!(
            !fail.system_out.unwrap().as_str().contains("quarantined"),
            "only quarantined tests are noted"
        );
        assert_eq!(report.failures, 4, "quarantine excuses, never hides");
    }

    #[test]
    fn retries_become_reruns() {
        let dir = tempfile::tempdir().unwrap();
        let xml = run(&scripted_run(), &dir.path().join("junit.xml"));
        let report = Report::deserialize_from_str(&xml).unwrap();
        let case = |name: &str| {
            report.test_suites[0]
                .test_cases
                .iter()
                .find(|c| c.name.as_str() == name)
                .unwrap()
                .clone()
        };

        let flaky = case("tests/test_b.py::test_flaky");
        let TestCaseStatus::Success { flaky_runs } = &flaky.status else {
            panic!("flaky test must be a success: {flaky:?}")
        };
        assert_eq!(flaky_runs.len(), 1);
        assert_eq!(
            flaky_runs[0].message.as_deref(),
            Some("ConnectionResetError: [Errno 104]")
        );
        let out = flaky_runs[0].system_out.as_deref().unwrap();
        assert!(out.contains("connecting to 127.0.0.1:5432"), "{out}");

        let failed = case("tests/test_a.py::test_fail");
        let TestCaseStatus::NonSuccess { ty, reruns, .. } = &failed.status else {
            panic!("failed test must be a failure: {failed:?}")
        };
        assert_eq!(ty.as_deref(), Some("fail"));
        assert_eq!(reruns.len(), 1, "the first of two failed attempts");
        let out = failed.system_out.as_deref().unwrap();
        assert!(
            out.ends_with("[output truncated: 2048 bytes dropped]"),
            "{out}"
        );

        for (name, ty_expected) in [
            ("tests/test_c.py::test_slow", "timeout"),
            ("tests/test_d.py::test_gone", "lost"),
        ] {
            let TestCaseStatus::NonSuccess { ty, message, .. } = case(name).status else {
                panic!("{name} must fail")
            };
            assert_eq!(ty.as_deref(), Some(ty_expected));
            assert!(message.is_some());
        }
    }

    #[test]
    fn interrupted_run_lists_only_final_results_and_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let xml = run(&interrupted_run(), &dir.path().join("junit.xml"));
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!((report.tests, report.failures), (1, 0));
    }

    #[test]
    fn finish_without_run_finished_still_writes_a_valid_report() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = scripted_run();
        events.truncate(6); // started + two attempts, no RunFinished
        let xml = run(&events, &dir.path().join("junit.xml"));
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(report.tests, 1);
        assert_eq!(report.time, None);
    }

    #[test]
    fn written_report_is_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        let mut r = JunitReporter::new(path.clone());
        r.finish().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn write_is_atomic_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports/junit.xml");
        fs::create_dir_all(dir.path().join("reports")).unwrap();
        fs::write(&path, "old").unwrap();
        run(&scripted_run(), &path);
        let entries: Vec<_> = fs::read_dir(dir.path().join("reports"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["junit.xml"]);
        assert!(fs::read_to_string(&path).unwrap().starts_with("<?xml"));
    }

    #[test]
    fn unwritable_destination_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let mut reporter = JunitReporter::new(blocker.join("junit.xml"));
        let err = reporter.finish().unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("failed to write JUnit report to "), "{msg}");
        assert!(msg.contains("file/junit.xml"), "{msg}");
    }

    #[test]
    fn pass_output_is_not_kept() {
        let mut reporter = JunitReporter::new("unused.xml");
        let pass = Attempt {
            output: "lots of output",
            ..Attempt::once("s", "t", Outcome::Pass, FinalStatus::Passed, 0.0, 1.0)
        };
        for event in pass.events() {
            reporter.on_event(&event).unwrap();
        }
        assert!(reporter.suites["s"][0].last.output.is_none());
    }
}
