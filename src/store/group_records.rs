//! A shard group's API records as one value: what the group's Raft snapshot carries
//! ([`Store::export_records`]), and the install of such a snapshot, which makes this node's
//! rows of the group exactly the snapshot's ([`Store::replace_records`]). The dump also
//! carries the group's triggers with their `Idempotency-Key`s (`triggered.rs`), their
//! fan-outs' cursors and handoff batches (`deliveries/handoffs.rs`), and the delivery
//! engine's rows of the group's subscribers (`deliveries/rows.rs`).
//!
//! Several groups' rows share the trees of a node, so both take a predicate telling which
//! record ids are the group's. Ids are shard-aligned (a subscription's id lies in its
//! registration's shard, a registration's in its account's, an account's with its
//! username), so each record answers to the predicate by its own id. An index row belongs
//! to the record it indexes — the id at the end of its key, or for `usernames` the account
//! id it holds — never to the owner its key starts with: a `subscriptions_by_subscriber`
//! row of another group's subscription stays, though its subscriber is this group's.
//!
//! The dump holds the records exactly as stored, tombstoned ones (`deleting`) included.
//! The delivery rows belong to the group of their subscriber account, not to the trigger's
//! (its fan-out rows do): deliveries, pending batches, settled rows and due entries to the
//! group's accounts, and their `failed_count`s and `410 Gone` marks, which the group's log
//! writes like the records. The replace makes them the dump's too, after the records (an
//! account the dump lacks loses them first, as in an account delete).
//!
//! A replace runs in three passes of transactions of at most [`CASCADE_CHUNK`] records each
//! (a snapshot can be large; one transaction would hold it all in memory twice):
//! 1. remove the group's records the dump lacks, each with every index row derived from it
//!    (subscriptions first, accounts last, as cascades do);
//! 2. upsert every dump record (accounts first, as inserts go): one transaction removes
//!    the rows of the stored version and writes the dump's, so a changed record is never
//!    missing for a reader, and its index rows follow a changed epoch, owner or username;
//! 3. sweep the index trees for rows of the group that no dump record has: rows whose
//!    record was missing or unreadable, which the passes above cannot derive.
//!
//! A dump record gets the rows the insert paths write, or for a tombstoned one those its
//! tombstone kept (the record, and an account's username: its listings went when it was
//! tombstoned), so the restart's cascade finishes its delete here as on its origin.
//!
//! Each pass decides from the stored rows and the dump alone, so rerunning, with the same
//! dump, a replace that a crash interrupted ends in the same state. Meanwhile readers see
//! each record whole, old or new, but the group as a mix: callers install a snapshot while
//! the group applies nothing else.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionResult, TransactionalTree};
use sled::Transactional;
use uuid::Uuid;

use super::deliveries::check_delivery_rows;
use super::keys::{epoch_key, failed_count_key, gone_key, owned_key, read_uuid, trailing_id};
use super::records::{decode, encode, encode_compact, Account, Registration, Subscription};
use super::triggered::TriggersDump;
use super::{Result, Store, StoreError, CASCADE_CHUNK};

/// One group's API records, as stored, each list in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordsDump {
    /// The group's accounts (without the delivery engine's data).
    pub accounts: Vec<Account>,
    /// The group's registrations.
    pub registrations: Vec<Registration>,
    /// The group's subscriptions (their subscribers may be other groups' accounts).
    pub subscriptions: Vec<Subscription>,
    /// Its registrations' triggers, with their `Idempotency-Key`s.
    pub triggers: TriggersDump,
    /// Their fan-outs' cursors and handoff batches, as stored rows.
    pub fanout_rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// The delivery rows of the group's subscribers (see
    /// [`Store::export_delivery_rows`]).
    pub delivery_rows: Vec<(Vec<u8>, Vec<u8>)>,
}

// Positions in `Store::record_trees`.
const ACCOUNTS: usize = 0;
const USERNAMES: usize = 1;
const ACCOUNTS_BY_EPOCH: usize = 2;
const REGISTRATIONS: usize = 3;
const REGISTRATIONS_BY_EPOCH: usize = 4;
const REGISTRATIONS_BY_ACCOUNT: usize = 5;
const SUBSCRIPTIONS: usize = 6;
const SUBSCRIPTIONS_BY_EPOCH: usize = 7;
const SUBSCRIPTIONS_BY_REGISTRATION: usize = 8;
const SUBSCRIPTIONS_BY_SUBSCRIBER: usize = 9;
const DELIVERIES: usize = 10;

