//! Fan-out: streaming a trigger's subscriptions to delivery, a batch at a time.
//!
//! Each step reads the next batch of subscriptions after the persisted cursor, accepts the
//! deliveries of subscribers owned by this node, queues the others for their nodes
//! (handoff), and moves the cursor — one transaction, so a crash resumes exactly there and
//! memory stays bounded by one batch whatever the number of subscribers.
//!
//! The first step is small, so the first deliveries go out at once, and is written with
//! the trigger itself when the backlog allows (see [`PreparedStep`]). Later steps run on
//! the blocking pool (a step is a few milliseconds of sled work that would otherwise hold
//! an async worker away from the delivery engine), and a fan-out waits while the node's
//! deliveries not attempted yet are above a backlog limit: writing deliveries far ahead of
//! the engine only costs memory and slows the engine's own writes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::delivery::{accepted, judge, skipped};
use super::{now_us, NodeContext};
use crate::service::ServiceError;
use crate::store::{DueEntry, FanoutStep, NewDelivery, PreparedDeliveries};

/// Subscriptions handed to delivery by a fan-out's first step. Small, so that the first
/// attempts start soon; a step writes one pending-batch row whatever its size, and 100
/// fans a registration of up to 100 subscribers out in one commit (10 and then the rest
/// took two, a visible cost when many small registrations are triggered).
pub const FIRST_BATCH: usize = 100;
/// Subscriptions handed to delivery per later step.
const FANOUT_BATCH: usize = 1000;
/// Pending deliveries per delivery worker above which fan-outs wait.
const BACKLOG_PER_WORKER: usize = 32;
/// Fan-out steps running at once on the node, whatever the number of fan-outs: a step is
/// CPU-bound storage work, and one blocking thread per concurrent trigger (hundreds, when
/// many registrations are triggered together) cost hundreds of MB of stacks and allocator
/// caches for no extra speed.
pub const CONCURRENT_STEPS: usize = 2;
/// Pause before retrying a step that failed (storage trouble).
const STEP_RETRY: Duration = Duration::from_secs(1);

/// Runs `triggered`'s fan-out to the end (`started`: its first step was written with the
/// trigger).
pub async fn run_fanout(ctx: Arc<NodeContext>, registration: Uuid, triggered: Uuid, started: bool) {
    let mut batch = if started { FANOUT_BATCH } else { FIRST_BATCH };
    loop {
        wait_for_backlog(&ctx).await;
        let Ok(permit) = ctx.delivery.fanout_steps.clone().acquire_owned().await else {
            return; // closed: the node is stopping; the cursor resumes it at the next start
        };
        let step_ctx = ctx.clone();
        let step = tokio::task::spawn_blocking(move || {
            let result = fanout_step(&step_ctx, &registration, &triggered, batch);
            drop(permit);
            result
        })
        .await;
        match step {
            Ok(Ok(true)) => batch = FANOUT_BATCH,
            Ok(Ok(false)) => return,
            Ok(Err(e)) => {
                tracing::error!(error = %e, %triggered, "fan-out step failed; retrying");
                tokio::time::sleep(STEP_RETRY).await;
            }
            // The step panicked: nothing was written (one transaction), so retry it.
            Err(e) => {
                tracing::error!(error = %e, %triggered, "fan-out step crashed; retrying");
                tokio::time::sleep(STEP_RETRY).await;
            }
        }
    }
}

/// True while the node's deliveries not attempted yet are within the backlog limit (those
/// waiting for a retry do not count: they are not in the engine's way).
pub fn backlog_allows(ctx: &NodeContext) -> bool {
    let limit = (ctx.delivery.max_in_flight * BACKLOG_PER_WORKER) as i64;
    ctx.delivery.unattempted.load(Ordering::Relaxed) <= limit
}

/// Waits until [`backlog_allows`] a step.
async fn wait_for_backlog(ctx: &NodeContext) {
    loop {
        let drained = ctx.delivery.drained.notified();
        if backlog_allows(ctx) {
            return;
        }
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep(STEP_RETRY) => {}
        }
    }
}

/// Hands the next batch of subscribers to delivery; true when more remain.
fn fanout_step(
    ctx: &NodeContext,
    registration: &Uuid,
    triggered: &Uuid,
    batch_size: usize,
) -> Result<bool, ServiceError> {
    let Some(cursor) = ctx.store.fanout(triggered)? else {
        return Ok(false);
    };
    let step = PreparedStep::read(ctx, registration, triggered, cursor.after, batch_size)?;
    let entries = ctx.store.apply_prepared(step.deliveries)?;
    Ok(step.outcome.written(ctx, entries))
}

/// A fan-out step read and judged, its writes prepared: applied on their own by a step
/// of [`run_fanout`], or for the first step of a small registration with its trigger (one
/// commit instead of two, and no fan-out task at all).
pub struct PreparedStep {
    /// The writes.
    pub deliveries: PreparedDeliveries,
    /// What follows them.
    pub outcome: StepOutcome,
}

/// What a written step leaves to do.
pub struct StepOutcome {
    skipped: u64,
    has_handoffs: bool,
    finished: bool,
}

impl PreparedStep {
    /// Reads the next `batch_size` subscriptions after `after` and prepares their
    /// deliveries. Deliveries run on the node owning the subscriber (it keeps
    /// failed_count): local subscribers are accepted here, the others queued for their
    /// node.
    pub fn read(
        ctx: &NodeContext,
        registration: &Uuid,
        triggered: &Uuid,
        after: Option<Vec<u8>>,
        batch_size: usize,
    ) -> Result<Self, ServiceError> {
        let store = &ctx.store;
        let subscriptions_read_at = store.subscription_deletions();
        let next = store.subscription_batch(registration, after.as_deref(), batch_size)?;
        let (batch, finished) = (next.items, !next.more);
        let after = batch.last().map(|(k, _)| k.clone()).or(after);
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
            subscriptions_read_at,
        };
        let judged = judge(ctx, local)?;
        let deliveries = store.prepare_step(triggered, registration, &judged, now_us(), &step)?;
        Ok(Self {
            deliveries,
            outcome: StepOutcome {
                skipped: skipped(&judged),
                has_handoffs: !step.handoffs.is_empty(),
                finished,
            },
        })
    }
}

impl StepOutcome {
    /// Once the step is written: counts it, hands its first attempts (`entries`) to
    /// delivery and its batches for other nodes to the handoff senders; true when more
    /// subscriptions remain.
    pub fn written(self, ctx: &NodeContext, entries: Vec<DueEntry>) -> bool {
        accepted(ctx, entries, self.skipped);
        if self.has_handoffs {
            ctx.delivery.handoff_wake.notify_waiters();
        }
        !self.finished
    }
}
