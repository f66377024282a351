//! Moving a group's lead without an election timeout: when its node stops (a rolling
//! restart), and when the group's preferred voter takes its lead back (see
//! [`super::balance`]).
//!
//! openraft 0.9 has no leadership transfer, so this is built from its own election, driven
//! by the leader, once its own work in the group has settled ([`LeaderWork`]: attempts
//! whose outcomes a closed group would refuse, and its successor would make again):
//! 1. the leader stops taking proposals for the group: they wait for the next leader, as
//!    during a failover ([`Replication::is_handing_over`]), so its log stops growing;
//! 2. once what it had taken is applied, it asks the successor to call an election
//!    ([`TakeLeadRpc`]) with the length of its log;
//! 3. the successor calls it once it holds that much of the log; its vote request carries
//!    a higher term, and the leader grants it (their logs are equal), stepping down.
//!
//! With more than three voters, the leader's vote and the successor's own are not a
//! majority, and the other followers refuse any vote while their lease of the leader
//! holds (openraft renews it with every AppendEntries, for `election_timeout_max`): the
//! leader then stops its heartbeats for one such lease before step 2
//! ([`Replication::quiet_before_handover`]). Their own elections wait a lease and an
//! election timeout, so the successor calls its election first.
//!
//! While it hands over, the leader serves reads after a read index, never under its
//! lease: the core sends its vote before it publishes the step-down that the lease check
//! reads, so for a moment the lease would outlive the lead. Should the successor lose (the
//! leader took a proposal that raced step 1), the leader asks again; past the deadline it
//! takes proposals again, or, when stopping, stops anyway and the group elects a leader
//! within its election timeout, as after a crash.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::network::NoGroup;
use super::types::{raft_id, GroupId, GroupRaft};
use super::Replication;
use crate::cluster::{rpc, PeerState};

/// How often a leader handing over looks whether the lead moved.
const HANDOVER_POLL: Duration = Duration::from_millis(20);
/// How long a leader waits for its successor's election before it asks again.
const ASK_AGAIN: Duration = Duration::from_millis(100);
/// How long a successor waits for the entries the leader had when it asked.
const CATCH_UP_WAIT: Duration = Duration::from_millis(200);

/// Work a group's leader does that its successor would do again had it not finished:
/// the delivery engine's attempts. Settled before the lead is handed over.
pub trait LeaderWork: Send + Sync {
    /// Stops starting such work in `group` and waits until the work under way is
    /// recorded, or until `deadline`.
    fn settle(
        &self,
        group: GroupId,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The handover of `group` is over; `kept` when this node still leads it and is not
    /// stopping (its work starts again).
    fn resume(&self, group: GroupId, kept: bool);
}

/// Asks a follower of `group` to call an election: its leader hands the lead over.
#[derive(Serialize, Deserialize)]
pub struct TakeLeadRpc {
    /// The group.
    pub group: GroupId,
    /// The leader's last log index when it asked: a follower that has less would lose
    /// the election and only delay the next one, so it does not call it.
    pub last_log_index: u64,
}
rpc!(TakeLeadRpc => Result<bool, NoGroup>, "raft/take-lead");

/// Asks the leader of `group` to hand its lead to the member `to`.
#[derive(Serialize, Deserialize)]
pub struct GiveLeadRpc {
    /// The group.
    pub group: GroupId,
    /// The member that is to lead it.
    pub to: String,
}
rpc!(GiveLeadRpc => Result<bool, NoGroup>, "raft/give-lead");

/// True when `raft`'s group has three voters or fewer: the leader's vote and its
/// successor's own are then a majority, whatever the other followers' leases.
pub(super) fn two_votes_elect(raft: &GroupRaft) -> bool {
    let voters = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    voters <= 3
}

/// Serves [`TakeLeadRpc`]: calls the election once this node, a follower, holds as much
/// of the log as the leader had when it asked (waiting for it a little); answers whether
/// it called it.
pub async fn take_lead(raft: GroupRaft, last_log_index: u64) -> bool {
    let caught_up = raft
        .wait(Some(CATCH_UP_WAIT))
        .log_index_at_least(Some(last_log_index), "taking the lead")
        .await;
    match caught_up {
        Ok(m) if m.state == ServerState::Follower => raft.trigger().elect().await.is_ok(),
        _ => false,
    }
}

impl Replication {
    /// Hands the lead of every group this node leads to another voter, within `within`;
    /// from now on the node takes no proposal as a leader and no lead back. Answers how
    /// many groups it led, and how many of them another voter leads now.
    pub async fn hand_over_leads(self: &Arc<Self>, within: Duration) -> (usize, usize) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        let mut handing = JoinSet::new();
        for (group, raft) in &self.rafts {
            if raft.metrics().borrow().state != ServerState::Leader {
                continue;
            }
            let (me, group, raft) = (self.clone(), *group, raft.clone());
            handing.spawn(async move { me.hand_over(group, &raft, None, deadline).await });
        }
        let led = handing.len();
        let mut handed = 0;
        while let Some(done) = handing.join_next().await {
            handed += usize::from(done.unwrap_or(false));
        }
        (led, handed)
    }

