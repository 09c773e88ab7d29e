//! Finding a project's config: `shoal.toml` at the root, or zero config by
//! detecting pytest and Cargo projects.
//!
//! A root is a pytest project, as broadly as pytest itself would run there,
//! when it has pytest configuration (`pytest.ini`, `[tool.pytest...]`,
//! `[tool:pytest]`, `[pytest]`, a root `conftest.py`), names pytest among
//! its development dependencies (`pyproject.toml`, `requirements*.txt`,
//! `setup.cfg`, `tox.ini`, ...), or holds a test file that pytest's default
//! rules collect (`test_*.py`, `*_test.py`) anywhere below it that
//! `.gitignore` does not exclude (tests inside the package, as networkx
//! keeps them, included).

use shoal_core::config::{AdapterConfig, Config, ConfigError};
use std::path::{Path, PathBuf};

/// The config file name shoal looks for at the project root.
pub const CONFIG_FILE: &str = "shoal.toml";

/// Loading the project's config failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] Box<ConfigError>),
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no shoal.toml in {root}, and no pytest or Cargo project detected there (looked for pytest configuration, pytest among development dependencies, test_*.py or *_test.py files, and Cargo.toml); `shoal init` writes a shoal.toml to start from"
    )]
    NothingDetected { root: PathBuf },
}

/// Loads `root/shoal.toml`, or detects suites when there is none.
pub fn load_config(root: &Path) -> Result<Config, LoadError> {
    let path = root.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Config::parse(CONFIG_FILE, &text, root)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let suites = detect_suites(root);
            if suites.is_empty() {
                return Err(LoadError::NothingDetected {
                    root: root.to_owned(),
                });
            }
            Ok(Config::zero_config(root, suites))
        }
        Err(source) => Err(LoadError::Read { path, source }),
    }
}

/// Detects the suites of a project without config: a pytest suite when the
/// root has pytest configuration or test files, a cargo suite when it has a
/// `Cargo.toml` (with `--workspace` for a workspace root).
pub fn detect_suites(root: &Path) -> Vec<(String, AdapterConfig, PathBuf)> {
    let mut suites = Vec::new();
    if looks_like_pytest(root) {
        suites.push((
            "pytest".to_owned(),
            AdapterConfig::Pytest {
                python: "python3".into(),
                args: vec![],
                persistent: true,
            },
            root.to_owned(),
        ));
    }
    if let Ok(manifest) = std::fs::read_to_string(root.join("Cargo.toml")) {
        let args = if manifest.lines().any(|l| l.trim() == "[workspace]") {
            vec!["--workspace".to_owned()]
        } else {
            vec![]
        };
        suites.push((
            "cargo".to_owned(),
            AdapterConfig::Cargo {
                args,
                share: Default::default(),
            },
            root.to_owned(),
        ));
    }
    suites
}

fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

fn looks_like_pytest(root: &Path) -> bool {
    if root.join("pytest.ini").is_file()
        || root.join("conftest.py").is_file()
        || file_contains(&root.join("pyproject.toml"), "[tool.pytest")
        || file_contains(&root.join("setup.cfg"), "[tool:pytest]")
        || file_contains(&root.join("tox.ini"), "[pytest]")
    {
        return true;
    }
    names_pytest_as_dependency(root) || has_test_file(root)
}

/// Files where Python projects list their (development) dependencies.
const DEPENDENCY_FILES: &[&str] = &[
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "tox.ini",
    "Pipfile",
    "requirements-dev.txt",
    "requirements_dev.txt",
    "requirements-test.txt",
    "requirements_test.txt",
    "requirements-tests.txt",
    "test-requirements.txt",
    "dev-requirements.txt",
    "requirements/dev.txt",
    "requirements/test.txt",
    "requirements/tests.txt",
];

/// Whether a dependency file names pytest (or a `pytest-*` plugin) as a
/// requirement: quoted (`"pytest>=8"`), or opening a line (`pytest==8.1`,
/// poetry's `pytest = "^8"`).
fn names_pytest_as_dependency(root: &Path) -> bool {
    DEPENDENCY_FILES.iter().any(|name| {
        let Ok(text) = std::fs::read_to_string(root.join(name)) else {
            return false;
        };
        text.lines().any(|line| {
            let line = line.trim_start();
            line.starts_with("pytest")
                || line
                    .match_indices("pytest")
                    .any(|(at, _)| at > 0 && matches!(line.as_bytes()[at - 1], b'"' | b'\''))
        })
    })
}

/// Whether a file pytest's default rules collect lies anywhere below
/// `root` (hidden and git-ignored paths skipped); stops at the first.
fn has_test_file(root: &Path) -> bool {
    ignore::WalkBuilder::new(root)
        .hidden(true)
        .git_global(false)
        .require_git(false)
        .build()
        .flatten()
        .any(|entry| {
            entry.file_type().is_some_and(|t| t.is_file()) && {
                let name = entry.file_name().to_str().unwrap_or("");
                name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_pytest_and_cargo() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect_suites(dir.path()).is_empty());
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/test_x.py"), "def test_a(): pass\n").unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"x\"\n[workspace]\n",
        )
        .unwrap();
        let s = detect_suites(dir.path());
        assert_eq!(
            s.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            ["pytest", "cargo"]
        );
        assert_eq!(
            s[1].1,
            AdapterConfig::Cargo {
                args: vec!["--workspace".into()],
                share: Default::default(),
            }
        );
    }

    #[test]
    fn tests_inside_the_package_make_a_pytest_project() {
        // networkx's layout: no pytest configuration, no conftest.py at the
        // root, tests deep inside the package.
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("pkg/algorithms/flow/tests");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"pkg\"\n",
        )
        .unwrap();
        assert!(detect_suites(dir.path()).is_empty());
        std::fs::write(deep.join("test_maxflow.py"), "def test_a(): pass\n").unwrap();
        assert_eq!(detect_suites(dir.path())[0].0, "pytest");
        // Ignored trees do not count.
        std::fs::write(dir.path().join(".gitignore"), "pkg/\n").unwrap();
        assert!(detect_suites(dir.path()).is_empty());
    }

    #[test]
    fn pytest_among_development_dependencies_makes_a_pytest_project() {
        for (file, text) in [
            (
                "pyproject.toml",
                "[project]\nname = \"x\"\n[dependency-groups]\ndev = [\"pytest>=8\", \"ruff\"]\n",
            ),
            (
                "pyproject.toml",
                "[tool.poetry.group.dev.dependencies]\npytest = \"^8\"\n",
            ),
            ("requirements-dev.txt", "ruff\npytest-cov==5\n"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(file), text).unwrap();
            assert_eq!(detect_suites(dir.path()).len(), 1, "{file}: {text}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\ndescription = \"not pytest-related\"\n",
        )
        .unwrap();
        assert!(
            detect_suites(dir.path()).is_empty(),
            "a mention is not a dependency"
        );
    }

    #[test]
    fn config_file_wins_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shoal.toml"),
            "[suites.x]\nadapter = \"nope\"\n",
        )
        .unwrap();
        match load_config(dir.path()) {
            Err(LoadError::Config(e)) => assert_eq!(e.line_col(), Some((2, 11))),
            other => panic!("expected config error, got {other:?}"),
        }
    }
}
