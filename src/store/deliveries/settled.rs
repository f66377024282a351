//! Settled first attempts (prefix `s`): deliveries whose first attempt succeeded, written
//! together.
//!
//! Almost every delivery succeeds at its first attempt, and its record is then final. A
//! record per delivery costs a tree insert, its share of node splits and its log bytes, so
//! an outcome batch writes the records of the first attempts it settles as one row per
//! pending batch instead:
//!
//! - `s` ++ the pending-batch key without its `b` (triggered id ++ the first delivery's
//!   subscription epoch and id) ++ a database-unique id (u64, big-endian; one no row has,
//!   since a replicated group's rows may come from other nodes) → the [`Delivery`]
//!   records, all `succeeded`.
//!
//! Keyed by their pending batch, settled rows also tell a handed-over batch sent again
//! after it completed.

use std::collections::HashSet;
use std::iter::Peekable;

use uuid::Uuid;

use super::settled_codec::{decode_settled, decode_settled_keys, encode_settled};
use super::types::Delivery;
use super::DeliveryRow;
use crate::store::keys::{prefixed, SETTLED};
use crate::store::{Result, Store};

/// A trigger's settled deliveries in record-key order (see [`Store::settled_in_order`]).
///
/// A pending batch covers a range of record keys that no other batch of the trigger
/// overlaps (a fan-out step's subscriptions, in order), and its rows sort by its first
/// key: sorting each batch's deliveries and taking the batches in row order sorts all.
pub(super) struct SettledInOrder {
    rows: Peekable<sled::Iter>,
    group: std::vec::IntoIter<Keyed>,
}

impl SettledInOrder {
    /// The settled deliveries of the next pending batch, sorted.
    fn next_group(&mut self) -> Result<Option<Vec<Keyed>>> {
        let Some(first) = self.rows.next() else {
            return Ok(None);
        };
        let (key, value) = first?;
        let batch = batch_part(&key).to_vec();
        let mut items = keyed(decode_settled(&value)?);
        while let Some(Ok((next, _))) = self.rows.peek() {
            if batch_part(next) != batch.as_slice() {
                break;
            }
            if let Some(row) = self.rows.next() {
                items.extend(keyed(decode_settled(&row?.1)?));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(items))
    }
}

impl Iterator for SettledInOrder {
    type Item = Result<Keyed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.group.next() {
                return Some(Ok(item));
            }
            match self.next_group() {
                Ok(Some(items)) => self.group = items.into_iter(),
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A delivery with its record key.
type Keyed = (Vec<u8>, Delivery);

/// Records with their record keys.
fn keyed(records: Vec<Delivery>) -> Vec<Keyed> {
    records.into_iter().map(|d| (d.record_key(), d)).collect()
}

/// A settled row's key without its unique id: the prefix shared by its batch's rows.
fn batch_part(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(8)]
}

/// The prefix of the settled rows of the pending batch `batch_key`.
fn settled_prefix(batch_key: &[u8]) -> Vec<u8> {
    prefixed(SETTLED, batch_key.get(1..).unwrap_or_default())
}

impl Store {
    /// Adds to `rows` one settled row per pending batch for `settled` (records of
    /// succeeded first attempts, by the key of their pending batch).
    pub(super) fn settled_rows<'k>(
        &self,
        rows: &mut Vec<DeliveryRow>,
        settled: impl IntoIterator<Item = (&'k [u8], Vec<Delivery>)>,
    ) -> Result<()> {
        for (batch_key, records) in settled {
            let prefix = settled_prefix(batch_key);
            // Ids are unique in this database, but a replicated group's rows may come from
            // an earlier leader's: never overwrite one.
            let key = loop {
                let mut key = prefix.clone();
                key.extend_from_slice(&self.inner.db.generate_id()?.to_be_bytes());
                if !self.t().deliveries.contains_key(&key)? {
                    break key;
                }
            };
            rows.push((key, Some(encode_settled(&records)?)));
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

    /// `triggered`'s settled deliveries in record-key order, read one pending batch at a
    /// time (so a page near the start does not decode them all).
    pub(super) fn settled_in_order(&self, triggered: &Uuid) -> SettledInOrder {
        SettledInOrder {
            rows: self
                .t()
                .deliveries
                .scan_prefix(prefixed(SETTLED, triggered.as_bytes()))
                .peekable(),
            group: Vec::new().into_iter(),
        }
    }

    /// The record keys of the settled deliveries of the pending batch `batch_key`.
    pub(super) fn settled_keys_in(&self, batch_key: &[u8]) -> Result<HashSet<Vec<u8>>> {
        let mut keys = HashSet::new();
        for row in self
            .t()
            .deliveries
            .scan_prefix(settled_prefix(batch_key))
            .values()
        {
            keys.extend(decode_settled_keys(&row?)?.into_iter().map(|(key, _)| key));
        }
        Ok(keys)
    }

    /// How many of `triggered`'s deliveries to the subscribers `mine` accepts are settled.
    pub(super) fn settled_count(
        &self,
        triggered: &Uuid,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<u64> {
        let mut n = 0;
        for row in self
            .t()
            .deliveries
            .scan_prefix(prefixed(SETTLED, triggered.as_bytes()))
            .values()
        {
            let keys = decode_settled_keys(&row?)?;
            n += keys.iter().filter(|(_, account)| mine(account)).count() as u64;
        }
        Ok(n)
    }
}
