//! The messages of the delivery engine: what the supervisor serves (from the node, its
//! workers and the outcome writer) and what a worker serves. Apart from the actors, so that
//! the supervisor, its workers and the writer depend on these rather than on each other.

use ractor::ActorId;
use ractor_cluster::RactorMessage;

use crate::store::DueEntry;

/// Requests the supervisor serves.
#[derive(RactorMessage)]
pub enum DeliveryMsg {
    /// New work may be due now (after a redeliver).
    Wake,
    /// First attempts of deliveries just created.
    Accepted(Vec<DueEntry>),
    /// First attempts of the pending batches of groups this node took the lead of (those
    /// in flight here already are left out, and those flushed after `epoch`).
    Resumed {
        /// The first attempts read.
        entries: Vec<DueEntry>,
        /// The number of the last flush before they were read.
        epoch: u64,
    },
    /// An attempt a worker left undone: its group's lead is being handed over.
    Skipped(DueEntry),
    /// Periodic: poll, flush, check deadlines, run the retention sweep when due.
    Tick,
    /// Outcomes handed to the outcome writer are on disk (or failed to be written).
    Flushed {
        /// Their record keys, to free.
        keys: Vec<Vec<u8>>,
        /// How many of them ended their delivery.
        finished: usize,
        /// First attempts whose outcomes could not be written, to make again.
        again: Vec<DueEntry>,
    },
    /// A worker found the queue empty and waits to be woken.
    Idle(ActorId),
}

/// Requests a worker serves.
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Make the queued attempts until the queue is empty.
    Drain,
}
