//! [`Manifest`]: the list of a snapshot's files and symlinks, sorted by
//! path, with a canonical JSON form whose digest names the snapshot.
//!
//! The JSON form (format version [`MANIFEST_VERSION`]):
//!
//! ```json
//! {"version":1,"entries":[
//!   {"path":"run.sh","kind":{"type":"file","digest":"<64 hex>","size":12,"executable":true}},
//!   {"path":"sub/link","kind":{"type":"symlink","target":"../run.sh"}}]}
//! ```
//!
//! (written without whitespace). Empty directories are not recorded.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::SnapshotError;

/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The files and symlinks of a snapshot, sorted by path (byte order), each
/// path once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The entries, sorted by `path`.
    pub entries: Vec<Entry>,
}

/// One file or symlink of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative to the snapshot root, `/`-separated, without `.` or `..`.
    pub path: String,
    /// What is at that path.
    pub kind: EntryKind,
}

/// What a manifest path holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    /// A regular file whose content is the blob `digest`.
    File {
        /// The content's digest.
        digest: Digest,
        /// The content's length in bytes.
        size: u64,
        /// Whether the file is executable (mode 0755 rather than 0644).
        executable: bool,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, relative to the link's directory.
        target: String,
    },
}

/// The JSON form, borrowed for writing.
#[derive(Serialize)]
struct ManifestOut<'a> {
    version: u32,
    entries: &'a [Entry],
}

/// The JSON form, owned for reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestIn {
    version: u32,
    entries: Vec<Entry>,
}

impl Manifest {
    /// A manifest of `entries`, sorted by path; a path listed twice is an
    /// error.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self, SnapshotError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Self { entries };
        manifest.check_order()?;
        Ok(manifest)
    }

    /// The canonical JSON bytes (compact, entries in path order). The
    /// manifest travels and is stored as a blob of exactly these bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let out = ManifestOut {
            version: MANIFEST_VERSION,
            entries: &self.entries,
        };
        // Strings, integers and booleans only: serializing cannot fail.
        serde_json::to_vec(&out).expect("a manifest always serializes to JSON")
    }

    /// Reads the JSON form. The format version must be
    /// [`MANIFEST_VERSION`] and the entries sorted by path with no path
    /// twice. (Whether each path is safe to write is checked by
    /// [`crate::materialize`].)
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let version_error = |found| SnapshotError::ManifestVersion {
            found,
            expected: MANIFEST_VERSION,
        };
        let parsed: ManifestIn = match serde_json::from_slice(bytes) {
            Ok(parsed) => parsed,
            Err(source) => {
                // Another format version: say so, rather than which field
                // this build did not expect.
                return Err(match serde_json::from_slice::<VersionOnly>(bytes) {
                    Ok(v) if v.version != MANIFEST_VERSION => version_error(v.version),
                    _ => SnapshotError::ManifestJson { source },
                });
            }
        };
        if parsed.version != MANIFEST_VERSION {
            return Err(version_error(parsed.version));
        }
        let manifest = Self {
            entries: parsed.entries,
        };
        manifest.check_order()?;
        Ok(manifest)
    }

    /// The digest of [`Manifest::to_json`]: the snapshot's name.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_json())
    }

    /// The distinct file digests, in digest order.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + use<> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { digest, .. } => Some(*digest),
                EntryKind::Symlink { .. } => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// The size of all files, counting each file (also files with the same
    /// content).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                EntryKind::Symlink { .. } => 0,
            })
            .sum()
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    fn check_order(&self) -> Result<(), SnapshotError> {
        for pair in self.entries.windows(2) {
            if pair[0].path >= pair[1].path {
                return Err(SnapshotError::ManifestOrder {
                    path: pair[1].path.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8], executable: bool) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::File {
                digest: Digest::of(content),
                size: content.len() as u64,
                executable,
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

    fn sample() -> Manifest {
        Manifest::new(vec![
            file("b.txt", b"same", false),
            link("c", "b.txt"),
            file("a/run.sh", b"#!/bin/sh\n", true),
            file("a/copy.txt", b"same", false),
        ])
        .unwrap()
    }

    #[test]
    fn new_sorts_by_path() {
        let paths: Vec<_> = sample().entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["a/copy.txt", "a/run.sh", "b.txt", "c"]);
    }

    #[test]
    fn new_refuses_a_path_twice() {
        let err = Manifest::new(vec![file("x", b"1", false), link("x", "y")]).unwrap_err();
        assert!(matches!(err, SnapshotError::ManifestOrder { ref path } if path == "x"));
    }

    #[test]
    fn json_round_trip_is_exact() {
        let manifest = sample();
        let json = manifest.to_json();
        let back = Manifest::from_json(&json).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(back.to_json(), json);
        assert_eq!(back.digest(), manifest.digest());
    }

    #[test]
    fn json_form_is_the_documented_one() {
        let manifest = Manifest::new(vec![link("l", "t")]).unwrap();
        assert_eq!(
            String::from_utf8(manifest.to_json()).unwrap(),
            r#"{"version":1,"entries":[{"path":"l","kind":{"type":"symlink","target":"t"}}]}"#
        );
    }

    #[test]
    fn digest_changes_with_any_field() {
        let base = sample();
        let mut changed = base.clone();
        if let EntryKind::File { executable, .. } = &mut changed.entries[0].kind {
            *executable = true;
        }
        assert_ne!(base.digest(), changed.digest());
        let mut renamed = base.clone();
        renamed.entries[3].path = "d".to_owned();
        assert_ne!(base.digest(), renamed.digest());
    }

    #[test]
    fn from_json_refuses_unsorted_other_versions_and_bad_digests() {
        let unsorted = br#"{"version":1,"entries":[{"path":"b","kind":{"type":"symlink","target":"t"}},{"path":"a","kind":{"type":"symlink","target":"t"}}]}"#;
        assert!(matches!(
            Manifest::from_json(unsorted),
            Err(SnapshotError::ManifestOrder { .. })
        ));
        let future = br#"{"version":2,"entries":[],"compression":"zstd"}"#;
        assert!(matches!(
            Manifest::from_json(future),
            Err(SnapshotError::ManifestVersion {
                found: 2,
                expected: 1
            })
        ));
        let bad_digest = br#"{"version":1,"entries":[{"path":"a","kind":{"type":"file","digest":"ABC","size":1,"executable":false}}]}"#;
        let err = Manifest::from_json(bad_digest).unwrap_err();
        assert!(
            err.to_string().contains("invalid snapshot manifest"),
            "{err}"
        );
        assert!(Manifest::from_json(b"not json").is_err());
    }

    #[test]
    fn blobs_are_distinct_and_sizes_add_up() {
        let manifest = sample();
        let blobs: Vec<_> = manifest.blobs().collect();
        let mut expected = vec![Digest::of(b"same"), Digest::of(b"#!/bin/sh\n")];
        expected.sort();
        assert_eq!(blobs, expected);
        assert_eq!(manifest.total_size(), 4 + 4 + 10);
    }

    #[test]
    fn get_finds_entries() {
        let manifest = sample();
        assert!(matches!(
            manifest.get("c").map(|e| &e.kind),
            Some(EntryKind::Symlink { target }) if target == "b.txt"
        ));
        assert!(manifest.get("zzz").is_none());
    }
}
