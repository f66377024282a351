//! A group's state machine: applies committed commands, in log order, on every voter.
//!
//! Its own rows live under the group's `sm/` names in `raft_state`, with its applied
//! position and membership beside them, each entry written in one atomic batch with its
//! effect. The group's records (accounts, registrations, subscriptions) live in the
//! record trees, beside other groups' records; a record write is applied before the
//! position that covers it is recorded, so a crash in between applies it again on restart,
//! which every record write survives (they are idempotent, see `store::writes`).
//!
//! A snapshot is the group's rows and records. It is built while entries keep being
//! applied, so it reads the applied position first: the rows read after it are that state
//! or a later one, and replaying the entries after the position onto a later state ends
//! in the same state, as a restart does. Installing one replaces the group's records, then
//! its rows and position.
//!
//! The state is on disk already, so a snapshot is read only when one is sent (openraft's
//! `get_current_snapshot`). The periodic build that lets openraft purge the log
//! (`cluster.snapshot_entries`) keeps only the snapshot's position and membership, so it
//! answers those without reading the group's data: copying a whole group every thousand
//! entries cost a tenth of a cluster's CPU under subscribes, and grows with the group.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use uuid::Uuid;

use openraft::{
    EntryPayload, RaftLogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
};

use super::log_store::{blocking, decode, encode};
use super::members::MemberList;
use super::types::{
    Applied, Command, Entry, GroupId, GroupSnapshot, LogId, StorageError, StoredMembership,
    TypeConfig,
};
use crate::store::{machine_row, Account, StateChange, Store, StoreError};

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
/// The cluster's administrator account (metadata group).
const ADMIN: &[u8] = b"admin";
/// The member list (metadata group).
const MEMBERS: &[u8] = b"members";

/// Where the metadata group's state machine publishes each member list it applies.
pub type MembersWatch = tokio::sync::watch::Sender<Option<MemberList>>;

/// Which record ids belong to a group.
pub type InGroup = Arc<dyn Fn(&Uuid) -> bool + Send + Sync>;

/// The state machine of one group.
#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    group: GroupId,
    in_group: InGroup,
    /// Set for the metadata group.
    members: Option<MembersWatch>,
}

fn sm_err(e: StoreError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// The state machine of `group` in `store`.
    pub fn new(
        store: Store,
        group: GroupId,
        in_group: InGroup,
        members: Option<MembersWatch>,
    ) -> Self {
        Self {
            store,
            group,
            in_group,
            members,
        }
    }

    /// Publishes `list`, the member list just recorded (metadata group).
    fn publish_members(&self, list: Option<MemberList>) {
        if let Some(watch) = &self.members {
            watch.send_if_modified(|known| {
                let changed = *known != list;
                *known = list;
                changed
            });
        }
    }

    /// The changes `command` makes, and its answer, given the current rows.
    fn execute(
        store: &Store,
        group: u16,
        command: Command,
    ) -> Result<(Vec<StateChange>, Applied), StoreError> {
        match command {
            Command::BootstrapAdmin(account) => {
                if let Some(bytes) = store.raft_state(group, &machine_row(ADMIN))? {
                    let first: Account = decode(&bytes)?;
                    return Ok((Vec::new(), Applied::Admin(Box::new(first))));
                }
                let row = (machine_row(ADMIN), Some(encode(&account)?));
                Ok((vec![row], Applied::Admin(account)))
            }
            Command::Members(change) => {
                let current = recorded_members(store)?;
                match change.apply(current.as_ref()) {
                    Ok(list) if Some(&list) == current.as_ref() => {
                        Ok((Vec::new(), Applied::Members(Ok(list))))
                    }
                    Ok(list) => {
                        let row = (machine_row(MEMBERS), Some(encode(&list)?));
                        Ok((vec![row], Applied::Members(Ok(list))))
                    }
                    Err(refused) => Ok((Vec::new(), Applied::Members(Err(refused)))),
                }
            }
            Command::Records(writes) => {
                let outcomes = writes
                    .iter()
                    .map(|w| store.apply_write(w))
                    .collect::<Result<_, _>>()?;
                Ok((Vec::new(), Applied::Records(outcomes)))
            }
        }
    }

    async fn snapshot(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let group = self.group.0;
        let in_group = self.in_group.clone();
        let ((applied, membership), rows, records) = blocking(&self.store, move |s| {
            let applied = applied_state(s, group)?;
            Ok((
                applied,
                s.raft_machine_rows(group)?,
                s.export_records(&*in_group)?,
            ))
        })
        .await?;
        Ok(Snapshot {
            meta: snapshot_meta(self.group, applied, membership),
            snapshot: Box::new(GroupSnapshot { rows, records }),
        })
    }
}

