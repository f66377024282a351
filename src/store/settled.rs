//! Settled first attempts: deliveries whose first attempt succeeded, written together.
//!
//! Almost every delivery succeeds at its first attempt, and its record is then final.
//! Writing one record per delivery was the largest storage cost left on the hot path (a
//! tree insert, its share of node splits and log bytes each), so an outcome batch writes
//! the records of the first attempts it settles as one row per pending batch instead:
//!
//! - `s` ++ the pending-batch key without its `b` (triggered id ++ the first delivery's
//!   subscription epoch and id) ++ a database-unique id (u64, big-endian) → the
//!   [`Delivery`] records, all `succeeded`.
//!
//! A delivery is in at most one place: a record (`r`), a settled row, or a pending batch
//! without either (waiting). Listings merge the three in record-key order. Keyed by
//! their pending batch, settled rows also tell a handed-over batch sent again after it
//! completed.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::deliveries::{key_body, prefixed, Delivery, RECORD};
use super::records::{decode, encode_compact};
use super::{Result, Store};

/// Key prefix of settled rows.
pub(super) const SETTLED: u8 = b's';

/// The prefix of the settled rows of the pending batch `batch_key`.
fn settled_prefix(batch_key: &[u8]) -> Vec<u8> {
    prefixed(SETTLED, batch_key.get(1..).unwrap_or_default())
}

/// The record key a delivery would have.
pub(super) fn record_key_of(d: &Delivery) -> Vec<u8> {
    prefixed(
        RECORD,
        &key_body(&d.triggered_id, d.subscription_epoch_us, &d.subscription_id),
    )
}

impl Store {
    /// Adds to `batch` one settled row per pending batch for `settled` (records of
    /// succeeded first attempts, by the key of their pending batch).
    pub(super) fn write_settled<'k>(
        &self,
        batch: &mut sled::Batch,
        settled: impl IntoIterator<Item = (&'k [u8], Vec<Delivery>)>,
    ) -> Result<()> {
        for (batch_key, records) in settled {
            let mut key = settled_prefix(batch_key);
            key.extend_from_slice(&self.inner.db.generate_id()?.to_be_bytes());
            batch.insert(key, encode_compact(&records)?);
        }
        Ok(())
    }

    /// Whether a first attempt of the pending batch `batch_key` settled (the batch was
    /// accepted before, even if its row is gone).
    pub(super) fn has_settled(&self, batch_key: &[u8]) -> Result<bool> {
        Ok(self
            .t()
            .deliveries
            .scan_prefix(settled_prefix(batch_key))
            .next()
            .transpose()?
            .is_some())
    }

    /// `triggered`'s settled deliveries, by record key.
    pub(super) fn settled_of(&self, triggered: &Uuid) -> Result<BTreeMap<Vec<u8>, Delivery>> {
        let mut out = BTreeMap::new();
        for row in self
            .t()
            .deliveries
            .scan_prefix(prefixed(SETTLED, triggered.as_bytes()))
            .values()
        {
            let records: Vec<Delivery> = decode(&row?)?;
            out.extend(records.into_iter().map(|d| (record_key_of(&d), d)));
        }
        Ok(out)
    }

    /// The record keys of `triggered`'s settled deliveries.
    pub(super) fn settled_keys_of(&self, triggered: &Uuid) -> Result<HashSet<Vec<u8>>> {
        Ok(self.settled_of(triggered)?.into_keys().collect())
    }

    /// Removes the settled rows whose deliveries all finished before `cutoff_us`; returns
    /// how many deliveries went.
    pub(super) fn sweep_settled(&self, cutoff_us: u64) -> Result<u64> {
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for row in self.t().deliveries.scan_prefix([SETTLED]) {
            let (key, value) = row?;
            let records: Vec<Delivery> = decode(&value)?;
            if records
                .iter()
                .all(|d| d.finished_us.is_some_and(|f| f < cutoff_us))
            {
                batch.remove(key);
                removed += records.len() as u64;
            }
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(removed)
    }
}
