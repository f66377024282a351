//! Record writes as values: each change an actor makes to accounts, registrations and
//! subscriptions is one [`RecordWrite`], applied by [`Store::apply_write`].
//!
//! Being a value is what lets the same change be made here (one node owns its shard) or
//! replicated first (a Raft group's log carries it, and every voter applies it in log
//! order). So a write carries everything its effect depends on — records, ids, which rows
//! to remove — and nothing a voter would work out for itself. Every write is idempotent:
//! a voter that crashed between applying a write and recording that it did applies it
//! again on restart, and ends in the same state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::deliveries::DeliveryRow;
use super::{
    Account, NewAccountError, Registration, Result, Store, SubscribeError, Subscription, Triggered,
};

/// A change to the record trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordWrite {
    /// A new account, unless its username is taken.
    InsertAccount(Account),
    /// An existing account rewritten (the username never changes).
    UpdateAccount(Account),
    /// Deliveries to the account resume (a `410 Gone` stop lifted).
    ResumeDeliveries(Uuid),
    /// The account tombstoned, if live.
    BeginAccountDelete(Uuid),
    /// A tombstoned account's record and username removed.
    FinishAccountDelete(Account),
    /// A new registration, if its owner is live.
    InsertRegistration(Registration),
    /// An existing registration rewritten.
    UpdateRegistration(Registration),
    /// The registration tombstoned, if live.
    BeginRegistrationDelete(Uuid),
    /// A tombstoned registration removed with its subscriptions.
    FinishRegistrationDelete(Registration),
    /// New subscriptions, each with whether its subscriber's account must be checked too
    /// (it lives in the same shard group, so every voter holds it).
    InsertSubscriptions(Vec<(Subscription, bool)>),
    /// These subscriptions removed.
    DeleteSubscriptions(Vec<Subscription>),
    /// A trigger of one of the group's registrations, with its `Idempotency-Key` and its
    /// fan-out's first step (the cursor moved or removed, batches queued for the nodes
    /// serving the subscribers).
    Trigger {
        /// The trigger.
        triggered: Triggered,
        /// Its `Idempotency-Key`.
        idempotency_key: Option<String>,
        /// Its fan-out's first step.
        #[serde(with = "crate::byte_strings::rows")]
        first_step: Vec<DeliveryRow>,
    },
    /// Fan-out rows of the group's triggers (cursors, handoff batches) written or removed
    /// as they are: a fan-out step, or batches handed over.
    FanoutRows(#[serde(with = "crate::byte_strings::rows")] Vec<DeliveryRow>),
    /// Deliveries handed over for some of the group's subscribers: their trigger (whose
    /// body every voter keeps, so that whichever leads the group can deliver them) and
    /// their rows (pending batch, records of skipped ones).
    AcceptDeliveries {
        /// The trigger.
        triggered: Triggered,
        /// The rows.
        #[serde(with = "crate::byte_strings::rows")]
        rows: Vec<DeliveryRow>,
    },
    /// Delivery rows of the group's subscribers (records, pending batches, settled rows,
    /// due entries, `failed_count`s, `410 Gone` marks) written or removed as they are: an
    /// engine write its leader computed.
    DeliveryRows(#[serde(with = "crate::byte_strings::rows")] Vec<DeliveryRow>),
}

/// What applying a [`RecordWrite`] answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Done; nothing to report.
    Done,
    /// The account was not inserted: its username is taken.
    UsernameTaken,
    /// Whether the record was inserted.
    Inserted(bool),
    /// The account tombstoned, or `None` when there was no live one.
    AccountDeleting(Option<Account>),
    /// The registration tombstoned, or `None` when there was no live one.
    RegistrationDeleting(Option<Registration>),
    /// How many rows were removed.
    Removed(u64),
    /// Each subscription's outcome, in order.
    Subscribed(Vec<Result<(), SubscribeError>>),
}

