//! The due queue (prefix `d`): retries and redeliveries, in due-time order.
//!
//! `d` ++ due µs ++ the record key body → delivery id ++ subscriber account id ++ attempts
//! made (u16). The value carries what an attempt needs, so a worker never reads the
//! record; only the outcome writer does. First attempts are not queued here: they wait in
//! their pending batch (see [`super::first_attempts`]).

use std::collections::HashSet;

use uuid::Uuid;

use super::legacy::decode_delivery;
use super::types::{Delivery, DeliveryState, DueEntry, Scheduled};
use super::DeliveryRow;
use crate::store::keys::{due_key, prefixed, read_u64, read_uuid, DUE, RECORD};
use crate::store::records::encode_compact;
use crate::store::{Result, Store, StoreError};

/// Length of a due-queue value: delivery id, account id, attempts made.
pub(super) const DUE_VALUE_LEN: usize = 34;

/// The due-queue value of a delivery with `attempts` made.
pub(super) fn due_value(
    delivery_id: &Uuid,
    account_id: &Uuid,
    attempts: usize,
) -> [u8; DUE_VALUE_LEN] {
    let mut v = [0u8; DUE_VALUE_LEN];
    v[..16].copy_from_slice(delivery_id.as_bytes());
    v[16..32].copy_from_slice(account_id.as_bytes());
    let attempts = u16::try_from(attempts).unwrap_or(u16::MAX);
    v[32..].copy_from_slice(&attempts.to_be_bytes());
    v
}

