//! Which tests a run selects, and how much of each suite it must collect.
//!
//! A PATTERN is either a **path** or a **substring**. A pattern whose path
//! part (before the first `::`) names an existing file or directory under the
//! project root is a path: it selects the tests at or below it, as pytest's
//! path arguments do, and it *limits collection* to it, so a run of one
//! directory never imports the rest of the project. Any other pattern is a
//! substring of test names, as before, and needs the whole suite collected.
//!
//! Per suite ([`Selection::for_suite`]): with no patterns, or any substring
//! pattern, the whole suite is collected; with only path patterns, the paths
//! under the suite's root are its collection scope, and a suite none of them
//! lies in is not discovered at all (`shoal run tests/unit` builds no cargo
//! workspace next to it).

use crate::EngineError;
use shoal_adapters::{Adapter, located_in, slash_path};
use shoal_core::config::{Config, SuiteConfig};
use shoal_core::{TestCase, TestId};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Which tests to run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Paths or substrings of test names (see the module docs); a test
    /// matches if any matches. Empty: all.
    pub patterns: Vec<String>,
    /// Suite names; empty: all suites.
    pub suites: Vec<String>,
    /// Exactly these tests (with the other criteria); empty: no such limit.
    /// `shoal stress` narrows each round to the tests still undecided.
    pub ids: HashSet<TestId>,
}

/// A path pattern, relative to one suite's root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathPattern {
    /// `/`-separated, relative to the suite root; empty for the root itself.
    path: String,
    /// What followed the path after `::` (a node prefix such as `TestClass`).
    node: Option<String>,
}

/// How a [`Selection`] applies to one suite.
#[derive(Debug, Clone)]
pub struct SuiteSelection {
    /// Whether the suite can have selected tests at all; `false` when every
    /// pattern is a path outside it (then it is not discovered).
    pub relevant: bool,
    /// The paths, relative to the suite root, that collection is limited
    /// to; empty: the whole suite.
    pub scope: Vec<String>,
    paths: Vec<PathPattern>,
    substrings: Vec<String>,
    ids: HashSet<TestId>,
}

impl Selection {
    /// Fails on a suite name the config does not define.
    pub fn check(&self, config: &Config) -> Result<(), EngineError> {
        for s in &self.suites {
            if !config.suites.iter().any(|c| &c.name == s) {
                let names: Vec<_> = config.suites.iter().map(|c| c.name.as_str()).collect();
                return Err(EngineError::UnknownSuite(s.clone(), names.join(", ")));
            }
        }
        Ok(())
    }

    pub(crate) fn wants_suite(&self, name: &str) -> bool {
        self.suites.is_empty() || self.suites.iter().any(|s| s == name)
    }

    /// The patterns that name existing paths under `project_root`, as
    /// absolute paths (with their `::` remainder).
    fn path_patterns(&self, project_root: &Path) -> Vec<(Option<PathBuf>, &str)> {
        self.patterns
            .iter()
            .map(|p| match existing_path(project_root, p) {
                Some((abs, node)) => (Some(abs), node),
                None => (None, p.as_str()),
            })
            .collect()
    }

    /// How the selection applies to `suite` of a project at `project_root`.
    pub fn for_suite(&self, project_root: &Path, suite: &SuiteConfig) -> SuiteSelection {
        let suite_root = normal(&absolute(project_root, &suite.root));
        let mut paths = Vec::new();
        let mut substrings = Vec::new();
        let mut any_path = false;
        for (abs, rest) in self.path_patterns(project_root) {
            match abs {
                Some(abs) => {
                    any_path = true;
                    if suite_root.starts_with(&abs) {
                        // A directory holding the whole suite.
                        paths.push(PathPattern {
                            path: String::new(),
                            node: None,
                        });
                    } else if let Ok(rel) = abs.strip_prefix(&suite_root) {
                        paths.push(PathPattern {
                            path: slash_path(rel),
                            node: (!rest.is_empty()).then(|| rest.to_owned()),
                        });
                    }
                }
                None => substrings.push(rest.to_owned()),
            }
        }
        let whole = self.patterns.is_empty()
            || !substrings.is_empty()
            || paths.iter().any(|p| p.path.is_empty());
        let mut scope: Vec<String> = if whole {
            Vec::new()
        } else {
            paths.iter().map(|p| p.path.clone()).collect()
        };
        scope.sort();
        scope.dedup();
        // A path inside another scope path adds nothing.
        let covered: Vec<String> = scope
            .iter()
            .filter(|p| scope.iter().any(|q| q != *p && located_in(p, q, None)))
            .cloned()
            .collect();
        scope.retain(|p| !covered.contains(p));
        SuiteSelection {
            relevant: !any_path || !paths.is_empty() || !substrings.is_empty(),
            scope,
            paths,
            substrings,
            ids: self.ids.clone(),
        }
    }
}

impl SuiteSelection {
    /// Every test collected within `scope` (empty: the whole suite).
    pub fn within(scope: Vec<String>) -> Self {
        SuiteSelection {
            relevant: true,
            scope,
            paths: Vec::new(),
            substrings: Vec::new(),
            ids: HashSet::new(),
        }
    }

