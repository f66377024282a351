//! Bulk recovery: after an outage, the caller queues again the failed deliveries that
//! concern it — those to its own endpoint and, as a registration owner, those of its
//! registrations — that failed within a time window.
//!
//! The caller's registrations live on its shard, so the owner of that shard authenticates
//! and lists them in the same request; the deliveries live with their subscribers, on any
//! node, so every node requeues its own.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::served_by;
use super::{username_shard, Op, Service};
use crate::actors::{now_us, write_rows_replicated};
use crate::cluster::rpc;
use crate::domain::{Credentials, ServiceError};

pub(super) fn serve(service: &Service) {
    service.serve_owned::<RecoverDeliveries, _>();
    service.serve::<RequeueFailedOf>();
}

/// When the deliveries to recover failed: Unix µs, both ends included.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Window {
    /// From.
    pub since_us: u64,
    /// Until.
    pub until_us: u64,
}

/// Requeues the caller's failed deliveries of a window; answers how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverDeliveries {
    /// Who asks.
    pub credentials: Credentials,
    /// The window, or the body's error, reported once the caller is authenticated.
    pub window: Result<Window, ServiceError>,
}

rpc!(RecoverDeliveries => Result<u64, ServiceError>, "service/recover_deliveries");

impl Op for RecoverDeliveries {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        let window = self.window?;
        let owner = caller.id;
        let registrations = service
            .ctx
            .store
            .run(move |s| s.registration_ids_of(&owner))
            .await?;
        let requeue = RequeueFailedOf {
            subscriber: caller.id,
            registrations,
            window,
        };
        Ok(service.ask_leaders(requeue).await?.into_iter().sum())
    }
}

served_by!(RecoverDeliveries, deliveries, |op, shards| Some(
    username_shard(shards, &op.credentials.username)
));

/// Requeues the node's failed deliveries of a window that went to `subscriber` or belong
/// to one of `registrations`; answers how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequeueFailedOf {
    /// The caller, as a subscriber.
    pub subscriber: Uuid,
    /// The caller's registrations.
    pub registrations: Vec<Uuid>,
    /// When they failed.
    pub window: Window,
}

rpc!(RequeueFailedOf => Result<u64, ServiceError>, "service/requeue_failed_of");

impl Op for RequeueFailedOf {
    async fn run(self, service: Service) -> Self::Answer {
        let registrations: HashSet<Uuid> = self.registrations.into_iter().collect();
        let window = (self.window.since_us, self.window.until_us);
        service
            .requeue(Requeued::Of {
                subscriber: self.subscriber,
                registrations,
                window,
            })
            .await
    }
}

/// Which failed deliveries a requeue puts back in the queue.
pub(super) enum Requeued {
    /// Those of a trigger.
    OfTrigger(Uuid),
    /// Those of a window that went to `subscriber` or belong to one of `registrations`.
    Of {
        subscriber: Uuid,
        registrations: HashSet<Uuid>,
        window: (u64, u64),
    },
}

impl Service {
    /// Puts the node's failed deliveries `which` names back in the queue, due now; answers
    /// how many. Replicated, those of the groups this node leads, through their logs.
    pub(super) async fn requeue(&self, which: Requeued) -> Result<u64, ServiceError> {
        let ctx = self.ctx.clone();
        if !ctx.records.is_replicated() {
            let n = ctx
                .store
                .run(move |s| match which {
                    Requeued::OfTrigger(id) => s.requeue_failed(&id, now_us()),
                    Requeued::Of {
                        subscriber,
                        registrations,
                        window,
                    } => s.requeue_failed_of(&subscriber, &registrations, window, now_us()),
                })
                .await?;
            return self.requeued(n).await;
        }
        let reading = ctx.clone();
        let (rows, n) = ctx
            .store
            .run(move |s| {
                let mine = |a: &Uuid| reading.delivers_to(a);
                match which {
                    Requeued::OfTrigger(id) => s.prepare_requeue_failed(&id, now_us(), &mine),
                    Requeued::Of {
                        subscriber,
                        registrations,
                        window,
                    } => s.prepare_requeue_failed_of(
                        &subscriber,
                        &registrations,
                        window,
                        now_us(),
                        &mine,
                    ),
                }
            })
            .await?;
        write_rows_replicated(&ctx, rows).await?;
        self.requeued(n).await
    }

    /// Finishes queueing `n` failed deliveries again (redeliver and bulk recovery alike):
    /// flushed first, so an answer never promises a retry a crash could lose; then counted
    /// as due and the delivery engine woken, so they go out now rather than at its next tick.
    pub(super) async fn requeued(&self, n: u64) -> Result<u64, ServiceError> {
        self.ctx.store.flush().await?;
        self.ctx
            .delivery
            .metrics
            .due
            .fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
        self.ctx.delivery.wake();
        Ok(n)
    }
}
