//! pytest adapter against real fixtures.
