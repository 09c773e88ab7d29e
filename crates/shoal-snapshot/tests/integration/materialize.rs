//! materialize: round trips through a blob store, and manifests that must
//! be refused without writing outside the destination.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use shoal_snapshot::{
    BlobStore, Digest, Entry, EntryKind, Manifest, SnapshotError, materialize, pack,
};

use crate::tree::{symlink, write, write_exec};

/// Packs `root`, uploads its blobs and manifest into `store` the way a
/// client would, and returns the manifest as the worker reads it back.
fn upload(root: &Path, store: &BlobStore) -> Manifest {
    let packed = pack(root).unwrap();
    let missing = store.missing(&packed.manifest.blobs().collect::<Vec<_>>());
    for digest in missing {
        let bytes = packed.read_blob(&digest).unwrap().unwrap();
        store.put_verified(&digest, &bytes).unwrap();
    }
    let manifest_digest = store.put_bytes(&packed.manifest.to_json()).unwrap();
    assert_eq!(manifest_digest, packed.manifest.digest());
    Manifest::from_json(&store.read(&manifest_digest).unwrap()).unwrap()
}

fn file(path: &str, content: &[u8]) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::File {
            digest: Digest::of(content),
            size: content.len() as u64,
            executable: false,
        },
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::Symlink {
            target: target.to_owned(),
        },
    }
}

/// A store holding `content`, in `dir/store`.
fn store_with(dir: &Path, content: &[u8]) -> BlobStore {
    let store = BlobStore::open(dir.join("store")).unwrap();
    store.put_bytes(content).unwrap();
    store
}

/// Names in `dir` (one level).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_keeps_contents_modes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_exec(&src, "bin/run.sh", "#!/bin/sh\nexit 0\n");
    write(&src, "data/a.txt", "same");
    write(&src, "data/b.txt", "same");
    write(&src, ".hidden", "h");
    write(&src, ".gitignore", "*.log\n");
    write(&src, "debug.log", "ignored");
    symlink(&src, "data/link", "a.txt");
    symlink(&src, "bin/up", "../data");

    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let manifest = upload(&src, &store);
    let dest = dir.path().join("dest");
    materialize(&manifest, &store, &dest).unwrap();

    assert_eq!(fs::read_to_string(dest.join("data/a.txt")).unwrap(), "same");
    assert_eq!(fs::read_to_string(dest.join("data/b.txt")).unwrap(), "same");
    assert_eq!(fs::read_to_string(dest.join(".hidden")).unwrap(), "h");
    assert!(!dest.join("debug.log").exists());
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("bin/run.sh"), 0o755);
    assert_eq!(mode("data/a.txt"), 0o644);
    assert_eq!(
        fs::read_link(dest.join("data/link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        fs::read_link(dest.join("bin/up")).unwrap(),
        Path::new("../data")
    );
    assert_eq!(
        fs::read_to_string(dest.join("bin/up/link")).unwrap(),
        "same"
    );

    // Packing the materialized tree gives the same snapshot.
    assert_eq!(pack(&dest).unwrap().manifest.digest(), manifest.digest());
    // The executable really runs.
    let status = std::process::Command::new(dest.join("bin/run.sh"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn files_are_copies_so_writing_them_leaves_the_store_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"pristine");
    let manifest =
        Manifest::new(vec![file("a.txt", b"pristine"), file("b.txt", b"pristine")]).unwrap();
    let dest = dir.path().join("dest");
    materialize(&manifest, &store, &dest).unwrap();
    assert_eq!(fs::metadata(dest.join("a.txt")).unwrap().nlink(), 1);
    fs::write(dest.join("a.txt"), "overwritten by a test").unwrap();
    assert_eq!(store.read(&Digest::of(b"pristine")).unwrap(), b"pristine");
    assert_eq!(fs::read_to_string(dest.join("b.txt")).unwrap(), "pristine");
}

#[test]
fn path_traversal_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"evil");
    for bad in [
        "../escaped.txt",
        "a/../../escaped.txt",
        "/tmp/escaped.txt",
        "a//b",
        "./a",
        ".git/hooks/pre-commit",
        "",
    ] {
        // Built directly: `Manifest::new` only sorts; the check is
        // materialize's.
        let manifest = Manifest {
            entries: vec![file("a-first.txt", b"evil"), file(bad, b"evil")],
        };
        let dest = dir.path().join("dest");
        let err = materialize(&manifest, &store, &dest).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsafePath { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        assert!(!dest.exists(), "{bad:?}: the destination was created");
    }
    assert_eq!(names(dir.path()), ["store"]);
}

#[test]
fn escaping_symlinks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"x");
    for (path, target) in [
        ("l", "../outside"),
        ("sub/l", "../../outside"),
        ("l", "/etc/passwd"),
        ("l", ""),
    ] {
        let manifest = Manifest::new(vec![link(path, target)]).unwrap();
        let dest = dir.path().join("dest");
        let err = materialize(&manifest, &store, &dest).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsafeSymlink { .. }),
            "{target:?}: {err:?}"
        );
        assert!(!dest.exists());
    }
}

