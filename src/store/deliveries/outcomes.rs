//! Outcomes: a batch of attempt outcomes applied as one atomic write.
//!
//! Each outcome updates its delivery where it lives (a first attempt that succeeded goes
//! to a settled row of its pending batch, any other to its record), queues the next
//! attempt if there is one, changes the subscriber's `failed_count` and marks an endpoint
//! that answered `410 Gone` (see [`super::stopped`]); the pending-batch
//! rows the batch completes are removed with it. An attempt leaves the due queue or its
//! pending batch only here, so an attempt without a written outcome runs again after a
//! restart.

use std::collections::HashMap;

use uuid::Uuid;

use super::due::due_value;
use super::legacy::decode_delivery;
use super::types::{Delivery, DeliveryState, FailedCountChange, Outcome, Scheduled};
use crate::store::keys::{due_key, gone_key};
use crate::store::records::encode_compact;
use crate::store::{Result, Store};

impl Store {
    /// Applies attempt outcomes: record, due queue or pending batch, and `failed_count`, in
    /// one atomic batch.
    pub fn record_outcomes(&self, outcomes: &[Outcome], now_us: u64) -> Result<()> {
        let deliveries = &self.t().deliveries;
        let _counts = self.lock_counts();
        let mut batch = sled::Batch::default();
        let mut counts: HashMap<Uuid, u64> = HashMap::new();
        let mut closing: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut settled: HashMap<&[u8], Vec<Delivery>> = HashMap::new();
        let mut gone = Vec::new();
        for o in outcomes {
            if o.gone {
                batch.insert(&gone_key(&o.due.account_id), &now_us.to_be_bytes());
                gone.push(o.due.account_id);
            }
            let mut d = match &o.due.scheduled {
                Scheduled::Queue(due_key) => {
                    batch.remove(due_key.as_slice());
                    let Some(bytes) = deliveries.get(&o.due.record_key)? else {
                        continue;
                    };
                    match decode_delivery(&bytes) {
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
        self.write_failed_counts(&mut batch, counts)?;
        self.write_settled(&mut batch, settled)?;
        let open = &self.inner.open_batches;
        for key in open.completed_by(&closing) {
            batch.remove(key);
        }
        deliveries.apply_batch(batch)?;
        open.close(closing);
        for account in gone {
            self.inner.targets.invalidate(&account);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{attempt, item, page};
    use super::super::types::{DueEntry, Outcome};
    use super::*;
    use crate::store::keys::{BATCH, RECORD, SETTLED};
    use crate::store::tests::temp_store;

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
            gone: false,
        };
        let rows = |prefix: u8| s.t().deliveries.scan_prefix([prefix]).count();
        s.record_outcomes(&[outcome(&entries[0], 200), outcome(&entries[1], 500)], 20)
            .unwrap();
        assert_eq!(rows(RECORD), 1, "only the retried delivery has a record");
        assert_eq!(rows(SETTLED), 1);
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
        assert_eq!(rows(BATCH), 0, "the completed batch row is removed");
        let counts = s.delivery_counts(&t).unwrap();
        assert_eq!((counts.succeeded, counts.pending), (2, 1));
        assert_eq!(rows(SETTLED), 2);
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
                gone: false,
            }],
            6,
        )
        .unwrap();
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 1);
        assert_eq!(s.next_due_us().unwrap(), Some(50));
        assert_eq!(s.due_count().unwrap(), 1);
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
                gone: false,
            }],
            51,
        )
        .unwrap();
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 0);
        assert_eq!(s.due_count().unwrap(), 0);
        let listed = page(&s, &t, 0, 10);
        assert_eq!(listed[0].attempts.len(), 2);
        assert_eq!(listed[0].state, DeliveryState::Succeeded);
        assert_eq!(s.sweep_deliveries(51).unwrap(), 0);
        assert_eq!(s.sweep_deliveries(52).unwrap(), 1);
    }
}
