//! A group's state machine: applies committed commands, in log order, on every voter.
//!
//! Its rows live under the group's `sm/` names in `raft_state`, and its applied position
//! and membership beside them, each entry written in one atomic batch with its effect: a
//! crash never leaves an entry half applied, and a restart resumes after the last entry
//! applied. A snapshot is the group's rows; installing one replaces them in one batch.

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, RaftLogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
};

use super::log_store::{blocking, decode, encode};
use super::types::{
    Applied, Command, Entry, GroupId, GroupSnapshot, LogId, StorageError, StoredMembership,
    TypeConfig,
};
use crate::store::{machine_row, Account, StateChange, Store, StoreError};

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
/// The cluster's administrator account (metadata group).
const ADMIN: &[u8] = b"admin";

/// The state machine of one group.
#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    group: GroupId,
}

fn sm_err(e: StoreError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// The state machine of `group` in `store`.
    pub fn new(store: Store, group: GroupId) -> Self {
        Self { store, group }
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
        let (rows, (applied, membership)) = blocking(&self.store, move |s| {
            Ok((s.raft_machine_rows(group)?, applied_state(s, group)?))
        })
        .await?;
        let snapshot_id = match applied {
            Some(id) => format!("{}-{}-{}", self.group, id.leader_id, id.index),
            None => format!("{}-empty", self.group),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            },
            snapshot: Box::new(GroupSnapshot { rows }),
        })
    }
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
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshot()
            .await
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
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
        blocking(&self.store, move |s| {
            let mut answers = Vec::with_capacity(entries.len());
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
                changes.push((APPLIED.to_vec(), Some(encode(&log_id)?)));
                s.raft_change_state(group, &changes)?;
                answers.push(answer);
            }
            Ok(answers)
        })
        .await
        .map_err(sm_err)
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
        blocking(&self.store, move |s| {
            s.raft_replace_machine(group, &snapshot.rows, &changes)
        })
        .await
        .map_err(sm_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshot()
            .await
            .map(Some)
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }
}
