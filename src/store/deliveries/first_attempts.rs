//! First attempts (prefix `b`): the deliveries a fan-out step (or a handed-over batch)
//! created and that have not been attempted yet.
//!
//! They are not written one by one, because a delivery is attempted within moments of its
//! creation: a record and a due entry per delivery at creation would only be read back
//! and removed by its first outcome. A step writes a single pending-batch row and hands the
//! attempts to the supervisor in memory; each delivery's record (or settled row) is written
//! by its first outcome, and the row is removed with the outcome that completes it.
//!
//! - `b` ++ the record key body (without `r`) of the batch's first delivery →
//!   [`PendingBatch`]. The key is deterministic, so a batch handed over twice is recognised.
//! - A delivery of a pending batch without a record has not been attempted (or its attempt
//!   was not recorded): after a restart it is attempted again (at-least-once), and counts
//!   and listings show it as pending.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::{delivery_id, Delivery, DueEntry, NewDelivery, Scheduled};
use crate::store::keys::{key_body, prefixed, read_uuid, BATCH};
use crate::store::records::decode;
use crate::store::row_writes::write_rows;
use crate::store::{Result, Store};

/// Deliveries created together and waiting for their first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingBatch {
    /// The triggered registration.
    pub registration_id: Uuid,
    /// When they were created (their first attempt's due time).
    pub queued_us: u64,
    /// The subscriptions to serve.
    pub items: Vec<NewDelivery>,
}

/// The key of the pending batch whose first delivery is `first` (of trigger `triggered`).
pub(super) fn batch_key(triggered: &Uuid, first: &NewDelivery) -> Vec<u8> {
    prefixed(
        BATCH,
        &key_body(
            triggered,
            first.subscription_epoch_us,
            &first.subscription_id,
        ),
    )
}

/// The first-attempt entry of one delivery of a pending batch (`subscriptions_read_at`:
/// see [`Scheduled::Batch`]).
pub(super) fn first_attempt(
    batch_key: &[u8],
    triggered: &Uuid,
    batch: &PendingBatch,
    item: &NewDelivery,
    subscriptions_read_at: Option<u64>,
) -> DueEntry {
    DueEntry {
        scheduled: Scheduled::Batch {
            key: batch_key.to_vec(),
            registration_id: batch.registration_id,
            subscriptions_read_at,
        },
        record_key: item.record_key(triggered),
        due_us: batch.queued_us,
        delivery_id: delivery_id(triggered, &item.subscription_id),
        account_id: item.account_id,
        attempts: 0,
    }
}

/// How many deliveries of each open pending batch still wait for their first outcome, so
/// that the outcome batch completing one removes its row.
#[derive(Default)]
pub(in crate::store) struct OpenBatches {
    remaining: Mutex<HashMap<Vec<u8>, usize>>,
}

impl OpenBatches {
    /// Tracks a batch written (or found at start-up) with `waiting` deliveries.
    pub(super) fn opened(&self, key: Vec<u8>, waiting: usize) {
        self.lock().insert(key, waiting);
    }

    /// The batches that `closing` (outcomes per batch key, not yet written) completes.
    pub(super) fn completed_by(&self, closing: &HashMap<Vec<u8>, usize>) -> Vec<Vec<u8>> {
        let remaining = self.lock();
        closing
            .iter()
            .filter(|(key, n)| remaining.get(*key).is_some_and(|left| left <= n))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Counts the outcomes in `closing` as written.
    pub(super) fn close(&self, closing: HashMap<Vec<u8>, usize>) {
        let mut remaining = self.lock();
        for (key, n) in closing {
            if let Some(left) = remaining.get_mut(&key) {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    remaining.remove(&key);
                }
            }
        }
    }

