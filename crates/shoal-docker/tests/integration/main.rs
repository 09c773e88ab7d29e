//! Integration tests of shoal-docker against the real Docker engine of this
//! machine, in the local images `shoal-test/busybox:1` and
//! `shoal-test/python:1` (made by `scripts/test-images.sh`; no registry is
//! reachable). Without an engine the
//! tests skip, saying so, unless `CI=true`, where that is a failure.

mod build;
mod compose;
mod container;
mod executor;
mod pytest;
mod reaper;
mod service;
mod support;
mod timings;