    /// Whether `test` (of this suite, rooted at `suite_root`) is selected.
    pub fn wants(&self, adapter: &dyn Adapter, suite_root: &Path, test: &TestCase) -> bool {
        let by_pattern = (self.paths.is_empty() && self.substrings.is_empty())
            || self
                .substrings
                .iter()
                .any(|p| test.id.name.contains(p.as_str()))
            || self
                .paths
                .iter()
                .any(|p| adapter.test_in_path(test, suite_root, &p.path, p.node.as_deref()));
        by_pattern && (self.ids.is_empty() || self.ids.contains(&test.id))
    }
}

/// `pattern`'s path part resolved under `root`, if it names an existing file
/// or directory there, with what followed `::`.
fn existing_path<'a>(root: &Path, pattern: &'a str) -> Option<(PathBuf, &'a str)> {
    let (path, rest) = match pattern.split_once("::") {
        Some((path, rest)) => (path, rest),
        None => (pattern, ""),
    };
    if path.is_empty() || path.contains('\0') {
        return None;
    }
    let abs = normal(&absolute(root, Path::new(path)));
    let root = normal(root);
    if !abs.starts_with(&root) || std::fs::symlink_metadata(&abs).is_err() {
        return None;
    }
    Some((abs, rest))
}

fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// `path` with `.` dropped and `..` applied lexically (symlinks are not
/// followed, as pytest names paths as given).
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_adapters::adapter_for;
    use shoal_core::config::AdapterConfig;

    fn suite(root: &Path) -> SuiteConfig {
        let config = Config::zero_config(
            root,
            vec![(
                "py".into(),
                AdapterConfig::Pytest {
                    python: "python3".into(),
                    args: vec![],
                    persistent: true,
                },
                root.to_owned(),
            )],
        );
        config.suites[0].clone()
    }

    fn case(name: &str) -> TestCase {
        TestCase {
            id: TestId::new("py", name),
            group: name.split("::").next().unwrap_or_default().into(),
            runner: None,
        }
    }

    fn select(patterns: &[&str]) -> Selection {
        Selection {
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..Selection::default()
        }
    }

    #[test]
    fn a_pattern_naming_a_path_limits_collection_and_selects_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pkg/sub/tests")).unwrap();
        std::fs::write(dir.path().join("pkg/sub/tests/test_a.py"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("pkg/subway")).unwrap();
        let s = suite(dir.path());
        let adapter = adapter_for(&s);
        let sel =
            select(&["pkg/sub/", "./pkg/sub/tests/test_a.py::TestX"]).for_suite(dir.path(), &s);
        assert!(sel.relevant);
        assert_eq!(sel.scope, ["pkg/sub"], "the file lies in the directory");
        let wants = |n: &str| sel.wants(adapter.as_ref(), dir.path(), &case(n));
        assert!(wants("pkg/sub/tests/test_a.py::test_x"));
        assert!(
            !wants("pkg/subway/test_b.py::test_y"),
            "a sibling sharing a prefix"
        );
        assert!(
            !wants("other/test_c.py::pkg/sub"),
            "paths are not substrings"
        );

        let sel = select(&["pkg/sub/tests/test_a.py::TestX"]).for_suite(dir.path(), &s);
        assert_eq!(sel.scope, ["pkg/sub/tests/test_a.py"]);
        let wants = |n: &str| sel.wants(adapter.as_ref(), dir.path(), &case(n));
        assert!(wants("pkg/sub/tests/test_a.py::TestX::test_1"));
        assert!(wants("pkg/sub/tests/test_a.py::TestX[p]"));
        assert!(!wants("pkg/sub/tests/test_a.py::TestXY::test_1"));
        assert!(!wants("pkg/sub/tests/test_a.py::test_x"));
    }

    #[test]
    fn substrings_keep_their_meaning_and_collect_everything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        let s = suite(dir.path());
        let adapter = adapter_for(&s);
        let sel = select(&["tests", "parse"]).for_suite(dir.path(), &s);
        assert!(sel.scope.is_empty(), "a substring needs the whole suite");
        let wants = |n: &str| sel.wants(adapter.as_ref(), dir.path(), &case(n));
        assert!(wants("lib/test_parse.py::test_ok"));
        assert!(wants("tests/test_x.py::test_y"));
        assert!(!wants("lib/test_other.py::test_ok"));
        let all = select(&[]).for_suite(dir.path(), &s);
        assert!(all.relevant && all.scope.is_empty());
        assert!(all.wants(adapter.as_ref(), dir.path(), &case("a.py::b")));
    }

    #[test]
    fn a_suite_no_path_pattern_lies_in_is_not_discovered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("py/tests")).unwrap();
        std::fs::create_dir_all(dir.path().join("rust")).unwrap();
        let mut s = suite(dir.path());
        s.root = dir.path().join("rust");
        let sel = select(&["py/tests"]).for_suite(dir.path(), &s);
        assert!(!sel.relevant);
        let sel = select(&["py/tests", "needle"]).for_suite(dir.path(), &s);
        assert!(sel.relevant, "a substring may match anywhere");
        let sel = select(&["../outside"]).for_suite(dir.path(), &s);
        assert!(sel.relevant, "a path outside the project is a substring");
        let sel = select(&["."]).for_suite(dir.path(), &s);
        assert!(
            sel.relevant && sel.scope.is_empty(),
            "the project root holds every suite"
        );
    }
}
