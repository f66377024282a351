//! The delivery engine's rows as a replicated group's data: written blindly, attributed to
//! their subscriber, exported and replaced by group.
//!
//! With replicated shards, a delivery's rows (record `r`, pending batch `b`, settled row
//! `s`, due entry `d`) and a subscriber's `failed_count` (`f`) and `410 Gone` mark (`g`)
//! belong to the group of the *subscriber's* account. The group's leader computes each
//! engine write from its applied state ([`Store::prepare_outcomes`],
//! [`Store::prepare_accept`], [`Store::prepare_requeue_failed`]) and proposes the rows; every
//! voter writes them as they are ([`Store::apply_delivery_rows`]), so applying them again
//! after a crash ends in the same state. Unreplicated, the same functions run back to back.
//!
//! A row's subscriber ([`delivery_row_subscriber`]) is read from the row itself:
//! - `r`: the delivery's subscriber;
//! - `b`: the first item's subscriber. A replicated pending batch holds the subscribers of
//!   one group only (the leader of a group accepts its own subscribers' deliveries), so its
//!   first item stands for all; an unreplicated batch may mix groups, which only matters
//!   if it is exported;
//! - `s`: the first delivery's subscriber (a settled row comes from one pending batch);
//! - `d`: the subscriber in the value. A due entry queued by an older release has no
//!   subscriber in its value: it has none here, and the store reads its record instead
//!   when it exports or replaces a group (an export writes it in the current form);
//! - `f`, `g`: the account in the key;
//! - fan-out rows (`c`, `h`) have none: they belong to the trigger's group (see
//!   [`super::handoffs`]).

#[cfg(test)]
mod tests;

use std::collections::HashSet;

use uuid::Uuid;

use super::due::{due_value, DUE_VALUE_LEN};
use super::first_attempts::PendingBatch;
use super::legacy::decode_delivery;
use super::settled_codec::decode_settled_keys;
use super::DeliveryRow;
use crate::store::keys::{prefixed, read_uuid, BATCH, DUE, FAILED_COUNT, GONE, RECORD, SETTLED};
use crate::store::records::decode;
use crate::store::row_writes::write_rows;
use crate::store::{Result, Store, StoreError};

/// The prefixes of the rows a subscriber's group holds.
const SUBSCRIBER_ROWS: [u8; 6] = [RECORD, BATCH, SETTLED, DUE, FAILED_COUNT, GONE];

/// The subscriber account the delivery row `key` → `value` belongs to (see the module
/// documentation); `None` for fan-out rows, other prefixes, an empty pending batch or
/// settled row, and a due entry of an older release.
pub fn delivery_row_subscriber(key: &[u8], value: &[u8]) -> Result<Option<Uuid>> {
    Ok(match key.first() {
        Some(&RECORD) => Some(decode_delivery(value)?.account_id),
        Some(&BATCH) => decode::<PendingBatch>(value)?
            .items
            .first()
            .map(|i| i.account_id),
        Some(&SETTLED) => decode_settled_keys(value)?
            .first()
            .map(|(_, account)| *account),
        Some(&DUE) if value.len() == DUE_VALUE_LEN => Some(read_uuid(value, 16)?),
        Some(&FAILED_COUNT | &GONE) => Some(read_uuid(key, 1)?),
        _ => None,
    })
}

/// Refuses `key` unless it is a subscriber's row.
fn check_prefix(key: &[u8]) -> Result<()> {
    match key.first() {
        Some(p) if SUBSCRIBER_ROWS.contains(p) => Ok(()),
        _ => Err(StoreError::Corrupt(
            "a delivery write touches a row that is not a subscriber's".into(),
        )),
    }
}

impl Store {
    /// Writes delivery rows as they are, in one atomic batch: an engine write of a
    /// replicated group (or of this node, unreplicated). Rows other than records, pending
    /// batches, settled rows, due entries, `failed_count`s and `410 Gone` marks are
    /// refused, nothing written.
    ///
    /// The caller keeps other writers of these rows out (a group's log applies in order;
    /// unreplicated, the counts lock). Idempotent: each row is set or removed.
    pub fn apply_delivery_rows(&self, rows: &[DeliveryRow]) -> Result<()> {
        for (key, _) in rows {
            check_prefix(key)?;
        }
        write_rows(&self.t().deliveries, rows)?;
        self.rows_changed(rows.iter().map(|(k, v)| (k.as_slice(), v.is_none())));
        Ok(())
    }

