//! The delivery supervisor: owns the workers, feeds the work queue and keeps the books.
//!
//! It queues first attempts as fan-out steps and handed-over batches create them, and
//! retries as the due queue, polled every tick, makes them due. It marks the record of
//! every attempt queued or running as busy until its outcome is on disk, so that no
//! delivery is attempted twice at once. Workers are linked children: a worker that panics
//! or stays stuck past its deadline is replaced, and its attempt recorded as failed. The
//! tick also runs the retention sweep and prunes idle connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::isolation::Isolation;
use super::messages::{DeliveryMsg, WorkerMsg};
use super::outcomes::{failure, first_attempts_recorded, write_outcomes};
use super::queue::WorkQueue;
use super::worker::{lock_slot, DeliveryWorker, Running, Slot};
use crate::actors::{now_us, NodeState};
use crate::delivery::attempt::Signal;
use crate::delivery::connections::IDLE_TIMEOUT;
use crate::store::{Attempt, DueEntry, StoreError};

/// How often the supervisor looks for due work, flushes outcomes and checks deadlines.
const TICK: Duration = Duration::from_millis(10);
/// Extra time a worker gets beyond the HTTP timeout before it counts as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(5);

/// A worker as the supervisor knows it.
struct Worker {
    actor: ActorRef<WorkerMsg>,
    slot: Slot,
}

/// The supervisor actor.
pub struct DeliverySupervisor {
    ctx: Arc<NodeState>,
}

/// The supervisor's bookkeeping.
pub struct SupervisorState {
    workers: HashMap<ActorId, Worker>,
    /// Workers waiting to be woken.
    idle: Vec<ActorId>,
    work: Arc<WorkQueue>,
    /// Record keys queued, being attempted or whose outcome awaits writing, each with
    /// its subscriber's group.
    busy: Arc<HashMap<Vec<u8>, u16>>,
    /// Keys freed by each flush while a resume is pending, by the flush's number (see
    /// `release.rs`).
    freed: Vec<(u64, Vec<Vec<u8>>)>,
    /// Where the next dispatch scan of the due queue starts.
    scan_from: Option<Vec<u8>>,
    writer_task: Option<JoinHandle<()>>,
    last_sweep: Instant,
    last_prune: Instant,
}

impl DeliverySupervisor {
    /// Starts the supervisor and its workers, and registers it in the context.
    pub async fn start(ctx: Arc<NodeState>) -> Result<ActorRef<DeliveryMsg>, ractor::SpawnErr> {
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
        let worker =
            DeliveryWorker::new(self.ctx.clone(), myself.clone(), work.clone(), slot.clone());
        let (actor, _) = Actor::spawn_linked(None, worker, (), myself.get_cell()).await?;
        Ok((actor.get_id(), Worker { actor, slot }))
    }

    /// Queues attempts (first attempts at the back of theirs), marks their records busy
    /// and wakes idle workers for them.
    fn enqueue(&self, state: &mut SupervisorState, retries: Vec<DueEntry>, first: Vec<DueEntry>) {
        // Counted per group only where a group's lead can be handed over.
        let replicated = self.ctx.records.is_replicated();
        let busy = Arc::make_mut(&mut state.busy);
        let mut groups = Vec::new();
        for entry in retries.iter().chain(&first) {
            let group = match replicated {
                true => self.ctx.group_of_account(&entry.account_id),
                false => 0,
            };
            if busy.insert(entry.record_key.clone(), group).is_none() && replicated {
                groups.push(group);
            }
        }
        self.ctx.delivery.releases.add_busy(&groups);
        state.work.extend(retries, first);
        self.wake_idle(state);
    }

    /// Frees the keys of attempts recorded (or whose record failed); keeps them for the
    /// pending resumes, which leave them out.
    fn flushed(&self, state: &mut SupervisorState, keys: &[Vec<u8>]) {
        self.free(state, keys);
        if let Some(n) = self.ctx.delivery.resume_epochs.flushed() {
            state.freed.push((n, keys.to_vec()));
        }
    }