#[test]
fn symlink_chains_that_resolve_outside_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"x");
    // Each target is lexically inside; together `b` is the destination's
    // parent.
    let manifest = Manifest::new(vec![link("a", "."), link("b", "a/..")]).unwrap();
    let dest = dir.path().join("dest");
    let err = materialize(&manifest, &store, &dest).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::UnsafeSymlink { path, .. } if path == "b"),
        "{err:?}"
    );
    assert!(!dest.exists(), "something was written before the check");
}

#[test]
fn writes_beneath_a_symlink_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let store = store_with(dir.path(), b"payload");
    // `l` points inside, but a file written "beneath" it would land wherever
    // `l` points; here a sibling directory of the tree.
    let manifest = Manifest::new(vec![link("l", "sub"), file("l/x", b"payload")]).unwrap();
    let err = materialize(&manifest, &store, &dir.path().join("dest")).unwrap_err();
    assert!(err.to_string().contains("beneath"), "{err}");
    assert!(names(&outside).is_empty());
}

#[test]
fn destination_must_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"x");
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    // A planted link that a later write could follow.
    std::os::unix::fs::symlink("/tmp", dest.join("a.txt")).unwrap();
    let manifest = Manifest::new(vec![file("a.txt", b"x")]).unwrap();
    let err = materialize(&manifest, &store, &dest).unwrap_err();
    assert!(
        matches!(err, SnapshotError::DestinationNotEmpty { .. }),
        "{err:?}"
    );

    // An existing empty directory is fine.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    materialize(&manifest, &store, &empty).unwrap();
    assert_eq!(fs::read(empty.join("a.txt")).unwrap(), b"x");
}

#[test]
fn missing_blob_names_path_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"present");
    let manifest = Manifest::new(vec![
        file("ok.txt", b"present"),
        file("dir/gone.txt", b"absent"),
    ])
    .unwrap();
    let dest = dir.path().join("dest");
    let err = materialize(&manifest, &store, &dest).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("dir/gone.txt"), "{message}");
    assert!(
        message.contains(&Digest::of(b"absent").to_string()),
        "{message}"
    );
    assert!(!dest.exists(), "something was written before the check");
}

#[test]
fn corrupt_and_wrongly_sized_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), b"good");
    let digest = Digest::of(b"good");
    let manifest = Manifest::new(vec![Entry {
        path: "f".into(),
        kind: EntryKind::File {
            digest,
            size: 99,
            executable: false,
        },
    }])
    .unwrap();
    let err = materialize(&manifest, &store, &dir.path().join("d1")).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::SizeMismatch {
                expected: 99,
                actual: 4,
                ..
            }
        ),
        "{err:?}"
    );

    let path = store.path(&digest);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"evil").unwrap();
    let manifest = Manifest::new(vec![file("f", b"good")]).unwrap();
    let err = materialize(&manifest, &store, &dir.path().join("d2")).unwrap_err();
    assert!(matches!(err, SnapshotError::CorruptBlob { .. }), "{err:?}");
}
