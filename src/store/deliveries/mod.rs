//! The delivery store: everything the delivery engine writes, in the one `deliveries` tree,
//! told apart by a one-byte key prefix. One tree, so that every step of the engine (a
//! fan-out step, a batch of outcomes) is one atomic `apply_batch` rather than a multi-tree
//! transaction.
//!
//! # Key layout
//!
//! Numbers are big-endian (byte order is numeric order); `(n)` is a length in bytes. Most
//! keys embed a delivery's *record key body*, so that a trigger's rows of every kind sort
//! in subscription order:
//!
//! ```text
//!                +-------------------+---------------------------+----------------------+
//! key body (40): | triggered id (16) | subscription epoch µs (8) | subscription id (16) |
//!                +-------------------+---------------------------+----------------------+
//!
//! r | key body                                        -> Delivery
//! b | key body of the batch's first delivery          -> PendingBatch
//! s | key body of the batch's first delivery | unique id (8)
//!                                                     -> succeeded first attempts
//!                                                        (compactly: [`settled_codec`])
//! d | due µs (8) | key body                           -> delivery id (16) | subscriber id (16)
//!                                                        | attempts made (2)
//! c | triggered id (16)                               -> FanoutCursor
//! h | peer node id | 0 | triggered id (16) | step written µs (8) | n (4)
//!                                                     -> [NewDelivery]
//! f | subscriber account id (16)                      -> failed_count (8)
//! g | subscriber account id (16)                      -> when its endpoint answered 410 (8)
//! ```
//!
//! | prefix | rows | module |
//! |--------|------|--------|
//! | `r` | records: deliveries skipped, or not settled by their first outcome | [`records`] |
//! | `b` | pending batches: deliveries waiting for their first attempt | [`first_attempts`] |
//! | `s` | settled rows: succeeded first attempts, per outcome batch and pending batch | [`settled`] |
//! | `d` | the due queue of retries and redeliveries, in time order | [`due`] |
//! | `c` | cursors of the fan-outs not finished | [`cursors`] |
//! | `h` | batches waiting to be handed to the node that owns their subscribers | [`handoffs`] |
//! | `f` | subscribers' `failed_count`s (absent: 0) | [`failed_counts`] |
//! | `g` | subscribers whose endpoint answered `410 Gone` (deliveries stopped) | [`stopped`] |
//!
//! The keys are built in [`crate::store::keys`]. Creating deliveries ([`create`]),
//! recording outcomes ([`outcomes`]), listing ([`listing`]) and the retention sweep
//! ([`sweep`]) each span several prefixes.
//!
//! # Replicated
//!
//! The rows of prefixes `r`, `b`, `s`, `d`, `f` and `g` belong to the shard group of their
//! subscriber account ([`rows`]), the cursors and handoff batches to the trigger's
//! ([`handoffs`]). Every engine write is computed first (the `prepare_` functions) as a
//! list of [`DeliveryRow`]s, then written as it is: by this node, or by every voter of the
//! group through its log. The engine's scans take a filter on the subscriber, so a node
//! serves only the groups it leads.
//!
//! # Where a delivery is
//!
//! A delivery is in one place at a time: its record, a settled row, or — until its first
//! outcome — only in its pending batch. A pending-batch row stays until every delivery of
//! the batch has an outcome, so the delivery is "waiting" only when it is in neither of the
//! other two. Listings merge the three in record-key order.
//!
//! Rows written once or more per delivery (records, settled rows, pending and handoff
//! batches, cursors) use the compact (bincode) encoding.

mod create;
mod cursors;
mod due;
mod failed_counts;
mod first_attempts;
#[cfg(test)]
mod fixtures;
mod handoffs;
mod legacy;
mod listing;
mod outcomes;
mod records;
mod rows;
mod settled;
mod settled_codec;
mod stopped;
mod sweep;
mod types;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use create::PreparedDeliveries;
pub(in crate::store) use first_attempts::OpenBatches;
pub use outcomes::PreparedOutcomes;
pub(in crate::store) use rows::check_delivery_rows;
pub use rows::delivery_row_subscriber;
pub use types::{
    Attempt, Delivery, DeliveryCounts, DeliveryState, DueEntry, FailedCountChange, FanoutCursor,
    FanoutStep, Handoff, NewDelivery, Outcome, Scheduled,
};

use super::keys::{prefixed, CURSOR, FAILED_COUNT, HANDOFF};
use super::Result;

/// A row of the `deliveries` tree to write (`Some`) or remove (`None`).
pub type DeliveryRow = (Vec<u8>, Option<Vec<u8>>);

/// Moves the rows of the separate trees an earlier release used (`failed_counts`,
/// `fanout`, `handoff`) under their prefixes in `deliveries`, then drops those trees.
pub(super) fn migrate_legacy_trees(db: &sled::Db, deliveries: &sled::Tree) -> Result<()> {
    let names = db.tree_names();
    for (name, kind) in [
        ("failed_counts", FAILED_COUNT),
        ("fanout", CURSOR),
        ("handoff", HANDOFF),
    ] {
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let legacy = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for item in legacy.iter() {
            let (k, v) = item?;
            batch.insert(prefixed(kind, &k), v);
        }
        deliveries.apply_batch(batch)?;
        db.drop_tree(name)?;
    }
    Ok(())
}

/// Takes a lock that only guards `()`: a panic while holding it leaves nothing torn.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
