//! Moves group replicas where placement wants them once the member list changes.
//!
//! Each group is moved by its own leader, with Raft's membership change (see
//! [`Replication::move_group`]): the members the group gains become learners and are given
//! the log (or a snapshot); once they hold the log the leader had when they were added,
//! they replace the leaving voters, which stay learners until they have heard of it and
//! are then removed. A leader that is itself to leave first hands its lead to a voter that
//! stays ([`super::handover`]). The loop compares what is with what should be, so a move
//! cut short (a node restarted, a leader lost) is taken up again by whoever leads the
//! group next. A node runs at most `cluster.max_concurrent_moves` moves at once.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::members::{MemberList, MemberState};
use super::types::{raft_id, GroupId, GroupRaft};
use super::Replication;

/// How long learners may take to hold the log before a move is given up (and tried again
/// on a later pass).
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
/// How often a move looks at its learners' progress.
const PROGRESS_POLL: Duration = Duration::from_millis(50);

impl Replication {
    /// The voters placement wants for `group`, from the member list `list`: for the
    /// metadata group every active member and the draining ones that still hold shard
    /// replicas (`holding`), for a shard group its placed voters.
    fn target_voters(
        &self,
        group: GroupId,
        list: &MemberList,
        holding: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        if group.is_meta() {
            let mut voters: BTreeSet<String> = list.active_ids().into_iter().collect();
            voters.extend(holding.iter().cloned());
            return voters;
        }
        self.placement()
            .place(group)
            .map(|p| p.voters.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The voters `group` is to move to, when it needs a move, as seen by this node's
    /// instance (a member's view): voters to replace, or former voters still learners.
    fn pending_move(
        &self,
        group: GroupId,
        list: &MemberList,
        holding: &BTreeSet<String>,
    ) -> Option<BTreeSet<String>> {
        let raft = self.raft(group)?;
        let (voters, nodes) = self.membership_of(raft);
        let voters: BTreeSet<String> = voters.iter().map(|id| self.name_of(*id)).collect();
        let target = self.target_voters(group, list, holding);
        let strays = nodes.iter().any(|id| !target.contains(&self.name_of(*id)));
        ((voters != target || strays) && !target.is_empty()).then_some(target)
    }

    /// `raft`'s voters and all its members (voters and learners), by Raft id.
    fn membership_of(&self, raft: &GroupRaft) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().collect(),
            membership.nodes().map(|(id, _)| *id).collect(),
        )
    }

    fn name_of(&self, id: u64) -> String {
        self.member_of(id).unwrap_or_else(|| id.to_string())
    }

    /// Moves `group`, which this node leads, towards `target` (see the module doc):
    /// 1. members it gains become learners and are given the log;
    /// 2. the voters are replaced, those leaving kept as learners, so that they learn
    ///    they no longer vote (a removed voter that never heard of its removal would call
    ///    elections against the group);
    /// 3. once they hold that change (or after a while, if they are down), they are
    ///    removed;
    /// 4. a leader that is itself to leave hands the lead over.
    ///
    /// Errors are logged, and the next pass tries again.
    async fn move_group(&self, group: GroupId, raft: &GroupRaft, target: BTreeSet<String>) {
        let Some(list) = self.members() else {
            return;
        };
        let (voters, nodes) = self.membership_of(raft);
        let leaving = !target.contains(&self.node_id);
        // A leader that is to leave first hands the lead to a voter that stays.
        let staying = voters
            .iter()
            .map(|id| self.name_of(*id))
            .find(|m| target.contains(m) && self.peer_is_up(m));
        if let (true, Some(successor)) = (leaving, &staying) {
            let deadline =
                Instant::now() + self.election_timeout * 2 + self.quiet_before_handover(raft);
            self.hand_over(group, raft, Some(successor), deadline).await;
            return;
        }
        // Else it stays a voter until its successor is one too.
        let mut next = target.clone();
        next.insert(self.node_id.clone());
        let wanted: BTreeSet<u64> = next.iter().map(|m| raft_id(m)).collect();
        if wanted != voters {
            tracing::info!(group = %group, from = ?self.names(&voters), to = ?next, "moving a group's replicas");
            for id in next.iter().filter(|id| !nodes.contains(&raft_id(id))) {
                let Some(addr) = list.get(id).map(|m| m.member.cluster_addr.clone()) else {
                    return;
                };
                if let Err(e) = raft
                    .add_learner(raft_id(id), BasicNode { addr }, false)
                    .await
                {
                    tracing::warn!(group = %group, learner = %id, error = %e, "adding a learner failed");
                    return;
                }
            }
            let goal = raft.metrics().borrow().last_log_index.unwrap_or(0);
            if !self.hold_log(raft, &wanted, goal, CATCH_UP_DEADLINE).await {
                tracing::warn!(group = %group, "new replicas did not catch up in time; the move is tried again later");
                return;
            }
            if let Err(e) = raft.change_membership(wanted.clone(), true).await {
                tracing::warn!(group = %group, error = %e, "changing the group's voters failed");
                return;
            }
            tracing::info!(group = %group, voters = ?next, "group voters replaced");
        }
        let (_, nodes) = self.membership_of(raft);
        let leaving: BTreeSet<u64> = nodes.difference(&wanted).copied().collect();
        if !leaving.is_empty() {
            let goal = raft.metrics().borrow().last_log_index.unwrap_or(0);
            // Down members cannot confirm: they are removed anyway after the wait.
            self.hold_log(raft, &leaving, goal, self.election_timeout * 4)
                .await;
            let remove = openraft::ChangeMembers::RemoveNodes(leaving.clone());
            if let Err(e) = raft.change_membership(remove, false).await {
                tracing::warn!(group = %group, error = %e, "removing former voters failed");
                return;
            }
            tracing::info!(group = %group, removed = ?self.names(&leaving), "former voters removed");
        }
        if !target.contains(&self.node_id) {
            let successor = self
                .placement()
                .place(group)
                .and_then(|p| p.voters.first().cloned());
            let deadline =
                Instant::now() + self.election_timeout * 2 + self.quiet_before_handover(raft);
            self.hand_over(group, raft, successor.as_deref(), deadline)
                .await;
        }
    }

