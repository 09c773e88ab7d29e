//! TODO(command): being written
