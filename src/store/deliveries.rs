//! Delivery state: fan-out cursors, one record per subscriber delivery, the due queue,
//! handoff batches and `failed_count`s — all in the `deliveries` tree, by key prefix, so
//! that every step of the delivery engine (a fan-out step, a batch of outcomes) is one
//! atomic `apply_batch` rather than a multi-tree transaction:
//! - `r` ++ triggered id ++ subscription epoch ++ subscription id → [`Delivery`]
//!   (so a trigger's deliveries list in subscription order, and the key is deterministic:
//!   a resent fan-out batch overwrites nothing that exists);
//! - `b` ++ the record key (without `r`) of its first delivery → deliveries waiting for
//!   their first attempt, whose records do not exist yet (see [`super::first_attempts`]);
//! - `s` ++ the pending-batch key (without `b`) ++ unique id → the records of first
//!   attempts of that batch that succeeded, written together by one outcome batch (see
//!   [`super::settled`]);
//! - `d` ++ due µs ++ the record key (without `r`) → delivery id ++ subscriber account id ++
//!   attempts made (u16): the due queue of retries and redeliveries, in time order. The
//!   value carries what an attempt needs, so a worker never reads the record; only the
//!   outcome writer does;
//! - `c` ++ triggered id → [`FanoutCursor`]: a fan-out not finished yet, with the last
//!   subscription index key already handed to delivery, so a restart resumes there;
//! - `h` ++ peer node id ++ 0 ++ triggered id ++ µs ++ n → a batch of [`NewDelivery`]
//!   waiting to be handed to the node that owns its subscribers;
//! - `f` ++ account id → the account's `failed_count` (absent: 0).
//!
//! Records, handoff batches and cursors use the compact (bincode) encoding: they are written
//! once or more per delivery.

use std::collections::HashMap;
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::first_attempts::{batch_key, first_attempt, PendingBatch};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode_compact, Triggered};
use super::{read_u64, read_uuid, Result, Store, StoreError};

const RECORD: u8 = b'r';
const DUE: u8 = b'd';
const CURSOR: u8 = b'c';
const HANDOFF: u8 = b'h';
const FAILED_COUNT: u8 = b'f';

/// The key of an account's `failed_count`.
pub(super) fn failed_count_key(account: &Uuid) -> [u8; 17] {
    let mut k = [FAILED_COUNT; 17];
    k[1..].copy_from_slice(account.as_bytes());
    k
}

/// The key of a trigger's fan-out cursor.
pub(super) fn cursor_key(triggered: &Uuid) -> [u8; 17] {
    let mut k = [CURSOR; 17];
    k[1..].copy_from_slice(triggered.as_bytes());
    k
}

/// Moves the rows of the separate trees an earlier release used (`failed_counts`,
/// `fanout`, `handoff`) under their prefixes in `deliveries`, then drops those trees.
pub(super) fn migrate_legacy_trees(db: &sled::Db, deliveries: &sled::Tree) -> Result<()> {
    let names = db.tree_names();
    for (name, kind) in [
        ("failed_counts", FAILED_COUNT),
        ("fanout", CURSOR),
        ("handoff", HANDOFF),
    ] {
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        let legacy = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for item in legacy.iter() {
            let (k, v) = item?;
            batch.insert(prefixed(kind, &k), v);
        }
        deliveries.apply_batch(batch)?;
        db.drop_tree(name)?;
    }
    Ok(())
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt got a 2xx.
    Succeeded,
    /// Every scheduled attempt failed.
    Failed,
    /// Not attempted: the subscriber's `failed_count` had reached the limit.
    Skipped,
    /// Ended because the subscription or the subscriber account was deleted.
    Cancelled,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (Unix µs).
    pub at_us: u64,
    /// The endpoint's status code, when it answered.
    pub status: Option<u16>,
    /// Why it failed without a status (or with a non-2xx one).
    pub error: Option<String>,
    /// How long it took (µs).
    pub duration_us: u64,
}

/// One subscriber's delivery of one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Deterministic id (the `webhook-id` header), the same on every retry.
    pub id: Uuid,
    /// The trigger.
    pub triggered_id: Uuid,
    /// The triggered registration.
    pub registration_id: Uuid,
    /// The subscription it serves.
    pub subscription_id: Uuid,
    /// Creation time of that subscription (orders a trigger's deliveries).
    pub subscription_epoch_us: u64,
    /// The subscriber.
    pub account_id: Uuid,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending only).
    pub next_attempt_us: Option<u64>,
    /// When it reached a final state.
    pub finished_us: Option<u64>,
}

/// Counts of a trigger's deliveries by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Waiting for an attempt.
    pub pending: u64,
    /// Delivered.
    pub succeeded: u64,
    /// Gave up.
    pub failed: u64,
    /// Not attempted (failed_count limit).
    pub skipped: u64,
    /// Ended by a deletion.
    pub cancelled: u64,
}

/// A fan-out in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutCursor {
    /// The registration being fanned out.
    pub registration_id: Uuid,
    /// Last `subscriptions_by_registration` key already handed over.
    pub after: Option<Vec<u8>>,
}

/// The fan-out side of [`Store::prepare_step`]: where the cursor moves and what other
/// nodes must receive.
#[derive(Debug, Clone, Default)]
pub struct FanoutStep {
    /// Last subscription index key handed over.
    pub after: Option<Vec<u8>>,
    /// True when no subscription remains.
    pub finished: bool,
    /// Batches for subscribers owned by other nodes, by node id.
    pub handoffs: Vec<(String, Vec<NewDelivery>)>,
    /// [`Store::subscription_deletions`] before the step read its subscriptions.
    pub subscriptions_read_at: u64,
}

