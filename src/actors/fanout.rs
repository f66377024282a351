//! Fan-out: streaming a trigger's subscriptions to delivery, a batch at a time.
//!
//! Each step reads the next batch of subscriptions after the persisted cursor, accepts the
//! deliveries of subscribers owned by this node, queues the others for their nodes
//! (handoff), and moves the cursor — one transaction, so a crash resumes exactly there and
//! memory stays bounded by one batch whatever the number of subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::delivery::accept_local;
use super::NodeContext;
use crate::service::ServiceError;
use crate::store::{FanoutStep, NewDelivery};

/// Subscriptions handed to delivery per step.
const FANOUT_BATCH: usize = 1000;
/// Pause before retrying a step that failed (storage trouble).
const STEP_RETRY: Duration = Duration::from_secs(1);

/// Runs `triggered`'s fan-out to the end.
pub async fn run_fanout(ctx: Arc<NodeContext>, registration: Uuid, triggered: Uuid) {
    loop {
        match fanout_step(&ctx, &registration, &triggered) {
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, %triggered, "fan-out step failed; retrying");
                tokio::time::sleep(STEP_RETRY).await;
            }
        }
    }
}

/// Hands the next batch of subscribers to delivery; true when more remain.
fn fanout_step(
    ctx: &NodeContext,
    registration: &Uuid,
    triggered: &Uuid,
) -> Result<bool, ServiceError> {
    let store = &ctx.store;
    let Some(cursor) = store.fanout(triggered)? else {
        return Ok(false);
    };
    let batch = store.subscription_batch(registration, cursor.after.as_deref(), FANOUT_BATCH)?;
    let finished = batch.len() < FANOUT_BATCH;
    let after = batch.last().map(|(k, _)| k.clone()).or(cursor.after);
    // Deliveries run on the node owning the subscriber (it keeps failed_count): local
    // subscribers are accepted here, the others queued for their node.
    let mut local = Vec::with_capacity(batch.len());
    let mut remote: HashMap<String, Vec<NewDelivery>> = HashMap::new();
    let cluster = &ctx.cluster;
    for (_, item) in batch {
        match cluster.remote_owner(cluster.map().shard_of_id(&item.account_id)) {
            Some(peer) => remote.entry(peer.member.id.clone()).or_default().push(item),
            None => local.push(item),
        }
    }
    let step = FanoutStep {
        after,
        finished,
        handoffs: remote.into_iter().collect(),
    };
    let has_handoffs = !step.handoffs.is_empty();
    accept_local(ctx, triggered, registration, local, Some(step))?;
    if has_handoffs {
        ctx.delivery.handoff_wake.notify_waiters();
    }
    Ok(!finished)
}
