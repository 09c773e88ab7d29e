//! What each test of a finished process gets when the process did not
//! report it: a pure function of what was observed (the process's exit,
//! what its progress pipe said, why shoal stopped it), so every rule of
//! docs/design/execution.md is a unit test here. The slot carries the
//! verdicts out (reports, requeues, splitting).

use super::{Follow, Stopped, ended, fmt_duration};
use shoal_core::{Outcome, TestCase, TestResult};
use shoal_exec::ProcessExit;
use std::collections::HashMap;
use std::time::Duration;

/// What the slot does with one test of a finished process.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// The tool reported it: its result, with when it ran.
    Reported {
        case: TestCase,
        result: TestResult,
        start: f64,
        end: f64,
    },
    /// shoal decides (timeout, crash or lost) and says why; the process's
    /// output goes with it.
    Decided {
        case: TestCase,
        outcome: Outcome,
        message: String,
        start: f64,
        end: f64,
    },
    /// Never started because another test killed the runner: no result, so
    /// the lease's release requeues it.
    Requeue(TestCase),
    /// One of several tests of a process without per-test progress that
    /// died: no one can be blamed; the caller runs them one per process.
    Unattributed(TestCase),
}

/// What was observed of one finished process.
pub(super) struct Observed<'a> {
    pub tests: &'a [TestCase],
    pub exit: &'a ProcessExit,
    pub follow: &'a Follow,
    /// The process reported per-test progress (started/finished).
    pub progress_mode: bool,
    /// The adapter read the exit status as abnormal
    /// (`Adapter::exit_is_abnormal`).
    pub abnormal_exit: bool,
    pub timeout: Duration,
    pub start: f64,
    pub end: f64,
}

