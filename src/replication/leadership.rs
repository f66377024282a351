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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;

use super::lease::Lease;
use super::read_rounds::ReadRounds;
use super::types::{raft_id, Applied, Command, GroupId};
use super::{Placement, Replication};
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

/// What this node keeps per group to confirm its lead.
pub(super) struct GroupLead {
    /// The read-index rounds the group's reads share.
    rounds: Arc<ReadRounds>,
    /// The last term in which a read index confirmed the lead (so everything earlier
    /// terms committed is applied here); 0 for none.
    fenced: AtomicU64,
    /// The leader lease, kept by `lease::watch`.
    lease: Arc<Lease>,
}

impl GroupLead {
    /// Nothing confirmed yet for `group`.
    pub(super) fn new(group: GroupId) -> Self {
        Self {
            rounds: Arc::new(ReadRounds::new(group)),
            fenced: AtomicU64::new(0),
            lease: Arc::default(),
        }
    }

    /// The lease, for its watcher.
    pub(super) fn lease(&self) -> Arc<Lease> {
        self.lease.clone()
    }

    /// True when a read index confirmed the lead in `term`.
    fn fenced_in(&self, term: u64) -> bool {
        self.fenced.load(Ordering::Acquire) == term
    }
}

/// This node's standing in a group, from its Raft's metrics.
struct Standing<'a> {
    lead: &'a GroupLead,
    leading: bool,
    term: u64,
    /// The leader this node knows of.
    leader: Option<u64>,
}

impl Replication {
    /// The group of a virtual shard.
    pub fn group_of(&self, shard: ShardId) -> GroupId {
        Placement::group_of_shard(shard, self.groups)
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
        self.placement()
            .place(group)
            .and_then(|p| p.voters.first().cloned())
    }

    /// A shard group none of `members` votes in (so none of them holds its records).
    pub fn uncovered_group(&self, members: &[String]) -> Option<GroupId> {
        self.placement()
            .all()
            .filter(|p| !p.group.is_meta())
            .find(|p| !p.voters.iter().any(|v| members.contains(v)))
            .map(|p| p.group)
    }

    /// A shard group that has no leader among `members`, as far as this node knows.
    pub fn group_led_outside(&self, members: &[String]) -> Option<GroupId> {
        self.placement()
            .all()
            .map(|p| p.group)
            .filter(|g| !g.is_meta())
            .find(|g| !self.leader_of(*g).is_some_and(|l| members.contains(&l)))
    }

    /// How long a request waits for its group to have a leader.
    pub fn failover_wait(&self) -> Duration {
        self.failover_wait
    }

    /// The shard groups this node leads, as far as its own Raft knows, each with the
    /// term it leads in.
    pub fn led_groups(&self) -> Vec<(GroupId, u64)> {
        self.rafts
            .keys()
            .filter(|g| !g.is_meta())
            .filter_map(|g| {
                let s = self.standing(*g).ok()?;
                s.leading.then_some((*g, s.term))
            })
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
        let s = self.standing(group)?;
        let lease = s.lead.fenced_in(s.term) && s.lead.lease.holds(s.term);
        if s.leading && lease && !self.handing_over(group) {
            return Ok(());
        }
        let replication = self.clone();
        s.lead
            .rounds
            .join(move || {
                let replication = replication.clone();
                async move { replication.read_index(group).await }
            })
            .await?;
        // The round confirmed the lead in `term` or a later one, whose first entry is
        // applied too: `term` is a safe lower bound.
        s.lead.fenced.fetch_max(s.term, Ordering::AcqRel);
        Ok(())
    }

    /// Confirms that this node leads `group` for a write: a read index the first time in a
    /// term (see the module doc), then nothing until the term changes.
    pub async fn fence_writes(self: &Arc<Self>, group: GroupId) -> Result<(), NotLeader> {
        let s = self.standing(group)?;
        if !s.leading {
            return Err(self.elsewhere(group, s.leader));
        }
        if s.lead.fenced_in(s.term) {
            return Ok(());
        }
        self.linearize(group).await
    }

    /// This node's standing in `group`, which it must vote in.
    fn standing(&self, group: GroupId) -> Result<Standing<'_>, NotLeader> {
        let (Some(raft), Some(lead)) = (self.raft(group), self.leads.get(&group)) else {
            return Err(self.elsewhere(group, None));
        };
        let m = raft.metrics();
        let m = m.borrow();
        Ok(Standing {
            lead,
            leading: m.state == ServerState::Leader,
            term: m.current_term,
            leader: m.current_leader,
        })
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

    /// Proposes `command` on this node's Raft of `group`, only if it leads (and is not
    /// handing the lead over); answers once a majority has it durable and it is applied
    /// here. Waits up to `failover_wait` for the
    /// commit (a leader that lost its majority never commits).
    pub async fn write_as_leader(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Applied, NotLeader> {
        let raft = self
            .raft(group)
            .ok_or_else(|| self.elsewhere(group, None))?;
        if self.is_handing_over(group, raft) {
            return Err(self.elsewhere(group, None));
        }
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

/// A replicated shard is served by its group's leader.
impl crate::cluster::ShardOwners for Replication {
    fn owner(&self, shard: ShardId) -> Option<String> {
        self.leader_of(self.group_of(shard))
    }
}
