//! A group's state machine: applies committed commands, in log order, on every voter.
//!
//! Its own rows live under the group's `sm/` names in `raft_state`, with its applied
//! position and membership beside them. The group's records (accounts, registrations,
//! subscriptions) live in the record trees, beside other groups' records. The position is
//! recorded only once the effects it covers are on disk ([`AppliedPosition`]), so a crash
//! in between applies them again on restart, which every record write survives (they are
//! idempotent, see `store::writes`).
//!
//! A snapshot is the group's rows and records. It is built while entries keep being
//! applied, so it reads the applied position first: the rows read after it are that state
//! or a later one, and replaying the entries after the position onto a later state ends
//! in the same state, as a restart does. The read may even see part of an entry being
//! applied meanwhile: replaying the entry completes it, as after a crash in the middle of
//! applying it. Installing one replaces the group's records, then its rows and position.
//!
//! The state is on disk already, so a snapshot is read only when one is sent, and by the
//! replication task sending it: openraft asks for it (`get_current_snapshot`) in the state
//! machine's task, which applies nothing to the group meanwhile, so the answer holds the
//! position and where to read the data ([`SnapshotSource`]), not the data, whose read
//! takes as long as the group is large. The periodic build that lets openraft purge the log
//! (`cluster.snapshot_entries`) keeps only the snapshot's position and membership, so it
//! answers those without reading the group's data: copying a whole group every thousand
//! entries cost a tenth of a cluster's CPU under subscribes, and grows with the group.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use uuid::Uuid;

use openraft::{
    EntryPayload, RaftLogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
};

use super::applied_position::{AppliedPosition, APPLIED};
use super::log_store::{blocking, decode, encode};
use super::members::MemberList;
use super::types::{
    Applied, Command, Entry, GroupId, GroupSnapshot, LogId, SnapshotData, StorageError,
    StoredMembership, TypeConfig,
};
use crate::store::{machine_row, Account, StateChange, Store, StoreError};

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
    position: AppliedPosition,
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
            position: AppliedPosition::new(store.clone(), group.0),
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

    /// The snapshot at the applied position, its data left to read by whoever sends it.
    async fn snapshot(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let group = self.group.0;
        let (applied, membership) = blocking(&self.store, move |s| applied_state(s, group)).await?;
        Ok(Snapshot {
            meta: snapshot_meta(self.group, applied, membership),
            snapshot: Box::new(SnapshotData::Unread(SnapshotSource {
                store: self.store.clone(),
                group,
                in_group: self.in_group.clone(),
            })),
        })
    }
}

/// Where a group's snapshot data is read from: its state machine rows and its records as
/// they are when read, which is the snapshot's position or a later state (see the module
/// documentation).
pub struct SnapshotSource {
    store: Store,
    group: u16,
    in_group: InGroup,
}

impl std::fmt::Display for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "group {}", GroupId(self.group))
    }
}

impl SnapshotSource {
    /// Reads the group's rows and records.
    pub async fn read(self) -> Result<GroupSnapshot, StoreError> {
        let Self {
            store,
            group,
            in_group,
        } = self;
        blocking(&store, move |s| {
            Ok(GroupSnapshot {
                rows: s.raft_machine_rows(group)?,
                records: s.export_records(&*in_group)?,
            })
        })
        .await
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
        let position = self.position.clone();
        let (answers, members, last) = blocking(&self.store, move |s| {
            let mut answers = Vec::with_capacity(entries.len());
            let mut last = None;
            for entry in entries {
                let log_id = *entry.get_log_id();
                let (changes, answer) = match entry.payload {
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
                last = Some(log_id);
                if !changes.is_empty() {
                    // A later entry may read these rows, so they are written now, with
                    // their position, once every earlier effect is durable.
                    s.flush_blocking()?;
                    position.record_with(log_id, changes)?;
                }
            }
            let members = match meta {
                true => recorded_members(s)?,
                false => None,
            };
            Ok((answers, members, last))
        })
        .await
        .map_err(sm_err)?;
        if let Some(log_id) = last {
            self.position.applied(log_id);
        }
        if meta {
            self.publish_members(members);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let group = self.group.0;
        let snapshot = snapshot.read().await.map_err(sm_err)?;
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
        let applied = meta.last_log_id;
        let in_group = self.in_group.clone();
        let meta = self.members.is_some();
        let position = self.position.clone();
        let members = blocking(&self.store, move |s| {
            s.replace_records(&*in_group, &snapshot.records)?;
            // The records are durable before the position that says they are there.
            s.flush_blocking()?;
            position.install(applied, || {
                s.raft_replace_machine(group, &snapshot.rows, &changes)
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot openraft takes in the state machine's task reads no data: what it
    /// holds is read when it is sent, so a row applied in between is in it.
    #[tokio::test]
    async fn a_snapshot_is_read_when_it_is_sent() {
        crate::store::allow_sync_calls();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, 16).unwrap();
        let group = 3;
        let row = |name: &[u8]| (machine_row(name), Some(b"v".to_vec()));
        store.raft_change_state(group, &[row(b"before")]).unwrap();
        let mut machine =
            StateMachine::new(store.clone(), GroupId(group), Arc::new(|_| true), None);

        let snapshot = machine.get_current_snapshot().await.unwrap().unwrap();
        assert!(matches!(*snapshot.snapshot, SnapshotData::Unread(_)));
        assert_eq!(snapshot.meta.last_log_id, None);
        store.raft_change_state(group, &[row(b"after")]).unwrap();

        let data = snapshot.snapshot.read().await.unwrap();
        let names: Vec<_> = data.rows.iter().map(|(name, _)| name.clone()).collect();
        assert_eq!(names, vec![b"after".to_vec(), b"before".to_vec()]);
    }
}
