//! How a settled row's deliveries are stored.
//!
//! A settled row holds succeeded first attempts of one pending batch: one trigger, one
//! registration, one attempt each, and a delivery id derived from trigger and
//! subscription ([`delivery_id`]). Written as whole [`Delivery`] records they repeat all of
//! that per delivery (about 130 bytes); this encoding keeps only what differs (about 50):
//! the subscription and subscriber, and the attempt's times as offsets. Times are
//! varints, so offsets of a few milliseconds take 3 bytes instead of 9.
//!
//! A row whose deliveries do not all have that shape (none is written today, but the
//! outcome writer need not know) is written in the general record encoding instead, and
//! rows written by earlier releases are read as they are: [`decode_settled`] reads both.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::legacy::decode_deliveries;
use super::types::{delivery_id, Attempt, Delivery, DeliveryState};
use crate::store::keys::record_key;
use crate::store::records::encode_compact;
use crate::store::{Result, StoreError};

/// The first byte of a compact settled row; record encodings use 1–3.
const COMPACT_SETTLED: u8 = 16;

/// A settled row, compactly.
#[derive(Debug, Serialize, Deserialize)]
struct CompactRow {
    triggered_id: [u8; 16],
    registration_id: [u8; 16],
    /// The earliest attempt's start (Unix µs); items' attempt times are offsets from it.
    base_us: u64,
    /// In subscription order (epoch, then id).
    items: Vec<CompactItem>,
}

/// One settled delivery of a [`CompactRow`].
#[derive(Debug, Serialize, Deserialize)]
struct CompactItem {
    subscription_id: [u8; 16],
    account_id: [u8; 16],
    /// Subscription epoch minus the previous item's (the first item's: minus 0).
    epoch_step_us: u64,
    /// The attempt's start minus the row's `base_us`.
    at_offset_us: u64,
    status: u16,
    duration_us: u64,
    /// When it was recorded as finished, minus the attempt's start.
    finished_after_us: u64,
    response_body: Option<String>,
}

/// Encodes a settled row's deliveries: compactly when they have a settled row's shape,
/// else as records.
pub(super) fn encode_settled(records: &[Delivery]) -> Result<Vec<u8>> {
    match compact(records) {
        Some(row) => {
            let mut out = Vec::with_capacity(40 + 56 * row.items.len());
            out.push(COMPACT_SETTLED);
            bincode::serde::encode_into_std_write(&row, &mut out, bincode::config::standard())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(out)
        }
        None => encode_compact(&records),
    }
}

/// Decodes a settled row, whichever encoding and release wrote it.
pub(super) fn decode_settled(bytes: &[u8]) -> Result<Vec<Delivery>> {
    match bytes.split_first() {
        Some((&COMPACT_SETTLED, body)) => expand(decode_compact(body)?),
        _ => decode_deliveries(bytes),
    }
}

/// The record key and subscriber of each delivery of a settled row: what counting and
/// matching need, without deriving delivery ids (a hash each).
pub(super) fn decode_settled_keys(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Uuid)>> {
    let Some((&COMPACT_SETTLED, body)) = bytes.split_first() else {
        let records = decode_deliveries(bytes)?;
        return Ok(records
            .into_iter()
            .map(|d| (d.record_key(), d.account_id))
            .collect());
    };
    let row = decode_compact(body)?;
    let triggered = Uuid::from_bytes(row.triggered_id);
    let mut epoch = 0u64;
    let mut out = Vec::with_capacity(row.items.len());
    for item in row.items {
        epoch = next_epoch(epoch, &item)?;
        let subscription = Uuid::from_bytes(item.subscription_id);
        out.push((
            record_key(&triggered, epoch, &subscription),
            Uuid::from_bytes(item.account_id),
        ));
    }
    Ok(out)
}

/// The subscription epoch of `item`, the one after `previous`'s (items store steps).
fn next_epoch(previous: u64, item: &CompactItem) -> Result<u64> {
    previous
        .checked_add(item.epoch_step_us)
        .ok_or_else(out_of_range)
}

/// A time of a corrupt compact row that does not fit its type.
fn out_of_range() -> StoreError {
    StoreError::Corrupt("a settled row's time is out of range".into())
}

/// A compact row's body.
fn decode_compact(body: &[u8]) -> Result<CompactRow> {
    match bincode::serde::decode_from_slice(body, bincode::config::standard()) {
        Ok((row, used)) if used == body.len() => Ok(row),
        Ok(_) => Err(StoreError::Corrupt(
            "trailing bytes after a settled row".into(),
        )),
        Err(e) => Err(StoreError::Corrupt(e.to_string())),
    }
}

