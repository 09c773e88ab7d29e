//! Usage and config errors exit 2 before anything runs, and point at the
//! exact place in `shoal.toml`.

use crate::events::Events;
use crate::support::Project;

/// Writes `toml` as the project's shoal.toml, runs `shoal run`, and checks
/// the error: exit 2, a diagnostic located at `shoal.toml:LINE:COL` (the
/// 1-based position of `at` in the text plus `offset` columns), and nothing
/// run.
fn assert_config_error(toml: &str, at: &str, offset: usize, message: &str) {
    let project = Project::pytest();
    project.write("shoal.toml", toml);
    let (line, col) = toml
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(at).map(|c| (i + 1, c + 1 + offset)))
        .unwrap_or_else(|| panic!("{at:?} is not in the config"));
    let json = project.out("events.jsonl");
    let out = project.shoal(["run", "--json"]).arg(&json).run();
    out.assert_code(2);
    let location = format!("shoal.toml:{line}:{col}");
    assert!(
        out.stderr.contains(&location),
        "stderr names {location}:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(message),
        "stderr says {message:?}:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!json.exists(), "no event log for a run that never started");
    assert!(
        !project.root().join(".shoal").exists(),
        "no state written for a run that never started"
    );
}

#[test]
fn malformed_toml_is_located() {
    // The header is never closed: TOML wants `]` right after `[suites.py`.
    let toml = "[run]\nslots = 2\n\n[suites.py\nadapter = \"pytest\"\n";
    assert_config_error(toml, "[suites.py", "[suites.py".len(), "invalid config");
}

#[test]
fn unknown_key_is_located() {
    let toml = "[run]\nslots = 2\n\n[suites.py]\nadapter = \"pytest\"\nbogus_key = 1\n";
    assert_config_error(toml, "bogus_key", 0, "bogus_key");
}

#[test]
fn unknown_adapter_is_located() {
    let toml = "[suites.py]\nadapter = \"nope\"\n";
    assert_config_error(toml, "\"nope\"", 0, "nope");
}

#[test]
fn unknown_suite_is_a_usage_error() {
    let project = Project::pytest();
    let json = project.out("events.jsonl");
    let out = project
        .shoal(["run", "--suite", "no-such-suite", "--json"])
        .arg(&json)
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("no-such-suite"), "{}", out.stderr);
    if json.exists() {
        let events = Events::read(&json);
        assert_eq!(events.attempts().len(), 0, "nothing ran");
    }
}

#[test]
fn a_pattern_matching_nothing_is_a_usage_error() {
    let project = Project::pytest();
    let json = project.out("events.jsonl");
    let out = project
        .shoal(["run", "--json"])
        .arg(&json)
        .arg("no_test_is_called_this")
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("no tests matched"), "{}", out.stderr);
    if json.exists() {
        let events = Events::read(&json);
        assert_eq!(events.attempts().len(), 0, "nothing ran");
    }
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let project = Project::pytest();
    let out = project.shoal(["run", "--retries", "many"]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("many"), "{}", out.stderr);
}

/// A missing file named on the command line is reported with its cause,
/// not only with what shoal was doing (issue 12: one error convention).
#[test]
fn a_missing_tls_file_says_why_it_could_not_be_read() {
    let project = Project::pytest();
    let missing = project.out("no-such-cert.pem");
    let store = format!("sqlite://{}", project.out("coordinator.db").display());
    let out = project
        .shoal(["serve", "--listen", "127.0.0.1:0", "--store", &store])
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("No such file or directory"),
        "the cause is named:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no-such-cert.pem"),
        "the file is named:\n{}",
        out.stderr
    );
    let ca = project
        .shoal(["worker", "--server", "https://127.0.0.1:9"])
        .arg("--ca")
        .arg(&missing)
        .run();
    assert_ne!(ca.code(), 0);
    assert!(
        ca.stderr.contains("No such file or directory"),
        "the worker names the cause too:\n{}",
        ca.stderr
    );
}
