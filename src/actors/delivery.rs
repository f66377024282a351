//! The delivery engine: a per-node DeliverySupervisor and its pool of DeliveryWorkers.
//!
//! The supervisor takes first attempts from fan-out steps (in memory; persisted as pending
//! batches) and retries from the persisted due queue, and queues them in a [`WorkQueue`]
//! shared with its `delivery.max_in_flight` workers (so at most that many attempts run at
//! once). A woken worker takes attempts from the queue until it is empty, hands each
//! outcome to the outcome writer and then reports itself idle: one message per busy spell
//! rather than two per attempt, which measured as a visible share of a delivery's CPU. The
//! writer records outcomes in batches: the attempt log, the next due time and the
//! subscriber's `failed_count` change in one transaction. An attempt leaves its pending
//! batch or the due queue only with its outcome, so a crash at any point re-runs it after
//! restart (at-least-once).
//!
//! Workers are linked children and show the attempt they are making in a [`Slot`]: a
//! panicking worker is reported to the supervisor, which records that attempt as failed and
//! starts a replacement; a worker stuck past its deadline is killed the same way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::remote::{AcceptDeliveries, SubscriptionExists};
use super::{now_us, NodeContext};
use crate::delivery::attempt::{self, Request};
use crate::delivery::connections::IDLE_TIMEOUT;
use crate::delivery::metrics::{Counted, DeliveryMetrics};
use crate::delivery::retry::RetryPolicy;
use crate::store::{
    Attempt, DeliveryState, DueEntry, FailedCountChange, Handoff, NewDelivery, Outcome, Scheduled,
    Triggered,
};

/// How often the supervisor looks for due work, flushes outcomes and checks deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Outcomes written per transaction at most.
const OUTCOME_BATCH: usize = 512;
/// Time between the starts of two outcome commits at least. Each commit is a log write
/// and a disk sync (at full speed the writer made ~700 a second, of ~25 outcomes each);
/// attempts never wait for it, only the bookkeeping of their outcomes does.
const OUTCOME_COMMIT_GAP: Duration = Duration::from_millis(4);
/// Extra time a worker gets beyond the HTTP timeout before it counts as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(5);
/// Trigger bodies kept in memory for attempts.
const BODY_CACHE: usize = 1024;
/// How often queued handoffs to an unavailable peer are retried.
const HANDOFF_RETRY: Duration = Duration::from_secs(1);
/// Handoff batches sent to one peer at once at most.
const HANDOFF_WINDOW: usize = 16;

/// The delivery engine's settings and shared state, part of the node context.
pub struct DeliveryContext {
    /// The running supervisor (set once it started).
    pub supervisor: OnceLock<ActorRef<DeliveryMsg>>,
    /// The retry schedule.
    pub retry: RetryPolicy,
    /// Subscribers at or above this `failed_count` are skipped at trigger time.
    pub max_failed_count: u64,
    /// Attempts running at once at most.
    pub max_in_flight: usize,
    /// Timeout of one outbound request.
    pub attempt_timeout: Duration,
    /// How long finished deliveries are kept.
    pub retention: Duration,
    /// How often the retention sweep runs.
    pub sweep_interval: Duration,
    /// Counters.
    pub metrics: DeliveryMetrics,
    /// Recently used trigger bodies.
    pub bodies: Mutex<HashMap<Uuid, Arc<TriggerBody>>>,
    /// Wakes the handoff senders after a fan-out step queued batches for peers.
    pub handoff_wake: tokio::sync::Notify,
    /// Deliveries created and not attempted yet (the fan-out backlog).
    pub unattempted: AtomicI64,
    /// Wakes fan-outs waiting for the backlog to drain (after outcomes).
    pub drained: tokio::sync::Notify,
    /// Fan-out steps waiting to be written.
    pub fanout_steps: super::fanout::StepQueue,
}

impl DeliveryContext {
    /// Tells the supervisor that new work may be due.
    pub fn wake(&self) {
        if let Some(s) = self.supervisor.get() {
            let _ = s.cast(DeliveryMsg::Wake);
        }
    }

    /// Hands first attempts to the supervisor. It starts before anything creates
    /// deliveries; were it gone (the node stopping), their pending batches resume them at
    /// the next start.
    fn dispatch_first_attempts(&self, entries: Vec<DueEntry>) {
        if let Some(s) = self.supervisor.get() {
            let _ = s.cast(DeliveryMsg::Accepted(entries));
        }
    }
}