/// Deliveries prepared for writing ([`Store::prepare_step`]): the writes, and the first
/// attempts they create once written.
pub struct PreparedDeliveries {
    /// Keys to write (`Some`) or remove (`None`) in the `deliveries` tree: kept as a list
    /// so that several steps' writes can go into one batch.
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The pending-batch row's key, when deliveries are created.
    key: Option<Vec<u8>>,
    entries: Vec<DueEntry>,
}

impl PreparedDeliveries {
    /// The writes, for a transaction that includes them.
    pub(super) fn batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        self.add_to(&mut batch);
        batch
    }

    fn add_to(&self, batch: &mut sled::Batch) {
        for (key, value) in &self.writes {
            match value {
                Some(v) => batch.insert(key.as_slice(), v.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
    }
}

/// The next subscriptions a fan-out step serves.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionBatch {
    /// The subscriptions, with their `subscriptions_by_registration` keys.
    pub items: Vec<(Vec<u8>, NewDelivery)>,
    /// True when the registration has more after them.
    pub more: bool,
}

/// A fan-out batch waiting for the node that owns its subscribers.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// Its key in the `handoff` tree (to remove it once handed over).
    pub key: Vec<u8>,
    /// The trigger.
    pub triggered: Uuid,
    /// The subscribers to serve.
    pub items: Vec<NewDelivery>,
}

/// A delivery to create, from one subscription of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its creation time.
    pub subscription_epoch_us: u64,
    /// The subscriber.
    pub account_id: Uuid,
}

impl NewDelivery {
    /// The key of its record for trigger `triggered`.
    pub(super) fn record_key(&self, triggered: &Uuid) -> Vec<u8> {
        record_key(triggered, self.subscription_epoch_us, &self.subscription_id)
    }
}

impl Delivery {
    /// The key of its record (or the one it would have, when it is in a settled row).
    pub(super) fn record_key(&self) -> Vec<u8> {
        record_key(
            &self.triggered_id,
            self.subscription_epoch_us,
            &self.subscription_id,
        )
    }
}

/// The record key of `triggered`'s delivery for the subscription (`epoch_us`,
/// `subscription`).
fn record_key(triggered: &Uuid, epoch_us: u64, subscription: &Uuid) -> Vec<u8> {
    prefixed(RECORD, &key_body(triggered, epoch_us, subscription))
}

/// What scheduled an attempt, and so what its outcome removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduled {
    /// An entry of the due queue (a retry or a redelivery): its full key.
    Queue(Vec<u8>),
    /// A pending batch (a first attempt, whose record its outcome creates).
    Batch {
        /// The batch's key.
        key: Vec<u8>,
        /// The triggered registration (for the record).
        registration_id: Uuid,
        /// [`Store::subscription_deletions`] before the subscription was read here, when
        /// it was (a local fan-out step).
        subscriptions_read_at: Option<u64>,
    },
}

/// An attempt to make: when, which record, and what the attempt needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// What scheduled it.
    pub scheduled: Scheduled,
    /// The record key.
    pub record_key: Vec<u8>,
    /// When it is due (Unix µs).
    pub due_us: u64,
    /// The delivery id (`webhook-id`).
    pub delivery_id: Uuid,
    /// The subscriber.
    pub account_id: Uuid,
    /// Attempts already made.
    pub attempts: u16,
}

impl DueEntry {
    /// The trigger whose delivery this is (`due_entries` checked the key's length).
    pub fn triggered_id(&self) -> Uuid {
        read_uuid(&self.record_key, 1).unwrap_or_default()
    }

    /// The subscription the delivery serves.
    pub fn subscription_id(&self) -> Uuid {
        read_uuid(&self.record_key, 25).unwrap_or_default()
    }

    /// The creation time of that subscription.
    pub fn subscription_epoch_us(&self) -> u64 {
        read_u64(&self.record_key, 17).unwrap_or_default()
    }

    /// The due-queue key of a retry or redelivery.
    pub fn due_key(&self) -> Option<&[u8]> {
        match &self.scheduled {
            Scheduled::Queue(key) => Some(key),
            Scheduled::Batch { .. } => None,
        }
    }
}

/// Length of a due-queue value: delivery id, account id, attempts made.
const DUE_VALUE_LEN: usize = 34;

fn due_value(delivery_id: &Uuid, account_id: &Uuid, attempts: usize) -> [u8; DUE_VALUE_LEN] {
    let mut v = [0u8; DUE_VALUE_LEN];
    v[..16].copy_from_slice(delivery_id.as_bytes());
    v[16..32].copy_from_slice(account_id.as_bytes());
    let attempts = u16::try_from(attempts).unwrap_or(u16::MAX);
    v[32..].copy_from_slice(&attempts.to_be_bytes());
    v
}

/// The recorded result of one attempt, to apply in a batch.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The due entry that scheduled this attempt.
    pub due: DueEntry,
    /// The attempt, or `None` when the delivery ended without one (deleted target).
    pub attempt: Option<Attempt>,
    /// The new state.
    pub state: DeliveryState,
    /// The next attempt's due time, when there is one.
    pub next_due_us: Option<u64>,
    /// `failed_count` change for the subscriber.
    pub failed_count: FailedCountChange,
}

/// What an outcome does to the subscriber's `failed_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedCountChange {
    /// Leave it.
    Keep,
    /// +1 (a failed attempt).
    Increment,
    /// 0 (a success).
    Reset,
}

