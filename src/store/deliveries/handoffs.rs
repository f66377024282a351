//! Handoff batches (prefix `h`): a fan-out step's deliveries for subscribers owned by
//! another node, kept until that node has persisted them, oldest first per node. A step
//! writes them in the batch that moves its cursor (see [`super::create`]), so none is lost
//! or written twice across a crash.

use super::types::Handoff;
use crate::store::keys::{handoff_prefix, read_uuid};
use crate::store::records::decode;
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
}
