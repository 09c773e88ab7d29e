//! [`materialize`]: a manifest's tree, written from a [`BlobStore`] into a
//! fresh directory, and the checks that keep a malicious manifest inside it.
//!
//! Safety rests on three rules: every path is checked before anything is
//! written ([`validate_path`]: relative, no `.`/`..`/empty components, no
//! `.git`); no entry lies beneath another file or symlink of the manifest,
//! so writes never pass through a symlink; and the destination must be
//! empty, so no symlink planted beforehand is followed. Symlink targets are
//! resolved within the manifest's tree (following its other symlinks) and
//! must stay inside it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;

use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::error::SnapshotError;
use crate::manifest::{Entry, EntryKind, Manifest};

/// Checks that a manifest path is safe to write below a destination: not
/// empty, relative, `/`-separated with no empty, `.` or `..` component, no
/// NUL byte, and no `.git` component (in any case).
pub fn validate_path(path: &str) -> Result<(), SnapshotError> {
    let fail = |reason| {
        Err(SnapshotError::UnsafePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("the path is empty");
    }
    if path.starts_with('/') {
        return fail("the path is absolute");
    }
    if path.contains('\0') {
        return fail("the path contains a NUL byte");
    }
    for component in path.split('/') {
        match component {
            "" => return fail("the path has an empty component"),
            "." => return fail("the path has a `.` component"),
            ".." => return fail("the path has a `..` component"),
            c if c.eq_ignore_ascii_case(".git") => {
                return fail("shoal never writes into `.git`");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why the symlink at manifest path `link` pointing to `target` would leave
/// the snapshot, or `None` if it stays inside.
///
/// The target is resolved within the manifest's own tree: `links` maps the
/// manifest's symlink paths to their targets, and a component naming one of
/// them is followed, so chains such as `a -> .` and `b -> a/..` (each
/// harmless alone) are judged by where they really lead. Since
/// [`materialize`] writes into an empty directory, the manifest is the
/// whole tree and this resolution is exact.
pub(crate) fn symlink_escape(
    link: &str,
    target: &str,
    links: &HashMap<&str, &str>,
) -> Option<&'static str> {
    let mut stack: Vec<&str> = link.split('/').collect();
    stack.pop();
    let mut hops = 0;
    resolve(stack, target, links, &mut hops).err()
}

/// The most symlinks one resolution may pass through (Linux's limit).
const MAX_SYMLINK_HOPS: u32 = 40;

fn resolve<'a>(
    mut stack: Vec<&'a str>,
    target: &'a str,
    links: &HashMap<&str, &'a str>,
    hops: &mut u32,
) -> Result<Vec<&'a str>, &'static str> {
    if target.is_empty() {
        return Err("the target is empty");
    }
    if target.contains('\0') {
        return Err("the target contains a NUL byte");
    }
    if target.starts_with('/') {
        return Err("the target is an absolute path");
    }
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err("the target leaves the snapshot");
                }
            }
            name => {
                stack.push(name);
                if let Some(next) = links.get(stack.join("/").as_str()) {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err("too many levels of symlinks");
                    }
                    stack.pop();
                    stack = resolve(stack, next, links, hops)?;
                }
            }
        }
    }
    Ok(stack)
}

/// The symlinks of `entries`, path to target.
pub(crate) fn symlink_map(entries: &[Entry]) -> HashMap<&str, &str> {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Symlink { target } => Some((e.path.as_str(), target.as_str())),
            EntryKind::File { .. } => None,
        })
        .collect()
}

/// Writes the tree of `manifest` into `dest` (created if absent; if it
/// exists it must be an empty directory), with file contents copied from
/// `blobs` (copies, never links, so tests writing to their files cannot
/// damage the store), executable bits set and symlinks created.
///
/// Everything is checked before the first write: unsafe paths and symlink
/// targets are refused, and a blob missing from the store is reported with
/// the path needing it. Contents are verified against their digests while
/// copying. On an error `dest` may be partly written; remove it.
pub fn materialize(
    manifest: &Manifest,
    blobs: &BlobStore,
    dest: &Path,
) -> Result<(), SnapshotError> {
    check(manifest, blobs)?;
    prepare_destination(dest)?;

    let mut dirs = BTreeSet::new();
    for entry in &manifest.entries {
        let mut prefix = entry.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if !dirs.insert(parent) {
                break;
            }
            prefix = parent;
        }
    }
    // Parents sort before their children.
    for dir in dirs {
        let path = dest.join(dir);
        fs::create_dir(&path).map_err(SnapshotError::io("create directory", &path))?;
    }

    manifest
        .entries
        .par_iter()
        .try_for_each(|entry| match &entry.kind {
            EntryKind::File {
                digest,
                size,
                executable,
            } => write_file(blobs, dest, &entry.path, digest, *size, *executable),
            EntryKind::Symlink { .. } => Ok(()),
        })?;

    for entry in &manifest.entries {
        if let EntryKind::Symlink { target } = &entry.kind {
            let path = dest.join(&entry.path);
            std::os::unix::fs::symlink(target, &path)
                .map_err(SnapshotError::io("create symlink", &path))?;
        }
    }
    Ok(())
}

