//! TODO(junit): being written
