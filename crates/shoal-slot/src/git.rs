//! What commit a run tests: `HEAD`'s sha and whether the tree is dirty.

use std::path::Path;
use tokio::process::Command;

/// The commit under test and whether the working tree differs from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitState {
    pub commit: Option<String>,
    pub dirty: bool,
}

/// Reads the git state of `root`; outside a repository (or without git)
/// the commit is `None` and the tree is taken as dirty.
pub async fn git_state(root: &Path) -> GitState {
    let commit = git(root, &["rev-parse", "--verify", "-q", "HEAD"])
        .await
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if commit.is_none() {
        return GitState {
            commit: None,
            dirty: true,
        };
    }
    let dirty = match git(root, &["status", "--porcelain", "--untracked-files=normal"]).await {
        Some(out) => !out.trim().is_empty(),
        None => true,
    };
    GitState { commit, dirty }
}

async fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_repository_there_is_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        let st = git_state(dir.path()).await;
        assert_eq!(
            st,
            GitState {
                commit: None,
                dirty: true
            }
        );
    }

    #[tokio::test]
    async fn clean_and_dirty_trees() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(dir.path().join("a"), "1").unwrap();
        run(&["add", "a"]);
        run(&[
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "x",
        ]);
        let st = git_state(dir.path()).await;
        assert_eq!(st.commit.as_ref().map(|c| c.len()), Some(40));
        assert!(!st.dirty);
        std::fs::write(dir.path().join("a"), "2").unwrap();
        assert!(git_state(dir.path()).await.dirty);
    }
}
