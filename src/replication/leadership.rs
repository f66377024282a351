//! Who leads a group, and the two things only its leader does: serve a linearizable read
//! and write the group's records.
//!
//! A group's leader owns its shards: their actors run there and nowhere else. Records are
//! written only by proposals made on the leader itself ([`Replication::write_as_leader`]),
//! never forwarded: an actor left on a node that lost the lead then fails instead of
//! writing from its stale view, and its caller retries on the new leader.
//!
//! Reads are served under the leader's lease when it holds one (see `lease.rs`), else after
//! a read index ([`Replication::linearize`]): the leader confirms with a majority that it
//! still leads and waits until it has applied everything committed before the read began.
//! A read index costs one heartbeat round; a lease costs nothing, and holds only in a term
//! whose first entry this leader has applied (confirmed by one read index per term).
//!
//! Writes need that round only once per term ([`Replication::fence_writes`]): after it,
//! the leader has applied everything earlier terms committed, and a proposal that commits
//! in the same term proves that no other leader committed anything between. What the
//! writer read before proposing was therefore current, as a read index would have made
//! it. An operation that ends without committing anything is a read after all, and its
//! caller confirms the lead with [`Replication::linearize`] before answering.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;

use super::types::{raft_id, Applied, Command, GroupId};
use super::Replication;
use crate::cluster::ShardId;

/// Why this node did not serve a group's read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    /// Another node leads (the member, when known).
    #[error("group {group} is led by {leader:?}")]
    Elsewhere {
        /// The group.
        group: GroupId,
        /// The leader this node knows of.
        leader: Option<String>,
    },
    /// No leader could confirm its lead in time (an election, or no majority).
    #[error("group {0} has no leader reachable")]
    NoQuorum(GroupId),
    /// The group's Raft stopped (a storage failure): the node must restart.
    #[error("group {group} stopped: {reason}")]
    Stopped {
        /// The group.
        group: GroupId,
        /// openraft's reason.
        reason: String,
    },
}

impl Replication {
    /// The group of a virtual shard.
    pub fn group_of(&self, shard: ShardId) -> GroupId {
        self.placement.group_of(shard)
    }

    /// The member this node believes leads `group`: its own Raft's view when it votes in
    /// the group, else the group's preferred voter (who leads it when all is well).
    pub fn leader_of(&self, group: GroupId) -> Option<String> {
        match self.raft(group) {
            Some(raft) => raft
                .metrics()
                .borrow()
                .current_leader
                .and_then(|id| self.member_of(id)),
            None => self.preferred_leader(group),
        }
    }

    /// The member placement prefers as `group`'s leader.
    pub fn preferred_leader(&self, group: GroupId) -> Option<String> {
        self.placement
            .place(group)
            .and_then(|p| p.voters.first().cloned())
    }

    /// A shard group none of `members` votes in (so none of them holds its records).
    pub fn uncovered_group(&self, members: &[String]) -> Option<GroupId> {
        self.placement
            .all()
            .filter(|p| !p.group.is_meta())
            .find(|p| !p.voters.iter().any(|v| members.contains(v)))
            .map(|p| p.group)
    }

    /// A shard group that has no leader among `members`, as far as this node knows.
    pub fn group_led_outside(&self, members: &[String]) -> Option<GroupId> {
        self.placement
            .all()
            .map(|p| p.group)
            .filter(|g| !g.is_meta())
            .find(|g| !self.leader_of(*g).is_some_and(|l| members.contains(&l)))
    }

    /// How long a request waits for its group to have a leader.
    pub fn failover_wait(&self) -> Duration {
        self.failover_wait
    }

    /// The shard groups this node leads, as far as its own Raft knows.
    pub fn led_groups(&self) -> Vec<GroupId> {
        self.rafts
            .keys()
            .copied()
            .filter(|g| !g.is_meta() && self.leads(*g))
            .collect()
    }

    /// True when this node leads `group` as far as its own Raft knows (no round trip).
    pub fn leads(&self, group: GroupId) -> bool {
        self.leader_of(group).as_deref() == Some(self.node_id.as_str())
            && self.raft(group).is_some()
    }

