//! The delivery engine: a per-node DeliverySupervisor and its pool of DeliveryWorkers.
//!
//! The supervisor takes first attempts from fan-out steps (in memory; persisted as pending
//! batches) and retries from the persisted due queue, hands each to an idle worker (so at
//! most `delivery.max_in_flight` attempts run at once), and writes the outcomes in batches:
//! the attempt log, the next due time and the subscriber's `failed_count` change in one
//! transaction. An attempt leaves its pending batch or the due queue only with its outcome,
//! so a crash at any point re-runs it after restart (at-least-once).
//!
//! Workers are linked children: a panicking worker is reported to the supervisor, which
//! records the attempt as failed and starts a replacement; a worker stuck past its
//! deadline is killed the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::{now_us, NodeContext};
use crate::cluster::protocol::{Answer, Command};
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
    /// Permits for fan-out steps (see `fanout::CONCURRENT_STEPS`).
    pub fanout_steps: Arc<tokio::sync::Semaphore>,
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
            let command = Command::AcceptDeliveries {
                triggered: trigger,
                items,
            };
            let ctx = ctx.clone();
            calls.spawn(async move {
                let handed = match ctx.cluster.peers().get(peer_index) {
                    Some(peer) => ctx.cluster.call(peer, &command).await.is_ok(),
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
    /// A worker finished an attempt.
    Done {
        /// The worker.
        worker: ActorId,
        /// What to record.
        outcome: Outcome,
        /// For metrics.
        counted: Counted,
    },
}

/// Requests a worker serves.
#[derive(RactorMessage)]
pub enum WorkerMsg {
    /// Make the attempt scheduled by this due entry.
    Run(DueEntry),
}

/// The supervisor actor.
pub struct DeliverySupervisor {
    ctx: Arc<NodeContext>,
}

/// The supervisor's bookkeeping.
pub struct SupervisorState {
    idle: Vec<ActorRef<WorkerMsg>>,
    running: HashMap<ActorId, (ActorRef<WorkerMsg>, DueEntry, Instant)>,
    /// First attempts not handed out yet, oldest first.
    first_attempts: VecDeque<DueEntry>,
    /// Record keys being attempted or whose outcome awaits writing.
    busy: HashSet<Vec<u8>>,
    /// Where the next dispatch scan of the due queue starts.
    scan_from: Option<Vec<u8>>,
    /// Outcomes go to the writer task; `None` once stopping.
    writer: Option<mpsc::UnboundedSender<Outcome>>,
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
    ) -> Result<ActorRef<WorkerMsg>, ractor::SpawnErr> {
        let worker = DeliveryWorker {
            ctx: self.ctx.clone(),
            supervisor: myself.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, worker, (), myself.get_cell()).await?;
        Ok(actor)
    }

    /// Hands an outcome to the writer; its record stays busy until the writer reports it
    /// durable.
    fn record(&self, state: &mut SupervisorState, outcome: Outcome) {
        let key = outcome.due.record_key.clone();
        let sent = state.writer.as_ref().map(|w| w.send(outcome).is_ok());
        if sent != Some(true) {
            // Not written (the node is stopping): the attempt stays in the due queue or its
            // pending batch, and runs again at the next start (at-least-once).
            state.busy.remove(&key);
        }
    }

    /// Hands work to idle workers: due retries first, then first attempts.
    fn dispatch(&self, state: &mut SupervisorState, from_start: bool) {
        for entry in self.due_retries(state, from_start) {
            self.hand_out(state, entry);
        }
        while !state.idle.is_empty() {
            let Some(entry) = state.first_attempts.pop_front() else {
                break;
            };
            self.hand_out(state, entry);
        }
    }

    /// Due entries of the queue for the idle workers. The scan starts after the last entry
    /// handed out (entries before it are in flight, and walking past them on every refill
    /// was a visible cost), falling back to the start of the queue when that finds too
    /// few; `from_start` (every tick) rescans from the start, so nothing is passed over for
    /// long.
    fn due_retries(&self, state: &mut SupervisorState, from_start: bool) -> Vec<DueEntry> {
        let wanted = state.idle.len();
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

    /// Gives `entry` to an idle worker (there is one).
    fn hand_out(&self, state: &mut SupervisorState, entry: DueEntry) {
        let Some(worker) = state.idle.pop() else {
            return;
        };
        state.busy.insert(entry.record_key.clone());
        if worker.cast(WorkerMsg::Run(entry.clone())).is_ok() {
            self.ctx
                .delivery
                .metrics
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state
                .running
                .insert(worker.get_id(), (worker, entry, Instant::now()));
        } else {
            state.busy.remove(&entry.record_key);
            if entry.due_key().is_none() {
                state.first_attempts.push_front(entry);
            }
        }
    }

    /// Records a failed attempt for work whose worker died or hung.
    async fn worker_lost(
        &self,
        myself: &ActorRef<DeliveryMsg>,
        state: &mut SupervisorState,
        worker: ActorId,
        why: &str,
    ) {
        if let Some((_, due, started)) = state.running.remove(&worker) {
            self.ctx
                .delivery
                .metrics
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let attempt = Attempt {
                at_us: now_us().saturating_sub(started.elapsed().as_micros() as u64),
                status: None,
                error: Some(why.to_string()),
                duration_us: started.elapsed().as_micros() as u64,
            };
            let attempts_made = usize::from(due.attempts) + 1;
            let (outcome, counted) = failure(&self.ctx, due, attempt, attempts_made);
            self.ctx.delivery.metrics.count(counted, 1);
            self.record(state, outcome);
        }
        match self.spawn_worker(myself).await {
            Ok(w) => state.idle.push(w),
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
        let mut idle = Vec::with_capacity(self.ctx.delivery.max_in_flight);
        for _ in 0..self.ctx.delivery.max_in_flight {
            idle.push(self.spawn_worker(&myself).await?);
        }
        let (due, unattempted) = self.ctx.store.due_counts()?;
        // Deliveries whose first attempt was not recorded before the node stopped.
        let first_attempts = VecDeque::from(self.ctx.store.resume_first_attempts()?);
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
        let (writer, outcomes) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_outcomes(self.ctx.clone(), outcomes, myself));
        Ok(SupervisorState {
            idle,
            running: HashMap::new(),
            first_attempts,
            busy: HashSet::new(),
            scan_from: None,
            writer: Some(writer),
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
            DeliveryMsg::Accepted(entries) => {
                state.first_attempts.extend(entries);
                self.dispatch(state, false);
            }
            DeliveryMsg::Tick => {
                let deadline = self.ctx.delivery.attempt_timeout + STUCK_GRACE;
                let stuck: Vec<ActorId> = state
                    .running
                    .iter()
                    .filter(|(_, (_, _, started))| started.elapsed() > deadline)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stuck {
                    if let Some((worker, _, _)) = state.running.get(&id) {
                        tracing::warn!("a delivery attempt is stuck; stopping its worker");
                        worker.unlink(myself.get_cell());
                        worker.kill();
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
                state.first_attempts.extend(again);
                self.ctx
                    .delivery
                    .metrics
                    .due
                    .fetch_sub(finished as i64, std::sync::atomic::Ordering::Relaxed);
            }
            DeliveryMsg::Done {
                worker,
                outcome,
                counted,
            } => {
                if let Some((w, _, _)) = state.running.remove(&worker) {
                    self.ctx
                        .delivery
                        .metrics
                        .in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    state.idle.push(w);
                    self.ctx.delivery.metrics.count(counted, 1);
                    self.record(state, outcome);
                }
                // Refill in bulk: each dispatch scans past the keys in flight.
                let refill = (self.ctx.delivery.max_in_flight / 8).max(1);
                if state.idle.len() >= refill {
                    self.dispatch(state, false);
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
                if state.running.contains_key(&cell.get_id()) =>
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
        // The node is stopping: let the writer write and flush what is left.
        state.writer = None;
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

/// A worker: makes one attempt at a time.
pub struct DeliveryWorker {
    ctx: Arc<NodeContext>,
    supervisor: ActorRef<DeliveryMsg>,
}

impl DeliveryWorker {
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
            (Ok(_), Ok(_), Ok(_)) => {
                return (
                    Outcome {
                        due,
                        attempt: None,
                        state: DeliveryState::Cancelled,
                        next_due_us: None,
                        failed_count: FailedCountChange::Keep,
                    },
                    Counted::Cancelled,
                )
            }
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
        // worker stuck past it. Boxed: the exchange is a large future, and the worker's
        // message future (which ractor moves for every message) would otherwise hold it.
        let attempt = Box::pin(attempt::send(&ctx.client, request, at_us)).await;
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
                let ask = Command::SubscriptionExists { id: subscription };
                Ok(!matches!(
                    cluster.call(peer, &ask).await,
                    Ok(Answer::Bool(false))
                ))
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
        let WorkerMsg::Run(due) = message;
        let (outcome, counted) = self.run(due).await;
        // The supervisor stopping means the node is stopping; the due entry stays queued.
        let _ = self.supervisor.cast(DeliveryMsg::Done {
            worker: myself.get_id(),
            outcome,
            counted,
        });
        Ok(())
    }
}
