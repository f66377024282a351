//! Outcomes: a batch of attempt outcomes applied as one atomic write.
//!
//! Each outcome updates its delivery where it lives (a first attempt that succeeded goes
//! to a settled row of its pending batch, any other to its record), queues the next
//! attempt if there is one, changes the subscriber's `failed_count` and marks an endpoint
//! that answered `410 Gone` (see [`super::stopped`]); the pending-batch
//! rows the batch completes are removed with it. An attempt leaves the due queue or its
//! pending batch only here, so an attempt without a written outcome runs again after a
//! restart.
//!
//! The rows are computed first ([`Store::prepare_outcomes`]), then written as they are
//! (here, or through a replicated group's log), then the in-memory state follows
//! ([`Store::outcomes_written`]).

use std::collections::HashMap;

use uuid::Uuid;

use super::due::due_value;
use super::legacy::decode_delivery;
use super::types::{Delivery, DeliveryState, FailedCountChange, Outcome, Scheduled};
use super::DeliveryRow;
use crate::store::keys::{due_key, gone_key};
use crate::store::records::encode_compact;
use crate::store::{Result, Store};

/// The rows a batch of outcomes writes ([`Store::prepare_outcomes`]), and what changes in
/// memory once they are written ([`Store::outcomes_written`]).
#[derive(Debug)]
pub struct PreparedOutcomes {
    /// The rows, in the order they are added to one batch (a later row of the same key
    /// wins).
    rows: Vec<DeliveryRow>,
    /// First outcomes per pending-batch key, counted as written afterwards.
    closing: HashMap<Vec<u8>, usize>,
    /// Accounts whose endpoint answered `410 Gone`.
    gone: Vec<Uuid>,
}

impl PreparedOutcomes {
    /// The rows to write, as one atomic batch (here or through a group's log).
    pub fn rows(&self) -> &[DeliveryRow] {
        &self.rows
    }

    /// True when the outcomes write nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Store {
    /// Applies attempt outcomes: record, due queue or pending batch, and `failed_count`, in
    /// one atomic batch.
    pub fn record_outcomes(&self, outcomes: &[Outcome], now_us: u64) -> Result<()> {
        let _counts = self.lock_counts();
        let prepared = self.prepare_outcomes(outcomes, now_us)?;
        self.apply_delivery_rows(prepared.rows())?;
        self.outcomes_written(prepared);
        Ok(())
    }

