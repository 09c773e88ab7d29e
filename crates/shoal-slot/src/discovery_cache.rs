//! Caches a suite's discovered tests by a digest of everything that can
//! change them (the adapter's input files, the suite's config, shoal's
//! version), so a repeated run skips collection when nothing changed.
//!
//! Entries live in `.shoal/cache/discovery/<suite>.json`, or, for a
//! collection limited to paths (the scope), `<suite>.<scope digest>.json`:
//! the scope is part of the key, and each scope keeps its own entry, so
//! alternating between two directories never rediscovers. Only adapters that
//! name their inputs ([`Adapter::discovery_inputs`]) are cached. Files are
//! found by walking the suite root with `.gitignore` rules (so a virtualenv
//! or build output the repository ignores is not read), and hashed by
//! content: an edit that keeps size and mtime still misses.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_adapters::Adapter;
use shoal_core::TestCase;
use shoal_core::config::SuiteConfig;
use std::path::{Path, PathBuf};

/// Version of the entry format and of what goes into the key.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    key: String,
    /// How long the discovery that produced this entry took, seconds.
    duration: f64,
    tests: Vec<TestCase>,
}

/// The cache directory of a project.
#[derive(Debug, Clone)]
pub struct DiscoveryCache {
    dir: PathBuf,
}

impl DiscoveryCache {
    pub fn new(state_dir: &Path) -> Self {
        DiscoveryCache {
            dir: state_dir.join("cache").join("discovery"),
        }
    }

    fn path(&self, suite: &str, scope: &[String]) -> PathBuf {
        // Suite names are TOML keys; keep the file name tame anyway.
        let safe: String = suite
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if scope.is_empty() {
            return self.dir.join(format!("{safe}.json"));
        }
        let digest = hex::encode(Sha256::digest(scope.join("\0")));
        self.dir.join(format!("{safe}.{}.json", &digest[..16]))
    }

    /// The digest of what decides the suite's tests collected within
    /// `scope` (paths relative to the suite root; empty: all), or `None`
    /// when the adapter does not say what that is.
    pub fn key(suite: &SuiteConfig, adapter: &dyn Adapter, scope: &[String]) -> Option<String> {
        let patterns = adapter.discovery_inputs()?;
        let mut globs = GlobSetBuilder::new();
        for p in patterns {
            globs.add(Glob::new(p).ok()?);
        }
        let globs: GlobSet = globs.build().ok()?;
        let mut h = Sha256::new();
        h.update(format!(
            "shoal {} format {FORMAT}\n",
            env!("CARGO_PKG_VERSION")
        ));
        h.update(format!(
            "{:?}\n{}\n{:?}\nscope {:?}\n",
            suite.adapter,
            suite.root.display(),
            suite.env,
            scope
        ));
        let mut files = Vec::new();
        for entry in ignore::WalkBuilder::new(&suite.root)
            .hidden(true)
            .git_global(false)
            .require_git(false)
            .build()
            .flatten()
        {
            if entry.file_type().is_some_and(|t| t.is_file()) && globs.is_match(entry.file_name()) {
                files.push(entry.into_path());
            }
        }
        files.sort();
        for f in files {
            let contents = std::fs::read(&f).ok()?;
            let rel = f.strip_prefix(&suite.root).unwrap_or(&f);
            h.update(format!("{}\0{}\0", rel.display(), contents.len()));
            h.update(&contents);
        }
        Some(hex::encode(h.finalize()))
    }

    /// The cached tests of `suite` if they were discovered under `key`.
    /// With them, how long that discovery took (seconds).
    pub fn load(&self, suite: &str, scope: &[String], key: &str) -> Option<(Vec<TestCase>, f64)> {
        let text = std::fs::read(self.path(suite, scope)).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        (entry.format == FORMAT && entry.key == key).then_some((entry.tests, entry.duration))
    }

    /// Remembers `tests` for `suite` under `key` (best effort: a cache that
    /// cannot be written only costs the next run a discovery).
    pub fn store(
        &self,
        suite: &str,
        scope: &[String],
        key: &str,
        tests: &[TestCase],
        duration: f64,
    ) {
        let entry = Entry {
            format: FORMAT,
            key: key.to_owned(),
            duration,
            tests: tests.to_vec(),
        };
        let Ok(json) = serde_json::to_vec(&entry) else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let path = self.path(suite, scope);
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_adapters::adapter_for;
    use shoal_core::TestId;
    use shoal_core::config::{AdapterConfig, Config};

    fn suite(root: &Path, args: &[&str]) -> SuiteConfig {
        let adapter = AdapterConfig::Pytest {
            python: "python3".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            persistent: true,
        };
        Config::zero_config(root, vec![("py".into(), adapter, root.to_owned())])
            .suites
            .remove(0)
    }

    fn key(s: &SuiteConfig) -> String {
        DiscoveryCache::key(s, adapter_for(s).as_ref(), &[]).unwrap()
    }

    #[test]
    fn key_follows_inputs_and_config_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(root.join("tests/test_a.py"), "def test_a(): pass\n").unwrap();
        let s = suite(root, &[]);
        let k1 = key(&s);
        assert_eq!(key(&s), k1, "stable");
        // Files that cannot change collection do not matter...
        std::fs::write(root.join("README.md"), "hello").unwrap();
        assert_eq!(key(&s), k1);
        // ...nor ignored ones (a virtualenv, say).
        std::fs::write(root.join(".gitignore"), "venv/\n").unwrap();
        std::fs::create_dir_all(root.join("venv")).unwrap();
        std::fs::write(root.join("venv/x.py"), "x = 1\n").unwrap();
        assert_eq!(key(&s), k1);
        // Editing a test module, adding one, or changing the args does.
        std::fs::write(root.join("tests/test_a.py"), "def test_b(): pass\n").unwrap();
        let k2 = key(&s);
        assert_ne!(k2, k1);
        std::fs::write(root.join("tests/test_c.py"), "").unwrap();
        assert_ne!(key(&s), k2);
        assert_ne!(key(&suite(root, &["-m", "fast"])), key(&s));
        // So does the scope collection is limited to.
        let scoped = DiscoveryCache::key(&s, adapter_for(&s).as_ref(), &["tests".into()]);
        assert_ne!(scoped.as_deref(), Some(key(&s).as_str()));
    }

    #[test]
    fn adapters_without_inputs_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let adapter = AdapterConfig::Cargo {
            args: vec![],
            share: Default::default(),
        };
        let s = Config::zero_config(
            dir.path(),
            vec![("rs".into(), adapter, dir.path().to_owned())],
        )
        .suites
        .remove(0);
        assert!(DiscoveryCache::key(&s, adapter_for(&s).as_ref(), &[]).is_none());
    }

    #[test]
    fn entries_round_trip_and_miss_on_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiscoveryCache::new(dir.path());
        let tests = vec![TestCase {
            id: TestId::new("py", "tests/test_a.py::test_a[x y]"),
            group: "tests/test_a.py".into(),
            runner: None,
        }];
        let scope = ["tests".to_owned()];
        assert!(cache.load("py", &[], "k").is_none());
        cache.store("py", &[], "k", &tests, 0.5);
        cache.store("py", &scope, "k2", &tests[..0], 0.1);
        assert_eq!(cache.load("py", &[], "k"), Some((tests, 0.5)));
        assert!(cache.load("py", &[], "other").is_none());
        assert_eq!(
            cache.load("py", &scope, "k2"),
            Some((Vec::new(), 0.1)),
            "each scope keeps its own entry"
        );
    }
}
