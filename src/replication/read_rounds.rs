//! Read-index rounds shared by the reads that wait for them.
//!
//! A read index costs the leader a heartbeat round to its followers. Under load many reads
//! of one group arrive together, so they share rounds: a read joins the next round to
//! start, never one already running (that one may have confirmed the lead before the read
//! arrived, which would not make the read linearizable). One round runs at a time per
//! group, and each answers every read that joined it.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::leadership::NotLeader;
use super::GroupId;

/// Answers the reads that joined a round.
type Waiters = Vec<oneshot::Sender<Result<(), NotLeader>>>;

/// The rounds of one group.
pub(super) struct ReadRounds {
    group: GroupId,
    state: Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    /// A round is running (its task takes the waiters as each round starts).
    running: bool,
    /// The reads waiting for the next round.
    waiting: Waiters,
}

impl ReadRounds {
    /// No round run yet for `group`.
    pub(super) fn new(group: GroupId) -> Self {
        Self {
            group,
            state: Mutex::default(),
        }
    }

    /// Waits for a round that starts after this call; `round` runs one (a read index).
    pub(super) async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Result<(), NotLeader>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), NotLeader>> + Send,
    {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.waiting.push(answer);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let rounds = self.clone();
            tokio::spawn(async move { rounds.run(round).await });
        }
        answered.await.unwrap_or_else(|_| {
            Err(NotLeader::Stopped {
                group: self.group,
                reason: "the read round was dropped".into(),
            })
        })
    }

    /// Runs rounds until no read waits.
    async fn run<F, Fut>(&self, round: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), NotLeader>>,
    {
        loop {
            let waiters = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let result = round().await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn reads_arriving_together_share_rounds_and_each_gets_a_later_one() {
        let rounds = Arc::new(ReadRounds::new(GroupId(1)));
        let count = Arc::new(AtomicUsize::new(0));
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (rounds, count) = (rounds.clone(), count.clone());
            reads.spawn(async move {
                rounds
                    .join(move || {
                        let count = count.clone();
                        async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Ok(())
                        }
                    })
                    .await
            });
        }
        while let Some(read) = reads.join_next().await {
            assert_eq!(read.unwrap(), Ok(()));
        }
        let rounds_run = count.load(Ordering::SeqCst);
        assert!(
            (1..50).contains(&rounds_run),
            "{rounds_run} rounds for 50 reads"
        );
    }

    #[tokio::test]
    async fn a_failed_round_answers_its_reads_and_the_next_starts_afresh() {
        let rounds = Arc::new(ReadRounds::new(GroupId(1)));
        let failed = rounds
            .join(|| async { Err(NotLeader::NoQuorum(GroupId(1))) })
            .await;
        assert_eq!(failed, Err(NotLeader::NoQuorum(GroupId(1))));
        assert_eq!(rounds.join(|| async { Ok(()) }).await, Ok(()));
    }
}