/// The verdict for every test of `o` that was not reported while it ran
/// (streamed), in order; `results` are what the tool's report (e.g. JUnit)
/// gave after the process ended.
pub(super) fn attribute(o: &Observed, results: &HashMap<String, TestResult>) -> Vec<Verdict> {
    let f = o.follow;
    let crashed = o.abnormal_exit || f.stopped.is_some();
    let any_died_running = o.progress_mode
        && o.tests.iter().any(|c| {
            !results.contains_key(&c.id.name)
                && !f.streamed.contains(&c.id.name)
                && f.died_running(&c.id.name)
        });
    let no_result = || {
        format!(
            "the test runner ({}) reported no result for this test",
            ended(o.exit)
        )
    };
    let mut out = Vec::new();
    let mut unattributed = Vec::new();
    for case in o.tests.iter().filter(|c| !f.streamed.contains(&c.id.name)) {
        let name = &case.id.name;
        let start = f.started_at.get(name).copied().unwrap_or(o.start);
        let decided = |outcome, message| Verdict::Decided {
            case: case.clone(),
            outcome,
            message,
            start,
            end: o.end,
        };
        if let Some(r) = results.get(name) {
            let mut result = r.clone();
            let end = f.finished_at.get(name).copied().unwrap_or_else(|| {
                (start + result.duration.as_secs_f64())
                    .min(o.end)
                    .max(start)
            });
            if result.output.text.is_empty() && o.tests.len() == 1 {
                result.output = o.exit.output.clone();
            }
            out.push(Verdict::Reported {
                case: case.clone(),
                result,
                start,
                end,
            });
            continue;
        }
        let timed_out = match &f.stopped {
            Some(Stopped::Cancelled) => continue, // interrupted, not a result
            // The test that was running, or the only test of a process
            // without progress.
            Some(Stopped::Timeout(Some(t))) => t == name,
            Some(Stopped::Timeout(None)) => !o.progress_mode && o.tests.len() == 1,
            None => false,
        };
        if timed_out {
            let message = format!("timed out after {}", fmt_duration(o.timeout));
            out.push(decided(Outcome::Timeout, message));
        } else if o.progress_mode {
            if f.died_running(name) {
                let message = format!(
                    "the test runner died ({}) while this test was running",
                    ended(o.exit)
                );
                out.push(decided(Outcome::Crash, message));
            } else if f.started_at.contains_key(name) || (!crashed && !any_died_running) {
                // It ran (or the runner finished normally without running
                // it) yet no report has it.
                out.push(decided(Outcome::Lost, no_result()));
            } else {
                out.push(Verdict::Requeue(case.clone()));
            }
        } else if o.tests.len() == 1 {
            if crashed {
                let message = format!("the test process died ({})", ended(o.exit));
                out.push(decided(Outcome::Crash, message));
            } else {
                out.push(decided(Outcome::Lost, no_result()));
            }
        } else {
            unattributed.push(case.clone());
        }
    }
    for case in unattributed {
        if crashed {
            out.push(Verdict::Unattributed(case));
        } else {
            out.push(Verdict::Decided {
                case,
                outcome: Outcome::Lost,
                message: no_result(),
                start: o.start,
                end: o.end,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{CapturedOutput, TestId};
    use shoal_exec::ExitStatus;

    fn case(name: &str) -> TestCase {
        TestCase {
            id: TestId::new("s", name),
            group: String::new(),
            runner: None,
        }
    }

    fn exit(status: ExitStatus) -> ProcessExit {
        ProcessExit {
            status,
            output: CapturedOutput::default(),
            wall: Duration::from_secs(1),
            terminated: false,
            oom_killed: false,
        }
    }

    fn observe<'a>(
        tests: &'a [TestCase],
        exit: &'a ProcessExit,
        follow: &'a Follow,
        progress_mode: bool,
    ) -> Observed<'a> {
        Observed {
            tests,
            exit,
            follow,
            progress_mode,
            abnormal_exit: !exit.status.success() && exit.status != ExitStatus::Code(1),
            timeout: Duration::from_secs(30),
            start: 10.0,
            end: 20.0,
        }
    }

    fn outcomes(v: &[Verdict]) -> Vec<(String, String)> {
        v.iter()
            .map(|v| match v {
                Verdict::Reported { case, result, .. } => {
                    (case.id.name.clone(), format!("reported {}", result.outcome))
                }
                Verdict::Decided { case, outcome, .. } => {
                    (case.id.name.clone(), outcome.to_string())
                }
                Verdict::Requeue(case) => (case.id.name.clone(), "requeue".into()),
                Verdict::Unattributed(case) => (case.id.name.clone(), "unattributed".into()),
            })
            .collect()
    }

    fn names(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    #[test]
    fn a_runner_dying_blames_the_running_test_and_requeues_those_not_started() {
        let tests = [case("done"), case("running"), case("waiting")];
        let mut f = Follow::default();
        f.started_at.insert("done".into(), 11.0);
        f.finished_at.insert("done".into(), 12.0);
        f.streamed.insert("done".into());
        f.started_at.insert("running".into(), 12.0);
        let e = exit(ExitStatus::Signal(9));
        let v = outcomes(&attribute(&observe(&tests, &e, &f, true), &HashMap::new()));
        assert_eq!(names(&v), [("running", "crash"), ("waiting", "requeue")]);
    }

    #[test]
    fn a_timeout_names_the_test_that_ran_past_it() {
        let tests = [case("slow"), case("next")];
        let mut f = Follow::default();
        f.started_at.insert("slow".into(), 11.0);
        f.stopped = Some(Stopped::Timeout(Some("slow".into())));
        let e = exit(ExitStatus::Signal(9));
        let v = attribute(&observe(&tests, &e, &f, true), &HashMap::new());
        assert_eq!(
            names(&outcomes(&v)),
            [("slow", "timeout"), ("next", "requeue")]
        );
        let Verdict::Decided { message, start, .. } = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!((message.as_str(), *start), ("timed out after 30s", 11.0));
    }

    #[test]
    fn a_runner_that_ends_normally_without_a_test_lost_it() {
        let tests = [case("missing")];
        let f = Follow::default();
        let e = exit(ExitStatus::Code(0));
        let v = outcomes(&attribute(&observe(&tests, &e, &f, true), &HashMap::new()));
        assert_eq!(names(&v), [("missing", "lost")]);
    }

    #[test]
    fn without_progress_one_test_is_blamed_and_several_are_split() {
        let crashed = exit(ExitStatus::Signal(11));
        let f = Follow::default();
        let one = [case("only")];
        let v = outcomes(&attribute(
            &observe(&one, &crashed, &f, false),
            &HashMap::new(),
        ));
        assert_eq!(names(&v), [("only", "crash")]);
        let two = [case("a"), case("b")];
        let v = outcomes(&attribute(
            &observe(&two, &crashed, &f, false),
            &HashMap::new(),
        ));
        assert_eq!(names(&v), [("a", "unattributed"), ("b", "unattributed")]);
        // The same two after a normal exit: the report just lacked them.
        let normal = exit(ExitStatus::Code(1));
        let v = outcomes(&attribute(
            &observe(&two, &normal, &f, false),
            &HashMap::new(),
        ));
        assert_eq!(names(&v), [("a", "lost"), ("b", "lost")]);
    }

    #[test]
    fn the_adapter_decides_what_an_exit_code_means() {
        // libtest's 101 (tests failed) read as normal: a test missing from
        // its report is lost, not blamed for a crash.
        let e = exit(ExitStatus::Code(101));
        let f = Follow::default();
        let one = [case("t")];
        let mut o = observe(&one, &e, &f, false);
        o.abnormal_exit = false;
        assert_eq!(
            names(&outcomes(&attribute(&o, &HashMap::new()))),
            [("t", "lost")]
        );
        o.abnormal_exit = true;
        assert_eq!(
            names(&outcomes(&attribute(&o, &HashMap::new()))),
            [("t", "crash")]
        );
    }

    #[test]
    fn reported_results_win_and_a_lone_test_gets_the_process_output() {
        let tests = [case("t")];
        let f = Follow::default();
        let mut e = exit(ExitStatus::Code(1));
        e.output.text = "the process said this".into();
        let result = TestResult {
            id: TestId::new("s", "t"),
            outcome: Outcome::Fail,
            duration: Duration::from_secs(2),
            message: None,
            output: CapturedOutput::default(),
        };
        let results = HashMap::from([("t".to_owned(), result)]);
        let v = attribute(&observe(&tests, &e, &f, false), &results);
        let Verdict::Reported {
            result, start, end, ..
        } = &v[0]
        else {
            panic!("{v:?}")
        };
        assert_eq!(result.output.text, "the process said this");
        assert_eq!((*start, *end), (10.0, 12.0));
    }

    #[test]
    fn an_interrupted_process_decides_nothing() {
        let tests = [case("t")];
        let f = Follow {
            stopped: Some(Stopped::Cancelled),
            ..Follow::default()
        };
        let e = exit(ExitStatus::Signal(15));
        assert!(attribute(&observe(&tests, &e, &f, true), &HashMap::new()).is_empty());
    }
}
