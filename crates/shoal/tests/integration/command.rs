//! The command adapter end to end: the fixture's hostile ids and JUnit
//! shapes, a list command that fails, and run commands whose reports are
//! missing or malformed.

use crate::events::Events;
use crate::support::{Project, listed_names};
use std::collections::BTreeMap;
use std::path::Path;

/// The suite from `fixtures/command-project/README.md`.
const FIXTURE_CONFIG: &str = r#"[suites.cmd]
adapter = "command"
list = ["python3", "list_tests.py"]
run = ["python3", "run_tests.py", "--junit={junit}", "--", "{tests}"]
"#;

/// The fixture's truth table (`cases.py`): id → outcome (`None`: never
/// reported).
fn cases(project: &Project) -> Vec<(String, Option<String>)> {
    let out = project
        .tool(
            "python3",
            [
                "-c",
                "import json, cases; print(json.dumps([[i, o[0]] for i, o in cases.CASES]))",
            ],
        )
        .run();
    out.assert_code(0);
    serde_json::from_str(&out.stdout).expect("cases as JSON")
}

#[test]
fn fixture_outcomes_follow_its_cases() {
    let pwned = Path::new("/tmp/shoal-pwned-command");
    if pwned.exists() {
        std::fs::remove_file(pwned).expect("remove a stale marker");
    }
    let project = Project::command();
    project.write("shoal.toml", FIXTURE_CONFIG);
    let cases = cases(&project);

    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let ids: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    assert_eq!(
        listed_names(&list, "cmd"),
        ids,
        "ids as the list prints them"
    );

    let json = project.out("events.jsonl");
    let run = project.shoal(["run", "-j", "2", "--json"]).arg(&json).run();
    run.assert_code(1);
    let events = Events::read(&json);
    events.assert_one_final_each("cmd", &ids);
    let got: BTreeMap<String, (String, String)> = events
        .finals()
        .into_iter()
        .map(|a| {
            let status = a.final_status.clone().expect("final");
            (a.test, (a.outcome, status))
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = cases
        .into_iter()
        .map(|(id, outcome)| {
            let pair = match outcome.as_deref() {
                Some("pass") => ("pass", "passed"),
                Some("fail") => ("fail", "failed"),
                Some("skip") => ("skip", "skipped"),
                None => ("lost", "failed"),
                Some(other) => panic!("unknown case outcome {other:?}"),
            };
            (id, (pair.0.to_owned(), pair.1.to_owned()))
        })
        .collect();
    assert_eq!(got, want);
    assert!(!pwned.exists(), "a test id went through a shell");
}

#[test]
fn failing_list_command_is_an_infrastructure_error() {
    let project = Project::command();
    project.write(
        "shoal.toml",
        r#"[suites.cmd]
adapter = "command"
list = ["python3", "-c", "import sys; print('partial-list-output'); sys.exit('cannot list: database unreachable')"]
run = ["python3", "run_tests.py", "--junit={junit}", "--", "{tests}"]
"#,
    );
    let json = project.out("events.jsonl");
    let out = project.shoal(["run", "--json"]).arg(&json).run();
    out.assert_code(3);
    for needle in ["partial-list-output", "cannot list: database unreachable"] {
        assert!(
            out.stderr.contains(needle),
            "stderr shows the list command's output ({needle:?}):\n{}",
            out.stderr
        );
    }
    if json.exists() {
        assert_eq!(Events::read(&json).attempts().len(), 0, "nothing ran");
    }
    project.shoal(["list"]).run().assert_code(3);
}

/// Runs the fixture's list with `run` replaced by `script` (written to the
/// project as `runner.py`, called as `runner.py --junit=PATH ID...`) and
/// checks that every test ends `lost` and the run fails cleanly.
fn assert_all_lost_with_runner(script: &str) {
    let project = Project::command();
    project.write("runner.py", script);
    project.write(
        "shoal.toml",
        r#"[suites.cmd]
adapter = "command"
list = ["python3", "list_tests.py"]
run = ["python3", "runner.py", "--junit={junit}", "{tests}"]
"#,
    );
    let ids: Vec<String> = cases(&project).into_iter().map(|c| c.0).collect();
    let json = project.out("events.jsonl");
    // Without NO_COLOR, as in most CI jobs.
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .env_remove("NO_COLOR")
        .run();
    out.assert_code(1);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // Whatever shoal logs about it is plain text: stderr is not a terminal.
    assert!(
        !out.stderr.contains('\x1b'),
        "escape codes on a non-terminal stderr:\n{}",
        out.stderr
    );
    let events = Events::read(&json);
    events.assert_one_final_each("cmd", &ids);
    for a in events.finals() {
        assert_eq!(a.outcome, "lost", "{a:?}");
        assert_eq!(a.final_status.as_deref(), Some("failed"), "{a:?}");
        assert!(a.message.is_some(), "a lost test says why: {a:?}");
    }
    assert_eq!(events.run_finished()["exit_code"], 1);
}

#[test]
fn run_command_without_a_report_loses_its_tests() {
    assert_all_lost_with_runner(
        "import sys\nprint('ran', len(sys.argv) - 2, 'tests and wrote no report')\n",
    );
}

#[test]
fn malformed_report_loses_its_tests_without_a_panic() {
    assert_all_lost_with_runner(
        "import sys\n\
         path = sys.argv[1].split('=', 1)[1]\n\
         with open(path, 'w') as f:\n\
         \x20   f.write('<testsuite><testcase name=\"plain_pass\"><broken')\n",
    );
}
