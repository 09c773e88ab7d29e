//! [`pack`]: a working tree into a [`Manifest`], as git would see it:
//! `.gitignore` files, `.git/info/exclude` and the global gitignore are
//! respected (also outside a git repository), hidden and untracked files
//! are kept, `.git` and `.shoal` are left out.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::error::SnapshotError;
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::materialize::{symlink_escape, symlink_map, validate_path};

/// Names never packed, at any depth: git's own directory (or a
/// submodule's `.git` file) and shoal's state directory.
const EXCLUDED_NAMES: [&str; 2] = [".git", ".shoal"];

/// A packed tree: its manifest and where each blob's content can be read.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The snapshot's manifest.
    pub manifest: Manifest,
    /// For each distinct file digest, the first file (in path order) with
    /// that content, as an absolute or root-joined path. Upload from here
    /// with [`Packed::read_blob`], which checks the file has not changed.
    pub sources: BTreeMap<Digest, PathBuf>,
    /// What was left out and why (special files, symlinks leaving the
    /// tree, names that are not UTF-8): worth a warning to the user.
    pub skipped: Vec<Skipped>,
}

/// A path [`pack`] left out of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path, relative to the root (lossy if not UTF-8).
    pub path: String,
    /// Why it was left out.
    pub reason: String,
}

impl Packed {
    /// Where the content of blob `digest` is, if it is one of this tree's.
    pub fn source(&self, digest: &Digest) -> Option<&Path> {
        self.sources.get(digest).map(PathBuf::as_path)
    }

    /// The bytes of blob `digest`, read from its source file and checked to
    /// still hash to `digest` ([`SnapshotError::SourceChanged`] otherwise:
    /// the file was edited after packing). `None` if the digest is not one
    /// of this tree's.
    pub fn read_blob(&self, digest: &Digest) -> Option<Result<Vec<u8>, SnapshotError>> {
        let path = self.source(digest)?;
        Some(
            std::fs::read(path)
                .map_err(SnapshotError::io("read", path))
                .and_then(|bytes| {
                    let actual = Digest::of(&bytes);
                    if actual == *digest {
                        Ok(bytes)
                    } else {
                        Err(SnapshotError::SourceChanged {
                            path: path.to_owned(),
                            expected: *digest,
                            actual,
                        })
                    }
                }),
        )
    }
}

/// A file found by the walk, to be hashed.
struct FoundFile {
    rel: String,
    abs: PathBuf,
    executable: bool,
}