/// What every delivery of one trigger sends: its `event` header and its exact body (shared,
/// not copied, by the attempts).
pub struct TriggerBody {
    /// The `event` header.
    pub event: String,
    /// The body.
    pub body: Bytes,
}

/// Judges deliveries for subscribers owned by this node: true marks those to skip, at the
/// `failed_count` limit.
pub fn judge(
    ctx: &NodeContext,
    items: Vec<NewDelivery>,
) -> Result<Vec<(NewDelivery, bool)>, crate::store::StoreError> {
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
pub fn accepted(ctx: &NodeContext, entries: Vec<DueEntry>, skipped: u64) -> u64 {
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

/// Persists a batch handed over by the node that owns the trigger.
pub fn accept_remote_batch(
    ctx: &NodeContext,
    triggered: &Triggered,
    items: &[NewDelivery],
) -> Result<u64, crate::store::StoreError> {
    ctx.store.keep_remote_trigger(triggered)?;
    let judged = judge(ctx, items.to_vec())?;
    let entries = ctx.store.accept_handed_over(
        &triggered.id,
        &triggered.registration_id,
        &judged,
        now_us(),
    )?;
    Ok(accepted(ctx, entries, skipped(&judged)))
}

/// Hands queued fan-out batches to `peer`, removing each only once the peer persisted it.
/// Up to [`HANDOFF_WINDOW`] batches are in flight at once: one at a time, each waited for
/// the peer's flush, and many small fan-outs queued batches faster than that.
pub async fn run_handoff(ctx: Arc<NodeContext>, peer_index: usize) {
    let Some(peer) = ctx.cluster.peers().get(peer_index) else {
        return;
    };
    loop {
        let batches = match ctx.store.handoffs_for(&peer.member.id, HANDOFF_WINDOW) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the handoff queue failed");
                Vec::new()
            }
        };
        let mut triggers: HashMap<Uuid, Triggered> = HashMap::new();
        let mut calls = JoinSet::new();
        for Handoff {
            key,
            triggered,
            items,
        } in batches
        {
            let trigger = match triggers.get(&triggered) {
                Some(t) => t.clone(),
                None => match ctx.store.triggered(&triggered) {
                    Ok(Some(t)) => {
                        triggers.insert(triggered, t.clone());
                        t
                    }
                    // The trigger is gone (wiped): nothing left to deliver.
                    Ok(None) => {
                        let _ = ctx.store.remove_handoff(&key);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading a trigger for handoff failed");
                        break;
                    }
                },
            };
            let command = AcceptDeliveries {
                triggered: trigger,
                items,
            };
            let ctx = ctx.clone();
            calls.spawn(async move {
                let handed = match ctx.cluster.peers().get(peer_index) {
                    Some(peer) => matches!(ctx.cluster.call(peer, &command).await, Ok(Ok(_))),
                    None => false,
                };
                (key, handed)
            });
        }
        let mut progressed = false;
        while let Some(call) = calls.join_next().await {
            // Not handed (the peer is down): the batch waits; resending creates no duplicates.
            if let Ok((key, true)) = call {
                if let Err(e) = ctx.store.remove_handoff(&key) {
                    tracing::error!(error = %e, "removing a handed-over batch failed");
                }
                progressed = true;
            }
        }
        if !progressed {
            tokio::select! {
                () = ctx.delivery.handoff_wake.notified() => {}
                () = tokio::time::sleep(HANDOFF_RETRY) => {}
            }
        }
    }
}

/// Requests the supervisor serves.
#[derive(RactorMessage)]
pub enum DeliveryMsg {
    /// New work may be due now (after a redeliver).
    Wake,
    /// First attempts of deliveries just created.
    Accepted(Vec<DueEntry>),
    /// Periodic: poll, flush, check deadlines, run the retention sweep when due.
    Tick,
    /// Outcomes handed to the outcome writer are on disk (or failed to be written).
    Flushed {
        /// Their record keys, to free.
        keys: Vec<Vec<u8>>,
        /// How many of them ended their delivery.
        finished: usize,
        /// First attempts whose outcomes could not be written, to make again.
        again: Vec<DueEntry>,
    },
    /// A worker found the queue empty and waits to be woken.
    Idle(ActorId),
}