/// A snapshot of `group` at position `applied`.
fn snapshot_meta(
    group: GroupId,
    applied: Option<LogId>,
    membership: StoredMembership,
) -> SnapshotMeta<u64, openraft::BasicNode> {
    let snapshot_id = match applied {
        Some(id) => format!("{group}-{}-{}", id.leader_id, id.index),
        None => format!("{group}-empty"),
    };
    SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    }
}

/// The member list the metadata group recorded, if any.
pub fn recorded_members(store: &Store) -> Result<Option<MemberList>, StoreError> {
    store
        .raft_state(GroupId::META.0, &machine_row(MEMBERS))?
        .map(|b| decode(&b))
        .transpose()
}

/// The last entry applied to `group`, and the membership it applied last.
fn applied_state(
    store: &Store,
    group: u16,
) -> Result<(Option<LogId>, StoredMembership), StoreError> {
    let applied = store
        .raft_state(group, APPLIED)?
        .map(|b| decode(&b))
        .transpose()?;
    let membership: Option<StoredMembership> = store
        .raft_state(group, MEMBERSHIP)?
        .map(|b| decode(&b))
        .transpose()?;
    Ok((applied, membership.unwrap_or_default()))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// The snapshot's position and membership, with no data (see the module doc).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let group = self.group.0;
        let (applied, membership) = blocking(&self.store, move |s| applied_state(s, group))
            .await
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        Ok(Snapshot {
            meta: snapshot_meta(self.group, applied, membership),
            snapshot: Box::default(),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let group = self.group.0;
        blocking(&self.store, move |s| applied_state(s, group))
            .await
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let group = self.group.0;
        let meta = self.members.is_some();
        let (answers, members) = blocking(&self.store, move |s| {
            let mut answers = Vec::with_capacity(entries.len());
            // The position is recorded after the effects it covers: with an entry's own
            // state rows (which a later entry may read), else once after the last entry.
            let mut unrecorded = None;
            for entry in entries {
                let log_id = *entry.get_log_id();
                let (mut changes, answer) = match entry.payload {
                    EntryPayload::Blank => (Vec::new(), Applied::Nothing),
                    EntryPayload::Normal(command) => Self::execute(s, group, command)?,
                    EntryPayload::Membership(membership) => {
                        let stored = StoredMembership::new(Some(log_id), membership);
                        (
                            vec![(MEMBERSHIP.to_vec(), Some(encode(&stored)?))],
                            Applied::Nothing,
                        )
                    }
                };
                answers.push(answer);
                if changes.is_empty() {
                    unrecorded = Some(log_id);
                    continue;
                }
                changes.push((APPLIED.to_vec(), Some(encode(&log_id)?)));
                s.raft_change_state(group, &changes)?;
                unrecorded = None;
            }
            if let Some(log_id) = unrecorded {
                s.raft_change_state(group, &[(APPLIED.to_vec(), Some(encode(&log_id)?))])?;
            }
            let members = match meta {
                true => recorded_members(s)?,
                false => None,
            };
            Ok((answers, members))
        })
        .await
        .map_err(sm_err)?;
        if meta {
            self.publish_members(members);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<GroupSnapshot>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<GroupSnapshot>,
    ) -> Result<(), StorageError> {
        let group = self.group.0;
        let changes = vec![
            (
                APPLIED.to_vec(),
                meta.last_log_id
                    .map(|id| encode(&id))
                    .transpose()
                    .map_err(sm_err)?,
            ),
            (
                MEMBERSHIP.to_vec(),
                Some(encode(&meta.last_membership).map_err(sm_err)?),
            ),
        ];
        let in_group = self.in_group.clone();
        let meta = self.members.is_some();
        let members = blocking(&self.store, move |s| {
            s.replace_records(&*in_group, &snapshot.records)?;
            s.raft_replace_machine(group, &snapshot.rows, &changes)?;
            match meta {
                true => recorded_members(s),
                false => Ok(None),
            }
        })
        .await
        .map_err(sm_err)?;
        if meta {
            self.publish_members(members);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshot()
            .await
            .map(Some)
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }
}
