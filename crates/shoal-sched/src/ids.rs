//! Identifiers the scheduler hands out and accepts: slots, leases, executions.

use std::fmt;

/// A runner slot: the worker it lives on plus its stable number there (the
/// `SHOAL_SLOT` the runner sees). Local mode has one worker, number 0.
///
/// Knowing the worker lets a retry prefer another machine, not only another
/// slot of the machine it failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    pub worker: u32,
    pub index: u32,
}

impl SlotId {
    pub const fn new(worker: u32, index: u32) -> Self {
        Self { worker, index }
    }

    /// Slot `index` of the single local worker.
    pub const fn local(index: u32) -> Self {
        Self { worker: 0, index }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}/s{}", self.worker, self.index)
    }
}

/// A lease (one batch handed to one slot). Never reused within a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease-{}", self.0)
    }
}

/// One planned execution: a (test, repetition) pair. Stable across its
/// attempts, so a retry keeps the id and bumps the attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecId(pub u32);

impl ExecId {
    pub(crate) fn idx(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exec-{}", self.0)
    }
}