    /// Serves [`GiveLeadRpc`]: hands `group`'s lead to `to` when this node leads it,
    /// within one election timeout; true once another voter leads it.
    pub(super) async fn give_lead(&self, group: GroupId, to: &str) -> Result<bool, NoGroup> {
        let raft = self.raft(group).ok_or_else(|| NoGroup(group.to_string()))?;
        if self.stopping.load(Ordering::SeqCst)
            || raft.metrics().borrow().state != ServerState::Leader
        {
            return Ok(false);
        }
        // The leader's work settles first, within an election timeout (see `hand_over`).
        let deadline =
            Instant::now() + self.election_timeout * 2 + self.quiet_before_handover(raft);
        Ok(self.hand_over(group, raft, Some(to), deadline).await)
    }

    /// True when this node leads `raft`'s group and is handing the lead over: it takes
    /// no new proposal then, so that its successor's log can catch up with its own.
    pub(super) fn is_handing_over(&self, group: GroupId, raft: &GroupRaft) -> bool {
        self.handing_over(group) && raft.metrics().borrow().state == ServerState::Leader
    }

    /// True while this node may be handing `group`'s lead over. Its reads then confirm the
    /// lead with a read index, never under the lease: openraft publishes the step-down
    /// that granting the successor's vote is a moment after the vote is sent.
    pub(super) fn handing_over(&self, group: GroupId) -> bool {
        self.stopping.load(Ordering::SeqCst)
            || self
                .handing_over
                .get(&group)
                .is_some_and(|h| h.load(Ordering::SeqCst))
    }

    /// Hands `group`'s lead to `to` (or to its most caught-up voter); true once
    /// another voter leads it. The leader's work settles first (see [`LeaderWork`]),
    /// within an election timeout and half the time left at most; proposals then wait,
    /// until `deadline` at most.
    pub(super) async fn hand_over(
        &self,
        group: GroupId,
        raft: &GroupRaft,
        to: Option<&str>,
        deadline: Instant,
    ) -> bool {
        let Some(flag) = self.handing_over.get(&group) else {
            return false;
        };
        let work = self.leader_work.get();
        if let Some(work) = work {
            let left = deadline.saturating_duration_since(Instant::now());
            let settle_by = Instant::now() + self.election_timeout.min(left / 2);
            work.settle(group, settle_by).await;
        }
        flag.store(true, Ordering::SeqCst);
        let quiet = self.quiet_before_handover(raft);
        if !quiet.is_zero() {
            raft.runtime_config().heartbeat(false);
        }
        let handed = self
            .ask_successors(group, raft, to, Instant::now() + quiet, deadline)
            .await;
        raft.runtime_config().heartbeat(true);
        flag.store(false, Ordering::SeqCst);
        if let Some(work) = work {
            let kept = !handed
                && !self.stopping.load(Ordering::SeqCst)
                && raft.metrics().borrow().state == ServerState::Leader;
            work.resume(group, kept);
        }
        handed
    }

