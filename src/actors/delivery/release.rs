//! Handing a group's deliveries over with its lead, and resuming them without repeats.
//!
//! A leader that hands a group's lead to another voter (a rolling restart, the preferred
//! voter taking its lead back) first stops starting attempts to the group's subscribers,
//! then waits until the outcomes of the attempts it made are committed
//! ([`NodeState::settle_deliveries`]): the next leader resumes only what is left, so a
//! planned move sends nothing twice. An attempt still running when the wait ends (an
//! endpoint slower than the wait) may be made again by the next leader: delivery stays at
//! least once. Should the lead stay here after all, the group's first attempts are
//! resumed ([`NodeState::end_release`]).
//!
//! A resume reads the pending batches on a storage thread while outcomes keep being
//! flushed: an entry it read just before its outcome was flushed would be queued again
//! once its key is no longer busy. Each flush therefore takes a number
//! ([`ResumeEpochs`]); a resume notes the number before it reads, and the supervisor
//! leaves out what was flushed after it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use uuid::Uuid;

use crate::actors::NodeState;

/// How often a settling handover looks at the group's attempts under way.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// Which groups this node is handing over, and the attempts under way per group.
#[derive(Default)]
pub struct Releases {
    /// Groups being handed over, each with the handovers under way.
    releasing: Mutex<HashMap<u16, usize>>,
    /// Groups being handed over: the workers' check costs one load while it is 0.
    active: AtomicUsize,
    /// Attempts queued, running or awaiting their outcome's commit, per group.
    busy: Mutex<HashMap<u16, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counter updates: a poisoned lock's content is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Releases {
    /// Stops attempts to `group`'s subscribers from starting.
    fn begin(&self, group: u16) {
        *lock(&self.releasing).entry(group).or_insert(0) += 1;
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a [`Self::begin`].
    fn end(&self, group: u16) {
        let mut releasing = lock(&self.releasing);
        if let Some(n) = releasing.get_mut(&group) {
            *n -= 1;
            if *n == 0 {
                releasing.remove(&group);
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// True while `group` is being handed over: its attempts are not to start.
    fn is_releasing(&self, group: u16) -> bool {
        lock(&self.releasing).contains_key(&group)
    }

    /// Counts attempts of `groups` (one entry each) as under way.
    pub(super) fn add_busy(&self, groups: &[u16]) {
        if groups.is_empty() {
            return;
        }
        let mut busy = lock(&self.busy);
        for g in groups {
            *busy.entry(*g).or_insert(0) += 1;
        }
    }

    /// Counts attempts of `groups` (one entry each) as over: recorded, or left undone.
    pub(super) fn remove_busy(&self, groups: &[u16]) {
        if groups.is_empty() {
            return;
        }
        let mut busy = lock(&self.busy);
        for g in groups {
            if let Some(n) = busy.get_mut(g) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    busy.remove(g);
                }
            }
        }
    }

    /// Attempts of `group` under way.
    fn busy_in(&self, group: u16) -> usize {
        lock(&self.busy).get(&group).copied().unwrap_or(0)
    }
}

/// Numbers the supervisor's flushes, so that a resume can leave out what was flushed
/// after it read the pending batches.
#[derive(Default)]
pub struct ResumeEpochs {
    /// The number of the last flush.
    flushed: AtomicU64,
    /// Resumes between their read and the supervisor's handling of their entries: the
    /// supervisor keeps the keys it frees only while there is one.
    pending: AtomicUsize,
}

impl ResumeEpochs {
    /// A resume is about to read the pending batches: answers the number to hand back
    /// with its entries.
    pub(super) fn begin_resume(&self) -> u64 {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.flushed.load(Ordering::SeqCst)
    }

    /// The supervisor handled a resume's entries.
    pub(super) fn end_resume(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// The supervisor freed keys: answers the flush's number when a resume may need it.
    pub(super) fn flushed(&self) -> Option<u64> {
        let n = self.flushed.fetch_add(1, Ordering::SeqCst) + 1;
        (self.pending.load(Ordering::SeqCst) > 0).then_some(n)
    }

    /// True while a resume is pending.
    pub(super) fn resuming(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }
}

impl NodeState {
    /// The number of the group of `account`'s shard (0 for all while unreplicated).
    pub(super) fn group_of_account(&self, account: &Uuid) -> u16 {
        self.records
            .group_number(self.cluster.map().shard_of_id(account))
    }

    /// True while the group of `account` is being handed over: no attempt to it starts.
    pub(super) fn releasing_account(&self, account: &Uuid) -> bool {
        let releases = &self.delivery.releases;
        releases.active.load(Ordering::SeqCst) > 0
            && releases.is_releasing(self.group_of_account(account))
    }

    /// Stops starting attempts to the subscribers of group `group`, then waits until the
    /// outcomes of those under way are committed, or until `deadline`. Ended by
    /// [`Self::end_release`].
    pub async fn settle_deliveries(&self, group: u16, deadline: Instant) {
        let releases = &self.delivery.releases;
        releases.begin(group);
        while releases.busy_in(group) > 0 && Instant::now() < deadline {
            tokio::time::sleep(SETTLE_POLL).await;
        }
        let left = releases.busy_in(group);
        if left > 0 {
            tracing::info!(
                group,
                attempts = left,
                "handing a group's lead over with attempts under way: its next leader may make them again"
            );
        }
    }

    /// Ends a [`Self::settle_deliveries`]: when this node still leads the group, its
    /// attempts start again and the first attempts left undone meanwhile are resumed.
    pub fn end_release(self: &Arc<Self>, group: u16, kept: bool) {
        self.delivery.releases.end(group);
        if kept {
            let ctx = self.clone();
            tokio::spawn(async move {
                if let Err(e) = ctx.resume_led_deliveries().await {
                    tracing::warn!(group, error = %e, "resuming the deliveries of a group kept failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_released_until_every_handover_of_it_ends() {
        let r = Releases::default();
        assert!(!r.is_releasing(3));
        r.begin(3);
        r.begin(3);
        assert!(r.is_releasing(3));
        assert!(!r.is_releasing(4));
        r.end(3);
        assert!(r.is_releasing(3));
        r.end(3);
        assert!(!r.is_releasing(3));
        assert_eq!(r.active.load(Ordering::SeqCst), 0);
        // An end without a begin changes nothing.
        r.end(3);
        assert_eq!(r.active.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn attempts_under_way_are_counted_per_group() {
        let r = Releases::default();
        r.add_busy(&[1, 1, 2]);
        assert_eq!((r.busy_in(1), r.busy_in(2), r.busy_in(3)), (2, 1, 0));
        r.remove_busy(&[1, 2, 2]);
        assert_eq!((r.busy_in(1), r.busy_in(2)), (1, 0));
        r.remove_busy(&[1]);
        assert_eq!(r.busy_in(1), 0);
    }

    #[test]
    fn flushes_are_numbered_for_resumes_only_while_one_is_pending() {
        let e = ResumeEpochs::default();
        assert_eq!(e.flushed(), None);
        let epoch = e.begin_resume();
        assert!(e.resuming());
        let n = e.flushed().expect("a resume is pending");
        assert!(
            n > epoch,
            "a flush after the resume read is numbered after it"
        );
        e.end_resume();
        assert!(!e.resuming());
        assert_eq!(e.flushed(), None);
    }
}
