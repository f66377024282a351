//! Handoff batches (prefix `h`): a fan-out step's deliveries for subscribers owned by
//! another node, kept until that node has persisted them, oldest first per node. A step
//! writes them in the batch that moves its cursor (see [`super::create`]), so none is lost
//! or written twice across a crash.

use uuid::Uuid;

use super::types::{Handoff, NewDelivery};
use crate::store::keys::{handoff_key, handoff_prefix, read_uuid};
use crate::store::records::{decode, encode_compact};
use crate::store::{Result, Store};

impl Store {
    /// The oldest batches waiting to be handed to `peer`.
    pub fn handoffs_for(&self, peer: &str, limit: usize) -> Result<Vec<Handoff>> {
        let prefix = handoff_prefix(peer);
        self.t()
            .deliveries
            .scan_prefix(&prefix)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok(Handoff {
                    triggered: read_uuid(&k, prefix.len())?,
                    key: k.to_vec(),
                    items: decode(&v)?,
                })
            })
            .collect()
    }

    /// Forgets a batch the peer has persisted.
    pub fn remove_handoff(&self, key: &[u8]) -> Result<()> {
        self.t().deliveries.remove(key)?;
        Ok(())
    }

    /// Replaces the batch at `key` with batches for other peers, atomically (its
    /// subscribers' shards moved to other nodes).
    pub fn redirect_handoff(
        &self,
        key: &[u8],
        triggered: &Uuid,
        to: &[(String, Vec<NewDelivery>)],
        now_us: u64,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.remove(key);
        for (i, (peer, items)) in to.iter().enumerate() {
            batch.insert(
                handoff_key(peer, triggered, now_us, i as u32),
                encode_compact(items)?,
            );
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(())
    }
}
