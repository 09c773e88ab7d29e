//! Integration tests of shoal-worker on real components: a copy of
//! `fixtures/pytest-project` packed into a real blob store (as a client
//! uploads it), prepared by the worker's code with the store as its blob
//! source, and batches run through the real engine and pytest.

mod batch;
mod prepare;
mod support;
