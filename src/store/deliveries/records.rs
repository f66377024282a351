//! Delivery records (prefix `r`): a delivery skipped at creation, or one whose first
//! outcome did not settle it (see [`super::settled`]), has its own record.
//!
//! Keyed by trigger, then subscription epoch and id, so a trigger's deliveries list in
//! subscription order, and the key is deterministic: a resent fan-out batch overwrites
//! nothing that exists.

use super::legacy::decode_delivery;
use super::types::Delivery;
use crate::store::{Result, Store};

impl Store {
    /// The delivery stored under `record_key`.
    pub fn delivery_at(&self, record_key: &[u8]) -> Result<Option<Delivery>> {
        self.t()
            .deliveries
            .get(record_key)?
            .map(|v| decode_delivery(&v))
            .transpose()
    }
}
