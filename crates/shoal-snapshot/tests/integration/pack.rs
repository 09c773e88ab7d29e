//! pack: what git would see, hashed.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use shoal_snapshot::{Digest, EntryKind, SnapshotError, pack};

use crate::tree::{git, packed_paths, symlink, write, write_exec};

#[test]
fn gitignore_is_respected_with_negation_and_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        ".gitignore",
        "*.log\n!keep.log\nbuild/\n/top-only.txt\n",
    );
    write(root, "a.log", "ignored");
    write(root, "keep.log", "kept by negation");
    write(root, "build/out.o", "ignored dir");
    write(root, "top-only.txt", "ignored at the top");
    write(root, "sub/top-only.txt", "kept: the pattern is anchored");
    write(root, "sub/.gitignore", "local.tmp\n");
    write(root, "sub/local.tmp", "ignored by the nested file");
    write(
        root,
        "local.tmp",
        "kept: the nested rule does not apply here",
    );
    write(root, "src/main.rs", "fn main() {}");
    assert_eq!(
        packed_paths(root),
        [
            ".gitignore",
            "keep.log",
            "local.tmp",
            "src/main.rs",
            "sub/.gitignore",
            "sub/top-only.txt"
        ]
    );
}

#[test]
fn hidden_files_are_kept_and_git_and_shoal_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, ".env", "A=1");
    write(root, ".config/tool.toml", "x = 1");
    write(root, ".github/workflows/ci.yml", "on: push");
    write(root, ".gitignore", "");
    write(root, ".git/HEAD", "ref: refs/heads/main");
    write(root, ".git/config", "[core]");
    write(root, ".shoal/history.db", "state");
    write(root, "vendor/lib/.git", "gitdir: ../../.git/modules/lib");
    write(root, "vendor/lib/lib.rs", "");
    write(root, "nested/.shoal/cache", "state");
    assert_eq!(
        packed_paths(root),
        [
            ".config/tool.toml",
            ".env",
            ".github/workflows/ci.yml",
            ".gitignore",
            "vendor/lib/lib.rs"
        ]
    );
}

#[test]
fn git_info_exclude_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, ".git/info/exclude", "secret.txt\n");
    write(root, "secret.txt", "s");
    write(root, "public.txt", "p");
    assert_eq!(packed_paths(root), ["public.txt"]);
}

#[test]
fn real_git_repository_untracked_and_modified_files_are_packed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q"]);
    write(root, ".gitignore", "target/\n");
    write(root, "committed.txt", "v1");
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "init"]);
    write(root, "committed.txt", "v2 (uncommitted)");
    write(root, "untracked.txt", "new");
    write(root, "target/debug/bin", "ignored");
    let packed = pack(root).unwrap();
    let paths = crate::tree::paths(&packed.manifest);
    assert_eq!(paths, [".gitignore", "committed.txt", "untracked.txt"]);
    match &packed.manifest.get("committed.txt").unwrap().kind {
        EntryKind::File { digest, .. } => assert_eq!(*digest, Digest::of(b"v2 (uncommitted)")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ignore_files_of_the_enclosing_repository_apply_to_a_subdirectory() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    fs::create_dir(repo.join(".git")).unwrap();
    write(repo, ".gitignore", "*.tmp\n");
    write(repo, "proj/a.tmp", "ignored by the repository's rule");
    write(repo, "proj/a.rs", "");
    assert_eq!(packed_paths(&repo.join("proj")), ["a.rs"]);
}

#[test]
fn ignore_files_above_a_tree_outside_git_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".gitignore", "*.txt\n");
    write(dir.path(), "proj/a.txt", "not the tree's rule");
    assert_eq!(packed_paths(&dir.path().join("proj")), ["a.txt"]);
}

#[test]
fn search_tool_ignore_files_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".ignore", "fixture.bin\n");
    write(dir.path(), "fixture.bin", "tests need this");
    assert_eq!(packed_paths(dir.path()), [".ignore", "fixture.bin"]);
}

