//! Host paths to container paths: the executor is handed host paths (the
//! working directory, paths in the environment) and runs the process where
//! the same directories are mounted under other names.

use crate::DockerError;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Directories of this host and where they are mounted in the container.
///
/// A path is mapped through the entry with the longest matching host root.
/// Paths outside every root, relative paths and paths with `..` components
/// are not mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    /// `(host_root, container_root)`, absolute both.
    entries: Vec<(PathBuf, String)>,
}

impl PathMap {
    /// Maps `host_root` (the workspace, say) to `container_root`.
    pub fn new(host_root: impl Into<PathBuf>, container_root: impl Into<String>) -> Self {
        PathMap {
            entries: vec![(host_root.into(), container_root.into())],
        }
    }

    /// Adds another mounted directory (shoal's support directory, say).
    pub fn with(
        mut self,
        host_root: impl Into<PathBuf>,
        container_root: impl Into<String>,
    ) -> Self {
        self.entries.push((host_root.into(), container_root.into()));
        self
    }

    /// `(host_root, container_root)` pairs, in the order given.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.entries.iter().map(|(h, c)| (h.as_path(), c.as_str()))
    }

    /// The container path of `host`, or [`DockerError::Unmapped`].
    pub fn to_container(&self, host: &Path) -> Result<String, DockerError> {
        self.try_map(host).ok_or_else(|| DockerError::Unmapped {
            path: host.to_owned(),
        })
    }

    fn try_map(&self, host: &Path) -> Option<String> {
        if !host.is_absolute() || host.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let (rest, container_root) = self
            .entries
            .iter()
            .filter_map(|(root, target)| Some((host.strip_prefix(root).ok()?, target)))
            .min_by_key(|(rest, _)| rest.components().count())?;
        let mut mapped = container_root.trim_end_matches('/').to_owned();
        for part in rest.components() {
            mapped.push('/');
            mapped.push_str(part.as_os_str().to_str()?);
        }
        if mapped.is_empty() {
            mapped.push('/');
        }
        Some(mapped)
    }

    /// `env` with host paths rewritten: each `:`-separated element of a value
    /// that is an absolute path under a host root becomes its container path
    /// (`PYTHONPATH=/ws/support/pytest:/ws/src` → `/w/support/pytest:/w/src`).
    /// Other elements, and values without such paths, are kept as they are.
    pub fn map_env(&self, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        env.iter()
            .map(|(key, value)| (key.clone(), self.map_value(value)))
            .collect()
    }

    /// An argv element with host paths rewritten: a whole absolute path
    /// (`/ws/.shoal/x/junit.xml`) or the value of `--flag=/path`. Anything
    /// else (test ids, relative paths) is kept as it is.
    pub fn map_arg(&self, arg: &str) -> String {
        if arg.starts_with('/') {
            return self
                .try_map(Path::new(arg))
                .unwrap_or_else(|| arg.to_owned());
        }
        if let Some((flag, value)) = arg.split_once('=') {
            if flag.starts_with('-') && value.starts_with('/') {
                if let Some(mapped) = self.try_map(Path::new(value)) {
                    return format!("{flag}={mapped}");
                }
            }
        }
        arg.to_owned()
    }

    fn map_value(&self, value: &str) -> String {
        value
            .split(':')
            .map(|part| match part.starts_with('/') {
                true => self
                    .try_map(Path::new(part))
                    .unwrap_or_else(|| part.to_owned()),
                false => part.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_with_host_paths_are_mapped() {
        let m = map();
        assert_eq!(
            m.map_arg("/home/me/proj/.shoal/support/x.xml"),
            "/support/x.xml"
        );
        assert_eq!(
            m.map_arg("--junitxml=/home/me/proj/out.xml"),
            "--junitxml=/workspace/out.xml"
        );
        assert_eq!(
            m.map_arg("tests/test_a.py::test_x[/home/me]"),
            "tests/test_a.py::test_x[/home/me]"
        );
        assert_eq!(m.map_arg("/etc/passwd"), "/etc/passwd");
        assert_eq!(m.map_arg("-q"), "-q");
    }

    fn map() -> PathMap {
        PathMap::new("/home/me/proj", "/workspace").with("/home/me/proj/.shoal/support", "/support")
    }

    #[test]
    fn paths_under_a_root_are_mapped_through_the_longest_root() {
        let map = map();
        assert_eq!(
            map.to_container(Path::new("/home/me/proj")).unwrap(),
            "/workspace"
        );
        assert_eq!(
            map.to_container(Path::new("/home/me/proj/tests/a b"))
                .unwrap(),
            "/workspace/tests/a b"
        );
        assert_eq!(
            map.to_container(Path::new("/home/me/proj/.shoal/support/pytest"))
                .unwrap(),
            "/support/pytest"
        );
    }

    #[test]
    fn paths_outside_relative_or_escaping_are_errors() {
        let map = map();
        for path in [
            "/home/me/project",
            "/etc",
            "proj/tests",
            "/home/me/proj/../other",
        ] {
            let err = map.to_container(Path::new(path)).unwrap_err();
            assert!(matches!(err, DockerError::Unmapped { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn a_root_mounted_at_slash_maps_to_absolute_paths() {
        let map = PathMap::new("/srv/ws", "/");
        assert_eq!(map.to_container(Path::new("/srv/ws")).unwrap(), "/");
        assert_eq!(map.to_container(Path::new("/srv/ws/a")).unwrap(), "/a");
    }

    #[test]
    fn env_values_map_path_list_elements_under_a_root() {
        let env = BTreeMap::from([
            (
                "PYTHONPATH".to_owned(),
                "/home/me/proj/.shoal/support/pytest:/usr/lib/py:rel".to_owned(),
            ),
            ("DATA".to_owned(), "/home/me/proj/data".to_owned()),
            ("URL".to_owned(), "http://localhost:5432/db".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]);
        let mapped = map().map_env(&env);
        assert_eq!(mapped["PYTHONPATH"], "/support/pytest:/usr/lib/py:rel");
        assert_eq!(mapped["DATA"], "/workspace/data");
        assert_eq!(mapped["URL"], "http://localhost:5432/db");
        assert_eq!(mapped["EMPTY"], "");
    }
}