    /// Tells memory that rows changed (`true`: removed): a removed pending batch is
    /// complete, and an account's `410 Gone` mark is part of its delivery target.
    fn rows_changed<'k>(&self, rows: impl Iterator<Item = (&'k [u8], bool)>) {
        let mut completed = Vec::new();
        for (key, removed) in rows {
            match key.first() {
                Some(&BATCH) if removed => completed.push(key),
                Some(&GONE) => {
                    if let Ok(account) = read_uuid(key, 1) {
                        self.inner.targets.invalidate(&account);
                    }
                }
                _ => {}
            }
        }
        self.inner.open_batches.forget(completed);
    }

    /// The subscriber of a stored row: as [`delivery_row_subscriber`], with an older
    /// release's due entry attributed through its record. With the row to export: such a
    /// due entry in the current form.
    fn stored_row_subscriber(&self, key: &[u8], value: &[u8]) -> Result<Option<(Uuid, Vec<u8>)>> {
        if key.first() == Some(&DUE) && value.len() != DUE_VALUE_LEN {
            let Some(body) = key.get(9..) else {
                return Ok(None);
            };
            return Ok(self.delivery_at(&prefixed(RECORD, body))?.map(|d| {
                (
                    d.account_id,
                    due_value(&d.id, &d.account_id, d.attempts.len()).to_vec(),
                )
            }));
        }
        Ok(delivery_row_subscriber(key, value)?.map(|s| (s, value.to_vec())))
    }

    /// The rows of the subscribers that satisfy `in_group` (a group's delivery data, for
    /// its snapshot), by prefix and in key order; a due entry of an older release in the
    /// current form. An unreadable row is no group's: it is left out (and left alone by
    /// [`Self::replace_delivery_rows`]).
    ///
    /// Every row is read: the caller keeps the group from applying changes meanwhile.
    pub fn export_delivery_rows(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for prefix in SUBSCRIBER_ROWS {
            for item in self.t().deliveries.scan_prefix([prefix]) {
                let (key, value) = item?;
                match self.stored_row_subscriber(&key, &value) {
                    Ok(Some((subscriber, value))) if in_group(&subscriber) => {
                        out.push((key.to_vec(), value));
                    }
                    Ok(_) => {}
                    Err(StoreError::Sled(e)) => return Err(e.into()),
                    // No group can claim it: it stays, for a look.
                    Err(e) => {
                        tracing::error!(error = %e, "a delivery row is unreadable; leaving it out of its group");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes this node's rows of the subscribers that satisfy `in_group` exactly `rows` (a
    /// snapshot's), in one atomic batch. A row that is not a subscriber's, or is another
    /// group's, is refused before anything is written. Idempotent.
    ///
    /// A pending batch removed here is forgotten as open: this node counts the outcomes
    /// of the batches it opened or found when it last took the lead, and takes them up
    /// again ([`Store::resume_first_attempts`]) when it does.
    pub fn replace_delivery_rows(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        rows: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        check_delivery_rows(in_group, rows)?;
        // `failed_count`s change: as every writer of one, hold the counts lock.
        let _counts = self.lock_counts();
        let wanted: HashSet<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
        let mut changes: Vec<DeliveryRow> = Vec::new();
        for (key, _) in self.export_delivery_rows(in_group)? {
            if !wanted.contains(key.as_slice()) {
                changes.push((key, None));
            }
        }
        changes.extend(rows.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        write_rows(&self.t().deliveries, &changes)?;
        self.rows_changed(changes.iter().map(|(k, v)| (k.as_slice(), v.is_none())));
        Ok(())
    }
}

/// Refuses `rows` (a snapshot's delivery rows) unless each is a subscriber's row of the
/// group `in_group` tells.
pub(in crate::store) fn check_delivery_rows(
    in_group: &dyn Fn(&Uuid) -> bool,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Result<()> {
    for (key, value) in rows {
        check_prefix(key)?;
        if !delivery_row_subscriber(key, value)?.is_some_and(|s| in_group(&s)) {
            return Err(StoreError::Corrupt(
                "a snapshot's delivery row is another group's".into(),
            ));
        }
    }
    Ok(())
}
