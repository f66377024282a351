//! `failed_count`s (prefix `f`): failed attempts in a row per subscriber account (absent:
//! 0). A subscriber at the limit is skipped at trigger time; a success resets the count.
//!
//! Outcome batches read, change and write counts back, so every writer of a count holds
//! the counts lock ([`Store::lock_counts`]); a replicated group's leader instead computes
//! its subscribers' counts one engine write at a time, and its log writes the values.

use std::collections::HashMap;
use std::sync::MutexGuard;

use uuid::Uuid;

use super::{lock, DeliveryRow};
use crate::store::keys::{failed_count_key, read_u64};
use crate::store::{Result, Store};

impl Store {
    /// The account's `failed_count`.
    pub fn failed_count(&self, id: &Uuid) -> Result<u64> {
        match self.t().deliveries.get(failed_count_key(id))? {
            Some(v) => read_u64(&v, 0),
            None => Ok(0),
        }
    }

    /// Holds the `failed_count` lock: counts are read, changed and written back by
    /// outcome batches, so every other writer of a count takes it too.
    pub(in crate::store) fn lock_counts(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.counts_lock)
    }

    /// Adds the rows of the new `failed_count`s of `counts` (by account) to `rows`; the
    /// caller keeps other writers of the counts out until they are written.
    pub(super) fn failed_count_rows(
        &self,
        rows: &mut Vec<DeliveryRow>,
        counts: HashMap<Uuid, u64>,
    ) -> Result<()> {
        for (account, count) in counts {
            let key = failed_count_key(&account).to_vec();
            if count == 0 {
                // Almost every success resets a count that is already 0 (no key): a
                // read is much cheaper than a logged remove.
                if self.t().deliveries.contains_key(&key)? {
                    rows.push((key, None));
                }
            } else {
                rows.push((key, Some(count.to_be_bytes().to_vec())));
            }
        }
        Ok(())
    }
}