/// The index trees of the records.
const INDEXES: [usize; 7] = [
    USERNAMES,
    ACCOUNTS_BY_EPOCH,
    REGISTRATIONS_BY_EPOCH,
    REGISTRATIONS_BY_ACCOUNT,
    SUBSCRIPTIONS_BY_EPOCH,
    SUBSCRIPTIONS_BY_REGISTRATION,
    SUBSCRIPTIONS_BY_SUBSCRIBER,
];

/// An index row: its tree's position, key and value.
type Row = (usize, Vec<u8>, Vec<u8>);

/// The id of the record a row of tree `tree` belongs to (see the module documentation).
fn indexed_id(tree: usize, key: &[u8], value: &[u8]) -> Result<Uuid> {
    if tree == USERNAMES {
        read_uuid(value, 0)
    } else {
        trailing_id(key)
    }
}

/// A kind of record a dump carries.
trait GroupRecord: Serialize + DeserializeOwned + PartialEq {
    /// Position of its tree.
    const TREE: usize;
    /// Its id, the key of its record.
    fn id(&self) -> Uuid;
    /// Its creation time.
    fn epoch_us(&self) -> u64;
    /// The index rows the store keeps for it: those of its insert, or those its tombstone
    /// kept.
    fn index_rows(&self) -> Vec<Row>;
    /// Its stored form (as its insert writes it).
    fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }
}

impl GroupRecord for Account {
    const TREE: usize = ACCOUNTS;

    fn id(&self) -> Uuid {
        self.id
    }

    fn epoch_us(&self) -> u64 {
        self.epoch_us
    }

    fn index_rows(&self) -> Vec<Row> {
        let mut rows = vec![(
            USERNAMES,
            self.username.as_bytes().to_vec(),
            self.id.as_bytes().to_vec(),
        )];
        if !self.deleting {
            let key = epoch_key(self.epoch_us, &self.id);
            rows.push((ACCOUNTS_BY_EPOCH, key.to_vec(), Vec::new()));
        }
        rows
    }
}

impl GroupRecord for Registration {
    const TREE: usize = REGISTRATIONS;

    fn id(&self) -> Uuid {
        self.id
    }

    fn epoch_us(&self) -> u64 {
        self.epoch_us
    }

    fn index_rows(&self) -> Vec<Row> {
        if self.deleting {
            return Vec::new();
        }
        let by_account = owned_key(&self.account_id, self.epoch_us, &self.id);
        vec![
            (
                REGISTRATIONS_BY_EPOCH,
                epoch_key(self.epoch_us, &self.id).to_vec(),
                Vec::new(),
            ),
            (REGISTRATIONS_BY_ACCOUNT, by_account, Vec::new()),
        ]
    }
}

impl GroupRecord for Subscription {
    const TREE: usize = SUBSCRIPTIONS;

    fn encode(&self) -> Result<Vec<u8>> {
        encode_compact(self)
    }

    fn id(&self) -> Uuid {
        self.id
    }

    fn epoch_us(&self) -> u64 {
        self.epoch_us
    }

    fn index_rows(&self) -> Vec<Row> {
        let (e, id) = (self.epoch_us, &self.id);
        vec![
            (
                SUBSCRIPTIONS_BY_EPOCH,
                epoch_key(e, id).to_vec(),
                Vec::new(),
            ),
            (
                SUBSCRIPTIONS_BY_REGISTRATION,
                owned_key(&self.registration_id, e, id),
                self.account_id.as_bytes().to_vec(),
            ),
            (
                SUBSCRIPTIONS_BY_SUBSCRIBER,
                owned_key(&self.account_id, e, id),
                self.registration_id.as_bytes().to_vec(),
            ),
        ]
    }
}

/// The latest epoch of `records`, or an error when one lies outside the group.
fn group_check<R: GroupRecord>(records: &[R], in_group: &dyn Fn(&Uuid) -> bool) -> Result<u64> {
    let mut latest = 0;
    for record in records {
        if !in_group(&record.id()) {
            return Err(StoreError::Corrupt(format!(
                "snapshot record {} lies outside its group",
                record.id()
            )));
        }
        latest = latest.max(record.epoch_us());
    }
    Ok(latest)
}

