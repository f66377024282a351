//! Elections on a starting node wait until it has heard its groups' leaders.
//!
//! openraft 0.9 keeps when a voter last heard from a leader in memory only, so a voter
//! that restarts calls an election at its first tick, before the leader's heartbeats reach
//! it. That election is lost (the others hear their leader, and the restarted voter's log
//! is usually behind), but it raises the voter's term, and the leader's next heartbeat,
//! answered with that higher term, deposes the leader (openraft has no pre-vote): the
//! group has no leader until the next election, and requests in flight there answer 503.
//! Seen in rolling restarts under load. So a starting node's groups call no election of
//! their own until they have heard a leader, or until [`QUIET_START_TIMEOUTS`] election
//! timeouts have passed (a cluster starting whole, or a group whose other voters are down).
//!
//! Having heard one, they stay quiet for [`CATCH_UP_TIMEOUTS`] more while they catch up:
//! a follower storing the leader's backlog a batch at a time can go longer than its
//! election timeout between two of its messages (the group's preferred voter has the
//! shortest timeout), and its lost election deposed the leader the same way. Its other
//! voters still elect a new leader if the leader dies meanwhile, and the balance loop
//! hands the lead back to it gracefully once it has caught up. Elections asked for on
//! purpose (`initialize`, a lead handover) are not affected.

use std::time::Duration;

use super::types::GroupRaft;

/// Election timeouts a starting node's groups wait for a leader before they may elect.
pub(super) const QUIET_START_TIMEOUTS: u32 = 2;
/// Election timeouts they stay quiet once they heard one, while they catch up.
pub(super) const CATCH_UP_TIMEOUTS: u32 = 4;

/// Turns `raft`'s elections off until [`QUIET_START_TIMEOUTS`] election timeouts have
/// passed without a leader other than `me`, or [`CATCH_UP_TIMEOUTS`] after hearing one.
pub(super) fn hold_elections(raft: &GroupRaft, me: u64, election_timeout: Duration) {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let heard = raft
            .wait(Some(election_timeout * QUIET_START_TIMEOUTS))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "hearing a leader",
            )
            .await
            .is_ok();
        if heard {
            tokio::time::sleep(election_timeout * CATCH_UP_TIMEOUTS).await;
        }
        raft.runtime_config().elect(true);
    });
}
