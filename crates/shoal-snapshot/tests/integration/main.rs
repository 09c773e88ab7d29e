//! Integration tests of shoal-snapshot on real temporary directories:
//! packing (ignore rules, hidden files, modes, symlinks), the blob store,
//! and materializing (round trips and refused manifests).

mod blob_store;
mod materialize;
mod pack;
mod tree;