    /// Confirms that this node leads `group` and has applied everything committed before
    /// the call: at once under the group's lease, else by a read index within
    /// `failover_wait`. Concurrent reads share rounds (see `read_rounds.rs`).
    pub async fn linearize(self: &Arc<Self>, group: GroupId) -> Result<(), NotLeader> {
        let (leading, term) = self.leading_term(group)?;
        let fenced = self.fenced.get(&group);
        let lease = self.leases.get(&group);
        if let (Some(term), Some(fenced), Some(lease)) = (leading.then_some(term), fenced, lease) {
            if fenced.load(Ordering::Acquire) == term && lease.holds(term) {
                return Ok(());
            }
        }
        let rounds = self
            .reads
            .get(&group)
            .ok_or_else(|| self.elsewhere(group, None))?;
        let replication = self.clone();
        rounds
            .join(move || {
                let replication = replication.clone();
                async move { replication.read_index(group).await }
            })
            .await?;
        if let Some(fenced) = fenced {
            // The round confirmed the lead in `term` or a later one, whose first entry is
            // applied too: `term` is a safe lower bound.
            fenced.fetch_max(term, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Confirms that this node leads `group` for a write: a read index the first time in a
    /// term (see the module doc), then nothing until the term changes.
    pub async fn fence_writes(self: &Arc<Self>, group: GroupId) -> Result<(), NotLeader> {
        let (leading, term) = self.leading_term(group)?;
        if !leading {
            return Err(self.elsewhere(group, self.raft(group).and_then(current_leader)));
        }
        match self.fenced.get(&group) {
            Some(fenced) if fenced.load(Ordering::Acquire) == term => Ok(()),
            _ => self.linearize(group).await,
        }
    }

    /// Whether this node's Raft of `group` is its leader, and its current term.
    fn leading_term(&self, group: GroupId) -> Result<(bool, u64), NotLeader> {
        let raft = self
            .raft(group)
            .ok_or_else(|| self.elsewhere(group, None))?;
        let m = raft.metrics();
        let m = m.borrow();
        Ok((m.state == ServerState::Leader, m.current_term))
    }

    /// One read-index round of `group`.
    async fn read_index(&self, group: GroupId) -> Result<(), NotLeader> {
        let raft = self
            .raft(group)
            .ok_or_else(|| self.elsewhere(group, None))?;
        let checked = tokio::time::timeout(self.failover_wait, raft.ensure_linearizable()).await;
        match checked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.elsewhere(group, f.leader_id))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Err(NotLeader::NoQuorum(group))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(NotLeader::Stopped {
                group,
                reason: e.to_string(),
            }),
        }
    }

    /// Proposes `command` on this node's Raft of `group`, only if it leads; answers once a
    /// majority has it durable and it is applied here. Waits up to `failover_wait` for the
    /// commit (a leader that lost its majority never commits).
    pub async fn write_as_leader(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Applied, NotLeader> {
        let raft = self
            .raft(group)
            .ok_or_else(|| self.elsewhere(group, None))?;
        let wait = self.failover_wait.max(Duration::from_millis(1));
        match tokio::time::timeout(wait, raft.client_write(command)).await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.elsewhere(group, f.leader_id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(NotLeader::Stopped {
                    group,
                    reason: e.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(e))) => Err(NotLeader::Stopped {
                group,
                reason: e.to_string(),
            }),
            Err(_) => Err(NotLeader::NoQuorum(group)),
        }
    }

    fn elsewhere(&self, group: GroupId, leader: Option<u64>) -> NotLeader {
        NotLeader::Elsewhere {
            group,
            leader: leader
                .filter(|l| *l != raft_id(&self.node_id))
                .and_then(|l| self.member_of(l)),
        }
    }
}

/// The leader `raft` knows of.
fn current_leader(raft: &super::types::GroupRaft) -> Option<u64> {
    raft.metrics().borrow().current_leader
}

/// A replicated shard is served by its group's leader.
impl crate::cluster::ShardOwners for Replication {
    fn owner(&self, shard: ShardId) -> Option<String> {
        self.leader_of(self.group_of(shard))
    }
}
