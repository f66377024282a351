//! The work queue between the supervisor and its workers: attempts waiting for a worker
//! (retries ahead of first attempts, so a backlog of new deliveries does not hold back
//! the retries already due), the attempts parked because their endpoint has as many in
//! flight as it may (see `isolation`), the outcome writer's input, and the commit window.
//!
//! The commit window bounds what a crash costs. A delivery is sent again after a crash
//! when its attempt was made and its outcome was not on disk yet: the attempts in flight
//! (at most `delivery.max_in_flight`, one per worker) and the outcomes waiting for their
//! commit. Every attempt takes a permit before it starts and gives it back only once its
//! outcome is committed, and there are `max_in_flight + delivery.commit_window` permits,
//! so at most [`WorkQueue::resend_bound`] deliveries are ever attempted and not
//! committed: no crash re-sends more. Commits stay batched; workers wait only when the
//! writer falls a whole window behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::HashMap;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::isolation::Isolation;
use crate::store::{DueEntry, Outcome};

/// An outcome on its way to disk, holding its attempt's place in the commit window until
/// it is committed.
pub(super) struct Uncommitted {
    pub(super) outcome: Outcome,
    /// Given back when dropped, after the commit.
    pub(super) permit: OwnedSemaphorePermit,
}

/// Attempts waiting for a worker, retries first, and where their outcomes go: shared by
/// the supervisor, which fills it, and its workers, which empty it.
pub struct WorkQueue {
    queued: Mutex<Queued>,
    /// The outcome writer's input; `None` once the node is stopping.
    writer: Mutex<Option<mpsc::UnboundedSender<Uncommitted>>>,
    /// One permit per attempt that may be started and not committed; closed when the node
    /// stops.
    window: Arc<Semaphore>,
    /// The number of permits: `max_in_flight + commit_window`.
    resend_bound: usize,
    /// Set when the node stops: workers finish their attempt and take no more.
    stopping: AtomicBool,
    /// The endpoints' caps and circuit breakers.
    pub(super) isolation: Isolation,
}

#[derive(Default)]
struct Queued {
    retries: VecDeque<DueEntry>,
    first_attempts: VecDeque<DueEntry>,
    /// Attempts whose endpoint is at its cap, by subscriber, oldest first: one goes back
    /// to the front of the queue whenever an attempt to that endpoint ends.
    parked: HashMap<Uuid, VecDeque<DueEntry>>,
}

impl WorkQueue {
    /// A queue whose outcomes go to `writer`, with room for `resend_bound` attempts made
    /// and not committed, and the endpoints' caps and breakers of `isolation`.
    pub(super) fn new(
        writer: mpsc::UnboundedSender<Uncommitted>,
        resend_bound: usize,
        isolation: Isolation,
    ) -> Self {
        WorkQueue {
            queued: Mutex::new(Queued::default()),
            writer: Mutex::new(Some(writer)),
            window: Arc::new(Semaphore::new(resend_bound)),
            resend_bound,
            stopping: AtomicBool::new(false),
            isolation,
        }
    }

    /// The most deliveries ever attempted and not committed, hence the most a crash can
    /// make the node send again: `max_in_flight + commit_window`.
    pub(super) fn resend_bound(&self) -> usize {
        self.resend_bound
    }