/// Requests a worker serves.
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Make the queued attempts until the queue is empty.
    Drain,
}

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
    fn new(writer: mpsc::UnboundedSender<Outcome>) -> Self {
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

    /// The next attempt to make, retries first; `None` when empty or stopping.
    fn take(&self) -> Option<DueEntry> {
        if self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let mut q = self.queued();
        q.retries
            .pop_front()
            .or_else(|| q.first_attempts.pop_front())
    }

    /// Attempts queued.
    fn len(&self) -> usize {
        let q = self.queued();
        q.retries.len() + q.first_attempts.len()
    }

    /// Retries queued.
    fn retries(&self) -> usize {
        self.queued().retries.len()
    }

    /// Hands an outcome to the writer; false when the node is stopping (the attempt stays
    /// in the due queue or its pending batch, and runs again at the next start).
    fn record(&self, outcome: Outcome) -> bool {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.as_ref().is_some_and(|w| w.send(outcome).is_ok())
    }

    /// Stops handing out attempts and closes the writer's input.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The attempt a worker is making and since when, so the supervisor can record it as
/// failed if the worker dies or hangs. Whoever takes the attempt out records its outcome.
pub type Slot = Arc<Mutex<Option<(DueEntry, Instant)>>>;

fn lock_slot(slot: &Slot) -> std::sync::MutexGuard<'_, Option<(DueEntry, Instant)>> {
    // Only ever holds a value moved in or out: a poisoned lock's content is still whole.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker as the supervisor knows it.
struct Worker {
    actor: ActorRef<WorkerMsg>,
    slot: Slot,
}

/// The supervisor actor.
pub struct DeliverySupervisor {
    ctx: Arc<NodeContext>,
}

/// The supervisor's bookkeeping.
pub struct SupervisorState {
    workers: HashMap<ActorId, Worker>,
    /// Workers waiting to be woken.
    idle: Vec<ActorId>,
    work: Arc<WorkQueue>,
    /// Record keys queued, being attempted or whose outcome awaits writing.
    busy: HashSet<Vec<u8>>,
    /// Where the next dispatch scan of the due queue starts.
    scan_from: Option<Vec<u8>>,
    writer_task: Option<JoinHandle<()>>,
    last_sweep: Instant,
    last_prune: Instant,
}

impl DeliverySupervisor {
    /// Starts the supervisor and its workers, and registers it in the context.
    pub async fn start(ctx: Arc<NodeContext>) -> Result<ActorRef<DeliveryMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, DeliverySupervisor { ctx: ctx.clone() }, ()).await?;
        let _ = ctx.delivery.supervisor.set(actor.clone());
        Ok(actor)
    }

    async fn spawn_worker(
        &self,
        myself: &ActorRef<DeliveryMsg>,
        work: &Arc<WorkQueue>,
    ) -> Result<(ActorId, Worker), ractor::SpawnErr> {
        let slot = Slot::default();
        let worker = DeliveryWorker {
            ctx: self.ctx.clone(),
            supervisor: myself.clone(),
            work: work.clone(),
            slot: slot.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, worker, (), myself.get_cell()).await?;
        Ok((actor.get_id(), Worker { actor, slot }))
    }

    /// Queues attempts (first attempts at the back of theirs), marks their records busy
    /// and wakes idle workers for them.
    fn enqueue(&self, state: &mut SupervisorState, retries: Vec<DueEntry>, first: Vec<DueEntry>) {
        for entry in retries.iter().chain(&first) {
            state.busy.insert(entry.record_key.clone());
        }
        {
            let mut q = state.work.queued();
            q.retries.extend(retries);
            q.first_attempts.extend(first);
        }
        self.wake_idle(state);
    }

    /// Wakes as many idle workers as there are queued attempts.
    fn wake_idle(&self, state: &mut SupervisorState) {
        let mut queued = state.work.len();
        while queued > 0 {
            let Some(id) = state.idle.pop() else {
                break;
            };
            // A worker that cannot be told is gone: its supervision event replaces it.
            if let Some(worker) = state.workers.get(&id) {
                if worker.actor.cast(WorkerMsg::Drain).is_ok() {
                    queued -= 1;
                }
            }
        }
    }

    /// Queues the due retries (ahead of first attempts) and wakes idle workers.
    fn dispatch(&self, state: &mut SupervisorState, from_start: bool) {
        let retries = self.due_retries(state, from_start);
        self.enqueue(state, retries, Vec::new());
    }

    /// Due entries of the queue not queued or in flight yet, up to the number of workers.
    /// The scan starts after the last entry queued (entries before it are in flight, and
    /// walking past them on every refill was a visible cost), falling back to the start of
    /// the queue when that finds too few; `from_start` (every tick) rescans from the start,
    /// so nothing is passed over for long.
    fn due_retries(&self, state: &mut SupervisorState, from_start: bool) -> Vec<DueEntry> {
        let wanted = self
            .ctx
            .delivery
            .max_in_flight
            .saturating_sub(state.work.retries());
        if wanted == 0 {
            return Vec::new();
        }
        let from = if from_start {
            None
        } else {
            state.scan_from.take()
        };
        let busy = &state.busy;
        let store = &self.ctx.store;
        let now = now_us();
        let scanned = match store.due_entries(now, wanted, from.as_deref(), |k| busy.contains(k)) {
            Ok(due) if due.len() < wanted && from.is_some() => {
                store.due_entries(now, wanted, None, |k| busy.contains(k))
            }
            other => other,
        };
        match scanned {
            Ok(due) => {
                state.scan_from = due.last().and_then(|d| d.due_key()).map(<[u8]>::to_vec);
                due
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the due queue failed");
                Vec::new()
            }
        }
    }

    /// Records a failed attempt for the attempt of a worker that died or hung, and starts
    /// a replacement.
    async fn worker_lost(
        &self,
        myself: &ActorRef<DeliveryMsg>,
        state: &mut SupervisorState,
        worker: ActorId,
        why: &str,
    ) {
        let Some(lost) = state.workers.remove(&worker) else {
            return;
        };
        state.idle.retain(|id| *id != worker);
        let attempt = lock_slot(&lost.slot).take();
        if let Some((due, started)) = attempt {
            self.ctx
                .delivery
                .metrics
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
            let attempt = Attempt {
                at_us: now_us().saturating_sub(started.elapsed().as_micros() as u64),
                status: None,
                error: Some(why.to_string()),
                duration_us: started.elapsed().as_micros() as u64,
            };
            let attempts_made = usize::from(due.attempts) + 1;
            let (outcome, counted) = failure(&self.ctx, due, attempt, attempts_made);
            self.ctx.delivery.metrics.count(counted, 1);
            state.work.record(outcome);
        }
        // Boxed: spawning is a large future, and the supervisor's message futures, which
        // ractor moves for every message, would otherwise all be that large.
        match Box::pin(self.spawn_worker(myself, &state.work)).await {
            Ok((id, w)) => {
                state.workers.insert(id, w);
                state.idle.push(id);
                self.wake_idle(state);
            }
            Err(e) => tracing::error!(error = %e, "cannot replace a delivery worker"),
        }
    }

    /// Closes the stale idle delivery connections, so sockets the endpoints closed do not
    /// linger.
    fn maybe_prune(&self, state: &mut SupervisorState) {
        if state.last_prune.elapsed() < IDLE_TIMEOUT / 2 {
            return;
        }
        state.last_prune = Instant::now();
        self.ctx.client.prune_idle_connections();
    }

    fn maybe_sweep(&self, state: &mut SupervisorState) {
        let every = self.ctx.delivery.sweep_interval;
        if state.last_sweep.elapsed() < every {
            return;
        }
        state.last_sweep = Instant::now();
        let store = self.ctx.store.clone();
        let cutoff = now_us().saturating_sub(self.ctx.delivery.retention.as_micros() as u64);
        // A full scan: off the supervisor, which must keep dispatching.
        tokio::task::spawn_blocking(move || {
            match (
                store.sweep_deliveries(cutoff),
                store.sweep_idempotency(now_us()),
            ) {
                (Ok(d), Ok(i)) => {
                    tracing::info!(deliveries = d, idempotency_keys = i, "retention sweep")
                }
                (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
            }
        });
    }
}

