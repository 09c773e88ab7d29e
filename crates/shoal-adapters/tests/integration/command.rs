//! command adapter against real fixtures.
