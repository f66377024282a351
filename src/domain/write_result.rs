//! The write summary that mutating routes answer with: the six counters of the RethinkDB
//! write result the original returned, kept so that existing clients can read it.

use serde::{Deserialize, Serialize};

/// Six counters; which one moves depends on the operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Rows deleted.
    pub deleted: u64,
    /// Always 0 (failures are errors, not counts).
    pub errors: u64,
    /// Always 0 (creates answer with the record).
    pub inserted: u64,
    /// Rows changed.
    pub replaced: u64,
    /// Targets that did not exist.
    pub skipped: u64,
    /// Targets already in the requested state.
    pub unchanged: u64,
}

impl WriteResult {
    /// `deleted: n`.
    pub fn deleted(n: u64) -> Self {
        Self {
            deleted: n,
            ..Self::default()
        }
    }

    /// `replaced: 1`.
    pub fn replaced() -> Self {
        Self {
            replaced: 1,
            ..Self::default()
        }
    }

    /// `unchanged: 1`.
    pub fn unchanged() -> Self {
        Self {
            unchanged: 1,
            ..Self::default()
        }
    }

    /// `skipped: 1`.
    pub fn skipped() -> Self {
        Self {
            skipped: 1,
            ..Self::default()
        }
    }
}
