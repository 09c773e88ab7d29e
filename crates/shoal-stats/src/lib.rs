//! Statistics for flaky-test detection: pure functions over counts and
//! histories, no I/O, no clock, no async. `shoal stress`, `shoal flaky`,
//! quarantine and flake bisection are built on it.
//!
//! # Methods
//!
//! - **Wilson score interval** ([`wilson`]): a confidence interval for a
//!   failure rate from k failures in n runs. Chosen over the textbook
//!   normal interval because it behaves at k = 0 and k = n (zero failures
//!   in 10 runs: `[0, 27.75 %]` at 95 %, not `[0, 0]`) and stays in
//!   `[0, 1]`.
//! - **Wald's sequential probability ratio test** ([`Sprt`]): decides
//!   between H0 "fails with probability at most p0" (stable) and H1 "at
//!   least p1" (flaky) after each run, stopping as soon as the
//!   log-likelihood ratio crosses `A = ln((1−β)/α)` or `B = ln(β/(1−α))`.
//!   Among all tests with error rates α and β, none needs fewer runs on
//!   average when the rate is p0 or p1 (Wald and Wolfowitz). Defaults (issue 6): p0 = 0.1 %, p1 = 1 %,
//!   α = β = 5 %. Clearing a test takes at least
//!   [`runs_to_accept_h0_without_failures`] (326) runs; a test failing 1 %
//!   of the time is flagged with probability 94.9 % after 247 runs on
//!   average, one failing 20 % after 10. [`exact_outcome`] computes such
//!   figures exactly (decision probabilities and mean runs, with the run
//!   limit and the overshoot past the boundaries); [`expected_runs`] and
//!   [`operating_characteristic`] are Wald's classical approximations,
//!   which underestimate the runs by up to a quarter here because one
//!   failure moves the ratio most of the way to a boundary. A test that
//!   only ever fails is also "flaky" to the SPRT; [`verdict`] calls it
//!   broken.
//! - **Fixed sample sizes** ([`sample_size_for`]): how many runs make a
//!   failure of a known rate show up with a given confidence; flake
//!   bisection calls a commit good after that many passes.
//! - **History evidence** ([`classify`]): ranks tests by flake evidence
//!   over stored results, counting a failure as flaky only when the same
//!   test passed on the same commit and environment, after dropping runs
//!   that were infrastructure failures. The rules are in [`evidence`].
//! - **Quarantine policy** ([`should_quarantine`]): flaky tests within
//!   configured rate bounds, never broken or undecided ones.
//! - **Simulation** ([`sim`]): a seeded Monte Carlo of the SPRT that
//!   reports detection rates and sample sizes (`cargo run -p shoal-stats
//!   --example sprt_sim --release`).
//!
//! # Assumptions
//!
//! Every method here treats a test's runs as **independent** Bernoulli
//! trials with **one failure probability per commit and environment**
//! (stationarity within a commit). Both fail in practice in known ways:
//! tests that leak state into each other, fail only under load or at
//! certain times, or depend on order produce correlated failures, and
//! then the SPRT's error rates and [`sample_size_for`]'s confidence are
//! optimistic. Across commits the probability may change freely; history
//! evidence never pools a failure on one commit with a pass on another.
//! Infrastructure outages (most tests of a run failing) violate
//! independence wholesale, which is why [`classify`] drops those runs.
//!
//! All configuration types have a `validate` method returning
//! [`StatsError`]; functions taking a configuration panic on an invalid one,
//! so validate at load time.

mod error;
pub mod evidence;
mod interval;
mod quarantine;
mod sample;
pub mod sim;
mod sprt;
mod verdict;

pub use error::StatsError;
pub use evidence::{FlakyConfig, Observation, RunHealth, TestEvidence, classify};
pub use interval::{DEFAULT_CONFIDENCE, Interval, wilson, z_for};
pub use quarantine::{QuarantinePolicy, should_quarantine};
pub use sample::{MAX_SAMPLE_SIZE, sample_size_for};
pub use sprt::{
    Decision, ExactOutcome, Sprt, SprtConfig, exact_outcome, expected_runs,
    operating_characteristic, runs_to_accept_h0_without_failures,
};
pub use verdict::{Verdict, verdict};
