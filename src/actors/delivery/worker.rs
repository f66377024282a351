//! A delivery worker: makes one attempt at a time, taking them from the work queue until it
//! is empty, and hands each outcome to the outcome writer.
//!
//! A worker shows the attempt it is making in its [`Slot`], so that the supervisor can
//! record that attempt as failed when the worker dies or hangs. Before it takes an
//! attempt it waits for a place in the commit window (see `queue`), which the attempt
//! holds until its outcome is committed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedSemaphorePermit;

use super::isolation::Admit;
use super::messages::{DeliveryMsg, WorkerMsg};
use super::outcomes::{cancelled, deferred, failure, stopped};
use super::queue::WorkQueue;
use crate::actors::remote::SubscriptionExists;
use crate::actors::{now_us, NodeState};
use crate::delivery::attempt::{self, Request, Sent, Signal};
use crate::delivery::metrics::Counted;
use crate::store::{
    Attempt, DeliveryState, DeliveryTarget, DueEntry, FailedCountChange, Outcome, Scheduled,
    StoreError,
};
use uuid::Uuid;

/// An attempt being made.
pub struct Running {
    /// What is attempted.
    pub due: DueEntry,
    /// Since when.
    pub started: Instant,
    /// Its place in the commit window, handed to the writer with its outcome.
    pub permit: OwnedSemaphorePermit,
}

/// The attempt a worker is making, so the supervisor can record it as failed if the
/// worker dies or hangs. Whoever takes the attempt out records its outcome.
pub type Slot = Arc<Mutex<Option<Running>>>;

pub(super) fn lock_slot(slot: &Slot) -> std::sync::MutexGuard<'_, Option<Running>> {
    // Only ever holds a value moved in or out: a poisoned lock's content is still whole.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker: makes one attempt at a time, taking them from the queue until it is empty.
pub struct DeliveryWorker {
    ctx: Arc<NodeState>,
    supervisor: ActorRef<DeliveryMsg>,
    work: Arc<WorkQueue>,
    slot: Slot,
}

impl DeliveryWorker {
    /// A worker of `supervisor` taking attempts from `work` and showing each in `slot`.
    pub(super) fn new(
        ctx: Arc<NodeState>,
        supervisor: ActorRef<DeliveryMsg>,
        work: Arc<WorkQueue>,
        slot: Slot,
    ) -> Self {
        DeliveryWorker {
            ctx,
            supervisor,
            work,
            slot,
        }
    }

    /// Makes queued attempts until the queue is empty (or the node stops).
    async fn drain(&self) {
        let metrics = &self.ctx.delivery.metrics;
        // Room in the commit window first: a full window holds back new attempts, never
        // the outcomes of those made.
        while let Some(permit) = self.work.admit().await {
            let Some(due) = self.work.take() else {
                break;
            };
            // Its group's lead is being handed over: left to whoever leads it next (or
            // resumed here, should the lead stay).
            if self.ctx.releasing_account(&due.account_id) {
                self.work.finished(&due.account_id);
                drop(permit);
                let _ = self.supervisor.cast(DeliveryMsg::Skipped(due));
                continue;
            }
            // No await between taking the attempt and showing it: a worker that dies
            // always leaves it in its slot.
            *lock_slot(&self.slot) = Some(Running {
                due: due.clone(),
                started: Instant::now(),
                permit,
            });
            metrics.in_flight.fetch_add(1, Ordering::Relaxed);
            let account = due.account_id;
            let (outcome, counted) = self.run(due).await;
            // Taken already: the supervisor gave up on this attempt and recorded it.
            let Some(running) = lock_slot(&self.slot).take() else {
                continue;
            };
            self.work.finished(&account);
            metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            metrics.count(counted, 1);
            self.work.record(outcome, running.permit);
        }
    }

    /// Resolves the delivery's current target and makes the attempt.
    async fn run(&self, due: DueEntry) -> (Outcome, Counted) {
        let ctx = &self.ctx;
        let attempts_made = usize::from(due.attempts) + 1;
        let isolation = &self.work.isolation;
        if let Admit::Defer(until_us) = isolation.admit(&due.account_id, now_us()) {
            return deferred(due, until_us);
        }
        // Every attempt uses the subscriber's current endpoint and secret; a deleted
        // subscription or account ends the delivery.
        let target = (
            self.subscription_exists(&due).await,
            self.delivery_target(&due.account_id).await,
            ctx.delivery
                .trigger_body(&ctx.store, &due.triggered_id())
                .await,
        );
        let (account, triggered) = match target {
            (Ok(true), Ok(Some(account)), Ok(Some(triggered))) => (account, triggered),
            (Ok(_), Ok(_), Ok(_)) => return (cancelled(due), Counted::Cancelled),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let attempt = internal_attempt(e.to_string());
                return failure(ctx, due, attempt, attempts_made, Signal::None);
            }
        };
        let at_us = now_us();
        if let Some(since_us) = account.stopped_us {
            return stopped(due, since_us);
        }
        let request = Request {
            endpoint: &account.endpoint,
            secret_key: &account.secret_key,
            previous_secret_key: account.previous_secret_at(at_us),
            event: &triggered.event,
            body: triggered.body.clone(),
            delivery_id: due.delivery_id,
            timestamp: (at_us / 1_000_000) as i64,
        };
        // The client bounds the exchange by `attempt_timeout`, and the supervisor stops a
        // worker stuck past it.
        let Sent { attempt, signal } = attempt::send(&ctx.client, request, at_us).await;
        let metrics = &ctx.delivery.metrics;
        metrics.observe_attempt(attempt.duration_us);
        let succeeded = attempt::succeeded(&attempt);
        isolation.record(&due.account_id, succeeded, now_us(), metrics);
        if succeeded {
            (
                Outcome {
                    due,
                    attempt: Some(attempt),
                    state: DeliveryState::Succeeded,
                    next_due_us: None,
                    failed_count: FailedCountChange::Reset,
                    gone: false,
                },
                Counted::Succeeded,
            )
        } else {
            failure(ctx, due, attempt, attempts_made, signal)
        }
    }

    /// The subscriber's endpoint and secret: cached, or read on a storage thread.
    async fn delivery_target(
        &self,
        account: &Uuid,
    ) -> Result<Option<Arc<DeliveryTarget>>, StoreError> {
        if let Some(target) = self.ctx.store.cached_delivery_target(account) {
            return Ok(Some(target));
        }
        let account = *account;
        self.ctx
            .store
            .run(move |s| s.delivery_target(&account))
            .await
    }

    /// Whether the delivery's subscription still exists. A first attempt whose fan-out
    /// step read it here knows it does while no subscription was deleted since. It lives
    /// with its registration, possibly on another node: that node is asked only before a
    /// retry (a first attempt follows the fan-out within moments), and an unreachable node
    /// counts as a yes.
    async fn subscription_exists(&self, due: &DueEntry) -> Result<bool, StoreError> {
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
            None => {
                self.ctx
                    .store
                    .run(move |s| s.subscription_exists(&subscription))
                    .await
            }
            Some(_) if due.attempts == 0 => Ok(true),
            Some(peer) => {
                let ask = SubscriptionExists { id: subscription };
                Ok(!matches!(cluster.call(&peer, &ask).await, Ok(Ok(false))))
            }
        }
    }
}

/// An attempt that could not be made because of a local failure.
fn internal_attempt(error: String) -> Attempt {
    Attempt {
        at_us: now_us(),
        status: None,
        error: Some(format!("internal error: {error}")),
        duration_us: 0,
        response_body: None,
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