/// Packs the tree at `root`. Files are hashed streaming, in parallel (rayon's
/// global pool). Empty directories are not recorded; symlinks are recorded
/// as links (never followed), except those pointing outside the tree, which
/// are skipped and listed in [`Packed::skipped`] since a worker would refuse
/// them.
pub fn pack(root: &Path) -> Result<Packed, SnapshotError> {
    let meta = std::fs::metadata(root).map_err(SnapshotError::io("read", root))?;
    if !meta.is_dir() {
        return Err(SnapshotError::NotADirectory {
            path: root.to_owned(),
        });
    }
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .hidden(false)
        // `.ignore` files are for search tools, not for what a build sees.
        .ignore(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        // Outside a git repository, or at its root, ignore files above the
        // root are not the tree's (the walker would read them up to `/`).
        .parents(in_git_subdirectory(root))
        .follow_links(false)
        .filter_entry(|entry| {
            entry.depth() == 0
                || !EXCLUDED_NAMES
                    .iter()
                    .any(|name| entry.file_name() == std::ffi::OsStr::new(name))
        });

    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut skipped = Vec::new();
    for item in builder.build() {
        let entry = item.map_err(|source| SnapshotError::Walk {
            root: root.to_owned(),
            source,
        })?;
        if let Some(source) = entry.error() {
            // A broken ignore file: packing without its rules would upload
            // what the user meant to leave out.
            return Err(SnapshotError::Walk {
                root: root.to_owned(),
                source: source.clone(),
            });
        }
        if entry.depth() == 0 {
            continue;
        }
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        let abs = entry.path().to_owned();
        let rel = match relative_path(root, &abs) {
            Ok(rel) => rel,
            Err(reason) => {
                skipped.push(Skipped {
                    path: abs
                        .strip_prefix(root)
                        .unwrap_or(&abs)
                        .to_string_lossy()
                        .into_owned(),
                    reason: reason.to_owned(),
                });
                continue;
            }
        };
        if file_type.is_dir() {
            continue;
        } else if file_type.is_symlink() {
            links.push((rel, abs));
        } else if file_type.is_file() {
            let meta = entry.metadata().map_err(|source| SnapshotError::Walk {
                root: root.to_owned(),
                source,
            })?;
            files.push(FoundFile {
                rel,
                abs,
                executable: is_executable(&meta),
            });
        } else {
            skipped.push(Skipped {
                path: rel,
                reason: "not a regular file, directory or symlink".to_owned(),
            });
        }
    }

    let mut entries = Vec::with_capacity(files.len() + links.len());
    for (rel, abs) in links {
        let target = std::fs::read_link(&abs).map_err(SnapshotError::io("read symlink", &abs))?;
        let Some(target) = target.to_str().map(str::to_owned) else {
            skipped.push(Skipped {
                path: rel,
                reason: "the symlink's target is not UTF-8".to_owned(),
            });
            continue;
        };
        entries.push(Entry {
            path: rel,
            kind: EntryKind::Symlink { target },
        });
    }
    // Links leaving the tree would be refused by a worker. One pass is
    // enough: a link resolving through an escaping link escapes with it, and
    // one that does not is unaffected by its removal.
    let links = symlink_map(&entries);
    let escaping: Vec<(String, String, &'static str)> = links
        .iter()
        .filter_map(|(path, target)| {
            symlink_escape(path, target, &links)
                .map(|reason| (path.to_string(), target.to_string(), reason))
        })
        .collect();
    entries.retain(|e| !escaping.iter().any(|(path, _, _)| *path == e.path));
    for (path, target, reason) in escaping {
        skipped.push(Skipped {
            path,
            reason: format!("symlink to `{target}`: {reason}"),
        });
    }

    let hashed: Vec<Result<(Entry, PathBuf), SnapshotError>> = files
        .into_par_iter()
        .map(|found| {
            let file = File::open(&found.abs).map_err(SnapshotError::io("open", &found.abs))?;
            let (digest, size) =
                Digest::of_reader(file).map_err(SnapshotError::io("read", &found.abs))?;
            Ok((
                Entry {
                    path: found.rel,
                    kind: EntryKind::File {
                        digest,
                        size,
                        executable: found.executable,
                    },
                },
                found.abs,
            ))
        })
        .collect();
    let mut abs_of = BTreeMap::new();
    for result in hashed {
        let (entry, abs) = result?;
        abs_of.insert(entry.path.clone(), abs);
        entries.push(entry);
    }

    let manifest = Manifest::new(entries)?;
    let mut sources = BTreeMap::new();
    for entry in &manifest.entries {
        if let EntryKind::File { digest, .. } = &entry.kind {
            if let Some(abs) = abs_of.remove(&entry.path) {
                sources.entry(*digest).or_insert(abs);
            }
        }
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Packed {
        manifest,
        sources,
        skipped,
    })
}

/// The `/`-separated path of `abs` below `root`, or why it cannot be one
/// (a name that is not UTF-8, or one the manifest cannot carry).
fn relative_path(root: &Path, abs: &Path) -> Result<String, &'static str> {
    let rel = abs
        .strip_prefix(root)
        .map_err(|_| "the walker left the root")?;
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => {
                parts.push(name.to_str().ok_or("the name is not UTF-8")?);
            }
            _ => return Err("unexpected path component"),
        }
    }
    let rel = parts.join("/");
    validate_path(&rel).map_err(|_| "the name cannot be carried in a snapshot")?;
    Ok(rel)
}

/// Whether `root` is strictly inside a git work tree (an ancestor, not
/// `root` itself, has `.git`).
fn in_git_subdirectory(root: &Path) -> bool {
    if root.join(".git").exists() {
        return false;
    }
    let Ok(abs) = std::path::absolute(root) else {
        return false;
    };
    abs.ancestors().skip(1).any(|dir| dir.join(".git").exists())
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}
