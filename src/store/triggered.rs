//! The `triggered` tree, its `triggered_by_epoch` index and the `idempotency` keys; and
//! `remote_triggers`, the copies of other nodes' triggers that deliveries here serve.
//!
//! With replicated shards a trigger is a record of its registration's group: every voter
//! holds it and its idempotency key, and a snapshot carries them ([`TriggersDump`]).

use serde::{Deserialize, Serialize};
use sled::Transactional;
use uuid::Uuid;

use super::deliveries::{DeliveryRow, FanoutCursor};
use super::keys::{cursor_key, epoch_key, read_u64, read_uuid};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode, encode_compact, Triggered};
use super::row_writes::batch_of;
use super::{Result, Store, StoreError};

/// How long an `Idempotency-Key` is remembered: a second trigger of the same registration
/// with the same key within 24 hours answers with the first one and delivers nothing.
pub const IDEMPOTENCY_WINDOW_US: u64 = 24 * 3_600_000_000;

/// An idempotency row's value: when the trigger was made, then its id.
fn remembered(tr: &Triggered) -> Vec<u8> {
    let mut value = tr.epoch_us.to_be_bytes().to_vec();
    value.extend_from_slice(tr.id.as_bytes());
    value
}

/// One group's triggers, as a snapshot carries them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggersDump {
    /// The triggered records.
    pub triggered: Vec<Triggered>,
    /// Their `Idempotency-Key` rows, as stored.
    pub idempotency: Vec<(Vec<u8>, Vec<u8>)>,
}