/// All checks that need no writing: paths, nesting, symlink targets, blobs.
fn check(manifest: &Manifest, blobs: &BlobStore) -> Result<(), SnapshotError> {
    let links = symlink_map(&manifest.entries);
    let mut leaves = HashSet::new();
    let mut previous: Option<&str> = None;
    for entry in &manifest.entries {
        validate_path(&entry.path)?;
        if previous.is_some_and(|p| p >= entry.path.as_str()) {
            return Err(SnapshotError::ManifestOrder {
                path: entry.path.clone(),
            });
        }
        previous = Some(&entry.path);
        leaves.insert(entry.path.as_str());
    }
    for entry in &manifest.entries {
        let mut prefix = entry.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if leaves.contains(parent) {
                return Err(SnapshotError::UnsafePath {
                    path: entry.path.clone(),
                    reason: "it lies beneath a file or symlink of the same manifest",
                });
            }
            prefix = parent;
        }
        match &entry.kind {
            EntryKind::Symlink { target } => {
                if let Some(reason) = symlink_escape(&entry.path, target, &links) {
                    return Err(SnapshotError::UnsafeSymlink {
                        path: entry.path.clone(),
                        target: target.clone(),
                        reason,
                    });
                }
            }
            EntryKind::File { digest, .. } => {
                if !blobs.has(digest) {
                    return Err(SnapshotError::MissingBlob {
                        path: entry.path.clone(),
                        digest: *digest,
                    });
                }
            }
        }
    }
    Ok(())
}

fn prepare_destination(dest: &Path) -> Result<(), SnapshotError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(SnapshotError::io("read", dest))?;
            if entries.next().is_some() {
                return Err(SnapshotError::DestinationNotEmpty {
                    path: dest.to_owned(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(SnapshotError::DestinationNotEmpty {
            path: dest.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(SnapshotError::io("create directory", dest))
        }
        Err(e) => Err(SnapshotError::io("read", dest)(e)),
    }
}

fn write_file(
    blobs: &BlobStore,
    dest: &Path,
    rel: &str,
    digest: &Digest,
    size: u64,
    executable: bool,
) -> Result<(), SnapshotError> {
    let path = dest.join(rel);
    let mode = if executable { 0o755 } else { 0o644 };
    // `create_new` (O_EXCL) also refuses to open through a symlink.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(SnapshotError::io("create", &path))?;
    let written = blobs
        .copy_to(digest, &mut file, &path)
        .map_err(|e| match e {
            SnapshotError::BlobNotFound { digest } => SnapshotError::MissingBlob {
                path: rel.to_owned(),
                digest,
            },
            other => other,
        })?;
    if written != size {
        return Err(SnapshotError::SizeMismatch {
            path: rel.to_owned(),
            digest: *digest,
            expected: size,
            actual: written,
        });
    }
    file.flush().map_err(SnapshotError::io("write", &path))?;
    // The mode given at creation is reduced by the umask; set it exactly.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(SnapshotError::io("set permissions of", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_pass() {
        for ok in [
            "a",
            "a/b/c.txt",
            ".hidden",
            "a/.gitignore",
            "...",
            "a..b",
            ".github/x",
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("./a", "`.`"),
            (".git/config", ".git"),
            (".GIT/hooks/pre-commit", ".git"),
            ("sub/.git/config", ".git"),
            ("a\0b", "NUL"),
        ] {
            let err = validate_path(bad).unwrap_err();
            assert!(err.to_string().contains(reason), "{bad:?}: {err}");
        }
    }

    fn escape(link: &str, target: &str) -> Option<&'static str> {
        symlink_escape(link, target, &HashMap::new())
    }

    #[test]
    fn symlink_targets_are_judged_from_the_links_directory() {
        assert_eq!(escape("a", "b"), None);
        assert_eq!(escape("a", "."), None);
        assert_eq!(escape("d/a", "../b"), None);
        assert_eq!(escape("d/e/a", "../../b"), None);
        assert_eq!(escape("d/a", "x/../../b"), None);
        assert!(escape("a", "../b").is_some());
        assert!(escape("d/a", "../../b").is_some());
        assert!(escape("d/a", "/etc/passwd").is_some());
        assert!(escape("a", "").is_some());
    }

    #[test]
    fn symlink_chains_are_followed() {
        let links = HashMap::from([("a", "."), ("deep", "x/y/z"), ("loop", "loop/x")]);
        let escape = |link, target| symlink_escape(link, target, &links);
        // `a` is the root, so `a/..` is above it.
        assert_eq!(escape("b", "a/.."), Some("the target leaves the snapshot"));
        assert_eq!(escape("b", "a/a/a/x"), None);
        // `deep/..` is `x/y`, inside, although `..` follows one name.
        assert_eq!(escape("b", "deep/../../.."), None);
        assert!(escape("b", "deep/../../../..").is_some());
        assert_eq!(escape("b", "loop"), Some("too many levels of symlinks"));
    }
}
