//! The `triggered` tree, its `triggered_by_epoch` index and the `idempotency` keys; and
//! `remote_triggers`, the copies of other nodes' triggers that deliveries here serve.

use sled::Transactional;
use uuid::Uuid;

use super::deliveries::{FanoutCursor, PreparedDeliveries};
use super::keys::{cursor_key, epoch_key, read_u64, read_uuid};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode, encode_compact, Triggered};
use super::{Result, Store, StoreError};

/// How long an `Idempotency-Key` is remembered: a second trigger of the same registration
/// with the same key within 24 hours answers with the first one and delivers nothing.
pub const IDEMPOTENCY_WINDOW_US: u64 = 24 * 3_600_000_000;

/// An idempotency row's value: when the trigger was made and its id, then, for a key
/// remembered through the group's log, the encoded record.
const REMEMBERED_LEN: usize = 24;

fn remembered(tr: &Triggered) -> Vec<u8> {
    let mut value = tr.epoch_us.to_be_bytes().to_vec();
    value.extend_from_slice(tr.id.as_bytes());
    value
}

fn idempotency_key(registration: &Uuid, key: &str) -> Vec<u8> {
    let mut k = registration.as_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

impl Store {
    /// Records a trigger and its pending fan-out (and its idempotency key), atomically;
    /// with `first_step`, the fan-out's first step too (its deliveries, and the cursor
    /// moved past them or removed).
    pub fn insert_triggered(
        &self,
        tr: &Triggered,
        idempotency: Option<&str>,
        first_step: Option<&PreparedDeliveries>,
    ) -> Result<()> {
        let t = self.t();
        let record = encode(tr)?;
        let cursor = encode_compact(&FanoutCursor {
            registration_id: tr.registration_id,
            after: None,
        })?;
        let first_batch = first_step.map(PreparedDeliveries::batch);
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
        match v.get(REMEMBERED_LEN..) {
            Some(payload) if !payload.is_empty() => decode(payload).map(Some),
            _ => self.triggered(&read_uuid(&v, 8)?),
        }
    }

    /// Remembers `key` for `tr` with the whole record, so that any voter of the
    /// registration's group can answer a repeated trigger (replicated shards: the trigger
    /// itself stays on the node that took it).
    pub fn remember_trigger(&self, tr: &Triggered, key: &str) -> Result<()> {
        let mut value = remembered(tr);
        value.extend_from_slice(&encode(tr)?);
        self.t()
            .idempotency
            .insert(idempotency_key(&tr.registration_id, key), value)?;
        Ok(())
    }

    /// The remembered triggers carrying their record (see [`Store::remember_trigger`]) of
    /// the registrations whose ids satisfy `in_group`, as stored rows.
    pub(super) fn export_remembered(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        for item in self.t().idempotency.iter() {
            let (k, v) = item?;
            if v.len() > REMEMBERED_LEN && in_group(&read_uuid(&k, 0)?) {
                rows.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(rows)
    }

    /// Makes the remembered triggers with their record of the group `in_group` tells
    /// exactly `rows` (a snapshot's); keys remembered only here stay.
    pub(super) fn replace_remembered(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        rows: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, _) in self.export_remembered(in_group)? {
            batch.remove(k);
        }
        for (k, v) in rows {
            if !in_group(&read_uuid(k, 0)?) {
                return Err(StoreError::Corrupt(
                    "a snapshot's remembered trigger is another group's".into(),
                ));
            }
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.t().idempotency.apply_batch(batch)?;
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
