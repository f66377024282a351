//! The Raft vocabulary of webhookd: group ids, node ids, commands and their answers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::members::{MemberList, MembersChange, MembersRefused};
use super::state_machine::SnapshotSource;
use crate::cluster::shard::fnv1a64;
use crate::store::{Account, RecordWrite, RecordsDump, StoreError, WriteOutcome};

/// A Raft group: one of the `cluster.groups` shard groups, or the metadata group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u16);

impl GroupId {
    /// The metadata group: every member votes in it; it holds what exists once per cluster.
    pub const META: GroupId = GroupId(u16::MAX);

    /// True for the metadata group.
    pub fn is_meta(self) -> bool {
        self == Self::META
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_meta() {
            f.write_str("meta")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Raft's id of a member: a hash of its configured id, so that it never depends on the
/// order of the member list (and stays the same when members are added later).
pub fn raft_id(member: &str) -> u64 {
    fnv1a64(member.as_bytes())
}

/// A change to a group's replicated state, applied in log order on every voter.
///
/// Commands carry everything their effect depends on (ids, times, hashes), never
/// something a voter would compute for itself, so that every voter applies the same
/// change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Records the cluster's administrator account, unless one is recorded already.
    BootstrapAdmin(Box<Account>),
    /// Changes to the group's records (accounts, registrations, subscriptions), made by
    /// its leader's actors and applied in order. Shared, so that the log's cache of recent
    /// entries hands out copies without copying the writes (encoded as the list itself).
    Records(Arc<Vec<RecordWrite>>),
    /// Changes the member list (metadata group). Last: logs written before it existed
    /// keep their encoding.
    Members(MembersChange),
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry: nothing to answer.
    Nothing,
    /// The cluster's administrator account (the one just proposed, or the earlier one).
    Admin(Box<Account>),
    /// Each record write's outcome, in order.
    Records(Vec<WriteOutcome>),
    /// The member list after the change, or why it was refused.
    Members(Result<MemberList, MembersRefused>),
}

/// A group's replicated state as shipped to a voter that fell behind the purged log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The state machine's rows: `(name, value)`.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// The group's records.
    pub records: RecordsDump,
}

/// A group's snapshot as openraft holds it. The state machine hands one out for sending
/// `Unread`: the replication task that sends it reads the data, not the state machine's
/// task, which applies nothing to the group meanwhile (reading a large group there held
/// the group's writes for as long). One received from a leader is `Read`.
pub enum SnapshotData {
    /// The data, received or read.
    Read(GroupSnapshot),
    /// Where to read it.
    Unread(SnapshotSource),
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(data) => f.debug_tuple("Read").field(data).finish(),
            Self::Unread(source) => write!(f, "Unread({source})"),
        }
    }
}

impl Default for SnapshotData {
    fn default() -> Self {
        Self::Read(GroupSnapshot::default())
    }
}

impl SnapshotData {
    /// The data, read now if it was not.
    pub async fn read(self) -> Result<GroupSnapshot, StoreError> {
        match self {
            Self::Read(data) => Ok(data),
            Self::Unread(source) => source.read().await,
        }
    }
}

openraft::declare_raft_types!(
    /// webhookd's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// A Raft instance of one group.
pub type GroupRaft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// A storage failure, as openraft takes it.
pub type StorageError = openraft::StorageError<u64>;
/// A membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
