//! Ground truth from the tools' own runners: `python3 -m pytest --junitxml`
//! and `cargo test --no-fail-fast`, each run once per test binary on a
//! pristine copy of its fixture with no `SHOAL_FIXTURE_*` variable set.
//! Expectations are computed from these, never written down by hand.

use crate::junit::{Junit, Status, Totals};
use crate::support::Project;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// pytest's own verdict on `fixtures/pytest-project`.
#[derive(Debug)]
pub struct PytestTruth {
    /// Every test case of pytest's JUnit report, as written.
    pub junit: Junit,
    /// One status per test, keyed like pytest's JUnit (`classname`, `name`).
    ///
    /// pytest's JUnit writes *two* `<testcase>`s for a test that fails in its
    /// call and then errors in teardown (`test_fail_and_error_in_teardown`):
    /// a `<failure>` and an `<error>`. A test has one result, so cases with
    /// the same (classname, name) are merged: failed if any of them failed
    /// or errored, else skipped if any was skipped, else passed. This is
    /// what shoal reports (one final result per test) and what CI tools that
    /// key results by name show.
    pub statuses: BTreeMap<(String, String), Status>,
}

impl PytestTruth {
    /// pytest's status for the test with node id `node_id`.
    pub fn status_of(&self, node_id: &str) -> Status {
        *self
            .statuses
            .get(&junit_key(node_id))
            .unwrap_or_else(|| panic!("pytest's JUnit has no case for {node_id:?}"))
    }

    pub fn totals(&self) -> Totals {
        Totals::of(self.statuses.values().copied())
    }
}

/// Runs pytest on a fresh copy of the fixture, once per test binary.
pub fn pytest_truth() -> &'static PytestTruth {
    static TRUTH: OnceLock<PytestTruth> = OnceLock::new();
    TRUTH.get_or_init(|| {
        let project = Project::pytest();
        let junit_path = project.out("pytest-junit.xml");
        let out = project
            .tool("python3", ["-m", "pytest", "-p", "no:cacheprovider", "-q"])
            .arg(format!("--junitxml={}", junit_path.display()))
            .run();
        // 1: tests failed (anything else means pytest itself had a problem).
        out.assert_code(1);
        let junit = Junit::read(&junit_path);
        let mut statuses: BTreeMap<(String, String), Status> = BTreeMap::new();
        for case in &junit.cases {
            let key = (case.classname.clone(), case.name.clone());
            let status = statuses
                .get(&key)
                .map_or(case.status(), |&seen| merge(seen, case.status()));
            statuses.insert(key, status);
        }
        PytestTruth { junit, statuses }
    })
}

fn merge(a: Status, b: Status) -> Status {
    if a == Status::Failed || b == Status::Failed {
        Status::Failed
    } else if a == Status::Skipped || b == Status::Skipped {
        Status::Skipped
    } else {
        Status::Passed
    }
}

/// The (classname, name) pytest's JUnit report gives a node id, as
/// `_pytest.junitxml.mangle_test_address` computes it: the path before the
/// first `::` becomes a dotted module path without `.py`, the parameter
/// bracket (from the first `[` after that) stays on the last name, and the
/// names in between join the classname.
pub fn junit_key(node_id: &str) -> (String, String) {
    let (path, tail) = node_id
        .split_once("::")
        .unwrap_or_else(|| panic!("{node_id:?} is not a test node id"));
    let (names, params) = match tail.split_once('[') {
        Some((names, params)) => (names, Some(params)),
        None => (tail, None),
    };
    let module = path.replace('/', ".");
    let module = module.strip_suffix(".py").unwrap_or(&module).to_owned();
    let mut parts: Vec<String> = std::iter::once(module)
        .chain(names.split("::").map(str::to_owned))
        .collect();
    let mut name = parts.pop().expect("a test name");
    if let Some(params) = params {
        name = format!("{name}[{params}");
    }
    (parts.join("."), name)
}

/// `cargo test`'s own verdict on `fixtures/cargo-project`.
#[derive(Debug)]
pub struct CargoTruth {
    /// (test path, status) for every `test PATH ... RESULT` line, sorted.
    /// libtest does not name the binary, so tests are matched by path; the
    /// fixture's paths are unique across its binaries.
    pub tests: Vec<(String, Status)>,
    /// The sum of the `test result:` summary lines.
    pub summary: Totals,
}

/// Runs `cargo test --no-fail-fast` on a fresh copy, once per test binary.
pub fn cargo_truth() -> &'static CargoTruth {
    static TRUTH: OnceLock<CargoTruth> = OnceLock::new();
    TRUTH.get_or_init(|| {
        let project = Project::cargo();
        let out = project.tool("cargo", ["test", "--no-fail-fast"]).run();
        // 101: some tests failed, which the fixture's do.
        out.assert_code(101);
        let mut tests = Vec::new();
        let mut summary = Totals::default();
        for line in out.stdout.lines() {
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let Ok(n) = n.parse::<usize>() else { continue };
                    match what {
                        "passed" => summary.passed += n,
                        "failed" => summary.failed += n,
                        "ignored" => summary.skipped += n,
                        _ => {}
                    }
                }
            } else if let Some((path, result)) = line
                .strip_prefix("test ")
                .and_then(|rest| rest.split_once(" ... "))
            {
                let status = match result.split([',', ' ']).next() {
                    Some("ok") => Status::Passed,
                    Some("FAILED") => Status::Failed,
                    Some("ignored") => Status::Skipped,
                    other => panic!("unexpected libtest result {other:?} in {line:?}"),
                };
                // `#[should_panic]` tests are listed as `PATH - should panic`.
                let path = path.strip_suffix(" - should panic").unwrap_or(path);
                tests.push((path.to_owned(), status));
            }
        }
        tests.sort();
        assert_eq!(
            Totals::of(tests.iter().map(|t| t.1)),
            summary,
            "per-test lines vs summary lines of `cargo test`:\n{}",
            out.stdout
        );
        CargoTruth { tests, summary }
    })
}

#[test]
fn junit_key_follows_pytest() {
    // The cases pytest's own mangle_test_address handles, by construction.
    assert_eq!(
        junit_key("tests/deep/nested/test_x.py::TestNested::test_in_class"),
        (
            "tests.deep.nested.test_x.TestNested".to_owned(),
            "test_in_class".to_owned()
        )
    );
    assert_eq!(
        junit_key("tests/test_params.py::test_weird_id[a::b]"),
        (
            "tests.test_params".to_owned(),
            "test_weird_id[a::b]".to_owned()
        )
    );
    assert_eq!(
        junit_key("tests/test_params.py::test_weird_id[sl/ash]"),
        (
            "tests.test_params".to_owned(),
            "test_weird_id[sl/ash]".to_owned()
        )
    );
}