    /// Waits for room to start an attempt: a place in the commit window, held until the
    /// attempt's outcome is committed. `None` once the node is stopping.
    pub(super) async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.window.clone().acquire_owned().await.ok()
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Queued> {
        // The lock guards plain queue operations, which cannot leave it inconsistent.
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues attempts: retries, then first attempts, each at the back of theirs.
    pub(super) fn extend(&self, retries: Vec<DueEntry>, first: Vec<DueEntry>) {
        let mut q = self.queued();
        q.retries.extend(retries);
        q.first_attempts.extend(first);
    }

    /// The next attempt to make, retries first, counted in flight for its endpoint; those
    /// whose endpoint is at its cap are parked on the way. `None` when empty or stopping.
    /// The taker calls [`Self::finished`] when the attempt ends.
    pub(super) fn take(&self) -> Option<DueEntry> {
        if self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let mut q = self.queued();
        loop {
            let entry = q
                .retries
                .pop_front()
                .or_else(|| q.first_attempts.pop_front())?;
            if self.isolation.try_start(&entry.account_id) {
                return Some(entry);
            }
            q.parked
                .entry(entry.account_id)
                .or_default()
                .push_back(entry);
        }
    }

    /// An attempt to `account` taken with [`Self::take`] ended: the endpoint's oldest
    /// parked attempt, if any, goes to the front of the queue.
    pub(super) fn finished(&self, account: &Uuid) {
        self.isolation.end(account);
        let mut q = self.queued();
        let Some(parked) = q.parked.get_mut(account) else {
            return;
        };
        let next = parked.pop_front();
        if parked.is_empty() {
            q.parked.remove(account);
        }
        if let Some(entry) = next {
            match entry.due_key() {
                Some(_) => q.retries.push_front(entry),
                None => q.first_attempts.push_front(entry),
            }
        }
    }

    /// Attempts queued (not those parked).
    pub(super) fn len(&self) -> usize {
        let q = self.queued();
        q.retries.len() + q.first_attempts.len()
    }

    /// Retries queued.
    pub(super) fn retries(&self) -> usize {
        self.queued().retries.len()
    }

    /// Hands an outcome to the writer with its attempt's place in the commit window; false
    /// when the node is stopping (the attempt stays in the due queue or its pending batch,
    /// and runs again at the next start).
    pub(super) fn record(&self, outcome: Outcome, permit: OwnedSemaphorePermit) -> bool {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .is_some_and(|w| w.send(Uncommitted { outcome, permit }).is_ok())
    }

    /// Stops handing out attempts, wakes the workers waiting for room and closes the
    /// writer's input.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.window.close();
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
#[cfg(test)]
mod tests {
    use super::super::outcomes::cancelled;
    use super::*;
    use crate::store::Scheduled;
    use uuid::Uuid;

    fn queue(writer: mpsc::UnboundedSender<Uncommitted>, resend_bound: usize) -> WorkQueue {
        let isolation = Isolation::new(1, 0, std::time::Duration::from_secs(1));
        WorkQueue::new(writer, resend_bound, isolation)
    }

    fn entry(n: u8, retry: bool) -> DueEntry {
        DueEntry {
            scheduled: if retry {
                Scheduled::Queue(vec![n])
            } else {
                Scheduled::Batch {
                    key: vec![n],
                    registration_id: Uuid::nil(),
                    subscriptions_read_at: None,
                }
            },
            record_key: vec![n],
            due_us: 0,
            delivery_id: Uuid::nil(),
            account_id: Uuid::from_u128(u128::from(n)),
            attempts: u16::from(retry),
        }
    }

    #[test]
    fn the_queue_hands_out_retries_first_then_first_attempts_in_order() {
        let (writer, _outcomes) = mpsc::unbounded_channel();
        let work = queue(writer, 4);
        {
            let mut q = work.queued();
            q.first_attempts.extend([entry(1, false), entry(2, false)]);
            q.retries.push_back(entry(3, true));
        }
        assert_eq!((work.len(), work.retries()), (3, 1));
        let order: Vec<u8> = std::iter::from_fn(|| work.take())
            .map(|e| e.record_key[0])
            .collect();
        assert_eq!(order, [3, 1, 2]);
        assert_eq!(work.len(), 0);
    }

    #[test]
    fn an_endpoint_at_its_cap_parks_its_attempts_until_one_ends() {
        let (writer, _outcomes) = mpsc::unbounded_channel();
        let work = queue(writer, 4);
        let mut second = entry(1, false);
        second.record_key = vec![9];
        work.extend(Vec::new(), vec![entry(1, false), second, entry(2, false)]);
        let first = work.take().expect("endpoint 1's first attempt");
        assert_eq!(first.record_key, [1]);
        let other = work.take().expect("endpoint 2 is not held back");
        assert_eq!(other.record_key, [2]);
        assert!(
            work.take().is_none(),
            "endpoint 1's second attempt is parked"
        );
        work.finished(&first.account_id);
        assert_eq!(work.take().map(|e| e.record_key), Some(vec![9]));
    }

    #[tokio::test]
    async fn an_attempt_holds_its_place_in_the_window_until_its_outcome_is_committed() {
        let (writer, mut outcomes) = mpsc::unbounded_channel();
        let work = queue(writer, 2);
        assert_eq!(work.resend_bound(), 2);
        let first = work.admit().await.expect("room for the first attempt");
        let second = work.admit().await.expect("room for the second attempt");
        assert!(work.record(cancelled(entry(1, false)), first));
        assert_eq!(
            work.window.available_permits(),
            0,
            "an outcome handed to the writer is not committed yet"
        );
        let uncommitted = outcomes.try_recv().expect("the outcome reached the writer");
        drop(uncommitted);
        assert_eq!(
            work.window.available_permits(),
            1,
            "a committed outcome frees its place"
        );
        drop(second);
        assert_eq!(work.window.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_stopped_queue_hands_out_nothing_and_closes_the_writer() {
        let (writer, mut outcomes) = mpsc::unbounded_channel();
        let work = queue(writer, 4);
        work.queued().first_attempts.push_back(entry(1, false));
        let permit = work.admit().await.expect("room before the stop");
        assert!(work.record(cancelled(entry(2, false)), permit));
        work.stop();
        assert!(
            work.take().is_none(),
            "queued attempts wait for the next start"
        );
        assert!(
            work.admit().await.is_none(),
            "no attempt starts after the stop"
        );
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh permit");
        assert!(!work.record(cancelled(entry(3, false)), permit));
        assert_eq!(
            outcomes.try_recv().map(|u| u.outcome.due.record_key).ok(),
            Some(vec![2])
        );
        assert!(
            matches!(
                outcomes.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "the writer sees its input end"
        );
    }
}
