//! BlobStore: layout, verification, deduplication, concurrent writers.

use std::fs;
use std::sync::Arc;

use shoal_snapshot::{BlobStore, Digest, SnapshotError};

/// Every stored blob file under the store (ignoring `tmp/`).
fn stored_files(store: &BlobStore) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(store.dir().join("sha256")).unwrap() {
        for blob in fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(blob.unwrap().path());
        }
    }
    out
}

fn tmp_is_empty(store: &BlobStore) -> bool {
    fs::read_dir(store.dir().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

#[test]
fn put_has_read_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("blobs")).unwrap();
    let a = store.put_bytes(b"alpha").unwrap();
    assert_eq!(a, Digest::of(b"alpha"));
    assert!(store.has(&a));
    assert_eq!(store.read(&a).unwrap(), b"alpha");

    let b = Digest::of(b"beta");
    let c = Digest::of(b"gamma");
    assert!(!store.has(&b));
    assert_eq!(store.missing(&[b, a, c, b]), vec![b, c]);
    assert!(matches!(store.read(&b), Err(SnapshotError::BlobNotFound { digest }) if digest == b));
    assert!(tmp_is_empty(&store));
}

#[test]
fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let file = dir.path().join("input.bin");
    fs::write(&file, b"same bytes").unwrap();
    let d1 = store.put_bytes(b"same bytes").unwrap();
    let d2 = store.put_bytes(b"same bytes").unwrap();
    let d3 = store.put_file(&file).unwrap();
    store.put_verified(&d1, b"same bytes").unwrap();
    assert_eq!((d1, d2), (d3, d3));
    assert_eq!(stored_files(&store), vec![store.path(&d1)]);
    assert!(tmp_is_empty(&store));
}

#[test]
fn put_verified_refuses_a_mismatch_naming_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let claimed = Digest::of(b"what was promised");
    let actual = Digest::of(b"what was sent");
    let err = store.put_verified(&claimed, b"what was sent").unwrap_err();
    assert!(matches!(err, SnapshotError::BlobMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&claimed.to_string()), "{message}");
    assert!(message.contains(&actual.to_string()), "{message}");
    assert!(!store.has(&claimed) && !store.has(&actual));
    assert!(stored_files(&store).is_empty());
}

#[test]
fn put_file_streams_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = dir.path().join("big.bin");
    fs::write(&file, &data).unwrap();
    let digest = store.put_file(&file).unwrap();
    assert_eq!(digest, Digest::of(&data));
    assert_eq!(store.read(&digest).unwrap(), data);
    assert!(tmp_is_empty(&store));
}

#[test]
fn stored_blobs_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let digest = store.put_bytes(b"x").unwrap();
    let meta = fs::metadata(store.path(&digest)).unwrap();
    assert!(meta.permissions().readonly());
}

#[test]
fn concurrent_writers_of_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data: Arc<Vec<u8>> = Arc::new((0..256 * 1024u32).map(|i| (i % 253) as u8).collect());
    let expected = Digest::of(&data);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let data = Arc::clone(&data);
            let path = dir.path().to_owned();
            std::thread::spawn(move || {
                // Separate handles, as separate processes would have.
                let store = BlobStore::open(&path).unwrap();
                for _ in 0..5 {
                    if i % 2 == 0 {
                        assert_eq!(store.put_bytes(&data).unwrap(), expected);
                    } else {
                        store.put_verified(&expected, &data).unwrap();
                    }
                    // A reader never sees a partial blob.
                    if store.has(&expected) {
                        assert_eq!(store.read(&expected).unwrap().len(), data.len());
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = BlobStore::open(dir.path()).unwrap();
    assert_eq!(store.read(&expected).unwrap(), *data);
    assert_eq!(stored_files(&store).len(), 1);
    assert!(tmp_is_empty(&store));
}

#[test]
fn a_damaged_blob_is_detected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let digest = store.put_bytes(b"original").unwrap();
    let path = store.path(&digest);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"bit rot").unwrap();
    let err = store.read(&digest).unwrap_err();
    assert!(
        matches!(err, SnapshotError::CorruptBlob { expected, actual }
            if expected == digest && actual == Digest::of(b"bit rot")),
        "{err:?}"
    );
    assert!(!store.has(&digest), "the damaged blob was kept");
    // It can be stored again.
    store.put_verified(&digest, b"original").unwrap();
    assert_eq!(store.read(&digest).unwrap(), b"original");
}
