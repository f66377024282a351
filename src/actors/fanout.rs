//! Fan-out: streaming a trigger's subscriptions to delivery, a batch at a time.
//!
//! Each step reads the next batch of subscriptions after the persisted cursor, accepts the
//! deliveries of subscribers owned by this node, queues the others for their nodes
//! (handoff), and moves the cursor — one transaction, so a crash resumes exactly there and
//! memory stays bounded by one batch whatever the number of subscribers.
//!
//! The first step is small, so the first deliveries go out at once, and is written with
//! the trigger itself when the backlog allows (see [`PreparedStep`]). Later steps queue in
//! the node's [`StepQueue`]: step runners on the storage threads (a step is a few
//! milliseconds of sled work, which async code never runs itself) write the steps of several fan-outs in one batch, since each batch
//! costs a log write and many small registrations are often triggered together. A fan-out
//! waits while the node's deliveries not attempted yet are above a backlog limit: writing
//! deliveries far ahead of the engine only costs memory and slows the engine's own writes.
//!
//! Judging deliveries against the `failed_count` limit ([`judge`]) and counting and
//! dispatching those created ([`accepted`]) serve both the steps here and the batches that
//! other nodes hand over (the delivery engine's handoff).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{now_us, NodeState};
use crate::delivery::metrics::Counted;
use crate::domain::ServiceError;
use crate::store::{DueEntry, FanoutStep, NewDelivery, PreparedDeliveries, StoreError};

/// Subscriptions handed to delivery by a fan-out's first step. Small, so that the first
/// attempts start soon; a step writes one pending-batch row whatever its size, so 100 fans
/// a registration of up to 100 subscribers out in one commit.
pub const FIRST_BATCH: usize = 100;
/// Subscriptions handed to delivery per later step.
pub const FANOUT_BATCH: usize = 1000;
/// Pending deliveries per delivery worker above which fan-outs wait.
const BACKLOG_PER_WORKER: usize = 32;
/// Step runners at once on the node, whatever the number of fan-outs: a step is CPU-bound
/// storage work, so more runners add no speed, and would only hold more of the storage
/// threads when hundreds of registrations are triggered together.
const STEP_RUNNERS: usize = 2;
/// Pause before retrying a step that failed (storage trouble).
const STEP_RETRY: Duration = Duration::from_secs(1);

/// Runs `triggered`'s fan-out to the end (`started`: its first step was written with the
/// trigger).
pub async fn run_fanout(ctx: Arc<NodeState>, registration: Uuid, triggered: Uuid, started: bool) {
    let mut batch = if started { FANOUT_BATCH } else { FIRST_BATCH };
    loop {
        wait_for_backlog(&ctx).await;
        let (done, step) = oneshot::channel();
        let request = StepRequest {
            registration,
            triggered,
            batch,
            done,
        };
        if ctx.delivery.fanout_steps.push(request) {
            let runner_ctx = ctx.clone();
            if let Err(e) = ctx.store.spawn(move |_| run_steps(&runner_ctx)) {
                tracing::error!(error = %e, "cannot start a fan-out step runner");
            }
        }
        match step.await {
            Ok(Ok(true)) => batch = FANOUT_BATCH,
            Ok(Ok(false)) => return,
            // Failed (logged by the runner) or the runner crashed: a step's writes are one
            // batch, so nothing was written; retry it.
            Ok(Err(())) | Err(_) => tokio::time::sleep(STEP_RETRY).await,
        }
    }
}

/// A fan-out waiting for its next step.
struct StepRequest {
    registration: Uuid,
    triggered: Uuid,
    batch: usize,
    /// True when more subscriptions remain; `Err` when the step failed.
    done: oneshot::Sender<Result<bool, ()>>,
}

/// The fan-out steps waiting to be written, and how many runners write them.
#[derive(Default)]
pub struct StepQueue {
    inner: Mutex<Steps>,
}

#[derive(Default)]
struct Steps {
    waiting: VecDeque<StepRequest>,
    runners: usize,
}

impl StepQueue {
    fn steps(&self) -> std::sync::MutexGuard<'_, Steps> {
        // Plain queue operations cannot leave the lock's content inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a step; true when the caller must start a runner for it.
    fn push(&self, request: StepRequest) -> bool {
        let mut steps = self.steps();
        steps.waiting.push_back(request);
        let start = steps.runners < STEP_RUNNERS;
        if start {
            steps.runners += 1;
        }
        start
    }

