//! The delivery engine's part of the node context: its settings, the handle of the
//! running supervisor, the counters that pace fan-outs, and the cache of trigger bodies
//! that attempts share.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use ractor::ActorRef;
use uuid::Uuid;

use super::messages::DeliveryMsg;
use super::release::{Releases, ResumeEpochs};
use crate::actors::fanout::StepQueue;
use crate::actors::RunningFanouts;
use crate::delivery::metrics::DeliveryMetrics;
use crate::delivery::retry::RetryPolicy;
use crate::store::{DueEntry, Store, StoreError, Triggered};

/// Trigger bodies kept in memory for attempts.
const BODY_CACHE: usize = 1024;

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
    /// Attempts running at once to one endpoint at most.
    pub max_in_flight_per_endpoint: usize,
    /// Failed attempts in a row that open an endpoint's breaker (0: never).
    pub breaker_failures: u32,
    /// How long an open breaker defers its endpoint's deliveries.
    pub breaker_cooldown: Duration,
    /// Outcomes waiting for their commit at most; with `max_in_flight`, the bound on the
    /// deliveries a crash re-sends (see the work queue).
    pub commit_window: usize,
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
    pub fanout_steps: StepQueue,
    /// Replicated fan-outs running here.
    pub replicated_fanouts: RunningFanouts,
    /// Held by a replicated accept from reading what exists to its commit.
    pub accepting: AcceptLocks,
    /// Groups whose lead this node is handing over, and the attempts under way per group.
    pub releases: Releases,
    /// Numbers the outcome flushes, for resumes read while they happen.
    pub resume_epochs: ResumeEpochs,
}

/// Locks keeping two accepts of the same handed-over batch apart, striped by trigger:
/// accepts of other triggers run at once, so their proposals share the groups' commits.
pub struct AcceptLocks([tokio::sync::Mutex<()>; ACCEPT_STRIPES]);

/// Accept lock stripes: about as many as accepts in flight on a busy node.
const ACCEPT_STRIPES: usize = 64;

impl Default for AcceptLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl AcceptLocks {
    /// Waits for the lock of `triggered`'s batches.
    pub async fn lock(&self, triggered: &Uuid) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = triggered.as_u128() as usize % ACCEPT_STRIPES;
        self.0[stripe].lock().await
    }
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
    pub(in crate::actors) fn dispatch_first_attempts(&self, entries: Vec<DueEntry>) {
        if let Some(s) = self.supervisor.get() {
            let _ = s.cast(DeliveryMsg::Accepted(entries));
        }
    }

    /// The trigger's body and event, from the shared cache or storage.
    pub(super) async fn trigger_body(
        &self,
        store: &Store,
        id: &Uuid,
    ) -> Result<Option<Arc<TriggerBody>>, StoreError> {
        let cache = &self.bodies;
        if let Some(t) = cache.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(Some(t));
        }
        let read = *id;
        let Some(t) = store.run(move |s| s.trigger_for_delivery(&read)).await? else {
            return Ok(None);
        };
        Ok(Some(self.remember_body(t)))
    }

    /// Caches the body of trigger `t`: done as a trigger is recorded, so that its first
    /// attempts, made at once and together, need no storage round trip each.
    pub(in crate::actors) fn remember_body(&self, t: Triggered) -> Arc<TriggerBody> {
        let id = t.id;
        let body = Arc::new(TriggerBody {
            event: t.event,
            body: Bytes::from(t.body),
        });
        if let Ok(mut c) = self.bodies.lock() {
            if c.len() >= BODY_CACHE {
                c.clear();
            }
            c.insert(id, body.clone());
        }
        body
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