/// `records` as a compact row, when each is a succeeded first attempt of the same trigger
/// and registration (whose id is therefore the derived one).
fn compact(records: &[Delivery]) -> Option<CompactRow> {
    let first = records.first()?;
    let base_us = records
        .iter()
        .filter_map(|d| d.attempts.first().map(|a| a.at_us))
        .min()?;
    let mut sorted: Vec<&Delivery> = records.iter().collect();
    sorted.sort_by_key(|d| (d.subscription_epoch_us, d.subscription_id));
    let mut previous_epoch = 0;
    let mut items = Vec::with_capacity(records.len());
    for d in sorted {
        let [attempt] = d.attempts.as_slice() else {
            return None;
        };
        let fits = d.triggered_id == first.triggered_id
            && d.registration_id == first.registration_id
            && d.state == DeliveryState::Succeeded
            && d.next_attempt_us.is_none()
            && attempt.error.is_none();
        if !fits {
            return None;
        }
        // Settled rows come only from first attempts of pending batches, whose ids are
        // derived (`first_attempt`); not hashed again here, on the hot path.
        debug_assert_eq!(d.id, delivery_id(&d.triggered_id, &d.subscription_id));
        items.push(CompactItem {
            subscription_id: *d.subscription_id.as_bytes(),
            account_id: *d.account_id.as_bytes(),
            epoch_step_us: d.subscription_epoch_us.checked_sub(previous_epoch)?,
            at_offset_us: attempt.at_us - base_us,
            status: attempt.status?,
            duration_us: attempt.duration_us,
            finished_after_us: d.finished_us?.checked_sub(attempt.at_us)?,
            response_body: attempt.response_body.clone(),
        });
        previous_epoch = d.subscription_epoch_us;
    }
    Some(CompactRow {
        triggered_id: *first.triggered_id.as_bytes(),
        registration_id: *first.registration_id.as_bytes(),
        base_us,
        items,
    })
}

/// The deliveries of a compact row.
fn expand(row: CompactRow) -> Result<Vec<Delivery>> {
    let triggered_id = Uuid::from_bytes(row.triggered_id);
    let registration_id = Uuid::from_bytes(row.registration_id);
    let mut epoch = 0u64;
    let mut out = Vec::with_capacity(row.items.len());
    for item in row.items {
        epoch = next_epoch(epoch, &item)?;
        let at_us = row
            .base_us
            .checked_add(item.at_offset_us)
            .ok_or_else(out_of_range)?;
        let subscription_id = Uuid::from_bytes(item.subscription_id);
        out.push(Delivery {
            id: delivery_id(&triggered_id, &subscription_id),
            triggered_id,
            registration_id,
            subscription_id,
            subscription_epoch_us: epoch,
            account_id: Uuid::from_bytes(item.account_id),
            state: DeliveryState::Succeeded,
            attempts: vec![Attempt {
                at_us,
                status: Some(item.status),
                error: None,
                duration_us: item.duration_us,
                response_body: item.response_body,
            }],
            next_attempt_us: None,
            finished_us: Some(
                at_us
                    .checked_add(item.finished_after_us)
                    .ok_or_else(out_of_range)?,
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(triggered: Uuid, registration: Uuid, epoch: u64, at_us: u64) -> Delivery {
        let subscription_id = Uuid::new_v4();
        Delivery {
            id: delivery_id(&triggered, &subscription_id),
            triggered_id: triggered,
            registration_id: registration,
            subscription_id,
            subscription_epoch_us: epoch,
            account_id: Uuid::new_v4(),
            state: DeliveryState::Succeeded,
            attempts: vec![Attempt {
                at_us,
                status: Some(200),
                error: None,
                duration_us: 812,
                response_body: Some("{}".into()),
            }],
            next_attempt_us: None,
            finished_us: Some(at_us + 1_500),
        }
    }

    fn sorted(mut v: Vec<Delivery>) -> Vec<Delivery> {
        v.sort_by_key(|d| (d.subscription_epoch_us, d.subscription_id));
        v
    }

    #[test]
    fn a_settled_batch_round_trips_in_under_half_the_bytes_of_its_records() {
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let now = 1_780_000_000_000_000;
        let records: Vec<Delivery> = (0..100)
            .map(|i| settled(t, r, now - 5_000_000 + (100 - i) * 37, now + i * 11))
            .collect();
        let bytes = encode_settled(&records).unwrap();
        assert_eq!(bytes[0], COMPACT_SETTLED);
        assert_eq!(decode_settled(&bytes).unwrap(), sorted(records.clone()));
        let keys: Vec<(Vec<u8>, Uuid)> = sorted(records.clone())
            .iter()
            .map(|d| (d.record_key(), d.account_id))
            .collect();
        assert_eq!(decode_settled_keys(&bytes).unwrap(), keys);
        let general = encode_compact(&records).unwrap();
        println!(
            "{} bytes per delivery (records: {})",
            bytes.len() / 100,
            general.len() / 100
        );
        assert!(bytes.len() * 2 < general.len());
    }

    #[test]
    fn rows_not_of_the_settled_shape_and_older_rows_are_kept_as_records() {
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let mut failed = vec![settled(t, r, 5, 10), settled(t, r, 6, 11)];
        failed[1].attempts[0].error = Some("endpoint answered 500".into());
        let other_trigger = vec![settled(t, r, 5, 10), settled(Uuid::new_v4(), r, 6, 11)];
        let mut clock_back = vec![settled(t, r, 5, 10)];
        clock_back[0].finished_us = Some(9);
        for records in [failed, other_trigger, clock_back] {
            let bytes = encode_settled(&records).unwrap();
            assert_ne!(bytes[0], COMPACT_SETTLED);
            assert_eq!(decode_settled(&bytes).unwrap(), records);
            assert_eq!(decode_settled_keys(&bytes).unwrap().len(), records.len());
        }
    }

    #[test]
    fn corrupt_compact_rows_are_errors_not_panics() {
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let bytes = encode_settled(&[settled(t, r, 5, 10)]).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode_settled(&bytes[..cut]).is_err());
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_settled(&trailing).is_err());
        let mut row = compact(&[settled(t, r, 5, 10)]).unwrap();
        row.base_us = u64::MAX;
        row.items[0].at_offset_us = 1;
        let mut overflowing = vec![COMPACT_SETTLED];
        overflowing
            .extend(bincode::serde::encode_to_vec(&row, bincode::config::standard()).unwrap());
        assert!(decode_settled(&overflowing).is_err());
    }
}