/// Removes the index rows `rows` of the record `id` (a username row only while it still
/// names `id`: the key alone does not say whose it is).
fn remove_rows(
    tx: &[TransactionalTree],
    id: &Uuid,
    rows: &[Row],
) -> ConflictableTransactionResult<(), StoreError> {
    for (tree, key, _) in rows {
        if *tree == USERNAMES
            && tx[USERNAMES].get(key)?.as_deref() != Some(id.as_bytes().as_slice())
        {
            continue;
        }
        tx[*tree].remove(key.as_slice())?;
    }
    Ok(())
}

impl Store {
    /// The records of the group whose ids satisfy `in_group`, exactly as stored (see the
    /// module documentation).
    ///
    /// The trees are read one after the other, not at one instant: the caller keeps the
    /// group from applying changes meanwhile.
    pub fn export_records(&self, in_group: &dyn Fn(&Uuid) -> bool) -> Result<RecordsDump> {
        Ok(RecordsDump {
            accounts: self.export(in_group)?,
            registrations: self.export(in_group)?,
            subscriptions: self.export(in_group)?,
            triggers: self.export_triggers(in_group)?,
            fanout_rows: self.export_fanout_rows(in_group)?,
            delivery_rows: self.export_delivery_rows(in_group)?,
        })
    }

    /// Makes this node's rows of the records whose ids satisfy `in_group` exactly those of
    /// `dump`, leaving every other row alone (see the module documentation). Idempotent.
    ///
    /// A dump record or delivery row outside the group is refused before anything is
    /// written.
    pub fn replace_records(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        dump: &RecordsDump,
    ) -> Result<()> {
        let latest = group_check(&dump.accounts, in_group)?
            .max(group_check(&dump.registrations, in_group)?)
            .max(group_check(&dump.subscriptions, in_group)?);
        check_delivery_rows(in_group, &dump.delivery_rows)?;
        // Epochs handed out later must stay above every written one (see `Store::open`).
        self.inner
            .last_epoch_us
            .fetch_max(latest, Ordering::Relaxed);
        self.remove_absent(in_group, &dump.subscriptions)?;
        self.remove_absent(in_group, &dump.registrations)?;
        self.remove_absent(in_group, &dump.accounts)?;
        self.upsert(&dump.accounts)?;
        self.upsert(&dump.registrations)?;
        self.upsert(&dump.subscriptions)?;
        self.sweep_indexes(in_group, dump)?;
        self.replace_triggers(in_group, &dump.triggers)?;
        self.replace_fanout_rows(in_group, &dump.fanout_rows)?;
        self.replace_delivery_rows(in_group, &dump.delivery_rows)
    }

    /// The trees a replace touches, at the positions of the constants above (also the
    /// first the wipe clears).
    pub(super) fn record_trees(&self) -> [&sled::Tree; 11] {
        let t = self.t();
        [
            &t.accounts,
            &t.usernames,
            &t.accounts_by_epoch,
            &t.registrations,
            &t.registrations_by_epoch,
            &t.registrations_by_account,
            &t.subscriptions,
            &t.subscriptions_by_epoch,
            &t.subscriptions_by_registration,
            &t.subscriptions_by_subscriber,
            &t.deliveries,
        ]
    }

    /// Runs `f` as one transaction over [`Store::record_trees`].
    fn transact<A>(
        &self,
        f: impl Fn(&[TransactionalTree]) -> ConflictableTransactionResult<A, StoreError>,
    ) -> Result<A> {
        let trees = self.record_trees();
        trees[..].transaction(|tx| f(tx)).map_err(StoreError::from)
    }

    /// Records of kind `R` in the group, in id order.
    fn export<R: GroupRecord>(&self, in_group: &dyn Fn(&Uuid) -> bool) -> Result<Vec<R>> {
        let mut out = Vec::new();
        for item in self.record_trees()[R::TREE].iter() {
            let (key, value) = item?;
            if in_group(&read_uuid(&key, 0)?) {
                out.push(decode(&value)?);
            }
        }
        Ok(out)
    }

    /// Tells the caches that records of kind `R` with `ids` were written or removed
    /// (`removed`: a stored version is gone or changed).
    fn changed<R: GroupRecord>(&self, ids: impl Iterator<Item = Uuid>, removed: bool) {
        match R::TREE {
            ACCOUNTS => ids.for_each(|id| self.inner.targets.invalidate(&id)),
            SUBSCRIPTIONS if removed => {
                self.inner
                    .subscription_deletions
                    .fetch_add(1, Ordering::Release);
            }
            _ => {}
        }
    }