    /// Frees the keys of attempts no longer queued or in flight.
    fn free(&self, state: &mut SupervisorState, keys: &[Vec<u8>]) {
        let busy = Arc::make_mut(&mut state.busy);
        let mut groups = Vec::new();
        for k in keys {
            if let Some(group) = busy.remove(k) {
                groups.push(group);
            }
        }
        if self.ctx.records.is_replicated() {
            self.ctx.delivery.releases.remove_busy(&groups);
        }
    }

    /// Queues the first attempts of `entries` not queued or in flight already; answers
    /// how many it left out.
    fn enqueue_first(&self, state: &mut SupervisorState, entries: Vec<DueEntry>) -> usize {
        let offered = entries.len();
        let fresh: Vec<DueEntry> = entries
            .into_iter()
            .filter(|e| !state.busy.contains_key(&e.record_key))
            .collect();
        let left_out = offered - fresh.len();
        self.enqueue(state, Vec::new(), fresh);
        left_out
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
    async fn dispatch(&self, state: &mut SupervisorState, from_start: bool) {
        let retries = self.due_retries(state, from_start).await;
        self.enqueue(state, retries, Vec::new());
    }

    /// Due entries of the queue not queued or in flight yet, up to the number of workers.
    /// The scan starts after the last entry queued (entries before it are in flight, and
    /// every refill would walk past them again), falling back to the start of
    /// the queue when that finds too few; `from_start` (every tick) rescans from the start,
    /// so nothing is passed over for long.
    async fn due_retries(&self, state: &mut SupervisorState, from_start: bool) -> Vec<DueEntry> {
        let wanted = self
            .ctx
            .delivery
            .max_in_flight
            .saturating_sub(state.work.retries());
        // No retry can be due while every pending delivery still waits for its first
        // attempt: a refill then skips the storage round trip (the tick's scan from the
        // start stays the safety net).
        let delivery = &self.ctx.delivery;
        let retries = delivery.metrics.due.load(Ordering::Relaxed)
            - delivery.unattempted.load(Ordering::Relaxed);
        if wanted == 0 || (!from_start && retries <= 0) {
            return Vec::new();
        }
        let from = if from_start {
            None
        } else {
            state.scan_from.take()
        };
        // Shared with the scan, not copied: the supervisor waits for it, so the set is not
        // changed meanwhile.
        let busy = state.busy.clone();
        let now = now_us();
        let ctx = self.ctx.clone();
        let scanned = self
            .ctx
            .store
            .run(move |store| {
                // Replicated, only the deliveries of the groups this node leads.
                let mine = |a: &Uuid| ctx.delivers_to(a) && !ctx.releasing_account(a);
                let busy = |k: &[u8]| busy.contains_key(k);
                match store.due_entries(now, wanted, from.as_deref(), busy, &mine) {
                    Ok(due) if due.len() < wanted && from.is_some() => {
                        store.due_entries(now, wanted, None, busy, &mine)
                    }
                    other => other,
                }
            })
            .await;
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
        if let Some(Running {
            due,
            started,
            permit,
        }) = attempt
        {
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
                response_body: None,
            };
            let attempts_made = usize::from(due.attempts) + 1;
            let account = due.account_id;
            let metrics = &self.ctx.delivery.metrics;
            state
                .work
                .isolation
                .record(&account, false, now_us(), metrics);
            state.work.finished(&account);
            let (outcome, counted) = failure(&self.ctx, due, attempt, attempts_made, Signal::None);
            self.ctx.delivery.metrics.count(counted, 1);
            state.work.record(outcome, permit);
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
        let cutoff = now_us().saturating_sub(self.ctx.delivery.retention.as_micros() as u64);
        // A full scan: off the supervisor, which must keep dispatching.
        let swept = self.ctx.store.spawn(move |store| {
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
        if let Err(e) = swept {
            tracing::error!(error = %e, "cannot start the retention sweep");
        }
    }
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
        let delivery = &self.ctx.delivery;
        let isolation = Isolation::new(
            delivery.max_in_flight_per_endpoint,
            delivery.breaker_failures,
            delivery.breaker_cooldown,
        );
        let work = Arc::new(WorkQueue::new(
            writer,
            delivery
                .max_in_flight
                .saturating_add(delivery.commit_window),
            isolation,
        ));
        tracing::info!(
            max_in_flight = delivery.max_in_flight,
            commit_window = delivery.commit_window,
            resend_bound = work.resend_bound(),
            "delivery engine starting: a crash re-sends at most resend_bound deliveries"
        );
        let mut workers = HashMap::with_capacity(self.ctx.delivery.max_in_flight);
        for _ in 0..self.ctx.delivery.max_in_flight {
            let (id, worker) = self.spawn_worker(&myself, &work).await?;
            workers.insert(id, worker);
        }
        // Deliveries whose first attempt was not recorded before the node stopped, queued
        // as the first message: the fan-out backlog. Replicated, those of the groups this
        // node will lead, once it leads them.
        let replicated = self.ctx.records.is_replicated();
        let (due, first_attempts) = self
            .ctx
            .store
            .run(move |s| {
                let mine = |_: &Uuid| !replicated;
                Ok::<_, StoreError>((s.due_count(&mine)?, s.resume_first_attempts(&mine)?))
            })
            .await?;
        let (due, unattempted) = (due + first_attempts.len(), first_attempts.len());
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
            busy: Arc::default(),
            freed: Vec::new(),
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
            DeliveryMsg::Wake => self.dispatch(state, false).await,
            // A node taking a group's lead resumes its pending batches while it may be
            // accepting one: the resume and the accept can both hand the same first
            // attempts over, in either order, and each is made once. The accept counted
            // its own; a resume counts what it adds.
            DeliveryMsg::Accepted(entries) => {
                let left_out = self.enqueue_first(state, entries) as i64;
                let delivery = &self.ctx.delivery;
                delivery.metrics.due.fetch_sub(left_out, Ordering::Relaxed);
                delivery.unattempted.fetch_sub(left_out, Ordering::Relaxed);
            }
            DeliveryMsg::Resumed { entries, epoch } => {
                let freed_since: HashSet<&[u8]> = state
                    .freed
                    .iter()
                    .filter(|(n, _)| *n > epoch)
                    .flat_map(|(_, keys)| keys.iter().map(Vec::as_slice))
                    .collect();
                let entries: Vec<DueEntry> = entries
                    .into_iter()
                    .filter(|e| !freed_since.contains(e.record_key.as_slice()))
                    .collect();
                let offered = entries.len();
                let n = (offered - self.enqueue_first(state, entries)) as i64;
                let delivery = &self.ctx.delivery;
                delivery.metrics.due.fetch_add(n, Ordering::Relaxed);
                delivery.unattempted.fetch_add(n, Ordering::Relaxed);
                delivery.resume_epochs.end_resume();
                if !delivery.resume_epochs.resuming() {
                    state.freed.clear();
                }
            }
            DeliveryMsg::Skipped(entry) => {
                self.free(state, std::slice::from_ref(&entry.record_key));
                self.ctx
                    .delivery
                    .metrics
                    .due
                    .fetch_sub(1, Ordering::Relaxed);
                if entry.is_first_attempt() {
                    first_attempts_recorded(&self.ctx, 1);
                }
            }
            DeliveryMsg::Tick => {
                let deadline = self.ctx.delivery.attempt_timeout + STUCK_GRACE;
                let stuck: Vec<ActorId> = state
                    .workers
                    .iter()
                    .filter(|(_, w)| {
                        lock_slot(&w.slot)
                            .as_ref()
                            .is_some_and(|r| r.started.elapsed() > deadline)
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
                self.dispatch(state, true).await;
                self.maybe_sweep(state);
                self.maybe_prune(state);
            }
            DeliveryMsg::Flushed {
                keys,
                finished,
                again,
            } => {
                self.flushed(state, &keys);
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
                    self.dispatch(state, false).await;
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
