//! Leader leases: how long a group's leader may serve reads without a heartbeat round.
//!
//! A follower refuses to vote for another candidate until its own election timeout has
//! passed since it last heard from the leader (openraft's follower-side lease). So once a
//! majority has acknowledged a message the leader sent at time `t`, no other leader can be
//! elected before `t` plus the shortest election timeout among the voters, and until then
//! the leader's state is current for any read made after its term's first entry applied.
//! The lease this module keeps is half of that bound, measured on the monotonic clock.
//!
//! openraft reports the acknowledgement only as "milliseconds ago" in its metrics, at the
//! moment it publishes them. A watcher learns of each publication after it happened, so it
//! dates the acknowledgement from the moment it last looked (before the publication), never
//! from when it woke: the lease it derives can only be shorter than the true one.
//!
//! Why a stopped leader is safe: the lease is checked on the clock when a read arrives. A
//! leader stopped (SIGSTOP) and resumed past its lease finds it expired and falls back to a
//! read index; a read whose check came just before a stop began before whatever the new
//! leader wrote meanwhile, so answering it from the old state is still linearizable.
//!
//! A restarted node may have acknowledged a leader just before it died, and openraft
//! forgets that on restart; [`Replication::start`](super::Replication::start) therefore
//! waits one lease before its groups run, so that it never votes inside a lease it granted.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::types::GroupRaft;

/// What openraft's publication rounds "milliseconds ago" down by, at most.
const ROUNDING: Duration = Duration::from_millis(1);

/// The lease of one group on this node.
#[derive(Default)]
pub(super) struct Lease {
    /// The term it was granted in, and until when it holds.
    held: Mutex<Option<(u64, Instant)>>,
}

impl Lease {
    /// True when this node holds the lease of `term` now.
    pub(super) fn holds(&self, term: u64) -> bool {
        let held = *self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.is_some_and(|(t, until)| t == term && Instant::now() < until)
    }

    fn set(&self, held: Option<(u64, Instant)>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }
}

/// The lease length for an election timeout of `election_timeout` (the longest election
/// timeout the shortest-timed voter may draw is half of it, see `raft_config`).
pub(super) fn duration(election_timeout: Duration) -> Duration {
    election_timeout / 4
}

/// Keeps `lease` from `raft`'s metrics until the group stops.
pub(super) async fn watch(raft: GroupRaft, lease: Arc<Lease>, length: Duration) {
    let mut metrics = raft.metrics();
    let mut looked = Instant::now();
    metrics.borrow_and_update();
    while metrics.changed().await.is_ok() {
        let now = Instant::now();
        let (state, term, acked_ms_ago) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term, m.millis_since_quorum_ack)
        };
        // Published after `looked`, so acknowledged no earlier than `looked` − ms − rounding.
        let held = match (state, acked_ms_ago) {
            (ServerState::Leader, Some(ms)) => looked
                .checked_sub(Duration::from_millis(ms) + ROUNDING)
                .map(|acked| (term, acked + length)),
            _ => None,
        };
        lease.set(held);
        looked = now;
    }
    lease.set(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_only_in_its_term_and_before_it_ends() {
        let lease = Lease::default();
        assert!(!lease.holds(1), "no lease before one is granted");
        lease.set(Some((3, Instant::now() + Duration::from_secs(60))));
        assert!(lease.holds(3));
        assert!(!lease.holds(4), "a lease of another term does not hold");
        lease.set(Some((3, Instant::now())));
        assert!(!lease.holds(3), "an ended lease does not hold");
        lease.set(None);
        assert!(!lease.holds(3));
    }

    #[test]
    fn the_lease_is_a_quarter_of_the_election_timeout() {
        assert_eq!(
            duration(Duration::from_millis(1000)),
            Duration::from_millis(250)
        );
    }
}