    /// The next steps to write together: at least one, and further ones while their
    /// batches add up to at most [`FANOUT_BATCH`] subscriptions. Empty when none wait, and
    /// the runner asking then counts as gone.
    fn next(&self) -> Vec<StepRequest> {
        let mut steps = self.steps();
        let mut taken: Vec<StepRequest> = Vec::new();
        let mut size = 0;
        while let Some(next) = steps.waiting.front() {
            if !taken.is_empty() && size + next.batch > FANOUT_BATCH {
                break;
            }
            size += next.batch;
            taken.extend(steps.waiting.pop_front());
        }
        if taken.is_empty() {
            steps.runners -= 1;
        }
        taken
    }
}

/// Counts a runner out if it panics, so that later steps start another. Disarmed when the
/// runner leaves normally: [`StepQueue::next`] counted it out under the queue's lock, so
/// that no step is queued in between with no runner to write it.
struct RunnerGuard<'a> {
    queue: &'a StepQueue,
    armed: bool,
}

impl Drop for RunnerGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.queue.steps().runners -= 1;
        }
    }
}

/// A step runner: writes queued steps, several fan-outs' in one batch, until none wait.
fn run_steps(ctx: &NodeState) {
    let queue = &ctx.delivery.fanout_steps;
    let mut guard = RunnerGuard { queue, armed: true };
    loop {
        let requests = queue.next();
        if requests.is_empty() {
            guard.armed = false;
            return;
        }
        write_steps(ctx, requests);
    }
}

/// Reads and prepares each requested step, writes them all in one batch and answers each.
fn write_steps(ctx: &NodeState, requests: Vec<StepRequest>) {
    let mut ready = Vec::with_capacity(requests.len());
    for request in requests {
        match prepare(ctx, &request) {
            Ok(Some(step)) => ready.push((request, step)),
            // The fan-out is complete (its cursor is gone).
            Ok(None) => {
                let _ = request.done.send(Ok(false));
            }
            Err(e) => {
                tracing::error!(error = %e, triggered = %request.triggered, "fan-out step failed; retrying");
                let _ = request.done.send(Err(()));
            }
        }
    }
    if ready.is_empty() {
        return;
    }
    let (requests, steps): (Vec<StepRequest>, Vec<PreparedStep>) = ready.into_iter().unzip();
    let (writes, outcomes): (Vec<PreparedDeliveries>, Vec<StepOutcome>) = steps
        .into_iter()
        .map(|step| (step.deliveries, step.outcome))
        .unzip();
    match ctx.store.apply_prepared_together(writes) {
        Ok(entries) => {
            for ((request, outcome), entries) in requests.into_iter().zip(outcomes).zip(entries) {
                let more = outcome.written(ctx, entries);
                let _ = request.done.send(Ok(more));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, steps = requests.len(), "writing fan-out steps failed; retrying");
            for request in requests {
                let _ = request.done.send(Err(()));
            }
        }
    }
}

/// The requested step read and prepared; `None` when the fan-out is complete.
fn prepare(ctx: &NodeState, request: &StepRequest) -> Result<Option<PreparedStep>, ServiceError> {
    let Some(cursor) = ctx.store.fanout(&request.triggered)? else {
        return Ok(None);
    };
    PreparedStep::read(
        ctx,
        &request.registration,
        &request.triggered,
        cursor.after,
        request.batch,
    )
    .map(Some)
}

/// True while the node's deliveries not attempted yet are within the backlog limit (those
/// waiting for a retry do not count: they are not in the engine's way).
pub fn backlog_allows(ctx: &NodeState) -> bool {
    let limit = (ctx.delivery.max_in_flight * BACKLOG_PER_WORKER) as i64;
    ctx.delivery.unattempted.load(Ordering::Relaxed) <= limit
}

