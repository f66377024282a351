//! The actors' record writes through the groups' logs, with a group commit: the writes to
//! one group that arrive while its previous proposal is in flight wait, and go out
//! together as the next one, one log entry for all of them.
//!
//! Each entry costs every voter an append, a flush, a message and an apply whatever it
//! holds, so under load (a fan-out's accepts and outcome batches, many subscribes) one
//! entry for many writes is what keeps a replicated node's CPU per write down. Writes of
//! one caller keep their order: a caller's next write is queued after its last one.
//! Unrelated writes share an entry's fate: if the proposal fails (the lead moved, no
//! quorum), each of them gets the error and none was applied by this entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::actors::{Fenced, Replicated, ReplicatedRecords};
use crate::cluster::ShardId;
use crate::domain::ServiceError;
use crate::replication::{Applied, Command, GroupId, Replication};
use crate::store::{RecordWrite, WriteOutcome};

/// A caller's writes waiting for the next proposal, and where their outcomes go.
struct Waiting {
    writes: Vec<RecordWrite>,
    answer: oneshot::Sender<Result<Vec<WriteOutcome>, ServiceError>>,
}

/// One group's writes waiting, and whether a proposal is in flight.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    proposing: bool,
}

/// The actors' record writes, through the groups' logs.
pub(super) struct GroupLogs {
    replication: Arc<Replication>,
    queues: Mutex<HashMap<GroupId, Queue>>,
}

impl GroupLogs {
    pub(super) fn new(replication: Arc<Replication>) -> Arc<Self> {
        Arc::new(Self {
            replication,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `writes` for `group`; answers whether the caller must start the proposer
    /// (none is running for the group).
    fn enqueue(&self, group: GroupId, waiting: Waiting) -> bool {
        // A queue of pending writes holds no invariant a panic could break.
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.entry(group).or_default();
        queue.waiting.push(waiting);
        !std::mem::replace(&mut queue.proposing, true)
    }

    /// The writes waiting for `group`, or `None` (and the proposer stops) when there are
    /// none.
    fn take(&self, group: GroupId) -> Option<Vec<Waiting>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.entry(group).or_default();
        if queue.waiting.is_empty() {
            queue.proposing = false;
            return None;
        }
        Some(std::mem::take(&mut queue.waiting))
    }

    /// Proposes `group`'s waiting writes, one entry at a time, until none are left. A task
    /// of its own: a caller that gives up waiting does not stop the others' proposals.
    async fn propose(self: Arc<Self>, group: GroupId) {
        while let Some(mut batch) = self.take(group) {
            let counts: Vec<usize> = batch.iter().map(|w| w.writes.len()).collect();
            let writes: Vec<RecordWrite> = batch
                .iter_mut()
                .flat_map(|w| std::mem::take(&mut w.writes))
                .collect();
            let expected = writes.len();
            let answer = self
                .replication
                .write_as_leader(group, Command::Records(Arc::new(writes)))
                .await;
            match answer {
                Ok(Applied::Records(outcomes)) if outcomes.len() == expected => {
                    let mut outcomes = outcomes.into_iter();
                    for (w, count) in batch.into_iter().zip(counts) {
                        let theirs = outcomes.by_ref().take(count).collect();
                        let _ = w.answer.send(Ok(theirs));
                    }
                }
                Ok(other) => {
                    let e = format!("group {group} answered {other:?} to record writes");
                    for w in batch {
                        let _ = w.answer.send(Err(ServiceError::Internal(e.clone())));
                    }
                }
                Err(e) => {
                    for w in batch {
                        let _ = w.answer.send(Err(e.clone().into()));
                    }
                }
            }
        }
    }
}

/// The actors' handle on [`GroupLogs`].
pub(super) struct GroupWrites(pub(super) Arc<GroupLogs>);

impl ReplicatedRecords for GroupWrites {
    fn fence(&self, shard: ShardId) -> Fenced<'_> {
        Box::pin(async move {
            let replication = &self.0.replication;
            let group = replication.group_of(shard);
            Ok(replication.fence_writes(group).await?)
        })
    }

    fn write(&self, shard: ShardId, writes: Vec<RecordWrite>) -> Replicated<'_> {
        Box::pin(async move {
            let logs = &self.0;
            let group = logs.replication.group_of(shard);
            let (answer, answered) = oneshot::channel();
            if logs.enqueue(group, Waiting { writes, answer }) {
                tokio::spawn(logs.clone().propose(group));
            }
            answered
                .await
                .map_err(|_| ServiceError::Internal("a group's proposer stopped".into()))?
        })
    }

    fn same_group(&self, a: ShardId, b: ShardId) -> bool {
        let replication = &self.0.replication;
        replication.group_of(a) == replication.group_of(b)
    }

    fn group_number(&self, shard: ShardId) -> u16 {
        self.0.replication.group_of(shard).0
    }
}
