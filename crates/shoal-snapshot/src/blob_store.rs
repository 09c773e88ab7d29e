//! [`BlobStore`]: content-addressed blobs on disk at
//! `<dir>/sha256/<first 2 hex digits>/<other 62>`.
//!
//! Every write goes to a temporary file in `<dir>/tmp/` (same file system)
//! and is renamed into place, so a reader never sees a partial blob and
//! concurrent writers of the same blob (same bytes) are harmless: the last
//! rename wins with identical content. Blobs are made read-only. Reads
//! verify the content against the name; a damaged blob is removed so that
//! it can be fetched again.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::SnapshotError;

/// A directory of content-addressed blobs. Cheap to clone; safe to use
/// from several threads and processes at once.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let root = dir.as_ref().to_owned();
        for sub in ["sha256", "tmp"] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(SnapshotError::io("create directory", &path))?;
        }
        Ok(Self { root })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("sha256").join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the store has the blob.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The digests of `digests` the store lacks, each once, in the order
    /// given.
    pub fn missing(&self, digests: &[Digest]) -> Vec<Digest> {
        let mut seen = std::collections::HashSet::new();
        digests
            .iter()
            .filter(|d| seen.insert(**d) && !self.has(d))
            .copied()
            .collect()
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, SnapshotError> {
        let digest = Digest::of(bytes);
        self.write_blob(&digest, bytes)?;
        Ok(digest)
    }

    /// Stores `bytes` as the blob `expected`, after checking that they hash
    /// to it; a mismatch stores nothing and names both digests.
    pub fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), SnapshotError> {
        let actual = Digest::of(bytes);
        if actual != *expected {
            return Err(SnapshotError::BlobMismatch {
                expected: *expected,
                actual,
            });
        }
        self.write_blob(expected, bytes)
    }

    /// Stores the content of the file at `path`, streaming (the file is
    /// never wholly in memory), and returns its digest.
    pub fn put_file(&self, path: &Path) -> Result<Digest, SnapshotError> {
        let mut source = File::open(path).map_err(SnapshotError::io("open", path))?;
        let mut temp = self.temp_file()?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SnapshotError::io("read", path)(e)),
            };
            hasher.update(&buf[..n]);
            temp.write_all(&buf[..n])
                .map_err(SnapshotError::io("write", temp.path()))?;
        }
        let (digest, _) = hasher.finish();
        if !self.has(&digest) {
            self.persist(temp, &digest)?;
        }
        Ok(digest)
    }

    /// The content of the blob, verified against its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, SnapshotError> {
        let path = self.path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::BlobNotFound { digest: *digest });
            }
            Err(e) => return Err(SnapshotError::io("read", path)(e)),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(self.corrupt(digest, actual));
        }
        Ok(bytes)
    }

    /// Opens the blob for streaming (e.g. to send it). The content is not
    /// verified here; [`BlobStore::copy_to`] and [`BlobStore::read`] verify.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, SnapshotError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SnapshotError::BlobNotFound { digest: *digest }
            } else {
                SnapshotError::io("open", path)(e)
            }
        })
    }

    /// Streams the blob into `out`, verifying it on the way; returns its
    /// size. On a mismatch the blob is removed from the store and
    /// [`SnapshotError::CorruptBlob`] returned (what was written to `out` is
    /// then not the blob). `out_path` names `out` in write errors.
    pub fn copy_to(
        &self,
        digest: &Digest,
        out: &mut impl Write,
        out_path: &Path,
    ) -> Result<u64, SnapshotError> {
        let mut file = self.open_blob(digest)?;
        let path = self.path(digest);
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SnapshotError::io("read", path)(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(SnapshotError::io("write", out_path))?;
        }
        let (actual, size) = hasher.finish();
        if actual != *digest {
            return Err(self.corrupt(digest, actual));
        }
        Ok(size)
    }

    /// Removes a damaged blob (best effort) and builds the error.
    fn corrupt(&self, expected: &Digest, actual: Digest) -> SnapshotError {
        let _ = fs::remove_file(self.path(expected));
        SnapshotError::CorruptBlob {
            expected: *expected,
            actual,
        }
    }

    fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), SnapshotError> {
        if self.has(digest) {
            return Ok(());
        }
        let mut temp = self.temp_file()?;
        temp.write_all(bytes)
            .map_err(SnapshotError::io("write", temp.path()))?;
        self.persist(temp, digest)
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, SnapshotError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(SnapshotError::io("create a temporary file in", dir))
    }

    /// Makes the finished temporary file the blob `digest`, atomically.
    fn persist(&self, temp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), SnapshotError> {
        let target = self.path(digest);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(SnapshotError::io("create directory", parent))?;
        }
        set_read_only(temp.as_file(), temp.path())?;
        // rename(2) replaces atomically; a concurrent writer of the same
        // digest wrote the same bytes.
        temp.persist(&target)
            .map_err(|e| SnapshotError::io("store blob", &target)(e.error))?;
        Ok(())
    }
}

fn set_read_only(file: &File, path: &Path) -> Result<(), SnapshotError> {
    let mut permissions = file
        .metadata()
        .map_err(SnapshotError::io("read metadata of", path))?
        .permissions();
    permissions.set_readonly(true);
    file.set_permissions(permissions)
        .map_err(SnapshotError::io("set permissions of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_sha256_two_hex_then_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        let hex = digest.to_hex();
        let expected = dir.path().join("sha256").join(&hex[..2]).join(&hex[2..]);
        assert_eq!(store.path(&digest), expected);
        assert_eq!(fs::read(expected).unwrap(), b"hello");
    }
}