    /// Forgets the batches `keys` (their rows are gone: complete, or replaced by a
    /// snapshot's).
    pub(super) fn forget<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let mut keys = keys.into_iter().peekable();
        if keys.peek().is_none() {
            return;
        }
        let mut remaining = self.lock();
        for key in keys {
            remaining.remove(key);
        }
    }

    /// The map only holds counts: a panic while holding the lock leaves nothing torn.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, usize>> {
        self.remaining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store {
    /// The first attempts that the pending batches of the subscribers `mine` accepts still
    /// wait for, found at start-up or on taking the lead of a group (the supervisor
    /// dispatches them); those rows whose deliveries all have records are removed. Other
    /// subscribers' batches are left as they are (their group's leader serves them).
    ///
    /// Replicated, removing a done batch's row is this node's alone, outside the group's
    /// log: harmless, since such a row shows no delivery, and the next leader removes its
    /// own copy when it resumes.
    ///
    /// A batch is judged by its first item's subscriber (see
    /// [`delivery_row_subscriber`](crate::store::delivery_row_subscriber)).
    pub fn resume_first_attempts(&self, mine: &dyn Fn(&Uuid) -> bool) -> Result<Vec<DueEntry>> {
        let deliveries = &self.t().deliveries;
        let mut entries = Vec::new();
        let mut done = Vec::new();
        for row in deliveries.scan_prefix([BATCH]) {
            let (key, value) = row?;
            let triggered = read_uuid(&key, 1)?;
            let batch: PendingBatch = match decode(&value) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "a pending batch is unreadable; leaving it");
                    continue;
                }
            };
            if !batch.items.first().is_some_and(|i| mine(&i.account_id)) {
                continue;
            }
            let waiting = self.waiting_in(&key, &triggered, &batch)?;
            if waiting.is_empty() {
                done.push((key, None::<&[u8]>));
            } else {
                self.inner.open_batches.opened(key.to_vec(), waiting.len());
                entries.extend(waiting);
            }
        }
        write_rows(deliveries, &done)?;
        Ok(entries)
    }

    /// `triggered`'s deliveries to the subscribers `mine` accepts that wait for their first
    /// attempt, as their records will read until it is made, by record key.
    pub(super) fn unattempted_of(
        &self,
        triggered: &Uuid,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<BTreeMap<Vec<u8>, Delivery>> {
        let deliveries = &self.t().deliveries;
        let mut out = BTreeMap::new();
        for row in deliveries.scan_prefix(prefixed(BATCH, triggered.as_bytes())) {
            let (key, value) = row?;
            let batch: PendingBatch = decode(&value)?;
            for entry in self.waiting_in(&key, triggered, &batch)? {
                if !mine(&entry.account_id) {
                    continue;
                }
                let record = entry.first_record(batch.registration_id);
                out.insert(entry.record_key, record);
            }
        }
        Ok(out)
    }

    /// The first attempts of pending batch `batch` (under `key`) whose deliveries have
    /// neither a record nor a place in one of its settled rows.
    fn waiting_in(
        &self,
        key: &[u8],
        triggered: &Uuid,
        batch: &PendingBatch,
    ) -> Result<Vec<DueEntry>> {
        let settled = self.settled_keys_in(key)?;
        let mut waiting = Vec::new();
        for item in &batch.items {
            let record_key = item.record_key(triggered);
            if !settled.contains(&record_key) && !self.t().deliveries.contains_key(&record_key)? {
                waiting.push(first_attempt(key, triggered, batch, item, None));
            }
        }
        Ok(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_completes_when_all_its_outcomes_are_written() {
        let open = OpenBatches::default();
        open.opened(b"b1".to_vec(), 3);
        let two = HashMap::from([(b"b1".to_vec(), 2), (b"other".to_vec(), 1)]);
        assert!(open.completed_by(&two).is_empty());
        open.close(two);
        let one = HashMap::from([(b"b1".to_vec(), 1)]);
        assert_eq!(open.completed_by(&one), vec![b"b1".to_vec()]);
        open.close(one.clone());
        assert!(
            open.completed_by(&one).is_empty(),
            "closed batches are forgotten"
        );
    }
}