/// The outcome of a delivery whose subscription, subscriber or trigger is gone.
fn cancelled(due: DueEntry) -> Outcome {
    Outcome {
        due,
        attempt: None,
        state: DeliveryState::Cancelled,
        next_due_us: None,
        failed_count: FailedCountChange::Keep,
    }
}

/// The outcome of a failed attempt: retry when the schedule allows, else give up.
fn failure(
    ctx: &NodeContext,
    due: DueEntry,
    attempt: Attempt,
    attempts_made: usize,
) -> (Outcome, Counted) {
    let next = ctx.delivery.retry.next_due_us(attempts_made, now_us());
    let (state, counted) = match next {
        Some(_) => (DeliveryState::Pending, Counted::Retrying),
        None => (DeliveryState::Failed, Counted::Failed),
    };
    (
        Outcome {
            due,
            attempt: Some(attempt),
            state,
            next_due_us: next,
            failed_count: FailedCountChange::Increment,
        },
        counted,
    )
}

impl Actor for DeliverySupervisor {
    type Msg = DeliveryMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let (writer, outcomes) = mpsc::unbounded_channel();
        let work = Arc::new(WorkQueue::new(writer));
        let mut workers = HashMap::with_capacity(self.ctx.delivery.max_in_flight);
        for _ in 0..self.ctx.delivery.max_in_flight {
            let (id, worker) = self.spawn_worker(&myself, &work).await?;
            workers.insert(id, worker);
        }
        let (due, unattempted) = self.ctx.store.due_counts()?;
        // Deliveries whose first attempt was not recorded before the node stopped, queued
        // as the first message.
        let first_attempts = self.ctx.store.resume_first_attempts()?;
        let (due, unattempted) = (
            due + first_attempts.len(),
            unattempted + first_attempts.len(),
        );
        self.ctx
            .delivery
            .metrics
            .due
            .store(due as i64, std::sync::atomic::Ordering::Relaxed);
        self.ctx
            .delivery
            .unattempted
            .store(unattempted as i64, std::sync::atomic::Ordering::Relaxed);
        myself.send_interval(TICK, || DeliveryMsg::Tick);
        let _ = myself.cast(DeliveryMsg::Accepted(first_attempts));
        let writer_task = tokio::spawn(write_outcomes(self.ctx.clone(), outcomes, myself));
        Ok(SupervisorState {
            idle: workers.keys().copied().collect(),
            workers,
            work,
            busy: HashSet::new(),
            scan_from: None,
            writer_task: Some(writer_task),
            last_sweep: Instant::now(),
            last_prune: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DeliveryMsg::Wake => self.dispatch(state, false),
            DeliveryMsg::Accepted(entries) => self.enqueue(state, Vec::new(), entries),
            DeliveryMsg::Tick => {
                let deadline = self.ctx.delivery.attempt_timeout + STUCK_GRACE;
                let stuck: Vec<ActorId> = state
                    .workers
                    .iter()
                    .filter(|(_, w)| {
                        lock_slot(&w.slot)
                            .as_ref()
                            .is_some_and(|(_, started)| started.elapsed() > deadline)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in stuck {
                    if let Some(worker) = state.workers.get(&id) {
                        tracing::warn!("a delivery attempt is stuck; stopping its worker");
                        worker.actor.unlink(myself.get_cell());
                        worker.actor.kill();
                    }
                    self.worker_lost(&myself, state, id, "attempt stuck past its deadline")
                        .await;
                }
                self.dispatch(state, true);
                self.maybe_sweep(state);
                self.maybe_prune(state);
            }
            DeliveryMsg::Flushed {
                keys,
                finished,
                again,
            } => {
                for k in &keys {
                    state.busy.remove(k);
                }
                self.enqueue(state, Vec::new(), again);
                self.ctx
                    .delivery
                    .metrics
                    .due
                    .fetch_sub(finished as i64, std::sync::atomic::Ordering::Relaxed);
            }
            DeliveryMsg::Idle(worker) => {
                if state.workers.contains_key(&worker) {
                    state.idle.push(worker);
                }
                // Refill in bulk: each scan of the due queue walks past the keys in flight.
                let refill = (self.ctx.delivery.max_in_flight / 8).max(1);
                if state.idle.len() >= refill {
                    self.dispatch(state, false);
                } else {
                    self.wake_idle(state);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(%error, "a delivery worker failed");
                self.worker_lost(&myself, state, cell.get_id(), "attempt crashed")
                    .await;
            }
            SupervisionEvent::ActorTerminated(cell, _, _)
                if state.workers.contains_key(&cell.get_id()) =>
            {
                self.worker_lost(&myself, state, cell.get_id(), "attempt stopped")
                    .await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The node is stopping: workers take no more attempts, and the writer writes and
        // flushes what is left.
        state.work.stop();
        if let Some(task) = state.writer_task.take() {
            task.await?;
        }
        Ok(())
    }
}

/// The outcome writer: writes outcomes in batches (record, due queue and `failed_count`
/// in one transaction), flushes each batch (one group commit) and reports it to the
/// supervisor. Off the supervisor, so dispatch never waits for storage; outcomes that
/// arrive during a write, a flush or the [`OUTCOME_COMMIT_GAP`] make the next batch
/// bigger.
async fn write_outcomes(
    ctx: Arc<NodeContext>,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    supervisor: ActorRef<DeliveryMsg>,
) {
    let mut batch = Vec::with_capacity(OUTCOME_BATCH);
    let mut last_commit = tokio::time::Instant::now();
    while outcomes.recv_many(&mut batch, OUTCOME_BATCH).await > 0 {
        // Outcomes that arrive until the commit gap has passed join this batch.
        tokio::time::sleep_until(last_commit + OUTCOME_COMMIT_GAP).await;
        while batch.len() < OUTCOME_BATCH {
            let Ok(outcome) = outcomes.try_recv() else {
                break;
            };
            batch.push(outcome);
        }
        last_commit = tokio::time::Instant::now();
        let taken = std::mem::take(&mut batch);
        let keys: Vec<Vec<u8>> = taken.iter().map(|o| o.due.record_key.clone()).collect();
        let finished = taken.iter().filter(|o| o.next_due_us.is_none()).count();
        let first = taken.iter().filter(|o| o.due.attempts == 0).count();
        let store = ctx.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let result = store.record_outcomes(&taken, now_us());
            (result, taken)
        })
        .await;
        let mut again = Vec::new();
        let finished = match written {
            Ok((Ok(()), _)) => {
                let delivery = &ctx.delivery;
                delivery
                    .unattempted
                    .fetch_sub(first as i64, std::sync::atomic::Ordering::Relaxed);
                delivery.drained.notify_waiters();
                if let Err(e) = ctx.store.flush().await {
                    tracing::error!(error = %e, "flushing delivery outcomes failed");
                }
                finished
            }
            // Nothing was written: retries stay due, first attempts are made again
            // (at-least-once, never lost).
            Ok((Err(e), taken)) => {
                tracing::error!(error = %e, "recording delivery outcomes failed");
                again = taken
                    .into_iter()
                    .filter(|o| o.due.due_key().is_none())
                    .map(|o| o.due)
                    .collect();
                0
            }
            // The outcomes are lost with the panic; their pending batches resume the first
            // attempts at the next start.
            Err(e) => {
                tracing::error!(error = %e, "recording delivery outcomes crashed");
                0
            }
        };
        // A stopped supervisor means the node is stopping: nothing left to free.
        let _ = supervisor.cast(DeliveryMsg::Flushed {
            keys,
            finished,
            again,
        });
    }
}

/// A worker: makes one attempt at a time, taking them from the queue until it is empty.
pub struct DeliveryWorker {
    ctx: Arc<NodeContext>,
    supervisor: ActorRef<DeliveryMsg>,
    work: Arc<WorkQueue>,
    slot: Slot,
}

impl DeliveryWorker {
    /// Makes queued attempts until the queue is empty (or the node stops).
    async fn drain(&self) {
        let metrics = &self.ctx.delivery.metrics;
        while let Some(due) = self.work.take() {
            // No await between taking the attempt and showing it: a worker that dies
            // always leaves it in its slot.
            *lock_slot(&self.slot) = Some((due.clone(), Instant::now()));
            metrics.in_flight.fetch_add(1, Ordering::Relaxed);
            let (outcome, counted) = self.run(due).await;
            // Taken already: the supervisor gave up on this attempt and recorded it.
            if lock_slot(&self.slot).take().is_none() {
                continue;
            }
            metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            metrics.count(counted, 1);
            self.work.record(outcome);
        }
    }

    /// Resolves the delivery's current target and makes the attempt.
    async fn run(&self, due: DueEntry) -> (Outcome, Counted) {
        let ctx = &self.ctx;
        let attempts_made = usize::from(due.attempts) + 1;
        // Every attempt uses the subscriber's current endpoint and secret; a deleted
        // subscription or account ends the delivery.
        let target = (
            self.subscription_exists(&due).await,
            ctx.store.delivery_target(&due.account_id),
            self.trigger(&due.triggered_id()),
        );
        let (account, triggered) = match target {
            (Ok(true), Ok(Some(account)), Ok(Some(triggered))) => (account, triggered),
            (Ok(_), Ok(_), Ok(_)) => return (cancelled(due), Counted::Cancelled),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let attempt = internal_attempt(e.to_string());
                return failure(ctx, due, attempt, attempts_made);
            }
        };
        let at_us = now_us();
        let request = Request {
            endpoint: &account.endpoint,
            secret_key: &account.secret_key,
            event: &triggered.event,
            body: triggered.body.clone(),
            delivery_id: due.delivery_id,
            timestamp: (at_us / 1_000_000) as i64,
        };
        // The client bounds the exchange by `attempt_timeout`, and the supervisor stops a
        // worker stuck past it.
        let attempt = attempt::send(&ctx.client, request, at_us).await;
        ctx.delivery.metrics.observe_attempt(attempt.duration_us);
        if attempt::succeeded(&attempt) {
            (
                Outcome {
                    due,
                    attempt: Some(attempt),
                    state: DeliveryState::Succeeded,
                    next_due_us: None,
                    failed_count: FailedCountChange::Reset,
                },
                Counted::Succeeded,
            )
        } else {
            failure(ctx, due, attempt, attempts_made)
        }
    }

    /// Whether the delivery's subscription still exists. A first attempt whose fan-out
    /// step read it here knows it does while no subscription was deleted since. It lives
    /// with its registration, possibly on another node: that node is asked only before a
    /// retry (a first attempt follows the fan-out within moments), and an unreachable node
    /// counts as a yes.
    async fn subscription_exists(&self, due: &DueEntry) -> Result<bool, crate::store::StoreError> {
        if let Scheduled::Batch {
            subscriptions_read_at: Some(read_at),
            ..
        } = due.scheduled
        {
            if read_at == self.ctx.store.subscription_deletions() {
                return Ok(true);
            }
        }
        let cluster = &self.ctx.cluster;
        let subscription = due.subscription_id();
        match cluster.remote_owner(cluster.map().shard_of_id(&subscription)) {
            None => self.ctx.store.subscription_exists(&subscription),
            Some(_) if due.attempts == 0 => Ok(true),
            Some(peer) => {
                let ask = SubscriptionExists { id: subscription };
                Ok(!matches!(cluster.call(peer, &ask).await, Ok(Ok(false))))
            }
        }
    }

    /// The trigger's body and event, from the shared cache or storage.
    fn trigger(&self, id: &Uuid) -> Result<Option<Arc<TriggerBody>>, crate::store::StoreError> {
        let cache = &self.ctx.delivery.bodies;
        if let Some(t) = cache.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(Some(t));
        }
        let Some(t) = self.ctx.store.trigger_for_delivery(id)? else {
            return Ok(None);
        };
        let t = Arc::new(TriggerBody {
            event: t.event,
            body: Bytes::from(t.body),
        });
        if let Ok(mut c) = cache.lock() {
            if c.len() >= BODY_CACHE {
                c.clear();
            }
            c.insert(*id, t.clone());
        }
        Ok(Some(t))
    }
}

/// An attempt that could not be made because of a local failure.
fn internal_attempt(error: String) -> Attempt {
    Attempt {
        at_us: now_us(),
        status: None,
        error: Some(format!("internal error: {error}")),
        duration_us: 0,
    }
}

impl Actor for DeliveryWorker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let WorkerMsg::Drain = message;
        // Boxed: ractor moves the message future for every message, and an attempt's
        // future is large.
        Box::pin(self.drain()).await;
        // The supervisor stopping means the node is stopping: nothing left to report.
        let _ = self.supervisor.cast(DeliveryMsg::Idle(myself.get_id()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