    /// Makes `work` settle before each handover (once, at start-up).
    pub fn set_leader_work(&self, work: Arc<dyn LeaderWork>) {
        let _ = self.leader_work.set(work);
    }

    /// How long the leader of `raft`'s group stays silent before it asks a successor to
    /// call its election: nothing with three voters or fewer, else a follower's lease
    /// (`election_timeout_ms`, see [`super::raft_config`]) and a heartbeat in flight.
    pub(super) fn quiet_before_handover(&self, raft: &GroupRaft) -> Duration {
        match two_votes_elect(raft) {
            true => Duration::ZERO,
            false => self.election_timeout + self.election_timeout / 6,
        }
    }

    async fn ask_successors(
        &self,
        group: GroupId,
        raft: &GroupRaft,
        to: Option<&str>,
        quiet_until: Instant,
        deadline: Instant,
    ) -> bool {
        let me = raft_id(&self.node_id);
        let mut asked: Option<Instant> = None;
        let mut previous_length = None;
        loop {
            let m = raft.metrics().borrow().clone();
            if m.current_leader.is_some_and(|l| l != me) {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    group = %group,
                    state = ?m.state,
                    "could not hand the lead over in time"
                );
                return false;
            }
            // Asked once the entries proposed before the handover are applied and the log
            // has not grown for a poll (a proposal may pass the gate just before it
            // closes): the successor can then match the log.
            let settled = m.last_applied.map(|l| l.index) == m.last_log_index
                && previous_length.replace(m.last_log_index) == Some(m.last_log_index);
            let due =
                asked.is_none_or(|t| t.elapsed() >= ASK_AGAIN) && Instant::now() >= quiet_until;
            if m.state == ServerState::Leader && settled && due {
                asked = Some(Instant::now());
                let successor = match to {
                    Some(to) => Some(to.to_string()),
                    None => m.replication.as_ref().and_then(|followers| {
                        let voters: Vec<u64> =
                            m.membership_config.membership().voter_ids().collect();
                        followers
                            .iter()
                            .filter(|(id, _)| **id != me && voters.contains(id))
                            .filter_map(|(id, matched)| Some((self.member_of(*id)?, matched)))
                            .filter(|(member, _)| self.peer_is_up(member))
                            .max_by_key(|(_, matched)| matched.map(|l| l.index))
                            .map(|(member, _)| member)
                    }),
                };
                if let Some(successor) = successor {
                    self.ask_to_take_lead(group, &successor, m.last_log_index.unwrap_or(0))
                        .await;
                }
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
    }

    pub(super) fn peer_is_up(&self, member: &str) -> bool {
        self.cluster
            .peers()
            .iter()
            .any(|p| p.member.id == member && p.state() == PeerState::Up)
    }

    async fn ask_to_take_lead(&self, group: GroupId, member: &str, last_log_index: u64) {
        let Some(peer) = self.cluster.peer(member) else {
            return;
        };
        let ask = TakeLeadRpc {
            group,
            last_log_index,
        };
        if let Err(e) = self
            .cluster
            .call_within(&peer, &ask, CATCH_UP_WAIT * 2)
            .await
        {
            tracing::debug!(group = %group, peer = %member, error = %e, "asking to take the lead failed");
        }
    }

    /// Asks the current leader of `group` (`raft` is this node's instance) to hand its
    /// lead to this node: `Some(handed)` when it answered, `None` when it could not be
    /// asked or did not answer in time.
    pub(super) async fn ask_for_lead(
        &self,
        group: GroupId,
        raft: &GroupRaft,
        leader: u64,
    ) -> Option<bool> {
        let member = self.member_of(leader)?;
        let peer = self.cluster.peer(&member)?;
        let ask = GiveLeadRpc {
            group,
            to: self.node_id.clone(),
        };
        let within = self.election_timeout * 3 + self.quiet_before_handover(raft);
        match self.cluster.call_within(&peer, &ask, within).await {
            Ok(Ok(handed)) => Some(handed),
            _ => None,
        }
    }
}