    /// The draining members that still hold a replica of a shard group, and whether this
    /// node knows every group (a group whose leader did not answer could hold any).
    async fn draining_holders(self: &Arc<Self>, list: &MemberList) -> (BTreeSet<String>, bool) {
        let draining = list.ids_in(MemberState::Draining);
        if draining.is_empty() {
            return (BTreeSet::new(), true);
        }
        let groups = self.status().await;
        let known = groups
            .iter()
            .filter(|g| g.group != "meta")
            .all(|g| g.leader.is_some());
        let holding = draining
            .into_iter()
            .filter(|d| {
                !known
                    || groups.iter().filter(|g| g.group != "meta").any(|g| {
                        g.voters.contains(d) || g.learners.contains(d) || g.target.contains(d)
                    })
            })
            .collect();
        (holding, known)
    }

    /// Removes the draining members that hold nothing any more, not even a seat in the
    /// metadata group (which this node leads).
    async fn remove_drained_members(&self, list: &MemberList, holding: &BTreeSet<String>) {
        let Some(meta) = self.raft(GroupId::META) else {
            return;
        };
        let (_, nodes) = self.membership_of(meta);
        for id in list.ids_in(MemberState::Draining) {
            if holding.contains(&id) || nodes.contains(&raft_id(&id)) {
                continue;
            }
            match self.remove_drained(&id).await {
                Ok(_) => tracing::info!(member = %id, "member removed: it holds nothing any more"),
                Err(e) => {
                    tracing::warn!(member = %id, error = %e, "removing a drained member failed")
                }
            }
        }
    }

    fn names(&self, ids: &BTreeSet<u64>) -> Vec<String> {
        ids.iter().map(|id| self.name_of(*id)).collect()
    }

    /// Waits until every member of `ids` but this node holds this leader's log up to
    /// `goal`, for `within` at most; false if not (or if this node lost the lead).
    async fn hold_log(
        &self,
        raft: &GroupRaft,
        ids: &BTreeSet<u64>,
        goal: u64,
        within: Duration,
    ) -> bool {
        let me = raft_id(&self.node_id);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !self.stopping.load(Ordering::SeqCst) {
            let done = {
                let m = raft.metrics();
                let m = m.borrow();
                if m.state != ServerState::Leader {
                    return false;
                }
                m.replication.as_ref().is_some_and(|progress| {
                    ids.iter().filter(|id| **id != me).all(|id| {
                        progress
                            .get(id)
                            .and_then(|matched| *matched)
                            .is_some_and(|l| l.index >= goal)
                    })
                })
            };
            if done {
                return true;
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
        false
    }
}

/// Starts the loop that moves the groups this node leads, on `runtime`.
pub fn start(replication: &Arc<Replication>, runtime: &Handle) {
    let permits = Arc::new(Semaphore::new(replication.max_concurrent_moves));
    let moving: Arc<Mutex<HashSet<GroupId>>> = Arc::default();
    let replication = replication.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(replication.election_timeout).await;
            if replication.stopping.load(Ordering::SeqCst) {
                return;
            }
            let Some(list) = replication.members() else {
                continue;
            };
            let leads_meta = replication
                .raft(GroupId::META)
                .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader);
            let holding = match leads_meta {
                true => {
                    let (holding, known) = replication.draining_holders(&list).await;
                    if known {
                        replication.remove_drained_members(&list, &holding).await;
                    }
                    holding
                }
                // Only the metadata group's leader moves it.
                false => BTreeSet::new(),
            };
            let mut groups: Vec<GroupId> = replication.rafts.keys().copied().collect();
            // The metadata group first: a new member votes there before it holds groups.
            groups.sort_by_key(|g| !g.is_meta());
            for group in groups {
                let Some(raft) = replication.raft(group).cloned() else {
                    continue;
                };
                if raft.metrics().borrow().state != ServerState::Leader {
                    continue;
                }
                let Some(target) = replication.pending_move(group, &list, &holding) else {
                    continue;
                };
                if moving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&group)
                {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                moving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(group);
                let (replication, moving) = (replication.clone(), moving.clone());
                tokio::spawn(async move {
                    replication.move_group(group, &raft, target).await;
                    moving
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&group);
                    drop(permit);
                });
            }
        }
    });
}
