//! Creating deliveries: the writes of a fan-out step, and of a batch handed over by the
//! node that owns the trigger.
//!
//! Skipped deliveries (the subscriber at the `failed_count` limit) get their record at
//! once; the others one pending-batch row (see [`super::first_attempts`]), and come back as
//! first attempts to dispatch once written. A fan-out step also queues its batches for
//! other nodes and moves its cursor, in the same atomic batch, so a crash resumes it
//! exactly after the last step written.

use uuid::Uuid;

use super::first_attempts::{batch_key, first_attempt, PendingBatch};
use super::types::{
    delivery_id, Delivery, DeliveryState, DueEntry, FanoutCursor, FanoutStep, NewDelivery,
};
use super::{lock, DeliveryRow};
use crate::store::keys::{cursor_key, handoff_key};
use crate::store::records::encode_compact;
use crate::store::{Result, Store};

/// Deliveries prepared for writing ([`Store::prepare_step`]): the writes, and the first
/// attempts they create once written.
pub struct PreparedDeliveries {
    /// The rows to write: kept as a list so that several steps' writes can go into one
    /// batch, or into a group's log.
    writes: Vec<DeliveryRow>,
    /// The pending-batch row's key, when deliveries are created.
    key: Option<Vec<u8>>,
    entries: Vec<DueEntry>,
}

impl PreparedDeliveries {
    /// The writes, for a transaction that includes them.
    pub fn rows(&self) -> &[DeliveryRow] {
        &self.writes
    }

    /// The writes of a step that creates no deliveries here (a replicated fan-out's: its
    /// cursor and handoff batches), for its group's log.
    pub fn into_rows(self) -> Vec<DeliveryRow> {
        self.writes
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

impl Store {
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
        let prepared = self.prepare_accept(triggered, registration, items, now_us)?;
        self.apply_prepared(prepared)
    }

    /// Prepares the writes of [`Self::accept_handed_over`] without making them: the
    /// deliveries of the batch that do not exist yet (its pending-batch row and the records
    /// of skipped ones), nothing if it was accepted before.
    ///
    /// The caller keeps other accepts of the same batch out until the rows are written
    /// (a replicated group serialises its engine writes; here the accept lock does), then
    /// takes the first attempts with [`Self::opened_elsewhere`] or [`Self::apply_prepared`].
    pub fn prepare_accept(
        &self,
        triggered: &Uuid,
        registration: &Uuid,
        items: &[(NewDelivery, bool)],
        now_us: u64,
    ) -> Result<PreparedDeliveries> {
        self.build_deliveries(triggered, registration, items, now_us, None)
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

    /// The first attempts of prepared deliveries written by another path: with their
    /// trigger, or through a group's log.
    pub fn opened_elsewhere(&self, prepared: PreparedDeliveries) -> Vec<DueEntry> {
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
        let mut writes: Vec<DeliveryRow> = Vec::new();
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
                let key = handoff_key(peer, triggered, now_us, i as u32);
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{item, page, triggered};
    use super::*;
    use crate::store::tests::temp_store;

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
        s.insert_triggered(&done, None, Some(prepared.rows()))
            .unwrap();
        assert!(s.fanout(&done.id).unwrap().is_none());
        let entries = s.opened_elsewhere(prepared);
        assert_eq!(entries.len(), 2, "the skipped one is not attempted");
        assert_eq!(s.handoffs_for("node-b", 10, &|_| true).unwrap().len(), 1);
        // Replicated, a node hands over only the batches of the groups it leads.
        assert!(s.handoffs_for("node-b", 10, &|_| false).unwrap().is_empty());
        assert_eq!(s.resume_first_attempts(&|_| true).unwrap().len(), 2);
        assert_eq!(s.triggered(&done.id).unwrap(), Some(done.clone()));

        // More to come: the cursor stands after the step's last subscription.
        let more = triggered(r);
        let step = FanoutStep {
            finished: false,
            ..step
        };
        let prepared = s.prepare_step(&more.id, &r, &items, 10, &step).unwrap();
        s.insert_triggered(&more, None, Some(prepared.rows()))
            .unwrap();
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
        assert_eq!(s.resume_first_attempts(&|_| true).unwrap().len(), 2);
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
            s.due_count(&|_| true).unwrap(),
            0,
            "first attempts are not queued"
        );
        let counts = s.delivery_counts(&t, &|_| true).unwrap();
        assert_eq!((counts.pending, counts.skipped), (2, 1));
        let listed = page(&s, &t, 0, 10);
        let epochs: Vec<u64> = listed.iter().map(|d| d.subscription_epoch_us).collect();
        assert_eq!(epochs, vec![1, 2, 3]);
        assert_eq!(listed[1].state, DeliveryState::Pending);
        assert_eq!(listed[1].id, entries[0].delivery_id);
        assert_eq!(listed[1].next_attempt_us, Some(10));
        assert_eq!(page(&s, &t, 1, 1), vec![listed[1].clone()]);
        assert_eq!(s.resume_first_attempts(&|_| true).unwrap(), entries);
    }

    #[test]
    fn a_prepared_accept_writes_nothing_until_its_rows_are_applied() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let items = vec![(item(1), true), (item(2), false), (item(3), false)];
        let prepared = s.prepare_accept(&t, &r, &items, 10).unwrap();
        assert_eq!(prepared.rows().len(), 2, "the skipped record and the batch");
        assert_eq!(
            s.delivery_counts(&t, &|_| true).unwrap(),
            Default::default()
        );
        // Through a group's log: written blindly, then opened here.
        s.apply_delivery_rows(prepared.rows()).unwrap();
        let entries = s.opened_elsewhere(prepared);
        assert_eq!(entries.len(), 2);
        assert_eq!(s.resume_first_attempts(&|_| true).unwrap(), entries);
        let again = s.prepare_accept(&t, &r, &items, 11).unwrap();
        assert!(again.rows().is_empty(), "accepted before: nothing twice");
        assert!(s.opened_elsewhere(again).is_empty());
    }
}