/// Waits until [`backlog_allows`] a step.
async fn wait_for_backlog(ctx: &NodeState) {
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

/// A fan-out step read and judged, its writes prepared: applied with other fan-outs'
/// steps by a step runner, or for the first step of a small registration with its trigger
/// (one commit instead of two, and no fan-out task at all).
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
        ctx: &NodeState,
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
        // Replicated, a step writes only its registration group's rows: this node's own
        // subscribers are handed over too (to itself), so that the group's next leader
        // knows what is left.
        let replicated = ctx.records.is_replicated();
        for (_, item) in batch {
            match cluster.remote_owner(cluster.map().shard_of_id(&item.account_id)) {
                Some(peer) => remote.entry(peer.member.id.clone()).or_default().push(item),
                None if replicated => remote
                    .entry(cluster.node_id().to_string())
                    .or_default()
                    .push(item),
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
    pub fn written(self, ctx: &NodeState, entries: Vec<DueEntry>) -> bool {
        accepted(ctx, entries, self.skipped);
        if self.has_handoffs {
            ctx.delivery.handoff_wake.notify_waiters();
        }
        !self.finished
    }
}

/// Judges deliveries for subscribers owned by this node: true marks those to skip, at the
/// `failed_count` limit.
pub fn judge(
    ctx: &NodeState,
    items: Vec<NewDelivery>,
) -> Result<Vec<(NewDelivery, bool)>, StoreError> {
    let limit = ctx.delivery.max_failed_count;
    let mut judged = Vec::with_capacity(items.len());
    // A batch names the same subscriber accounts many times over.
    let mut counts: HashMap<Uuid, u64> = HashMap::new();
    for item in items {
        let count = match counts.get(&item.account_id) {
            Some(c) => *c,
            None => {
                let c = ctx.store.failed_count(&item.account_id)?;
                counts.insert(item.account_id, c);
                c
            }
        };
        judged.push((item, count >= limit));
    }
    Ok(judged)
}

/// How many of the `judged` deliveries are skipped.
pub fn skipped(judged: &[(NewDelivery, bool)]) -> u64 {
    judged.iter().filter(|(_, skip)| *skip).count() as u64
}

/// Counts deliveries just written (`skipped` of them skipped) and hands their first
/// attempts to the supervisor; returns how many were created.
pub fn accepted(ctx: &NodeState, entries: Vec<DueEntry>, skipped: u64) -> u64 {
    let created = entries.len() as u64;
    let metrics = &ctx.delivery.metrics;
    metrics.count(Counted::Skipped, skipped);
    metrics
        .due
        .fetch_add(created as i64, std::sync::atomic::Ordering::Relaxed);
    ctx.delivery
        .unattempted
        .fetch_add(created as i64, std::sync::atomic::Ordering::Relaxed);
    if !entries.is_empty() {
        ctx.delivery.dispatch_first_attempts(entries);
    }
    created
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(batch: usize) -> (StepRequest, oneshot::Receiver<Result<bool, ()>>) {
        let (done, answer) = oneshot::channel();
        let request = StepRequest {
            registration: Uuid::nil(),
            triggered: Uuid::new_v4(),
            batch,
            done,
        };
        (request, answer)
    }

    #[test]
    fn steps_are_written_together_up_to_one_full_batch_by_at_most_two_runners() {
        let queue = StepQueue::default();
        let mut answers = Vec::new();
        let mut started = 0;
        for size in [FIRST_BATCH; 12]
            .into_iter()
            .chain([FANOUT_BATCH, FIRST_BATCH])
        {
            let (r, a) = request(size);
            answers.push(a);
            started += usize::from(queue.push(r));
        }
        assert_eq!(
            started, STEP_RUNNERS,
            "later steps wait for the running runners"
        );
        let sizes = |steps: Vec<StepRequest>| steps.iter().map(|s| s.batch).collect::<Vec<_>>();
        assert_eq!(sizes(queue.next()), [FIRST_BATCH; 10]);
        assert_eq!(sizes(queue.next()), [FIRST_BATCH; 2]);
        // A full batch goes alone, even when it exceeds what is left of the limit.
        assert_eq!(sizes(queue.next()), [FANOUT_BATCH]);
        assert_eq!(sizes(queue.next()), [FIRST_BATCH]);
        assert!(queue.next().is_empty());
        assert_eq!(
            queue.steps().runners,
            STEP_RUNNERS - 1,
            "an idle runner counts out"
        );
        assert!(queue.next().is_empty());
        assert_eq!(queue.steps().runners, 0);
        let (r, _a) = request(FIRST_BATCH);
        assert!(queue.push(r), "a step with no runner left starts one");
    }

    #[test]
    fn a_runner_that_panics_counts_out() {
        let queue = StepQueue::default();
        let (r, _a) = request(FIRST_BATCH);
        assert!(queue.push(r));
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = RunnerGuard {
                queue: &queue,
                armed: true,
            };
            panic!("a step crashed");
        }));
        assert!(crashed.is_err());
        assert_eq!(queue.steps().runners, 0);
    }
}