fn idempotency_key(registration: &Uuid, key: &str) -> Vec<u8> {
    let mut k = registration.as_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

impl Store {
    /// Records a trigger and its pending fan-out (and its idempotency key), atomically;
    /// with `first_step`, the fan-out's first step too (its writes: its deliveries, and
    /// the cursor moved past them or removed). Writing it again changes nothing.
    pub fn insert_triggered(
        &self,
        tr: &Triggered,
        idempotency: Option<&str>,
        first_step: Option<&[DeliveryRow]>,
    ) -> Result<()> {
        let t = self.t();
        let record = encode(tr)?;
        let cursor = encode_compact(&FanoutCursor {
            registration_id: tr.registration_id,
            after: None,
        })?;
        let first_batch = first_step.map(batch_of);
        let remembered = remembered(tr);
        (
            &t.triggered,
            &t.triggered_by_epoch,
            &t.deliveries,
            &t.idempotency,
        )
            .transaction(|(records, by_epoch, deliveries, idem)| {
                records.insert(tr.id.as_bytes(), record.as_slice())?;
                by_epoch.insert(&epoch_key(tr.epoch_us, &tr.id), &[])?;
                match &first_batch {
                    Some(batch) => deliveries.apply_batch(batch)?,
                    None => {
                        deliveries.insert(cursor_key(&tr.id).as_slice(), cursor.as_slice())?;
                    }
                }
                if let Some(key) = idempotency {
                    idem.insert(
                        idempotency_key(&tr.registration_id, key),
                        remembered.as_slice(),
                    )?;
                }
                Ok(())
            })
            .map_err(StoreError::from)
    }

    /// The trigger recorded under `key` for `registration` within the window, if any.
    pub fn idempotent_trigger(
        &self,
        registration: &Uuid,
        key: &str,
        now_us: u64,
    ) -> Result<Option<Triggered>> {
        let Some(v) = self
            .t()
            .idempotency
            .get(idempotency_key(registration, key))?
        else {
            return Ok(None);
        };
        if now_us.saturating_sub(read_u64(&v, 0)?) >= IDEMPOTENCY_WINDOW_US {
            return Ok(None);
        }
        self.triggered(&read_uuid(&v, 8)?)
    }

    /// The triggers of the group whose ids satisfy `in_group` (ids are shard-aligned with
    /// their registration's), and their `Idempotency-Key` rows, as stored.
    pub(super) fn export_triggers(&self, in_group: &dyn Fn(&Uuid) -> bool) -> Result<TriggersDump> {
        let t = self.t();
        let mut dump = TriggersDump::default();
        for item in t.triggered.iter() {
            let (k, v) = item?;
            if in_group(&read_uuid(&k, 0)?) {
                dump.triggered.push(decode(&v)?);
            }
        }
        for item in t.idempotency.iter() {
            let (k, v) = item?;
            if in_group(&read_uuid(&k, 0)?) {
                dump.idempotency.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(dump)
    }

    /// Makes this node's triggers of the group `in_group` tells, and their idempotency
    /// rows, exactly `dump`'s (a snapshot's). Idempotent.
    pub(super) fn replace_triggers(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        dump: &TriggersDump,
    ) -> Result<()> {
        let outside = dump.triggered.iter().map(|t| t.id);
        let keyed = dump.idempotency.iter().map(|(k, _)| read_uuid(k, 0));
        for id in outside.map(Ok).chain(keyed) {
            if !in_group(&id?) {
                return Err(StoreError::Corrupt(
                    "a snapshot's trigger is another group's".into(),
                ));
            }
        }
        let t = self.t();
        let mut records = sled::Batch::default();
        let mut by_epoch = sled::Batch::default();
        let mut idem = sled::Batch::default();
        let stored = self.export_triggers(in_group)?;
        for tr in stored.triggered {
            records.remove(tr.id.as_bytes());
            by_epoch.remove(&epoch_key(tr.epoch_us, &tr.id));
        }
        for (k, _) in stored.idempotency {
            idem.remove(k);
        }
        for tr in &dump.triggered {
            records.insert(tr.id.as_bytes(), encode(tr)?);
            by_epoch.insert(&epoch_key(tr.epoch_us, &tr.id), &[]);
        }
        for (k, v) in &dump.idempotency {
            idem.insert(k.as_slice(), v.as_slice());
        }
        t.triggered.apply_batch(records)?;
        t.triggered_by_epoch.apply_batch(by_epoch)?;
        t.idempotency.apply_batch(idem)?;
        Ok(())
    }

    /// Forgets idempotency keys older than the window; returns how many.
    pub fn sweep_idempotency(&self, now_us: u64) -> Result<u64> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.t().idempotency.iter() {
            let (k, v) = item?;
            if now_us.saturating_sub(read_u64(&v, 0)?) >= IDEMPOTENCY_WINDOW_US {
                batch.remove(k);
                n += 1;
            }
        }
        self.t().idempotency.apply_batch(batch)?;
        Ok(n)
    }

    /// The triggered record with `id`.
    pub fn triggered(&self, id: &Uuid) -> Result<Option<Triggered>> {
        self.t()
            .triggered
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// A page of every triggered record, oldest first.
    pub fn list_triggered(&self, req: PageRequest) -> Result<Page<Triggered>> {
        let ids = self.page_index(&self.t().triggered_by_epoch, &[], req)?;
        Ok(Page::new(req, self.load_all(ids, |id| self.triggered(id))?))
    }

    /// Keeps a copy of another node's trigger (its body and event) for local deliveries.
    pub fn keep_remote_trigger(&self, t: &Triggered) -> Result<()> {
        if !self.t().remote_triggers.contains_key(t.id.as_bytes())? {
            self.t()
                .remote_triggers
                .insert(t.id.as_bytes(), encode(t)?)?;
        }
        Ok(())
    }

    /// A trigger recorded here, or the copy of another node's.
    pub fn trigger_for_delivery(&self, id: &Uuid) -> Result<Option<Triggered>> {
        match self.triggered(id)? {
            Some(t) => Ok(Some(t)),
            None => self
                .t()
                .remote_triggers
                .get(id.as_bytes())?
                .map(|v| decode(&v))
                .transpose(),
        }
    }
}
