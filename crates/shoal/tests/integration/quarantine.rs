//! Quarantine: a quarantined test still runs and is reported (events,
//! terminal, JUnit), but its failure does not make the exit code 1, while a
//! failure that is not quarantined still does; `shoal quarantine add|rm|ls`
//! edit shoal.toml and leave its comments alone.

use crate::events::Events;
use crate::junit::{Junit, Status};
use crate::support::{Output, Project};
use serde_json::Value;

const QUARANTINED: &str = "tests/test_outcomes.py::test_fail_assert";
const NOT_QUARANTINED: &str = "tests/test_outcomes.py::test_fail_exception";
/// test_pass and test_pass_prints.
const PASSING: &str = "tests/test_outcomes.py::test_pass";

const CONFIG: &str = r#"# The fixture's tests.
[suites.pytest]
adapter = "pytest" # the only suite

[quarantine]
tests = [
    # Broken until the fixture is fixed.
    "pytest::tests/test_outcomes.py::test_fail_assert",
    "pytest::tests/gone.py::test_removed",
]
"#;

/// `shoal run` of `patterns` with event and JUnit reports.
fn run(project: &Project, patterns: &[&str]) -> (Output, Events, String) {
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let out = project
        .shoal(["run", "-j", "2", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .args(patterns)
        .run();
    let xml = std::fs::read_to_string(&junit).expect("a JUnit report");
    (out, Events::read(&json), xml)
}

fn final_event<'a>(events: &'a Events, test: &str) -> &'a Value {
    events
        .of_type("attempt_finished")
        .find(|e| e["test"] == test && e.get("final_status").is_some())
        .unwrap_or_else(|| panic!("no final attempt of {test}"))
}

