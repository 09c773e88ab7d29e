//! cargo adapter against real fixtures.
