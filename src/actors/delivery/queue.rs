//! The work queue between the supervisor and its workers: attempts waiting for a worker
//! (retries ahead of first attempts, so a backlog of new deliveries does not hold back
//! the retries already due) and the outcome writer's input.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::store::{DueEntry, Outcome};

/// Attempts waiting for a worker, retries first, and where their outcomes go: shared by
/// the supervisor, which fills it, and its workers, which empty it.
pub struct WorkQueue {
    queued: Mutex<Queued>,
    /// The outcome writer's input; `None` once the node is stopping.
    writer: Mutex<Option<mpsc::UnboundedSender<Outcome>>>,
    /// Set when the node stops: workers finish their attempt and take no more.
    stopping: AtomicBool,
}

#[derive(Default)]
struct Queued {
    retries: VecDeque<DueEntry>,
    first_attempts: VecDeque<DueEntry>,
}

impl WorkQueue {
    pub(super) fn new(writer: mpsc::UnboundedSender<Outcome>) -> Self {
        WorkQueue {
            queued: Mutex::new(Queued::default()),
            writer: Mutex::new(Some(writer)),
            stopping: AtomicBool::new(false),
        }
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

    /// The next attempt to make, retries first; `None` when empty or stopping.
    pub(super) fn take(&self) -> Option<DueEntry> {
        if self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let mut q = self.queued();
        q.retries
            .pop_front()
            .or_else(|| q.first_attempts.pop_front())
    }

    /// Attempts queued.
    pub(super) fn len(&self) -> usize {
        let q = self.queued();
        q.retries.len() + q.first_attempts.len()
    }

    /// Retries queued.
    pub(super) fn retries(&self) -> usize {
        self.queued().retries.len()
    }

    /// Hands an outcome to the writer; false when the node is stopping (the attempt stays
    /// in the due queue or its pending batch, and runs again at the next start).
    pub(super) fn record(&self, outcome: Outcome) -> bool {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.as_ref().is_some_and(|w| w.send(outcome).is_ok())
    }

    /// Stops handing out attempts and closes the writer's input.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
#[cfg(test)]
mod tests {
    use super::super::outcomes::cancelled;
    use super::*;
    use crate::store::Scheduled;
    use uuid::Uuid;

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
            account_id: Uuid::nil(),
            attempts: u16::from(retry),
        }
    }

    #[test]
    fn the_queue_hands_out_retries_first_then_first_attempts_in_order() {
        let (writer, _outcomes) = mpsc::unbounded_channel();
        let work = WorkQueue::new(writer);
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
    fn a_stopped_queue_hands_out_nothing_and_closes_the_writer() {
        let (writer, mut outcomes) = mpsc::unbounded_channel();
        let work = WorkQueue::new(writer);
        work.queued().first_attempts.push_back(entry(1, false));
        assert!(work.record(cancelled(entry(2, false))));
        work.stop();
        assert!(
            work.take().is_none(),
            "queued attempts wait for the next start"
        );
        assert!(!work.record(cancelled(entry(3, false))));
        assert_eq!(outcomes.try_recv().map(|o| o.due.record_key), Ok(vec![2]));
        assert!(
            matches!(
                outcomes.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "the writer sees its input end"
        );
    }
}