impl Store {
    /// Applies `write` (synchronous; see the module doc for why it is a value).
    pub fn apply_write(&self, write: &RecordWrite) -> Result<WriteOutcome> {
        Ok(match write {
            RecordWrite::InsertAccount(account) => match self.insert_account(account) {
                Ok(()) => WriteOutcome::Done,
                Err(NewAccountError::UsernameTaken) => WriteOutcome::UsernameTaken,
                Err(NewAccountError::Store(e)) => return Err(e),
            },
            RecordWrite::UpdateAccount(account) => {
                self.update_account(account)?;
                WriteOutcome::Done
            }
            RecordWrite::ResumeDeliveries(id) => {
                self.resume_deliveries(id)?;
                WriteOutcome::Done
            }
            RecordWrite::BeginAccountDelete(id) => {
                WriteOutcome::AccountDeleting(self.begin_account_delete(id)?)
            }
            RecordWrite::FinishAccountDelete(account) => {
                self.finish_account_delete(account)?;
                WriteOutcome::Done
            }
            RecordWrite::InsertRegistration(r) => {
                WriteOutcome::Inserted(self.insert_registration(r)?)
            }
            RecordWrite::UpdateRegistration(r) => {
                self.update_registration(r)?;
                WriteOutcome::Done
            }
            RecordWrite::BeginRegistrationDelete(id) => {
                WriteOutcome::RegistrationDeleting(self.begin_registration_delete(id)?)
            }
            RecordWrite::FinishRegistrationDelete(r) => {
                WriteOutcome::Removed(self.finish_registration_delete(r)?)
            }
            RecordWrite::InsertSubscriptions(batch) => {
                WriteOutcome::Subscribed(self.insert_subscriptions(batch)?)
            }
            RecordWrite::Trigger {
                triggered,
                idempotency_key,
                first_step,
            } => {
                self.insert_triggered(triggered, idempotency_key.as_deref(), Some(first_step))?;
                WriteOutcome::Done
            }
            RecordWrite::FanoutRows(rows) => {
                self.apply_fanout_rows(rows)?;
                WriteOutcome::Done
            }
            RecordWrite::AcceptDeliveries { triggered, rows } => {
                self.keep_remote_trigger(triggered)?;
                self.apply_delivery_rows(rows)?;
                WriteOutcome::Done
            }
            RecordWrite::DeliveryRows(rows) => {
                self.apply_delivery_rows(rows)?;
                WriteOutcome::Done
            }
            RecordWrite::DeleteSubscriptions(subs) => {
                self.delete_subscriptions(subs)?;
                WriteOutcome::Removed(subs.len() as u64)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;
    use crate::store::RecordsDump;

    #[test]
    fn every_write_applied_twice_ends_in_the_same_state() {
        let (_d, s) = temp_store();
        let a = crate::store::accounts::tests::account(&s, "alice");
        let r = Registration {
            id: Uuid::new_v4(),
            epoch_us: s.next_epoch_us(),
            account_id: a.id,
            event: "e".into(),
            description: "d".into(),
            event_data: "{}".into(),
            deleting: false,
        };
        let sub = Subscription {
            id: Uuid::new_v4(),
            epoch_us: s.next_epoch_us(),
            account_id: a.id,
            registration_id: r.id,
        };
        let writes = [
            RecordWrite::InsertAccount(a.clone()),
            RecordWrite::InsertRegistration(r.clone()),
            RecordWrite::InsertSubscriptions(vec![(sub.clone(), true)]),
        ];
        for w in &writes {
            s.apply_write(w).unwrap();
        }
        assert_eq!(
            s.apply_write(&writes[0]).unwrap(),
            WriteOutcome::UsernameTaken
        );
        s.apply_write(&writes[1]).unwrap();
        s.apply_write(&writes[2]).unwrap();
        assert_eq!(s.subscribers_of(&r.id).unwrap(), vec![(sub.id, a.id)]);
        assert_eq!(s.registration_ids_of(&a.id).unwrap(), vec![r.id]);

        let begin = RecordWrite::BeginRegistrationDelete(r.id);
        assert!(matches!(
            s.apply_write(&begin).unwrap(),
            WriteOutcome::RegistrationDeleting(Some(_))
        ));
        assert_eq!(
            s.apply_write(&begin).unwrap(),
            WriteOutcome::RegistrationDeleting(None)
        );
        let mut tombstoned = r.clone();
        tombstoned.deleting = true;
        let finish = RecordWrite::FinishRegistrationDelete(tombstoned);
        assert_eq!(s.apply_write(&finish).unwrap(), WriteOutcome::Removed(1));
        assert_eq!(s.apply_write(&finish).unwrap(), WriteOutcome::Removed(0));
        assert!(s.registration(&r.id).unwrap().is_none());
        assert!(s.subscription(&sub.id).unwrap().is_none());

        assert!(matches!(
            s.apply_write(&RecordWrite::BeginAccountDelete(a.id))
                .unwrap(),
            WriteOutcome::AccountDeleting(Some(_))
        ));
        let mut gone = a.clone();
        gone.deleting = true;
        for _ in 0..2 {
            s.apply_write(&RecordWrite::FinishAccountDelete(gone.clone()))
                .unwrap();
        }
        assert!(s.account_by_username("alice").unwrap().is_none());
        assert!(!s.username_taken("alice").unwrap());
    }

    #[test]
    fn a_trigger_and_its_fan_out_rows_apply_twice_alike_and_travel_in_snapshots() {
        let (_d, s) = temp_store();
        let registration = Uuid::new_v4();
        let triggered = Triggered {
            id: Uuid::new_v4(),
            epoch_us: s.next_epoch_us(),
            registration_id: registration,
            account_id: Uuid::new_v4(),
            event: "e".into(),
            body: "{}".into(),
        };
        let cursor = crate::store::keys::cursor_key(&triggered.id).to_vec();
        let handoff = crate::store::keys::handoff_key("node-b", &triggered.id, 1, 0);
        let trigger = RecordWrite::Trigger {
            triggered: triggered.clone(),
            idempotency_key: Some("k1".into()),
            first_step: vec![
                (cursor.clone(), Some(vec![1])),
                (handoff.clone(), Some(vec![2])),
            ],
        };
        for _ in 0..2 {
            assert_eq!(s.apply_write(&trigger).unwrap(), WriteOutcome::Done);
        }
        let now = triggered.epoch_us;
        assert_eq!(s.triggered(&triggered.id).unwrap(), Some(triggered.clone()));
        let replay = s.idempotent_trigger(&registration, "k1", now).unwrap();
        assert_eq!(replay, Some(triggered.clone()));
        assert_eq!(
            s.idempotent_trigger(&registration, "k2", now).unwrap(),
            None
        );
        let handed = RecordWrite::FanoutRows(vec![(handoff.clone(), None)]);
        for _ in 0..2 {
            assert_eq!(s.apply_write(&handed).unwrap(), WriteOutcome::Done);
        }
        // Only cursors and handoff batches may be written so.
        let stray = RecordWrite::FanoutRows(vec![(b"r-not-a-fan-out-row".to_vec(), None)]);
        assert!(s.apply_write(&stray).is_err());

        // A snapshot of the registration's group carries the trigger, its key and its
        // cursor; another group's does not.
        let ours = move |id: &Uuid| *id == registration || *id == triggered.id;
        let dump = s.export_records(&ours).unwrap();
        assert_eq!(dump.triggers.triggered, vec![triggered.clone()]);
        assert_eq!(dump.triggers.idempotency.len(), 1);
        assert_eq!(dump.fanout_rows, vec![(cursor.clone(), vec![1])]);
        let theirs = s.export_records(&|_: &Uuid| false).unwrap();
        assert_eq!(theirs, RecordsDump::default());
        let (_d2, other) = temp_store();
        other.apply_write(&trigger).unwrap();
        other.replace_records(&ours, &dump).unwrap();
        assert_eq!(other.export_records(&ours).unwrap(), dump);
        let replay = other.idempotent_trigger(&registration, "k1", now).unwrap();
        assert_eq!(replay, Some(triggered.clone()));
        other
            .replace_records(&ours, &RecordsDump::default())
            .unwrap();
        assert_eq!(other.triggered(&triggered.id).unwrap(), None);
        assert_eq!(
            other.idempotent_trigger(&registration, "k1", now).unwrap(),
            None
        );
        assert_eq!(other.fanout(&triggered.id).unwrap(), None);
    }

    #[test]
    fn delivery_rows_apply_twice_alike_and_travel_with_their_subscribers_group() {
        let (_d, s) = temp_store();
        let subscriber = Uuid::new_v4();
        let count = crate::store::keys::failed_count_key(&subscriber).to_vec();
        let gone = crate::store::keys::gone_key(&subscriber).to_vec();
        let write = RecordWrite::DeliveryRows(vec![
            (count.clone(), Some(3u64.to_be_bytes().to_vec())),
            (gone.clone(), Some(9u64.to_be_bytes().to_vec())),
        ]);
        for _ in 0..2 {
            assert_eq!(s.apply_write(&write).unwrap(), WriteOutcome::Done);
        }
        assert_eq!(s.failed_count(&subscriber).unwrap(), 3);
        assert_eq!(s.deliveries_stopped_us(&subscriber).unwrap(), Some(9));
        // Fan-out rows are the trigger's group's, never written so.
        let cursor = crate::store::keys::cursor_key(&Uuid::new_v4()).to_vec();
        let stray = RecordWrite::DeliveryRows(vec![(cursor, None)]);
        assert!(s.apply_write(&stray).is_err());

        let ours = move |id: &Uuid| *id == subscriber;
        let dump = s.export_records(&ours).unwrap();
        assert_eq!(dump.delivery_rows.len(), 2);
        let (_d2, other) = temp_store();
        other.replace_records(&ours, &dump).unwrap();
        assert_eq!(other.deliveries_stopped_us(&subscriber).unwrap(), Some(9));
        other
            .replace_records(&ours, &RecordsDump::default())
            .unwrap();
        assert_eq!(other.failed_count(&subscriber).unwrap(), 0);
        assert_eq!(other.deliveries_stopped_us(&subscriber).unwrap(), None);
    }
}
