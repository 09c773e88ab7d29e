//! TODO(pytest): being written
