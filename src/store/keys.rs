//! Key encodings: the epoch-ordered index keys, readers of the numbers and ids inside
//! keys, and the prefixes and keys of the `deliveries` tree (its layout is drawn in
//! [`super::deliveries`]).
//!
//! Numbers in keys are big-endian so byte order is numeric order. Every module of the store
//! builds its keys here and this module uses none of them (only the error type), so key
//! encodings are shared without import loops.

use uuid::Uuid;

use super::{Result, StoreError};

/// `deliveries` prefix of delivery records.
pub(super) const RECORD: u8 = b'r';
/// `deliveries` prefix of pending batches (deliveries waiting for their first attempt).
pub(super) const BATCH: u8 = b'b';
/// `deliveries` prefix of settled rows (first attempts that succeeded, written together).
pub(super) const SETTLED: u8 = b's';
/// `deliveries` prefix of the due queue.
pub(super) const DUE: u8 = b'd';
/// `deliveries` prefix of fan-out cursors.
pub(super) const CURSOR: u8 = b'c';
/// `deliveries` prefix of handoff batches.
pub(super) const HANDOFF: u8 = b'h';
/// `deliveries` prefix of `failed_count`s.
pub(super) const FAILED_COUNT: u8 = b'f';
/// `deliveries` prefix of the endpoints that answered `410 Gone`.
pub(super) const GONE: u8 = b'g';

/// `epoch_us (8, big-endian) ++ id (16)`: the key of the epoch-ordered indexes.
pub(super) fn epoch_key(epoch_us: u64, id: &Uuid) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&epoch_us.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// `owner (16) ++ epoch_us (8) ++ id (16)`: per-owner epoch-ordered indexes.
pub(super) fn owned_key(owner: &Uuid, epoch_us: u64, id: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(owner.as_bytes());
    k.extend_from_slice(&epoch_us.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The big-endian u64 at `at`.
pub(super) fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("short index key".into()))
}

/// The id at `at`.
pub(super) fn read_uuid(bytes: &[u8], at: usize) -> Result<Uuid> {
    bytes
        .get(at..at + 16)
        .and_then(|b| Uuid::from_slice(b).ok())
        .ok_or_else(|| StoreError::Corrupt("short index key".into()))
}

/// The id at the end of an index key.
pub(super) fn trailing_id(key: &[u8]) -> Result<Uuid> {
    read_uuid(key, key.len().saturating_sub(16))
}

/// `body` behind the key prefix `kind`.
pub(super) fn prefixed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + body.len());
    k.push(kind);
    k.extend_from_slice(body);
    k
}

/// The record key without its prefix: triggered ++ subscription epoch ++ subscription.
pub(super) fn key_body(triggered: &Uuid, epoch_us: u64, subscription: &Uuid) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(triggered.as_bytes());
    k[16..24].copy_from_slice(&epoch_us.to_be_bytes());
    k[24..].copy_from_slice(subscription.as_bytes());
    k
}

/// The record key of `triggered`'s delivery for the subscription (`epoch_us`,
/// `subscription`).
pub(super) fn record_key(triggered: &Uuid, epoch_us: u64, subscription: &Uuid) -> Vec<u8> {
    prefixed(RECORD, &key_body(triggered, epoch_us, subscription))
}

/// The due-queue key of the delivery whose record key body is `key_body`, due at `due_us`.
pub(super) fn due_key(due_us: u64, key_body: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key_body.len());
    k.push(DUE);
    k.extend_from_slice(&due_us.to_be_bytes());
    k.extend_from_slice(key_body);
    k
}

/// The key of a trigger's fan-out cursor.
pub(super) fn cursor_key(triggered: &Uuid) -> [u8; 17] {
    let mut k = [CURSOR; 17];
    k[1..].copy_from_slice(triggered.as_bytes());
    k
}

/// The prefix of the handoff batches waiting for `peer` (its node id, then a 0 so that no
/// node id is the prefix of another's).
pub(super) fn handoff_prefix(peer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(peer.len() + 2);
    k.push(HANDOFF);
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k
}

/// The key of the `n`th handoff batch for `peer` of a fan-out step of `triggered` written
/// at `now_us`.
pub(super) fn handoff_key(peer: &str, triggered: &Uuid, now_us: u64, n: u32) -> Vec<u8> {
    let mut key = handoff_prefix(peer);
    key.extend_from_slice(triggered.as_bytes());
    key.extend_from_slice(&now_us.to_be_bytes());
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The key of an account's `failed_count`.
pub(super) fn failed_count_key(account: &Uuid) -> [u8; 17] {
    let mut k = [FAILED_COUNT; 17];
    k[1..].copy_from_slice(account.as_bytes());
    k
}

/// `g ++ account id`: the mark of an account whose endpoint answered `410 Gone`.
pub(super) fn gone_key(account: &Uuid) -> [u8; 17] {
    let mut k = [GONE; 17];
    k[1..].copy_from_slice(account.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keys_sort_numerically() {
        let id = Uuid::nil();
        assert!(epoch_key(255, &id) < epoch_key(256, &id));
    }
}