    /// The rows that applying `outcomes` writes, computed from the stored rows (records,
    /// `failed_count`s, the open pending batches) without writing them.
    ///
    /// The caller keeps every other writer of these rows out until they are written (a
    /// replicated group serialises its engine writes; here the counts lock does), then
    /// calls [`Self::outcomes_written`].
    pub fn prepare_outcomes(&self, outcomes: &[Outcome], now_us: u64) -> Result<PreparedOutcomes> {
        let deliveries = &self.t().deliveries;
        let mut rows: Vec<DeliveryRow> = Vec::new();
        let mut counts: HashMap<Uuid, u64> = HashMap::new();
        let mut closing: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut settled: HashMap<&[u8], Vec<Delivery>> = HashMap::new();
        let mut gone = Vec::new();
        for o in outcomes {
            if o.gone {
                let key = gone_key(&o.due.account_id).to_vec();
                rows.push((key, Some(now_us.to_be_bytes().to_vec())));
                gone.push(o.due.account_id);
            }
            let mut recorded = false;
            let mut d = match &o.due.scheduled {
                Scheduled::Queue(due_key) => {
                    rows.push((due_key.clone(), None));
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
                // Replicated, the leaders before and after a lead change may both make a
                // first attempt: the later outcome joins the record the earlier one wrote
                // (and takes its due entry), rather than settling the delivery beside it.
                Scheduled::Batch {
                    key,
                    registration_id,
                    ..
                } => match deliveries.get(&o.due.record_key)? {
                    None => {
                        *closing.entry(key.clone()).or_default() += 1;
                        o.due.first_record(*registration_id)
                    }
                    Some(bytes) => {
                        let Ok(d) = decode_delivery(&bytes) else {
                            tracing::error!("a delivery record is unreadable; ignoring an outcome");
                            continue;
                        };
                        if let (Some(next), DeliveryState::Pending) = (d.next_attempt_us, d.state) {
                            rows.push((due_key(next, &o.due.record_key[1..]), None));
                        }
                        recorded = true;
                        d
                    }
                },
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
                rows.push((due_key(next, &o.due.record_key[1..]), Some(due.to_vec())));
            }
            let account_id = d.account_id;
            match &o.due.scheduled {
                Scheduled::Batch { key, .. }
                    if d.state == DeliveryState::Succeeded && !recorded =>
                {
                    settled.entry(key).or_default().push(d);
                }
                _ => {
                    rows.push((o.due.record_key.clone(), Some(encode_compact(&d)?)));
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
        self.failed_count_rows(&mut rows, counts)?;
        self.settled_rows(&mut rows, settled)?;
        for key in self.inner.open_batches.completed_by(&closing) {
            rows.push((key, None));
        }
        Ok(PreparedOutcomes {
            rows,
            closing,
            gone,
        })
    }

    /// What changes in memory once `prepared`'s rows are written: its first outcomes count
    /// against their open pending batches, and the delivery targets of accounts stopped by
    /// a `410 Gone` are reread.
    pub fn outcomes_written(&self, prepared: PreparedOutcomes) {
        self.inner.open_batches.close(prepared.closing);
        for account in prepared.gone {
            self.inner.targets.invalidate(&account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{all_rows, attempt, item, page};
    use super::super::types::{DueEntry, Outcome};
    use super::*;
    use crate::store::keys::{BATCH, DUE, RECORD, SETTLED};
    use crate::store::tests::temp_store;

    /// The outcome of `due`'s attempt answered `status`: a 200 succeeds, anything else is
    /// retried at 100.
    fn first_outcome(due: &DueEntry, status: u16, failed_count: FailedCountChange) -> Outcome {
        Outcome {
            due: due.clone(),
            attempt: Some(attempt(status)),
            state: if status == 200 {
                DeliveryState::Succeeded
            } else {
                DeliveryState::Pending
            },
            next_due_us: (status != 200).then_some(100),
            failed_count,
            gone: false,
        }
    }

    #[test]
    fn a_second_first_attempt_joins_the_record_of_the_first() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let entries = s
            .accept_handed_over(&t, &r, &[(item(1), false)], 10)
            .unwrap();
        let outcome = |status: u16| first_outcome(&entries[0], status, FailedCountChange::Keep);
        // Two leaders each made the first attempt: one failed, then one succeeded.
        s.record_outcomes(&[outcome(500)], 20).unwrap();
        s.record_outcomes(&[outcome(200)], 30).unwrap();
        let rows = |prefix: u8| s.t().deliveries.scan_prefix([prefix]).count();
        assert_eq!(rows(RECORD), 1);
        assert_eq!(rows(SETTLED), 0, "not settled beside its record");
        assert_eq!(rows(DUE), 0, "the retry of the failed attempt is gone");
        let listed = page(&s, &t, 0, 10);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, DeliveryState::Succeeded);
        assert_eq!(listed[0].attempts.len(), 2);
    }

    #[test]
    fn first_outcomes_settle_together_or_create_records_and_complete_their_batch() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items = vec![(item(1), false), (item(2), false), (item(3), false)];
        let entries = s.accept_handed_over(&t, &r, &items, 10).unwrap();
        let outcome =
            |due: &DueEntry, status: u16| first_outcome(due, status, FailedCountChange::Reset);
        let rows = |prefix: u8| s.t().deliveries.scan_prefix([prefix]).count();
        s.record_outcomes(&[outcome(&entries[0], 200), outcome(&entries[1], 500)], 20)
            .unwrap();
        assert_eq!(rows(RECORD), 1, "only the retried delivery has a record");
        assert_eq!(rows(SETTLED), 1);
        // After a restart only the delivery without an outcome is attempted again.
        assert_eq!(
            s.resume_first_attempts(&|_| true).unwrap(),
            vec![entries[2].clone()]
        );
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
        assert!(s.resume_first_attempts(&|_| true).unwrap().is_empty());
        assert_eq!(rows(BATCH), 0, "the completed batch row is removed");
        let counts = s.delivery_counts(&t, &|_| true).unwrap();
        assert_eq!((counts.succeeded, counts.pending), (2, 1));
        assert_eq!(rows(SETTLED), 2);
        // The batch handed over again after it completed: recognised by its settled rows.
        assert!(s.accept_handed_over(&t, &r, &items, 30).unwrap().is_empty());
        assert_eq!(s.delivery_counts(&t, &|_| true).unwrap(), counts);
        // Settled rows go when all their deliveries are older than the cutoff.
        assert_eq!(s.sweep_deliveries(21).unwrap(), 1);
        assert_eq!(s.sweep_deliveries(22).unwrap(), 1);
        assert_eq!(s.delivery_counts(&t, &|_| true).unwrap().succeeded, 0);
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
        assert_eq!(s.next_due_us(&|_| true).unwrap(), Some(50));
        assert_eq!(s.due_count(&|_| true).unwrap(), 1);
        assert!(s
            .due_entries(49, 1, None, |_| false, &|_| true)
            .unwrap()
            .is_empty());
        let due = s
            .due_entries(50, 1, None, |_| false, &|_| true)
            .unwrap()
            .remove(0);
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
        assert_eq!(s.due_count(&|_| true).unwrap(), 0);
        let listed = page(&s, &t, 0, 10);
        assert_eq!(listed[0].attempts.len(), 2);
        assert_eq!(listed[0].state, DeliveryState::Succeeded);
        assert_eq!(s.sweep_deliveries(51).unwrap(), 0);
        assert_eq!(s.sweep_deliveries(52).unwrap(), 1);
    }

    /// One store records outcomes, the other prepares and applies them as rows: same rows.
    #[test]
    fn prepared_and_applied_outcomes_write_what_recording_them_writes() {
        let (_d1, recorded) = temp_store();
        let (_d2, applied) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items: Vec<_> = (1..=5).map(|n| (item(n), n == 5)).collect();
        let entries = recorded.accept_handed_over(&t, &r, &items, 10).unwrap();
        assert_eq!(
            applied.accept_handed_over(&t, &r, &items, 10).unwrap(),
            entries
        );
        let outcome = |due: &DueEntry, status: u16, change, gone| Outcome {
            due: due.clone(),
            attempt: Some(attempt(status)),
            state: match status {
                200 => DeliveryState::Succeeded,
                500 => DeliveryState::Pending,
                _ => DeliveryState::Failed,
            },
            next_due_us: (status == 500).then_some(100),
            failed_count: change,
            gone,
        };
        let both = |outcomes: &[Outcome], now_us: u64| {
            recorded.record_outcomes(outcomes, now_us).unwrap();
            let prepared = applied.prepare_outcomes(outcomes, now_us).unwrap();
            assert!(!prepared.is_empty());
            applied.apply_delivery_rows(prepared.rows()).unwrap();
            applied.outcomes_written(prepared);
            assert_eq!(all_rows(&recorded), all_rows(&applied));
        };
        both(
            &[
                outcome(&entries[0], 200, FailedCountChange::Reset, false),
                outcome(&entries[1], 500, FailedCountChange::Increment, false),
                outcome(&entries[2], 410, FailedCountChange::Increment, true),
            ],
            20,
        );
        let retry = recorded.due_entries(100, 10, None, |_| false, &|_| true);
        let retry = retry.unwrap().remove(0);
        both(
            &[
                outcome(&retry, 200, FailedCountChange::Reset, false),
                outcome(&entries[3], 200, FailedCountChange::Keep, false),
            ],
            30,
        );
        assert_eq!(
            recorded.t().deliveries.scan_prefix([BATCH]).count(),
            0,
            "the last outcome completed the batch"
        );
        assert!(applied.resume_first_attempts(&|_| true).unwrap().is_empty());
        // A retry's outcome seen again only removes its (gone) due entry.
        let again = applied
            .prepare_outcomes(&[outcome(&retry, 200, FailedCountChange::Keep, false)], 40)
            .unwrap();
        let due_key = retry.due_key().map(<[u8]>::to_vec).unwrap();
        assert_eq!(again.rows(), &[(due_key, None)]);
    }
}
