//! Finding a project's config: `shoal.toml` at the root, or zero config by
//! detecting pytest and Cargo projects.

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
    #[error("no shoal.toml in {root}, and no pytest or Cargo project detected there")]
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
    // Test files at the root or in a tests/ or test/ directory.
    let is_test_file = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
    };
    for dir in [root.to_owned(), root.join("tests"), root.join("test")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        if entries.flatten().any(|e| is_test_file(&e.path())) {
            return true;
        }
    }
    false
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
