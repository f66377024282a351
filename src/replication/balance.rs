//! Keeps each group's lead on its preferred voter (see [`super::placement`]), so that
//! leaders, and the work only leaders do, spread evenly over the nodes.
//!
//! openraft 0.9 has no leadership transfer; the preferred voter instead calls an election
//! itself once it has followed another leader, caught up, for two checks in a row. Its
//! log is then as long as any other voter's, so it wins, and only one voter per group ever
//! does this, so the lead never ping-pongs.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::runtime::Handle;

use super::types::raft_id;
use super::Replication;

/// Starts one balancing loop per group this node prefers to lead, on `runtime`.
pub fn start(replication: &Arc<Replication>, runtime: &Handle, election_timeout: Duration) {
    let me = raft_id(&replication.node_id);
    for place in replication.placement.all() {
        if place.voters.first() != Some(&replication.node_id) || place.voters.len() < 2 {
            continue;
        }
        let Some(raft) = replication.raft(place.group).cloned() else {
            continue;
        };
        let group = place.group;
        runtime.spawn(async move {
            let mut ready_checks = 0u32;
            loop {
                tokio::time::sleep(election_timeout * 2).await;
                let m = raft.metrics().borrow().clone();
                let caught_up = m.last_applied.map(|l| l.index) == m.last_log_index;
                let follows_other =
                    m.state == ServerState::Follower && m.current_leader.is_some_and(|l| l != me);
                ready_checks = if follows_other && caught_up {
                    ready_checks + 1
                } else {
                    0
                };
                if ready_checks >= 2 {
                    ready_checks = 0;
                    tracing::info!(group = %group, "taking back the lead of a group this node prefers to lead");
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