fn handoff_prefix(peer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(peer.len() + 2);
    k.push(HANDOFF);
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k
}

/// The record key without its kind byte: triggered ++ epoch ++ subscription.
pub(super) fn key_body(triggered: &Uuid, epoch_us: u64, subscription: &Uuid) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(triggered.as_bytes());
    k[16..24].copy_from_slice(&epoch_us.to_be_bytes());
    k[24..].copy_from_slice(subscription.as_bytes());
    k
}

/// `body` behind the key prefix `kind`.
pub(super) fn prefixed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + body.len());
    k.push(kind);
    k.extend_from_slice(body);
    k
}

fn due_key(due_us: u64, key_body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key_body.len());
    k.push(DUE);
    k.extend_from_slice(&due_us.to_be_bytes());
    k.extend_from_slice(key_body);
    k
}

/// The deterministic delivery id of (trigger, subscription).
pub fn delivery_id(triggered: &Uuid, subscription: &Uuid) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(triggered.as_bytes());
    h.update(subscription.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Collects one page of rows offered in order, decoding only the rows it keeps.
struct PageBuilder {
    skip: usize,
    take: usize,
    seen: usize,
    items: Vec<Delivery>,
}

impl PageBuilder {
    /// Offers the next row; true once the page is full.
    fn offer(&mut self, row: impl FnOnce() -> Result<Delivery>) -> Result<bool> {
        if self.items.len() < self.take && self.seen >= self.skip {
            self.items.push(row()?);
        }
        self.seen = self.seen.saturating_add(1);
        Ok(self.items.len() >= self.take)
    }
}

/// Takes a lock that only guards `()`: a panic while holding it leaves nothing torn.
fn lock(m: &std::sync::Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Records the fan-out of a new trigger (with the triggered row, atomically).
    pub fn start_fanout(&self, triggered: &Uuid, cursor: &FanoutCursor) -> Result<()> {
        self.t()
            .deliveries
            .insert(cursor_key(triggered), encode_compact(cursor)?)?;
        Ok(())
    }

    /// Every unfinished fan-out (resumed at start-up).
    pub fn fanouts(&self) -> Result<Vec<(Uuid, FanoutCursor)>> {
        self.t()
            .deliveries
            .scan_prefix([CURSOR])
            .map(|item| {
                let (k, v) = item?;
                Ok((read_uuid(&k, 1)?, decode(&v)?))
            })
            .collect()
    }

    /// The cursor of `triggered`'s fan-out, if unfinished.
    pub fn fanout(&self, triggered: &Uuid) -> Result<Option<FanoutCursor>> {
        self.t()
            .deliveries
            .get(cursor_key(triggered))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The next `limit` subscriptions of `registration` after `after` (index keys included),
    /// and whether more follow.
    pub fn subscription_batch(
        &self,
        registration: &Uuid,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<SubscriptionBatch> {
        let prefix = registration.as_bytes().to_vec();
        let index = &self.t().subscriptions_by_registration;
        let range = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                index.range(start..)
            }
            None => index.range(prefix.clone()..),
        };
        let mut out = Vec::with_capacity(limit);
        for item in range {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                return Ok(SubscriptionBatch {
                    items: out,
                    more: false,
                });
            }
            if out.len() == limit {
                return Ok(SubscriptionBatch {
                    items: out,
                    more: true,
                });
            }
            out.push((
                k.to_vec(),
                NewDelivery {
                    subscription_epoch_us: read_u64(&k, 16)?,
                    subscription_id: read_uuid(&k, 24)?,
                    account_id: read_uuid(&v, 0)?,
                },
            ));
        }
        Ok(SubscriptionBatch {
            items: out,
            more: false,
        })
    }

    /// Creates the deliveries of a batch handed over by another node. Skipped deliveries
    /// get their record; the others one pending-batch row, and come back as first attempts
    /// to dispatch.
    ///
    /// The batch may arrive twice: its pending-batch row (keyed by its first delivery) says
    /// it was accepted, and once that row is gone the records do, so nothing is created
    /// twice.
    pub fn accept_handed_over(
        &self,
        triggered: &Uuid,
        registration: &Uuid,
        items: &[(NewDelivery, bool)],
        now_us: u64,
    ) -> Result<Vec<DueEntry>> {
        // Checks what exists before writing: one batch at a time.
        let _accepting = lock(&self.inner.accept_lock);
        let prepared = self.build_deliveries(triggered, registration, items, now_us, None)?;
        self.apply_prepared(prepared)
    }

    /// Prepares a fan-out step's writes: its deliveries (as [`Self::accept_handed_over`]
    /// does, but blindly, since they cannot exist yet: the cursor moves with them), the
    /// batches for other nodes, and the cursor's move. Written with other steps by
    /// [`Self::apply_prepared_together`], or with the trigger by [`Self::insert_triggered`].
    pub fn prepare_step(
        &self,
        triggered: &Uuid,
        registration: &Uuid,
        items: &[(NewDelivery, bool)],
        now_us: u64,
        step: &FanoutStep,
    ) -> Result<PreparedDeliveries> {
        self.build_deliveries(triggered, registration, items, now_us, Some(step))
    }

    /// Writes prepared deliveries in one atomic batch; returns their first attempts.
    pub fn apply_prepared(&self, prepared: PreparedDeliveries) -> Result<Vec<DueEntry>> {
        let written = self.apply_prepared_together(vec![prepared])?;
        Ok(written.into_iter().flatten().collect())
    }

    /// Writes several fan-out steps' prepared deliveries in one atomic batch (one log
    /// write instead of one each); returns each one's first attempts, in order.
    pub fn apply_prepared_together(
        &self,
        prepared: Vec<PreparedDeliveries>,
    ) -> Result<Vec<Vec<DueEntry>>> {
        let mut batch = sled::Batch::default();
        for p in &prepared {
            p.add_to(&mut batch);
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(prepared
            .into_iter()
            .map(|p| self.opened(p.key, p.entries))
            .collect())
    }

    /// The first attempts of deliveries written with their trigger.
    pub fn committed_with_trigger(&self, prepared: PreparedDeliveries) -> Vec<DueEntry> {
        self.opened(prepared.key, prepared.entries)
    }

    /// Notes the pending batch `key` of `entries` as open (written).
    fn opened(&self, key: Option<Vec<u8>>, entries: Vec<DueEntry>) -> Vec<DueEntry> {
        if let (Some(key), false) = (key, entries.is_empty()) {
            self.inner.open_batches.opened(key, entries.len());
        }
        entries
    }

    fn build_deliveries(
        &self,
        triggered: &Uuid,
        registration: &Uuid,
        items: &[(NewDelivery, bool)],
        now_us: u64,
        step: Option<&FanoutStep>,
    ) -> Result<PreparedDeliveries> {
        let deliveries = &self.t().deliveries;
        let fresh = step.is_some();
        // Keyed by the first item whether or not it is skipped: a resent batch may be
        // judged differently (its failed_counts changed), its key must not.
        let key = items.first().map(|(item, _)| batch_key(triggered, item));
        let accepted_before = match &key {
            Some(key) if !fresh => deliveries.contains_key(key)? || self.has_settled(key)?,
            _ => false,
        };
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut pending = PendingBatch {
            registration_id: *registration,
            queued_us: now_us,
            items: Vec::new(),
        };
        for (item, skip) in items.iter().filter(|_| !accepted_before) {
            if !fresh && deliveries.contains_key(item.record_key(triggered))? {
                continue;
            }
            if *skip {
                let delivery = Delivery {
                    id: delivery_id(triggered, &item.subscription_id),
                    triggered_id: *triggered,
                    registration_id: *registration,
                    subscription_id: item.subscription_id,
                    subscription_epoch_us: item.subscription_epoch_us,
                    account_id: item.account_id,
                    state: DeliveryState::Skipped,
                    attempts: Vec::new(),
                    next_attempt_us: None,
                    finished_us: Some(now_us),
                };
                writes.push((item.record_key(triggered), Some(encode_compact(&delivery)?)));
            } else {
                pending.items.push(item.clone());
            }
        }
        let read_at = step.map(|s| s.subscriptions_read_at);
        let entries = match &key {
            Some(key) if !pending.items.is_empty() => {
                writes.push((key.clone(), Some(encode_compact(&pending)?)));
                pending
                    .items
                    .iter()
                    .map(|item| first_attempt(key, triggered, &pending, item, read_at))
                    .collect()
            }
            _ => Vec::new(),
        };
        if let Some(step) = step {
            for (i, (peer, items)) in step.handoffs.iter().enumerate() {
                let mut key = handoff_prefix(peer);
                key.extend_from_slice(triggered.as_bytes());
                key.extend_from_slice(&now_us.to_be_bytes());
                key.extend_from_slice(&(i as u32).to_be_bytes());
                writes.push((key, Some(encode_compact(items)?)));
            }
            if step.finished {
                writes.push((cursor_key(triggered).to_vec(), None));
            } else {
                let cursor = encode_compact(&FanoutCursor {
                    registration_id: *registration,
                    after: step.after.clone(),
                })?;
                writes.push((cursor_key(triggered).to_vec(), Some(cursor)));
            }
        }
        Ok(PreparedDeliveries {
            writes,
            key,
            entries,
        })
    }

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

    /// Keeps a copy of another node's trigger (its body and event) for local deliveries.
    pub fn keep_remote_trigger(&self, t: &Triggered) -> Result<()> {
        if !self.t().remote_triggers.contains_key(t.id.as_bytes())? {
            self.t()
                .remote_triggers
                .insert(t.id.as_bytes(), super::records::encode(t)?)?;
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

    /// Up to `limit` due entries with due time `<= now_us`, oldest first, from the due key
    /// `from` on (or the start of the queue), skipping those `busy` says are in flight.
    pub fn due_entries(
        &self,
        now_us: u64,
        limit: usize,
        from: Option<&[u8]>,
        busy: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<DueEntry>> {
        let mut out = Vec::new();
        let start = from.map_or_else(|| vec![DUE], <[u8]>::to_vec);
        for item in self.t().deliveries.range(start..vec![DUE + 1]) {
            let (key, value) = item?;
            let due_us = read_u64(&key, 1)?;
            if due_us > now_us || out.len() >= limit {
                break;
            }
            if key.len() != 9 + 40 {
                return Err(StoreError::Corrupt("due-queue key".into()));
            }
            let record_key = prefixed(RECORD, &key[9..]);
            if busy(&record_key) {
                continue;
            }
            let (delivery_id, account_id, attempts) = if value.len() == DUE_VALUE_LEN {
                (
                    read_uuid(&value, 0)?,
                    read_uuid(&value, 16)?,
                    u16::from_be_bytes([value[32], value[33]]),
                )
            } else {
                // Queued by an older release, without the attempt's facts: read the record.
                match self.delivery_at(&record_key)? {
                    Some(d) => (
                        d.id,
                        d.account_id,
                        u16::try_from(d.attempts.len()).unwrap_or(u16::MAX),
                    ),
                    None => (Uuid::nil(), Uuid::nil(), 0),
                }
            };
            out.push(DueEntry {
                scheduled: Scheduled::Queue(key.to_vec()),
                record_key,
                due_us,
                delivery_id,
                account_id,
                attempts,
            });
        }
        Ok(out)
    }

    /// When the earliest due entry is due.
    pub fn next_due_us(&self) -> Result<Option<u64>> {
        match self.t().deliveries.scan_prefix([DUE]).keys().next() {
            Some(key) => Ok(Some(read_u64(&key?, 1)?)),
            None => Ok(None),
        }
    }

    /// Numbers of due entries (pending deliveries) and of those not attempted yet, in one
    /// pass over the queue.
    pub fn due_counts(&self) -> Result<(usize, usize)> {
        let (mut due, mut unattempted) = (0, 0);
        for value in self.t().deliveries.scan_prefix([DUE]).values() {
            let value = value?;
            due += 1;
            // An entry queued by an older release carries no count: it counts as attempted.
            if value.len() == DUE_VALUE_LEN && value[32..] == [0, 0] {
                unattempted += 1;
            }
        }
        Ok((due, unattempted))
    }

    /// The delivery stored under `record_key`.
    pub fn delivery_at(&self, record_key: &[u8]) -> Result<Option<Delivery>> {
        self.t()
            .deliveries
            .get(record_key)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Holds the `failed_count` lock: counts are read, changed and written back by
    /// outcome batches, so every other writer of a count takes it too.
    pub(super) fn lock_counts(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.counts_lock)
    }

    /// Applies attempt outcomes: record, due queue or pending batch, and `failed_count`, in
    /// one atomic batch.
    pub fn record_outcomes(&self, outcomes: &[Outcome], now_us: u64) -> Result<()> {
        let deliveries = &self.t().deliveries;
        let _counts = self.lock_counts();
        let mut batch = sled::Batch::default();
        let mut counts: HashMap<Uuid, u64> = HashMap::new();
        let mut closing: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut settled: HashMap<&[u8], Vec<Delivery>> = HashMap::new();
        for o in outcomes {
            let mut d = match &o.due.scheduled {
                Scheduled::Queue(due_key) => {
                    batch.remove(due_key.as_slice());
                    let Some(bytes) = deliveries.get(&o.due.record_key)? else {
                        continue;
                    };
                    match decode::<Delivery>(&bytes) {
                        Ok(d) => d,
                        // Never retried forever: the due entry goes, the record stays for a look.
                        Err(e) => {
                            tracing::error!(error = %e, "a delivery record is unreadable; dropping its due entry");
                            continue;
                        }
                    }
                }
                // Its record does not exist before this outcome (nothing else writes the
                // record of a delivery in a pending batch), so it is not read.
                Scheduled::Batch {
                    key,
                    registration_id,
                    ..
                } => {
                    *closing.entry(key.clone()).or_default() += 1;
                    o.due.first_record(*registration_id)
                }
            };
            if d.state != DeliveryState::Pending {
                continue;
            }
            d.attempts.extend(o.attempt.clone());
            d.state = o.state;
            d.next_attempt_us = o.next_due_us;
            if o.state != DeliveryState::Pending {
                d.finished_us = Some(now_us);
            }
            if let Some(next) = o.next_due_us {
                let due = due_value(&d.id, &d.account_id, d.attempts.len());
                batch.insert(due_key(next, &o.due.record_key[1..]), due.as_slice());
            }
            let account_id = d.account_id;
            match &o.due.scheduled {
                Scheduled::Batch { key, .. } if d.state == DeliveryState::Succeeded => {
                    settled.entry(key).or_default().push(d);
                }
                _ => {
                    batch.insert(o.due.record_key.as_slice(), encode_compact(&d)?);
                }
            }
            match o.failed_count {
                FailedCountChange::Keep => {}
                FailedCountChange::Reset => {
                    counts.insert(account_id, 0);
                }
                FailedCountChange::Increment => {
                    let current = match counts.get(&account_id) {
                        Some(c) => *c,
                        None => self.failed_count(&account_id)?,
                    };
                    counts.insert(account_id, current + 1);
                }
            }
        }
        for (account, count) in counts {
            let key = failed_count_key(&account);
            if count == 0 {
                // Almost every success resets a count that is already 0 (no key): a
                // read is much cheaper than a logged remove.
                if deliveries.contains_key(key)? {
                    batch.remove(&key);
                }
            } else {
                batch.insert(&key, &count.to_be_bytes());
            }
        }
        self.write_settled(&mut batch, settled)?;
        let open = &self.inner.open_batches;
        for key in open.completed_by(&closing) {
            batch.remove(key);
        }
        deliveries.apply_batch(batch)?;
        open.close(closing);
        Ok(())
    }

    /// `triggered`'s deliveries without a record of their own, in record-key order: those
    /// settled by their first attempt and those waiting for it.
    fn unrecorded_of(
        &self,
        triggered: &Uuid,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, Delivery)>>> {
        let mut settled = self.settled_in_order(triggered).peekable();
        let mut waiting = self.unattempted_of(triggered)?.into_iter().peekable();
        // Both are sorted and never share a key: merge them.
        Ok(std::iter::from_fn(move || {
            let settled_first = match (settled.peek(), waiting.peek()) {
                (Some(Ok((s, _))), Some((w, _))) => s < w,
                (Some(_), _) => true,
                (None, _) => false,
            };
            if settled_first {
                settled.next()
            } else {
                waiting.next().map(Ok)
            }
        }))
    }

    /// A page of `triggered`'s deliveries, in subscription order (those settled by or
    /// waiting for their first attempt included).
    pub fn list_deliveries(&self, triggered: &Uuid, req: PageRequest) -> Result<Page<Delivery>> {
        let mut page = PageBuilder {
            skip: usize::try_from(req.start).unwrap_or(usize::MAX),
            take: usize::try_from(req.limit).unwrap_or(usize::MAX),
            seen: 0,
            items: Vec::new(),
        };
        let mut unrecorded = self.unrecorded_of(triggered)?.peekable();
        let records = self
            .t()
            .deliveries
            .scan_prefix(prefixed(RECORD, triggered.as_bytes()));
        // Records and the others never share a key: merge them in key order (an error
        // comes out first).
        'records: for record in records {
            let (key, value) = record?;
            while let Some(other) =
                unrecorded.next_if(|o| o.as_ref().map_or(true, |(k, _)| k.as_slice() < &*key))
            {
                let (_, d) = other?;
                if page.offer(|| Ok(d))? {
                    break 'records;
                }
            }
            if page.offer(|| decode(&value))? {
                break;
            }
        }
        if page.items.len() < page.take {
            for other in unrecorded {
                let (_, d) = other?;
                if page.offer(|| Ok(d))? {
                    break;
                }
            }
        }
        Ok(Page::new(req, page.items))
    }

    /// Counts of `triggered`'s deliveries by state.
    pub fn delivery_counts(&self, triggered: &Uuid) -> Result<DeliveryCounts> {
        let mut counts = DeliveryCounts {
            pending: self.unattempted_of(triggered)?.len() as u64,
            succeeded: self.settled_count(triggered)?,
            ..DeliveryCounts::default()
        };
        for v in self
            .t()
            .deliveries
            .scan_prefix(prefixed(RECORD, triggered.as_bytes()))
            .values()
        {
            match decode::<Delivery>(&v?)?.state {
                DeliveryState::Pending => counts.pending += 1,
                DeliveryState::Succeeded => counts.succeeded += 1,
                DeliveryState::Failed => counts.failed += 1,
                DeliveryState::Skipped => counts.skipped += 1,
                DeliveryState::Cancelled => counts.cancelled += 1,
            }
        }
        Ok(counts)
    }

    /// Puts `triggered`'s failed deliveries back in the queue, due `now_us`; returns how many.
    pub fn requeue_failed(&self, triggered: &Uuid, now_us: u64) -> Result<u64> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self
            .t()
            .deliveries
            .scan_prefix(prefixed(RECORD, triggered.as_bytes()))
        {
            let (k, v) = item?;
            let mut d: Delivery = decode(&v)?;
            if d.state != DeliveryState::Failed {
                continue;
            }
            d.state = DeliveryState::Pending;
            d.next_attempt_us = Some(now_us);
            d.finished_us = None;
            batch.insert(k.to_vec(), encode_compact(&d)?);
            let due = due_value(&d.id, &d.account_id, d.attempts.len());
            batch.insert(due_key(now_us, &k[1..]), due.as_slice());
            n += 1;
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(n)
    }

    /// Removes finished deliveries that ended before `cutoff_us`; pending ones are kept.
    pub fn sweep_deliveries(&self, cutoff_us: u64) -> Result<u64> {
        let mut removed = self.sweep_settled(cutoff_us)?;
        let mut batch = sled::Batch::default();
        for item in self.t().deliveries.scan_prefix([RECORD]) {
            let (k, v) = item?;
            let d: Delivery = decode(&v)?;
            if d.state != DeliveryState::Pending && d.finished_us.is_some_and(|f| f < cutoff_us) {
                batch.remove(k);
                removed += 1;
            }
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;
    use super::*;

    fn item(n: u64) -> NewDelivery {
        NewDelivery {
            subscription_id: Uuid::new_v4(),
            subscription_epoch_us: n,
            account_id: Uuid::new_v4(),
        }
    }

    fn attempt(status: u16) -> Attempt {
        Attempt {
            at_us: 5,
            status: Some(status),
            error: None,
            duration_us: 1,
        }
    }

    fn page(s: &Store, t: &Uuid, start: u64, limit: u64) -> Vec<Delivery> {
        s.list_deliveries(t, PageRequest { start, limit })
            .unwrap()
            .items
    }

    fn triggered(registration: Uuid) -> Triggered {
        Triggered {
            id: Uuid::new_v4(),
            epoch_us: 7,
            registration_id: registration,
            account_id: Uuid::new_v4(),
            event: "e".into(),
            body: "{}".into(),
        }
    }

    #[test]
    fn a_first_step_written_with_its_trigger_moves_or_ends_the_fan_out() {
        let (_d, s) = temp_store();
        let r = Uuid::new_v4();
        let items = vec![(item(1), false), (item(2), true), (item(3), false)];
        let remote = vec![("node-b".to_string(), vec![item(4)])];

        // The last step: no cursor left, one pending batch, the handoff queued.
        let done = triggered(r);
        let step = FanoutStep {
            after: Some(b"k3".to_vec()),
            finished: true,
            handoffs: remote.clone(),
            subscriptions_read_at: 0,
        };
        let prepared = s.prepare_step(&done.id, &r, &items, 10, &step).unwrap();
        s.insert_triggered(&done, None, Some(&prepared)).unwrap();
        assert!(s.fanout(&done.id).unwrap().is_none());
        let entries = s.committed_with_trigger(prepared);
        assert_eq!(entries.len(), 2, "the skipped one is not attempted");
        assert_eq!(s.handoffs_for("node-b", 10).unwrap().len(), 1);
        assert_eq!(s.resume_first_attempts().unwrap().len(), 2);
        assert_eq!(s.triggered(&done.id).unwrap(), Some(done.clone()));

        // More to come: the cursor stands after the step's last subscription.
        let more = triggered(r);
        let step = FanoutStep {
            finished: false,
            ..step
        };
        let prepared = s.prepare_step(&more.id, &r, &items, 10, &step).unwrap();
        s.insert_triggered(&more, None, Some(&prepared)).unwrap();
        let cursor = s.fanout(&more.id).unwrap().expect("a cursor");
        assert_eq!(cursor.after.as_deref(), Some(&b"k3"[..]));
        assert_eq!(cursor.registration_id, r);

        // Without a first step, the fan-out starts from the beginning.
        let plain = triggered(r);
        s.insert_triggered(&plain, None, None).unwrap();
        assert_eq!(s.fanout(&plain.id).unwrap().expect("a cursor").after, None);
    }

    #[test]
    fn steps_of_several_fan_outs_are_written_in_one_batch() {
        let (_d, s) = temp_store();
        let r = Uuid::new_v4();
        let (ending, going_on) = (triggered(r), triggered(r));
        s.insert_triggered(&ending, None, None).unwrap();
        s.insert_triggered(&going_on, None, None).unwrap();
        let step = |finished| FanoutStep {
            after: Some(b"k2".to_vec()),
            finished,
            handoffs: Vec::new(),
            subscriptions_read_at: 0,
        };
        let items = vec![(item(1), false), (item(2), true)];
        let prepared = vec![
            s.prepare_step(&ending.id, &r, &items, 10, &step(true))
                .unwrap(),
            s.prepare_step(&going_on.id, &r, &items, 10, &step(false))
                .unwrap(),
        ];
        let entries = s.apply_prepared_together(prepared).unwrap();
        assert_eq!(
            entries.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1],
            "each step's own first attempts, in order (the skipped one is not attempted)"
        );
        assert_eq!(entries[0][0].triggered_id(), ending.id);
        assert_eq!(entries[1][0].triggered_id(), going_on.id);
        assert!(s.fanout(&ending.id).unwrap().is_none());
        let cursor = s.fanout(&going_on.id).unwrap().expect("a cursor");
        assert_eq!(cursor.after.as_deref(), Some(&b"k2"[..]));
        assert_eq!(s.resume_first_attempts().unwrap().len(), 2);
    }

    #[test]
    fn handed_over_batches_are_accepted_once_and_wait_for_first_attempts() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items = vec![(item(1), true), (item(2), false), (item(3), false)];
        let entries = s.accept_handed_over(&t, &r, &items, 10).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries
            .iter()
            .all(|e| e.due_key().is_none() && e.attempts == 0));
        assert!(s.accept_handed_over(&t, &r, &items, 10).unwrap().is_empty());
        // Judged differently on a resend (failed_counts changed): still nothing twice.
        let rejudged: Vec<_> = items.iter().map(|(i, _)| (i.clone(), false)).collect();
        assert!(s
            .accept_handed_over(&t, &r, &rejudged, 11)
            .unwrap()
            .is_empty());
        assert_eq!(
            s.due_counts().unwrap(),
            (0, 0),
            "first attempts are not queued"
        );
        let counts = s.delivery_counts(&t).unwrap();
        assert_eq!((counts.pending, counts.skipped), (2, 1));
        let listed = page(&s, &t, 0, 10);
        let epochs: Vec<u64> = listed.iter().map(|d| d.subscription_epoch_us).collect();
        assert_eq!(epochs, vec![1, 2, 3]);
        assert_eq!(listed[1].state, DeliveryState::Pending);
        assert_eq!(listed[1].id, entries[0].delivery_id);
        assert_eq!(listed[1].next_attempt_us, Some(10));
        assert_eq!(page(&s, &t, 1, 1), vec![listed[1].clone()]);
        assert_eq!(s.resume_first_attempts().unwrap(), entries);
    }

    #[test]
    fn first_outcomes_settle_together_or_create_records_and_complete_their_batch() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items = vec![(item(1), false), (item(2), false), (item(3), false)];
        let entries = s.accept_handed_over(&t, &r, &items, 10).unwrap();
        let outcome = |due: &DueEntry, status: u16| Outcome {
            due: due.clone(),
            attempt: Some(attempt(status)),
            state: if status == 200 {
                DeliveryState::Succeeded
            } else {
                DeliveryState::Pending
            },
            next_due_us: (status != 200).then_some(100),
            failed_count: FailedCountChange::Reset,
        };
        let rows = |prefix: u8| s.t().deliveries.scan_prefix([prefix]).count();
        s.record_outcomes(&[outcome(&entries[0], 200), outcome(&entries[1], 500)], 20)
            .unwrap();
        assert_eq!(rows(RECORD), 1, "only the retried delivery has a record");
        assert_eq!(rows(super::super::settled::SETTLED), 1);
        // After a restart only the delivery without an outcome is attempted again.
        assert_eq!(s.resume_first_attempts().unwrap(), vec![entries[2].clone()]);
        let listed = page(&s, &t, 0, 10);
        let states: Vec<_> = listed.iter().map(|d| d.state).collect();
        assert_eq!(
            states,
            vec![
                DeliveryState::Succeeded,
                DeliveryState::Pending,
                DeliveryState::Pending
            ]
        );
        assert_eq!(listed[0].registration_id, r);
        assert_eq!(listed[0].finished_us, Some(20));
        assert_eq!(listed[0].attempts, vec![attempt(200)]);
        assert_eq!(listed[1].attempts.len(), 1, "the retried one is its record");
        assert_eq!(listed[2].attempts.len(), 0, "the third waits");
        assert_eq!(page(&s, &t, 1, 1), vec![listed[1].clone()]);
        s.record_outcomes(&[outcome(&entries[2], 200)], 21).unwrap();
        assert!(s.resume_first_attempts().unwrap().is_empty());
        assert_eq!(
            rows(super::super::first_attempts::BATCH),
            0,
            "the completed batch row is removed"
        );
        let counts = s.delivery_counts(&t).unwrap();
        assert_eq!((counts.succeeded, counts.pending), (2, 1));
        assert_eq!(rows(super::super::settled::SETTLED), 2);
        // The batch handed over again after it completed: recognised by its settled rows.
        assert!(s.accept_handed_over(&t, &r, &items, 30).unwrap().is_empty());
        assert_eq!(s.delivery_counts(&t).unwrap(), counts);
        // Settled rows go when all their deliveries are older than the cutoff.
        assert_eq!(s.sweep_deliveries(21).unwrap(), 1);
        assert_eq!(s.sweep_deliveries(22).unwrap(), 1);
        assert_eq!(s.delivery_counts(&t).unwrap().succeeded, 0);
        assert_eq!(page(&s, &t, 0, 10).len(), 1, "the pending retry stays");
    }

    #[test]
    fn listings_merge_settled_rows_records_and_waiting_deliveries_in_order() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let first: Vec<_> = (1..=4).map(|n| (item(n), false)).collect();
        let second: Vec<_> = (5..=8).map(|n| (item(n), false)).collect();
        let mut entries = s.accept_handed_over(&t, &r, &first, 10).unwrap();
        entries.extend(s.accept_handed_over(&t, &r, &second, 10).unwrap());
        let outcome = |i: usize, status: u16| Outcome {
            due: entries[i].clone(),
            attempt: Some(attempt(status)),
            state: if status == 200 {
                DeliveryState::Succeeded
            } else {
                DeliveryState::Failed
            },
            next_due_us: None,
            failed_count: FailedCountChange::Keep,
        };
        // Several rows per batch, each out of order; one failure (a record); 3 waits.
        s.record_outcomes(&[outcome(6, 200), outcome(1, 200)], 20)
            .unwrap();
        s.record_outcomes(&[outcome(0, 200), outcome(4, 500), outcome(7, 200)], 21)
            .unwrap();
        let expected = [
            DeliveryState::Succeeded,
            DeliveryState::Succeeded,
            DeliveryState::Pending,
            DeliveryState::Pending,
            DeliveryState::Failed,
            DeliveryState::Pending,
            DeliveryState::Succeeded,
            DeliveryState::Succeeded,
        ];
        for limit in [1, 2, 3, 8] {
            let mut listed = Vec::new();
            for start in (0..8).step_by(limit) {
                listed.extend(page(&s, &t, start as u64, limit as u64));
            }
            let epochs: Vec<u64> = listed.iter().map(|d| d.subscription_epoch_us).collect();
            assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "pages of {limit}");
            let states: Vec<_> = listed.iter().map(|d| d.state).collect();
            assert_eq!(states, expected, "pages of {limit}");
        }
        let counts = s.delivery_counts(&t).unwrap();
        assert_eq!((counts.succeeded, counts.failed, counts.pending), (4, 1, 3));
        assert_eq!(s.resume_first_attempts().unwrap().len(), 3);
    }

    #[test]
    fn outcomes_move_state_queue_and_failed_count() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let it = item(1);
        let first = s
            .accept_handed_over(&t, &r, &[(it.clone(), false)], 5)
            .unwrap()
            .remove(0);
        s.record_outcomes(
            &[Outcome {
                due: first,
                attempt: Some(attempt(500)),
                state: DeliveryState::Pending,
                next_due_us: Some(50),
                failed_count: FailedCountChange::Increment,
            }],
            6,
        )
        .unwrap();
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 1);
        assert_eq!(s.next_due_us().unwrap(), Some(50));
        assert_eq!(s.due_counts().unwrap(), (1, 0));
        assert!(s.due_entries(49, 1, None, |_| false).unwrap().is_empty());
        let due = s.due_entries(50, 1, None, |_| false).unwrap().remove(0);
        assert_eq!(due.attempts, 1);
        s.record_outcomes(
            &[Outcome {
                due,
                attempt: Some(attempt(200)),
                state: DeliveryState::Succeeded,
                next_due_us: None,
                failed_count: FailedCountChange::Reset,
            }],
            51,
        )
        .unwrap();
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 0);
        assert_eq!(s.due_counts().unwrap(), (0, 0));
        let listed = page(&s, &t, 0, 10);
        assert_eq!(listed[0].attempts.len(), 2);
        assert_eq!(listed[0].state, DeliveryState::Succeeded);
        assert_eq!(s.sweep_deliveries(51).unwrap(), 0);
        assert_eq!(s.sweep_deliveries(52).unwrap(), 1);
    }

    #[test]
    fn delivery_ids_are_deterministic() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(delivery_id(&a, &b), delivery_id(&a, &b));
        assert_ne!(delivery_id(&a, &b), delivery_id(&b, &a));
    }
}
