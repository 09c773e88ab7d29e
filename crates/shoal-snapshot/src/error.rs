//! [`SnapshotError`]: everything that can go wrong packing, storing or
//! materializing a snapshot, each with the path or digest concerned.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, DigestError};

/// An error of this crate; every variant names the file, path or digest it
/// concerns.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file-system operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Walking the tree failed (an unreadable directory or ignore file).
    #[error("failed to walk {}", root.display())]
    Walk {
        /// The root being packed.
        root: PathBuf,
        /// The walker's error (it names the path).
        #[source]
        source: ignore::Error,
    },
    /// The tree to pack is not a directory.
    #[error("cannot snapshot {}: not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A string that should have been a digest.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
    /// A manifest's JSON could not be read.
    #[error("invalid snapshot manifest")]
    ManifestJson {
        /// serde_json's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A manifest of a format version this build does not know.
    #[error("snapshot manifest has format version {found}; this shoal reads version {expected}")]
    ManifestVersion {
        /// The version in the manifest.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// A manifest whose entries are not sorted by path, or list a path twice.
    #[error("snapshot manifest is not canonical: `{path}` is out of order or repeated")]
    ManifestOrder {
        /// The first entry out of place.
        path: String,
    },
    /// A manifest path that could write outside the destination or into a
    /// place shoal never writes.
    #[error("refusing unsafe manifest path `{path}`: {reason}")]
    UnsafePath {
        /// The path as in the manifest.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A symlink whose target leaves the snapshot.
    #[error("refusing symlink `{path}` -> `{target}`: {reason}")]
    UnsafeSymlink {
        /// The symlink's path in the manifest.
        path: String,
        /// Its target.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The destination of a materialization exists and is not an empty
    /// directory.
    #[error("cannot materialize into {}: it exists and is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// Bytes that do not hash to the digest they were sent with.
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    BlobMismatch {
        /// The digest the bytes claimed.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A stored blob whose content no longer matches its name (damaged on
    /// disk). It has been removed from the store so that it can be fetched
    /// again.
    #[error("stored blob {expected} is corrupt (its content hashes to {actual}); it was removed")]
    CorruptBlob {
        /// The blob's name.
        expected: Digest,
        /// The digest of what was on disk.
        actual: Digest,
    },
    /// A blob the store does not have.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// The blob asked for.
        digest: Digest,
    },
    /// A blob needed by a manifest entry is not in the store.
    #[error("missing blob {digest} for `{path}`")]
    MissingBlob {
        /// The manifest path needing it.
        path: String,
        /// The blob.
        digest: Digest,
    },
    /// A manifest entry whose blob has another size than the manifest says.
    #[error("blob {digest} for `{path}` has {actual} bytes; the manifest says {expected}")]
    SizeMismatch {
        /// The manifest path.
        path: String,
        /// The blob.
        digest: Digest,
        /// The size in the manifest.
        expected: u64,
        /// The size of the blob.
        actual: u64,
    },
    /// A packed file changed between packing and reading it for upload.
    #[error("{} changed since the snapshot was taken (expected {expected}, now {actual})", path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
        /// Its digest at packing time.
        expected: Digest,
        /// Its digest now.
        actual: Digest,
    },
}

impl SnapshotError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
