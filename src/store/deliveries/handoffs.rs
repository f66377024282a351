//! Handoff batches (prefix `h`): a fan-out step's deliveries for subscribers served by
//! another node, kept until that node has persisted them, oldest first per node. A step
//! writes them in the batch that moves its cursor (see [`super::create`]), so none is lost
//! or written twice across a crash.
//!
//! With replicated shards the cursors and handoff batches of a trigger are rows of its
//! registration's group (*fan-out rows*): its leader changes them through the group's log
//! ([`Store::apply_fanout_rows`]), every voter holds them, and a snapshot carries them.

use uuid::Uuid;

use super::types::{Handoff, NewDelivery};
use super::DeliveryRow;
use crate::store::keys::{handoff_key, handoff_prefix, read_uuid, CURSOR, HANDOFF};
use crate::store::records::{decode, encode_compact};
use crate::store::row_writes::write_rows;
use crate::store::{Result, Store, StoreError};

/// Length of a handoff key's end: triggered id (16), step time (8), batch number (4).
const HANDOFF_TAIL: usize = 28;

/// The trigger a fan-out row (a cursor or a handoff batch) belongs to.
fn fanout_row_trigger(key: &[u8]) -> Result<Option<Uuid>> {
    match key.first() {
        Some(&CURSOR) => read_uuid(key, 1).map(Some),
        Some(&HANDOFF) if key.len() > HANDOFF_TAIL => {
            read_uuid(key, key.len() - HANDOFF_TAIL).map(Some)
        }
        _ => Ok(None),
    }
}

impl Store {
    /// The oldest batches waiting to be handed to `peer`, of the triggers `mine` accepts
    /// (replicated, those of the groups this node leads).
    pub fn handoffs_for(
        &self,
        peer: &str,
        limit: usize,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<Handoff>> {
        let prefix = handoff_prefix(peer);
        let mut batches = Vec::new();
        for item in self.t().deliveries.scan_prefix(&prefix) {
            if batches.len() == limit {
                break;
            }
            let (k, v) = item?;
            let triggered = read_uuid(&k, prefix.len())?;
            if mine(&triggered) {
                batches.push(Handoff {
                    triggered,
                    key: k.to_vec(),
                    items: decode(&v)?,
                });
            }
        }
        Ok(batches)
    }

    /// The rows replacing the batch at `key` with batches for other peers (its
    /// subscribers are served by other nodes now); none for `to` empty removes it.
    ///
    /// A trigger's batches are redirected concurrently (one round hands many over), so
    /// two redirects to one peer may run in the same microsecond: the new keys take a
    /// random sequence number, lest the second batch overwrite the first.
    pub fn redirected_handoff(
        &self,
        key: &[u8],
        triggered: &Uuid,
        to: &[(String, Vec<NewDelivery>)],
        now_us: u64,
    ) -> Result<Vec<DeliveryRow>> {
        let mut rows = vec![(key.to_vec(), None)];
        let first = Uuid::new_v4().as_u128() as u32;
        for (i, (peer, items)) in to.iter().enumerate() {
            let key = handoff_key(peer, triggered, now_us, first.wrapping_add(i as u32));
            rows.push((key, Some(encode_compact(items)?)));
        }
        Ok(rows)
    }

    /// Writes fan-out rows (cursors and handoff batches) as they are, atomically: a step
    /// of a replicated fan-out, or a handoff done. Any other row is refused, unwritten.
    pub fn apply_fanout_rows(&self, rows: &[DeliveryRow]) -> Result<()> {
        for (key, _) in rows {
            if fanout_row_trigger(key)?.is_none() {
                return Err(StoreError::Corrupt(
                    "a fan-out write touches a row that is not a cursor or handoff".into(),
                ));
            }
        }
        write_rows(&self.t().deliveries, rows)?;
        Ok(())
    }

    /// The fan-out rows of the triggers whose ids satisfy `in_group`, as stored.
    pub(in crate::store) fn export_fanout_rows(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let deliveries = &self.t().deliveries;
        let mut rows = Vec::new();
        for item in deliveries
            .scan_prefix([CURSOR])
            .chain(deliveries.scan_prefix([HANDOFF]))
        {
            let (k, v) = item?;
            if fanout_row_trigger(&k)?.is_some_and(|t| in_group(&t)) {
                rows.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(rows)
    }

    /// Makes the fan-out rows of the group `in_group` tells exactly `rows` (a snapshot's).
    pub(in crate::store) fn replace_fanout_rows(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        rows: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, _) in self.export_fanout_rows(in_group)? {
            batch.remove(k);
        }
        for (k, v) in rows {
            if !fanout_row_trigger(k)?.is_some_and(|t| in_group(&t)) {
                return Err(StoreError::Corrupt(
                    "a snapshot's fan-out row is another group's".into(),
                ));
            }
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(())
    }
}
