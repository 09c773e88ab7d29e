//! TODO(cargo): being written
