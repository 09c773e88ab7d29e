//! Content-addressed snapshots of a working tree, for distributed runs.
//!
//! A client [`pack`]s its working tree (what git would see: `.gitignore`d
//! files left out, untracked and uncommitted files kept) into a
//! [`Manifest`] of paths and SHA-256 [`Digest`]s, uploads the blobs the
//! coordinator lacks ([`BlobStore::missing`]) and the manifest itself (as a
//! blob, [`Manifest::to_json`]). A worker fetches them into its own
//! [`BlobStore`] and [`materialize`]s the tree in a fresh directory; a
//! malicious manifest cannot make it write outside that directory.

mod blob_store;
mod digest;
mod error;
mod manifest;
mod materialize;
mod pack;

pub use blob_store::BlobStore;
pub use digest::{Digest, DigestError};
pub use error::SnapshotError;
pub use manifest::{Entry, EntryKind, MANIFEST_VERSION, Manifest};
pub use materialize::{materialize, validate_path};
pub use pack::{Packed, Skipped, pack};