#[test]
fn a_quarantined_failure_does_not_fail_the_run() {
    let project = Project::pytest();
    project.write("shoal.toml", CONFIG);
    // `tests/gone.py` selects nothing, but lets the run judge that entry.
    let (out, events, xml) = run(&project, &[QUARANTINED, PASSING, "tests/gone.py"]);
    out.assert_code(0);

    let failed = final_event(&events, QUARANTINED);
    assert_eq!(failed["outcome"], "fail", "it ran: {failed}");
    assert_eq!(failed["final_status"], "failed", "{failed}");
    assert_eq!(failed["quarantined"], true, "{failed}");
    let passed = final_event(&events, PASSING);
    assert!(passed.get("quarantined").is_none(), "{passed}");

    let fin = events.run_finished();
    assert_eq!(fin["counts"]["failed"], 1, "still counted as failed: {fin}");
    assert_eq!(fin["quarantined"]["failed"], 1, "{fin}");
    assert_eq!(fin["exit_code"], 0, "{fin}");

    let notices = events.notices();
    assert!(
        notices.iter().any(|(level, m)| level == "warn"
            && m.contains("pytest::tests/gone.py::test_removed")
            && !m.contains(QUARANTINED)),
        "the entry matching no test is named, the matched one is not: {notices:?}"
    );

    assert!(
        out.stdout
            .contains(&format!("pytest {QUARANTINED} (quarantined)\n")),
        "the status line says it:\n{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("1 failed (1 quarantined)"),
        "{}",
        out.dump()
    );

    // JUnit keeps the failure, and says it is quarantined.
    let junit = Junit::read(&project.out("junit.xml"));
    assert_eq!(junit.case(QUARANTINED).status(), Status::Failed);
    assert!(
        xml.contains(r#"<property name="quarantined" value="true"/>"#),
        "{xml}"
    );
    assert!(xml.contains("[shoal] this test is quarantined"), "{xml}");
}

#[test]
fn a_failure_outside_the_quarantine_still_fails_the_run() {
    let project = Project::pytest();
    project.write("shoal.toml", CONFIG);
    let (out, events, _) = run(&project, &[QUARANTINED, NOT_QUARANTINED, PASSING]);
    out.assert_code(1);
    assert_eq!(final_event(&events, QUARANTINED)["quarantined"], true);
    assert!(
        final_event(&events, NOT_QUARANTINED)
            .get("quarantined")
            .is_none()
    );
    let fin = events.run_finished();
    assert_eq!(fin["counts"]["failed"], 2, "{fin}");
    assert_eq!(fin["quarantined"]["failed"], 1, "{fin}");
    assert_eq!(fin["exit_code"], 1, "{fin}");
    assert!(
        out.stdout.contains("2 failed (1 quarantined)"),
        "{}",
        out.dump()
    );
}

#[test]
fn quarantine_add_rm_ls_keep_the_file_as_written() {
    let project = Project::pytest();
    let original = "# Our suites: keep this comment.\n[suites.pytest]\nadapter = \"pytest\" # inline comment\n";
    project.write("shoal.toml", original);
    let toml = || std::fs::read_to_string(project.root().join("shoal.toml")).unwrap();

    let out = project
        .shoal(["quarantine", "add", &format!("pytest::{QUARANTINED}")])
        // A `shoal list` line is accepted as well.
        .arg(format!("pytest {NOT_QUARANTINED}"))
        .arg("pytest::tests/gone.py::test_removed")
        .run();
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("no test pytest::tests/gone.py::test_removed was discovered"),
        "an unknown test is quarantined with a warning:\n{}",
        out.dump()
    );
    assert!(
        !out.stderr.contains(QUARANTINED),
        "no warning for tests that exist:\n{}",
        out.dump()
    );
    let text = toml();
    assert!(
        text.starts_with(original),
        "the file as written is kept:\n{text}"
    );
    assert!(
        text.contains(&format!("    \"pytest::{NOT_QUARANTINED}\",\n")),
        "{text}"
    );

    // Adding again changes nothing.
    let before = toml();
    project
        .shoal(["quarantine", "add", &format!("pytest::{QUARANTINED}")])
        .run()
        .assert_code(0);
    assert_eq!(toml(), before);

    let ls = project.shoal(["quarantine", "ls"]).run();
    ls.assert_code(0);
    assert_eq!(
        ls.stdout,
        format!(
            "pytest::{QUARANTINED}\npytest::{NOT_QUARANTINED}\npytest::tests/gone.py::test_removed\n"
        )
    );
    let ls = project
        .shoal(["quarantine", "ls", "--check", "--format", "json"])
        .run();
    ls.assert_code(0);
    let listed: Vec<Value> = serde_json::from_str(&ls.stdout).expect("JSON");
    let found: Vec<(&str, bool)> = listed
        .iter()
        .map(|e| {
            (
                e["test"].as_str().unwrap(),
                e["found"].as_bool().expect("found with --check"),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (QUARANTINED, true),
            (NOT_QUARANTINED, true),
            ("tests/gone.py::test_removed", false)
        ]
    );

    // Both failures are quarantined now: the run passes.
    let (out, _, _) = run(&project, &[QUARANTINED, NOT_QUARANTINED]);
    out.assert_code(0);

    project
        .shoal(["quarantine", "rm", "pytest::tests/gone.py::test_removed"])
        .run()
        .assert_code(0);
    let text = toml();
    assert!(text.starts_with(original), "{text}");
    assert!(!text.contains("gone.py"), "{text}");

    // Removing what is not listed is an error and changes nothing.
    let before = toml();
    let out = project
        .shoal(["quarantine", "rm", &format!("pytest::{PASSING}")])
        .run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("not in the quarantine list"),
        "{}",
        out.dump()
    );
    assert_eq!(toml(), before);

    // An entry of a suite the config does not define is refused.
    let out = project
        .shoal(["quarantine", "add", "py::tests/test_outcomes.py::test_pass"])
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("names no suite"), "{}", out.dump());
    assert_eq!(toml(), before);

    project
        .shoal(["quarantine", "rm", &format!("pytest::{QUARANTINED}")])
        .arg(format!("pytest::{NOT_QUARANTINED}"))
        .run()
        .assert_code(0);
    assert_eq!(
        toml(),
        format!("{original}\n[quarantine]\ntests = []\n"),
        "an emptied list stays, empty"
    );
    let (out, _, _) = run(&project, &[QUARANTINED]);
    out.assert_code(1);
}

#[test]
fn a_bad_entry_is_located_in_shoal_toml() {
    let project = Project::pytest();
    let toml = "[suites.pytest]\nadapter = \"pytest\"\n\n[quarantine]\ntests = [\"tests/test_outcomes.py::test_pass\"]\n";
    project.write("shoal.toml", toml);
    for args in [&["run"][..], &["quarantine", "ls"]] {
        let out = project.shoal(args).run();
        out.assert_code(2);
        assert!(out.stderr.contains("shoal.toml:5:10"), "{}", out.dump());
        assert!(
            out.stderr.contains("invalid quarantine entry"),
            "{}",
            out.dump()
        );
        assert!(
            out.stderr.contains(r#"write "pytest::tests/"#),
            "the help shows the fix:\n{}",
            out.dump()
        );
    }
    let out = project.shoal(["quarantine", "add", "pytest::x"]).run();
    out.assert_code(2);
    assert_eq!(
        std::fs::read_to_string(project.root().join("shoal.toml")).unwrap(),
        toml,
        "a config that does not load is not edited"
    );
}
