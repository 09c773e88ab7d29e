//! Selection by path: a PATTERN naming a directory or file limits
//! collection to it, in discovery and in the long-lived runners, on a
//! zero-config project laid out as networkx is (`fixtures/scoped-project`:
//! tests inside the package, one module that fails at import). Every test
//! module records its imports, so what was never imported is checked, not
//! assumed.

use crate::events::Events;
use crate::support::{Project, listed_names};

/// The test modules imported while `log` was being written (module names).
pub fn imported(log: &std::path::Path) -> Vec<String> {
    let mut modules: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    modules.sort();
    modules.dedup();
    modules
}

/// The tests with a final result in the events at `json`, sorted.
fn final_tests(json: &std::path::Path) -> Vec<String> {
    let mut ran: Vec<String> = Events::read(json)
        .finals()
        .into_iter()
        .map(|a| a.test)
        .collect();
    ran.sort();
    ran
}

fn scoped() -> Project {
    crate::support::require_pytest();
    Project::copy_of("scoped-project")
}

#[test]
fn a_directory_run_imports_nothing_outside_the_directory() {
    let project = scoped();
    let log = project.out("imports.log");
    for round in ["cold", "cached"] {
        let json = project.out(&format!("{round}.jsonl"));
        let out = project
            .shoal(["run", "-j", "2", "--json"])
            .arg(&json)
            .arg("scopedpkg/alpha")
            .env("SCOPED_IMPORT_LOG", &log)
            .run();
        out.assert_code(0);
        assert!(
            out.stdout
                .contains("3 of 3 tests selected in scopedpkg/alpha"),
            "the output says what was collected ({round}):\n{}",
            out.dump()
        );
        let events = Events::read(&json);
        let discovered = events
            .of_type("suite_discovered")
            .next()
            .expect("discovered");
        assert_eq!(discovered["scope"], serde_json::json!(["scopedpkg/alpha"]));
        assert_eq!(events.finals().len(), 3, "{round}");
        assert_eq!(imported(&log), ["alpha"], "{round}: nothing else imported");
    }
    // The whole project does not even collect: the broken module is real.
    let whole = project.shoal(["run", "-j", "2"]).run();
    whole.assert_code(3);
    assert!(
        whole.stderr.contains("optional dependency"),
        "{}",
        whole.dump()
    );
}

#[test]
fn paths_files_and_nodes_select_as_pytest_does() {
    let project = scoped();
    let log = project.out("imports.log");
    let json = project.out("run.jsonl");
    project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .args([
            "scopedpkg/alpha/tests/test_alpha.py::TestAlpha",
            "./scopedpkg/beta/tests/test_beta.py::test_b1",
        ])
        .env("SCOPED_IMPORT_LOG", &log)
        .run()
        .assert_code(0);
    let ran = final_tests(&json);
    assert_eq!(
        ran,
        [
            "scopedpkg/alpha/tests/test_alpha.py::TestAlpha::test_a3",
            "scopedpkg/beta/tests/test_beta.py::test_b1",
        ]
    );
    assert_eq!(imported(&log), ["alpha", "beta"]);
}

#[test]
fn list_of_a_directory_is_what_pytest_collects_there() {
    let project = scoped();
    let listed = project
        .shoal(["list", "scopedpkg/beta", "scopedpkg/alpha"])
        .run();
    listed.assert_code(0);
    let mut shoal = listed_names(&listed, "pytest");
    shoal.sort();
    let pytest = project
        .tool(
            "python3",
            [
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "scopedpkg/beta",
                "scopedpkg/alpha",
            ],
        )
        .run();
    pytest.assert_code(0);
    let mut expected: Vec<String> = pytest
        .stdout
        .lines()
        .filter(|l| l.contains("::"))
        .map(str::to_owned)
        .collect();
    expected.sort();
    assert_eq!(shoal, expected);
    assert_eq!(shoal.len(), 5);
}

/// In a cargo workspace, a path selects the packages it reaches: only they
/// are built and listed (the other package does not even compile).
#[test]
fn a_package_path_builds_only_that_package() {
    let project = Project::copy_of("cargo-workspace");
    let json = project.out("run.jsonl");
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .arg("crates/alpha")
        .run();
    out.assert_code(0);
    let ran = final_tests(&json);
    assert_eq!(ran, ["alpha tests::doubles", "alpha tests::doubles_zero"]);
    assert!(out.stdout.contains("in crates/alpha"), "{}", out.dump());
    // The whole workspace does not build: the broken package is real.
    let whole = project.shoal(["list"]).run();
    whole.assert_code(3);
    assert!(
        whole.stderr.contains("must not be built"),
        "{}",
        whole.dump()
    );
}