    /// Pass 1: removes the group's records of kind `R` that `dump` lacks, with their rows.
    fn remove_absent<R: GroupRecord>(
        &self,
        in_group: &dyn Fn(&Uuid) -> bool,
        dump: &[R],
    ) -> Result<()> {
        let keep: HashSet<Uuid> = dump.iter().map(R::id).collect();
        let mut doomed = Vec::new();
        for key in self.record_trees()[R::TREE].iter().keys() {
            let id = read_uuid(&key?, 0)?;
            if in_group(&id) && !keep.contains(&id) {
                doomed.push(id);
            }
        }
        // Removing `failed_count`s, like every other writer of one, holds the counts lock.
        let _counts = (R::TREE == ACCOUNTS).then(|| self.lock_counts());
        for chunk in doomed.chunks(CASCADE_CHUNK) {
            self.transact(|tx| {
                for id in chunk {
                    if let Some(old) = tx[R::TREE].remove(id.as_bytes().as_slice())? {
                        // An unreadable record's rows are left to the sweep (pass 3).
                        if let Ok(old) = decode::<R>(&old) {
                            remove_rows(tx, id, &old.index_rows())?;
                        }
                    }
                    if R::TREE == ACCOUNTS {
                        tx[DELIVERIES].remove(&failed_count_key(id))?;
                        tx[DELIVERIES].remove(&gone_key(id))?;
                    }
                }
                Ok(())
            })?;
            self.changed::<R>(chunk.iter().copied(), true);
        }
        Ok(())
    }

    /// Pass 2: writes every record of `dump` and its rows, replacing the stored version's.
    fn upsert<R: GroupRecord>(&self, dump: &[R]) -> Result<()> {
        for chunk in dump.chunks(CASCADE_CHUNK) {
            let encoded = chunk.iter().map(R::encode).collect::<Result<Vec<_>>>()?;
            let removed = self.transact(|tx| {
                let mut removed = false;
                for (record, bytes) in chunk.iter().zip(&encoded) {
                    let id = record.id();
                    if let Some(old) =
                        tx[R::TREE].insert(id.as_bytes().as_slice(), bytes.as_slice())?
                    {
                        match decode::<R>(&old) {
                            Ok(old) => {
                                removed |= old != *record;
                                remove_rows(tx, &id, &old.index_rows())?;
                            }
                            // Unreadable: its rows are left to the sweep (pass 3).
                            Err(_) => removed = true,
                        }
                    }
                    for (tree, key, value) in record.index_rows() {
                        tx[tree].insert(key, value)?;
                    }
                }
                Ok(removed)
            })?;
            self.changed::<R>(chunk.iter().map(R::id), removed);
        }
        Ok(())
    }

    /// Pass 3: removes the index rows of the group that no record of `dump` has.
    fn sweep_indexes(&self, in_group: &dyn Fn(&Uuid) -> bool, dump: &RecordsDump) -> Result<()> {
        let mut wanted: Vec<HashMap<Vec<u8>, Vec<u8>>> = vec![HashMap::new(); DELIVERIES];
        let rows = (dump.accounts.iter().flat_map(Account::index_rows))
            .chain(dump.registrations.iter().flat_map(Registration::index_rows))
            .chain(dump.subscriptions.iter().flat_map(Subscription::index_rows));
        for (tree, key, value) in rows {
            wanted[tree].insert(key, value);
        }
        let trees = self.record_trees();
        for tree in INDEXES {
            let mut stray = Vec::new();
            for item in trees[tree].iter() {
                let (key, value) = item?;
                if in_group(&indexed_id(tree, &key, &value)?)
                    && wanted[tree].get(key.as_ref()).map(Vec::as_slice) != Some(value.as_ref())
                {
                    stray.push((key, value));
                }
            }
            for chunk in stray.chunks(CASCADE_CHUNK) {
                self.transact(|tx| {
                    for (key, value) in chunk {
                        // Only the row read above: a writer may have changed it since.
                        if tx[tree].get(key)?.as_ref() == Some(value) {
                            tx[tree].remove(key)?;
                        }
                    }
                    Ok(())
                })?;
            }
            let subscription_index = matches!(
                tree,
                SUBSCRIPTIONS_BY_EPOCH
                    | SUBSCRIPTIONS_BY_REGISTRATION
                    | SUBSCRIPTIONS_BY_SUBSCRIBER
            );
            if subscription_index && !stray.is_empty() {
                self.changed::<Subscription>(std::iter::empty(), true);
            }
        }
        Ok(())
    }
}