impl Store {
    /// Up to `limit` due entries with due time `<= now_us`, oldest first, from the due key
    /// `from` on (or the start of the queue), skipping those `busy` says are in flight and
    /// those of subscribers `mine` refuses (replicated, a node serves the groups it leads).
    ///
    /// Skipped entries neither count towards `limit` nor end the scan (only a due time
    /// after `now_us` does), so the ones behind them are reached; the next page starts
    /// after the last entry returned.
    pub fn due_entries(
        &self,
        now_us: u64,
        limit: usize,
        from: Option<&[u8]>,
        busy: impl Fn(&[u8]) -> bool,
        mine: &dyn Fn(&Uuid) -> bool,
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
            let (delivery_id, account_id, attempts) = self.due_facts(&record_key, &value)?;
            if !mine(&account_id) {
                continue;
            }
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

    /// The delivery id, subscriber and attempts made of the due entry of `record_key`
    /// whose value is `value`.
    fn due_facts(&self, record_key: &[u8], value: &[u8]) -> Result<(Uuid, Uuid, u16)> {
        if value.len() == DUE_VALUE_LEN {
            return Ok((
                read_uuid(value, 0)?,
                read_uuid(value, 16)?,
                u16::from_be_bytes([value[32], value[33]]),
            ));
        }
        // Queued by an older release, without the attempt's facts: read the record.
        Ok(match self.delivery_at(record_key)? {
            Some(d) => (
                d.id,
                d.account_id,
                u16::try_from(d.attempts.len()).unwrap_or(u16::MAX),
            ),
            None => (Uuid::nil(), Uuid::nil(), 0),
        })
    }

    /// The subscriber of the due entry `key` → `value`.
    fn due_subscriber(&self, key: &[u8], value: &[u8]) -> Result<Uuid> {
        if value.len() == DUE_VALUE_LEN {
            return read_uuid(value, 16);
        }
        let body = key.get(9..).unwrap_or_default();
        Ok(self.due_facts(&prefixed(RECORD, body), value)?.1)
    }

    /// When the earliest due entry of a subscriber `mine` accepts is due.
    pub fn next_due_us(&self, mine: &dyn Fn(&Uuid) -> bool) -> Result<Option<u64>> {
        for item in self.t().deliveries.scan_prefix([DUE]) {
            let (key, value) = item?;
            if mine(&self.due_subscriber(&key, &value)?) {
                return Ok(Some(read_u64(&key, 1)?));
            }
        }
        Ok(None)
    }

    /// Number of due entries (pending deliveries in the queue) of the subscribers `mine`
    /// accepts. None of them counts in the fan-out backlog, not even one not attempted yet
    /// (deferred by an open circuit breaker, or queued by an older release): the backlog
    /// is the pending batches.
    pub fn due_count(&self, mine: &dyn Fn(&Uuid) -> bool) -> Result<usize> {
        let mut due = 0;
        for item in self.t().deliveries.scan_prefix([DUE]) {
            let (key, value) = item?;
            if mine(&self.due_subscriber(&key, &value)?) {
                due += 1;
            }
        }
        Ok(due)
    }

    /// Puts `triggered`'s failed deliveries back in the queue, due `now_us`; returns how many.
    pub fn requeue_failed(&self, triggered: &Uuid, now_us: u64) -> Result<u64> {
        let (rows, n) = self.prepare_requeue_failed(triggered, now_us, &|_| true)?;
        self.apply_delivery_rows(&rows)?;
        Ok(n)
    }

    /// The rows of [`Self::requeue_failed`] for the subscribers `mine` accepts, unwritten,
    /// and how many deliveries they requeue.
    pub fn prepare_requeue_failed(
        &self,
        triggered: &Uuid,
        now_us: u64,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<(Vec<DeliveryRow>, u64)> {
        let prefix = prefixed(RECORD, triggered.as_bytes());
        self.requeue_where(&prefix, now_us, |d| mine(&d.account_id))
    }

    /// Bulk recovery: puts back in the queue, due `now_us`, every failed delivery that
    /// finished within `since_us..=until_us` and went to `subscriber` or belongs to one of
    /// `registrations`; returns how many. A scan of every delivery record of the node.
    pub fn requeue_failed_of(
        &self,
        subscriber: &Uuid,
        registrations: &HashSet<Uuid>,
        window: (u64, u64),
        now_us: u64,
    ) -> Result<u64> {
        let (rows, n) =
            self.prepare_requeue_failed_of(subscriber, registrations, window, now_us, &|_| true)?;
        self.apply_delivery_rows(&rows)?;
        Ok(n)
    }

    /// The rows of [`Self::requeue_failed_of`] for the subscribers `mine` accepts,
    /// unwritten, and how many deliveries they requeue.
    pub fn prepare_requeue_failed_of(
        &self,
        subscriber: &Uuid,
        registrations: &HashSet<Uuid>,
        (since_us, until_us): (u64, u64),
        now_us: u64,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<(Vec<DeliveryRow>, u64)> {
        self.requeue_where(&[RECORD], now_us, |d| {
            d.finished_us
                .is_some_and(|f| (since_us..=until_us).contains(&f))
                && (d.account_id == *subscriber || registrations.contains(&d.registration_id))
                && mine(&d.account_id)
        })
    }

    /// The rows requeuing the failed deliveries among the records under `prefix` that
    /// `select` keeps, and how many.
    fn requeue_where(
        &self,
        prefix: &[u8],
        now_us: u64,
        select: impl Fn(&Delivery) -> bool,
    ) -> Result<(Vec<DeliveryRow>, u64)> {
        let mut rows: Vec<DeliveryRow> = Vec::new();
        let mut n = 0;
        for item in self.t().deliveries.scan_prefix(prefix) {
            let (k, v) = item?;
            let mut d = decode_delivery(&v)?;
            if d.state != DeliveryState::Failed || !select(&d) {
                continue;
            }
            d.state = DeliveryState::Pending;
            d.next_attempt_us = Some(now_us);
            d.finished_us = None;
            rows.push((k.to_vec(), Some(encode_compact(&d)?)));
            let due = due_value(&d.id, &d.account_id, d.attempts.len());
            rows.push((due_key(now_us, &k[1..]), Some(due.to_vec())));
            n += 1;
        }
        Ok((rows, n))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{all_rows, in_a, item, item_in, settled};
    use super::super::types::Outcome;
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn bulk_recovery_requeues_the_failed_deliveries_in_the_window_that_concern_the_caller() {
        let (_d, s) = temp_store();
        let (t, mine, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let items: Vec<_> = (1..=4).map(|n| (item(n), false)).collect();
        let subscriber = items[0].0.account_id;
        let entries = s.accept_handed_over(&t, &other, &items, 1).unwrap();
        let end = |i: usize, status: u16, at: u64| {
            s.record_outcomes(&[settled(&entries[i], status)], at)
                .unwrap();
        };
        end(0, 500, 10);
        end(1, 500, 10);
        end(2, 500, 99);
        end(3, 200, 10);
        let none = HashSet::new();
        // The subscriber's own failure in the window only.
        assert_eq!(
            s.requeue_failed_of(&subscriber, &none, (5, 20), 50)
                .unwrap(),
            1
        );
        assert_eq!(s.due_count(&|_| true).unwrap(), 1);
        // The registration's owner: every failure of its registration in the window.
        let owner = HashSet::from([other]);
        assert_eq!(s.requeue_failed_of(&mine, &owner, (5, 20), 50).unwrap(), 1);
        assert_eq!(s.requeue_failed_of(&mine, &owner, (0, 200), 50).unwrap(), 1);
        assert_eq!(s.requeue_failed_of(&mine, &owner, (0, 200), 50).unwrap(), 0);
        assert_eq!(s.due_count(&|_| true).unwrap(), 3);
    }

    #[test]
    fn scans_of_the_queue_skip_other_subscribers_without_stopping_or_counting_them() {
        let (_d, s) = temp_store();
        let t = Uuid::new_v4();
        // Group B's retries come first, then group A's.
        let items: Vec<_> = [false, false, false, true, true, true]
            .iter()
            .zip(1..)
            .map(|(a, n)| (item_in(n, *a), false))
            .collect();
        let entries = s
            .accept_handed_over(&t, &Uuid::new_v4(), &items, 1)
            .unwrap();
        let retries: Vec<_> = (entries.iter().zip(100..))
            .map(|(e, due)| Outcome {
                next_due_us: Some(due),
                state: DeliveryState::Pending,
                ..settled(e, 500)
            })
            .collect();
        s.record_outcomes(&retries, 2).unwrap();
        assert_eq!(s.next_due_us(&in_a).unwrap(), Some(103));
        assert_eq!(s.next_due_us(&|id| !in_a(id)).unwrap(), Some(100));
        assert_eq!(s.due_count(&in_a).unwrap(), 3);
        assert_eq!(s.due_count(&|_| true).unwrap(), 6);
        // Pages of two of A's, the scan going on from the last one returned (in flight).
        let mut busy = std::collections::HashSet::new();
        let mut from: Option<Vec<u8>> = None;
        let mut pages = Vec::new();
        loop {
            let page = s
                .due_entries(200, 2, from.as_deref(), |k| busy.contains(k), &in_a)
                .unwrap();
            if page.is_empty() {
                break;
            }
            from = page.last().and_then(|d| d.due_key()).map(<[u8]>::to_vec);
            busy.extend(page.iter().map(|d| d.record_key.clone()));
            pages.push(page.iter().map(|d| d.due_us).collect::<Vec<_>>());
        }
        assert_eq!(pages, vec![vec![103, 104], vec![105]]);
        assert!(s
            .due_entries(102, 2, None, |_| false, &in_a)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn requeues_prepared_for_a_group_touch_only_its_subscribers() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items: Vec<_> = [true, false, true, false]
            .iter()
            .zip(1..)
            .map(|(a, n)| (item_in(n, *a), false))
            .collect();
        let entries = s.accept_handed_over(&t, &r, &items, 1).unwrap();
        let failed: Vec<_> = entries.iter().map(|e| settled(e, 500)).collect();
        s.record_outcomes(&failed, 10).unwrap();
        let before = all_rows(&s);
        let (rows, n) = s.prepare_requeue_failed(&t, 50, &in_a).unwrap();
        assert_eq!((rows.len(), n), (4, 2), "a record and a due entry each");
        let (of, n_of) = s
            .prepare_requeue_failed_of(&Uuid::new_v4(), &HashSet::from([r]), (0, 20), 50, &in_a)
            .unwrap();
        assert_eq!((&of, n_of), (&rows, 2));
        assert_eq!(all_rows(&s), before, "prepared, not written");
        for (k, v) in &rows {
            let v = v.as_deref().unwrap();
            let subscriber = super::super::delivery_row_subscriber(k, v).unwrap();
            assert!(subscriber.is_some_and(|id| in_a(&id)));
        }
        s.apply_delivery_rows(&rows).unwrap();
        assert_eq!(s.due_count(&in_a).unwrap(), 2);
        assert_eq!(s.due_count(&|_| true).unwrap(), 2);
        assert_eq!(s.requeue_failed(&t, 60).unwrap(), 2, "group B's are left");
    }
}
