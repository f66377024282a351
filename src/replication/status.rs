//! What `GET /v1/cluster` shows of each group: voters, leader, and each follower's lag
//! as its leader sees it.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::serve::StatusRpc;
use super::types::GroupId;
use super::Replication;

/// How long a status question to a group's leader may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// One follower's progress, seen from its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowerLag {
    /// The follower's member id.
    pub node: String,
    /// Last log index it is known to hold (`None`: nothing yet).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's log.
    pub lag: u64,
}

/// One group, as one of its voters knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    /// `meta` or the group number.
    pub group: String,
    /// Its voters now.
    pub voters: Vec<String>,
    /// Members being given the log, to become voters.
    pub learners: Vec<String>,
    /// The voters placement wants (the preferred leader first); differs from `voters`
    /// while the group's replicas move.
    pub target: Vec<String>,
    /// The current leader, when known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// Index of the last log entry of the reporting voter.
    pub last_log_index: Option<u64>,
    /// Index of the last entry the reporting voter applied.
    pub applied_index: Option<u64>,
    /// Each follower's lag (only a leader knows them; empty otherwise).
    pub followers: Vec<FollowerLag>,
    /// The voter this report comes from.
    pub reported_by: String,
}

impl Replication {
    /// This node's view of `group`, when it votes in it.
    pub(super) fn local_status(&self, group: GroupId) -> Option<GroupStatus> {
        let raft = self.raft(group)?;
        let placement = self.placement();
        let place = placement.place(group)?;
        let m = raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let name = |id: u64| self.member_of(id).unwrap_or_else(|| id.to_string());
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().map(name).collect();
        let learners = membership.learner_ids().map(name).collect();
        let followers = match (&m.state, &m.replication) {
            (ServerState::Leader, Some(replication)) => replication
                .iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| FollowerLag {
                    node: self.member_of(*id).unwrap_or_else(|| id.to_string()),
                    matched_index: matched.map(|l| l.index),
                    lag: last.saturating_sub(matched.map_or(0, |l| l.index)),
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(GroupStatus {
            group: group.to_string(),
            voters,
            learners,
            target: place.voters.clone(),
            leader: m.current_leader.and_then(|l| self.member_of(l)),
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            followers,
            reported_by: self.node_id.clone(),
        })
    }

    /// Every group's status, each from its leader when it answers (else from this node,
    /// or from the first voter that answers when this node does not vote in it). The
    /// groups are asked at once, so a silent leader costs one timeout, not one per group.
    pub async fn status(self: &Arc<Self>) -> Vec<GroupStatus> {
        let mut asks = tokio::task::JoinSet::new();
        for (index, place) in self.placement().all().enumerate() {
            let (me, group, voters) = (self.clone(), place.group, place.voters.clone());
            asks.spawn(async move { (index, me.group_status(group, voters).await) });
        }
        let mut out: Vec<(usize, GroupStatus)> = asks.join_all().await;
        out.sort_by_key(|(index, _)| *index);
        out.into_iter().map(|(_, status)| status).collect()
    }

    async fn group_status(&self, group: GroupId, voters: Vec<String>) -> GroupStatus {
        let local = self.local_status(group);
        let leader = local.as_ref().and_then(|s| s.leader.clone());
        if let (Some(status), true) = (&local, leader.as_deref() == Some(self.node_id.as_str())) {
            return status.clone();
        }
        let ask: Vec<String> = match &leader {
            Some(leader) => vec![leader.clone()],
            None if local.is_none() => voters.clone(),
            None => Vec::new(),
        };
        for member in &ask {
            let Some(peer) = self.cluster.peer(member) else {
                continue;
            };
            let question = StatusRpc { group };
            if let Ok(Some(status)) = self
                .cluster
                .call_within(&peer, &question, ASK_TIMEOUT)
                .await
            {
                return status;
            }
        }
        local.unwrap_or_else(|| GroupStatus {
            group: group.to_string(),
            voters: Vec::new(),
            learners: Vec::new(),
            target: voters,
            leader: None,
            term: 0,
            last_log_index: None,
            applied_index: None,
            followers: Vec::new(),
            reported_by: self.node_id.clone(),
        })
    }
}