#[test]
fn modes_sizes_and_symlinks_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_exec(root, "run.sh", "#!/bin/sh\necho hi\n");
    write(root, "data/plain.txt", "plain");
    symlink(root, "link-to-file", "data/plain.txt");
    symlink(root, "data/link-to-dir", "..");
    symlink(root, "dangling", "does-not-exist");
    let manifest = pack(root).unwrap().manifest;
    let kind = |p: &str| manifest.get(p).unwrap().kind.clone();
    assert_eq!(
        kind("run.sh"),
        EntryKind::File {
            digest: Digest::of(b"#!/bin/sh\necho hi\n"),
            size: 18,
            executable: true
        }
    );
    assert_eq!(
        kind("data/plain.txt"),
        EntryKind::File {
            digest: Digest::of(b"plain"),
            size: 5,
            executable: false
        }
    );
    assert_eq!(
        kind("link-to-file"),
        EntryKind::Symlink {
            target: "data/plain.txt".into()
        }
    );
    // A link to a directory is recorded, not followed.
    assert_eq!(
        kind("data/link-to-dir"),
        EntryKind::Symlink {
            target: "..".into()
        }
    );
    assert_eq!(
        kind("dangling"),
        EntryKind::Symlink {
            target: "does-not-exist".into()
        }
    );
    assert_eq!(manifest.entries.len(), 5);
}

#[test]
fn symlinks_leaving_the_tree_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    write(dir.path(), "outside.txt", "x");
    write(&root, "in.txt", "y");
    symlink(&root, "up", "../outside.txt");
    symlink(&root, "abs", "/etc/hostname");
    // `chain` leaves the tree only through `here`: `here/..` is above it.
    symlink(&root, "here", ".");
    symlink(&root, "chain", "here/../outside.txt");
    fs::create_dir_all(root.join("x/y")).unwrap();
    symlink(&root, "deep", "../..");
    symlink(&root, "x/y/deeper", "../../..");
    let packed = pack(&root).unwrap();
    assert_eq!(crate::tree::paths(&packed.manifest), ["here", "in.txt"]);
    let skipped: Vec<_> = packed.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["abs", "chain", "deep", "up", "x/y/deeper"]);
    assert!(
        packed.skipped[0].reason.contains("absolute"),
        "{:?}",
        packed.skipped
    );
}

#[test]
fn special_files_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "a");
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let packed = pack(dir.path()).unwrap();
    assert_eq!(crate::tree::paths(&packed.manifest), ["a.txt"]);
    assert_eq!(packed.skipped.len(), 1);
    assert_eq!(packed.skipped[0].path, "pipe");
}

#[test]
fn identical_content_is_one_blob_with_the_first_path_as_source() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "b/copy.txt", "same");
    write(root, "a/orig.txt", "same");
    write(root, "c.txt", "other");
    let packed = pack(root).unwrap();
    assert_eq!(packed.manifest.entries.len(), 3);
    let blobs: Vec<_> = packed.manifest.blobs().collect();
    assert_eq!(blobs.len(), 2);
    assert_eq!(packed.sources.len(), 2);
    assert_eq!(
        packed.source(&Digest::of(b"same")).unwrap(),
        root.join("a/orig.txt")
    );
    assert_eq!(packed.manifest.total_size(), 4 + 4 + 5);
}

#[test]
fn manifest_digest_is_stable_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..50 {
        write(
            root,
            &format!("d{}/f{i}.txt", i % 7),
            &format!("content {i}"),
        );
    }
    let first = pack(root).unwrap().manifest.digest();
    assert_eq!(pack(root).unwrap().manifest.digest(), first);

    write(root, "d3/f3.txt", "changed");
    let changed = pack(root).unwrap().manifest.digest();
    assert_ne!(changed, first);

    fs::set_permissions(root.join("d3/f3.txt"), fs::Permissions::from_mode(0o755)).unwrap();
    let chmodded = pack(root).unwrap().manifest.digest();
    assert_ne!(chmodded, changed);

    fs::rename(root.join("d3/f3.txt"), root.join("d3/renamed.txt")).unwrap();
    assert_ne!(pack(root).unwrap().manifest.digest(), chmodded);
}

#[test]
fn read_blob_notices_a_file_changed_after_packing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "f.txt", "before");
    let packed = pack(dir.path()).unwrap();
    let digest = Digest::of(b"before");
    assert_eq!(packed.read_blob(&digest).unwrap().unwrap(), b"before");
    fs::write(&path, "after").unwrap();
    let err = packed.read_blob(&digest).unwrap().unwrap_err();
    assert!(
        matches!(err, SnapshotError::SourceChanged { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("f.txt"), "{err}");
    assert!(packed.read_blob(&Digest::of(b"unknown")).is_none());
}

#[test]
fn a_file_is_not_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f", "x");
    assert!(matches!(
        pack(&file),
        Err(SnapshotError::NotADirectory { .. })
    ));
    assert!(matches!(
        pack(&dir.path().join("missing")),
        Err(SnapshotError::Io { .. })
    ));
}
