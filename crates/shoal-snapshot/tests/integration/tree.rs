//! Helpers that build real trees on disk for the tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shoal_snapshot::{Manifest, pack};

/// Writes `content` at `root/rel`, creating parent directories.
pub fn write(root: &Path, rel: &str, content: &str) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    path
}

/// Writes an executable file.
pub fn write_exec(root: &Path, rel: &str, content: &str) -> PathBuf {
    let path = write(root, rel, content);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Creates the symlink `root/rel -> target`.
pub fn symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// The manifest paths of a pack of `root`.
pub fn packed_paths(root: &Path) -> Vec<String> {
    paths(&pack(root).unwrap().manifest)
}

/// The paths of a manifest.
pub fn paths(manifest: &Manifest) -> Vec<String> {
    manifest.entries.iter().map(|e| e.path.clone()).collect()
}

/// Runs git in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=shoal",
            "-c",
            "user.email=shoal@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}
