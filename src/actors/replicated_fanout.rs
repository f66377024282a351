//! Fan-outs of replicated triggers, run by their registration group's leader.
//!
//! With replicated shards a trigger, its fan-out's cursor and its handoff batches are rows
//! of the registration's group. A step reads the next subscriptions on the leader, and
//! proposes the cursor's move with one handoff batch per node serving their subscribers
//! ([`RecordWrite::FanoutRows`]); the handoff senders then give each batch to its node
//! (this one included) and remove it through the log. The group's state alone says how
//! far a fan-out got, so when the lead moves the group's next leader resumes every
//! unfinished fan-out and hands over every batch still queued
//! ([`NodeState::resume_replicated_fanouts`]).
//!
//! A step whose proposal fails (the lead moved) changed nothing; the new leader redoes
//! it. A batch handed over just before the lead moved may be handed again by the next
//! leader, to another node: its deliveries then go out twice (at least once, never lost),
//! with the same delivery ids, so receivers can tell.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use uuid::Uuid;

use super::fanout::{PreparedStep, FANOUT_BATCH};
use super::NodeState;
use crate::domain::ServiceError;
use crate::store::RecordWrite;

/// Pause before retrying a step that failed while this node still leads.
const STEP_RETRY: Duration = Duration::from_millis(200);

/// The replicated fan-outs running on this node: a fan-out resumed while its earlier run
/// is still finishing is not run twice.
#[derive(Default)]
pub struct RunningFanouts(Mutex<HashSet<Uuid>>);

/// A fan-out marked running until dropped.
struct Running<'a> {
    set: &'a RunningFanouts,
    triggered: Uuid,
}

impl RunningFanouts {
    fn claim(&self, triggered: Uuid) -> Option<Running<'_>> {
        // A set of ids cannot be left inconsistent by a panic.
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(triggered).then_some(Running {
            set: self,
            triggered,
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.triggered);
    }
}

/// Runs `triggered`'s fan-out from its replicated cursor to the end, while this node
/// leads its registration's group.
pub async fn run_replicated_fanout(ctx: Arc<NodeState>, registration: Uuid, triggered: Uuid) {
    let Some(_running) = ctx.delivery.replicated_fanouts.claim(triggered) else {
        return;
    };
    let shard = ctx.cluster.map().shard_of_id(&triggered);
    loop {
        if !ctx.cluster.serves_id(&triggered) {
            return;
        }
        let reading = ctx.clone();
        let step = ctx
            .store
            .run(move |s| match s.fanout(&triggered)? {
                Some(cursor) => PreparedStep::read(
                    &reading,
                    &registration,
                    &triggered,
                    cursor.after,
                    FANOUT_BATCH,
                )
                .map(Some),
                None => Ok(None),
            })
            .await;
        let step = match step {
            Ok(Some(step)) => step,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%triggered, error = %e, "reading a fan-out step failed; retrying");
                tokio::time::sleep(STEP_RETRY).await;
                continue;
            }
        };
        let write = RecordWrite::FanoutRows(step.deliveries.into_rows());
        match ctx.records.write_committed(shard, write).await {
            Ok(_) => {
                if !step.outcome.written(&ctx, Vec::new()) {
                    return;
                }
            }
            // Refused: the lead moved (the loop's check then ends this run, and the
            // group's new leader resumes it), or this node's view of it did not follow
            // yet; a run that stopped while this node still leads would never resume.
            Err(ServiceError::NotServedHere { .. }) => tokio::time::sleep(STEP_RETRY).await,
            Err(e) => {
                tracing::warn!(%triggered, error = %e, "a fan-out step was not written; retrying");
                tokio::time::sleep(STEP_RETRY).await;
            }
        }
    }
}

impl NodeState {
    /// Resumes the unfinished fan-outs of the groups this node leads, and wakes the
    /// handoff senders for their queued batches. Run when the node takes the lead of a
    /// group, once it applied everything the group committed before.
    pub async fn resume_replicated_fanouts(self: &Arc<Self>) -> Result<(), ServiceError> {
        let fanouts = self.store.run(|s| s.fanouts()).await?;
        for (triggered, cursor) in fanouts
            .into_iter()
            .filter(|(t, _)| self.cluster.serves_id(t))
        {
            tracing::info!(%triggered, "resuming the fan-out of a group this node leads now");
            tokio::spawn(run_replicated_fanout(
                self.clone(),
                cursor.registration_id,
                triggered,
            ));
        }
        self.delivery.handoff_wake.notify_waiters();
        Ok(())
    }
}
