//! Keeps each group's lead on its preferred voter (see [`super::placement`]), so that
//! leaders, and the work only leaders do, spread evenly over the nodes.
//!
//! Once the preferred voter has followed another leader, caught up, for two checks in a
//! row, it asks that leader to hand the lead over to it ([`super::handover`]), so that
//! proposals wait for the move instead of failing in it; should the leader not answer, or
//! not hand over, it calls an election itself (its log is as long as any other voter's,
//! so it wins with the leader's vote). With more than three voters it does so only when
//! the leader could not be asked: there the leader's vote and its own are not a majority,
//! the other followers refuse it within their lease, and the election would depose the
//! leader without winning. Only one voter per group ever does this, so the lead never
//! ping-pongs. A node that has begun to stop takes no lead back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::ServerState;
use tokio::runtime::Handle;

use super::handover::two_votes_elect;
use super::types::raft_id;
use super::Replication;

/// Starts one balancing loop per group on `runtime`; each acts while placement makes this
/// node the group's preferred voter (which changes as members come and go).
pub fn start(replication: &Arc<Replication>, runtime: &Handle) {
    let me = raft_id(&replication.node_id);
    let election_timeout = replication.election_timeout;
    for group in replication.rafts.keys().copied() {
        let replication = replication.clone();
        runtime.spawn(async move {
            let mut ready_checks = 0u32;
            loop {
                tokio::time::sleep(election_timeout * 2).await;
                if replication.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let preferred = replication.preferred_leader(group).as_deref()
                    == Some(replication.node_id.as_str());
                let raft = match replication.raft(group) {
                    Some(raft) if preferred => raft.clone(),
                    _ => {
                        ready_checks = 0;
                        continue;
                    }
                };
                let m = raft.metrics().borrow().clone();
                let caught_up = m.last_applied.map(|l| l.index) == m.last_log_index;
                let voter = m.membership_config.membership().voter_ids().any(|v| v == me);
                let other_leader = m
                    .current_leader
                    .filter(|l| *l != me && m.state == ServerState::Follower);
                ready_checks = if other_leader.is_some() && caught_up && voter {
                    ready_checks + 1
                } else {
                    0
                };
                if let (Some(leader), true) = (other_leader, ready_checks >= 2) {
                    ready_checks = 0;
                    tracing::info!(group = %group, "taking back the lead of a group this node prefers to lead");
                    let answer = replication.ask_for_lead(group, &raft, leader).await;
                    if answer.is_none() || (answer == Some(false) && two_votes_elect(&raft)) {
                        let _ = raft.trigger().elect().await;
                    }
                }
            }
        });
    }
}
