//! Trigger operations: trigger a registration, a trigger's status, its deliveries, and
//! redelivering its failures.
//!
//! A triggered record lives on its registration's shard; its deliveries live with their
//! subscribers, so counts, listings and redelivery ask every node.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::listing::Table;
use super::recovery::Requeued;
use super::served_by;
use super::{id_shard, Op, Service};
use crate::actors::RegistrationMsg;
use crate::cluster::rpc;
use crate::domain::{access, msg, Caller, ServiceError};
use crate::store::{Delivery, DeliveryCounts as Counts, Page, PageRequest, StoreError, Triggered};

pub(super) fn serve(service: &Service) {
    service.serve_owned::<Trigger, _>();
    service.serve_owned::<TriggerStatus, _>();
    service.serve_owned::<ListDeliveries, _>();
    service.serve_owned::<Redeliver, _>();
    service.serve::<DeliveryCounts>();
    service.serve::<Requeue>();
}

/// Triggers a registration (its owner only): records it, answers, then fans out.
///
/// `event_data` (JSON text) replaces the registered payload for this trigger; a repeated
/// `idempotency_key` within 24 h returns the first trigger, flagged as a replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    /// Who asks.
    pub caller: Caller,
    /// The registration (`None`: not a valid id).
    pub registration: Option<Uuid>,
    /// Payload override, JSON text.
    pub event_data: Option<String>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

rpc!(Trigger => Result<(Triggered, bool), ServiceError>, "service/trigger");

impl Op for Trigger {
    async fn run(self, service: Service) -> Self::Answer {
        let missing = || ServiceError::NotFound(msg::NO_SUCH_REGISTRATION_TRIGGER.into());
        let registration = self.registration.ok_or_else(missing)?;
        if !service.registration_exists(registration).await? {
            return Err(missing());
        }
        let Self {
            caller,
            event_data,
            idempotency_key,
            ..
        } = self;
        service
            .ctx
            .ask_registration(registration, |reply| RegistrationMsg::Trigger {
                caller: caller.clone(),
                event_data: event_data.clone(),
                idempotency_key: idempotency_key.clone(),
                reply,
            })
            .await
    }
}

served_by!(Trigger, deliveries, |op, shards| id_shard(
    shards,
    op.registration.as_ref()
));

/// A trigger the caller may inspect (the registration's owner, or an admin), and whether
/// its fan-out finished; served by the trigger's owner (replicated, every voter of the
/// registration's group holds it).
async fn visible_trigger(
    service: &Service,
    caller: &Caller,
    id: Option<Uuid>,
) -> Result<(Triggered, bool), ServiceError> {
    let found = match id {
        Some(id) => {
            service
                .ctx
                .store
                .run(move |s| match s.triggered(&id)? {
                    Some(t) => Ok(Some((t, s.fanout(&id)?.is_none()))),
                    None => Ok::<_, StoreError>(None),
                })
                .await?
        }
        None => None,
    };
    let (found, done) = match found {
        Some((t, done)) => (Some(t), done),
        None => (None, false),
    };
    access::read_trigger(caller, found.as_ref().map(|t| t.account_id))?;
    let t = found.ok_or(ServiceError::NotFound(msg::NO_SUCH_TRIGGER.into()))?;
    Ok((t, done))
}

/// A trigger with its delivery counts (summed over the nodes that deliver it: replicated,
/// the leaders of the subscribers' groups) and
/// whether its fan-out finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerStatus {
    /// Who asks.
    pub caller: Caller,
    /// Which (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(TriggerStatus => Result<(Triggered, Counts, bool), ServiceError>, "service/trigger_status");

impl Op for TriggerStatus {
    async fn run(self, service: Service) -> Self::Answer {
        let (t, fanout_done) = visible_trigger(&service, &self.caller, self.id).await?;
        let mut counts = Counts::default();
        for c in service.ask_leaders(DeliveryCounts(t.id)).await? {
            counts.pending += c.pending;
            counts.succeeded += c.succeeded;
            counts.failed += c.failed;
            counts.skipped += c.skipped;
            counts.cancelled += c.cancelled;
        }
        Ok((t, counts, fanout_done))
    }
}

served_by!(TriggerStatus, read, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// A page of a trigger's deliveries with their attempt logs, from every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListDeliveries {
    /// Who asks.
    pub caller: Caller,
    /// The trigger (`None`: not a valid id).
    pub id: Option<Uuid>,
    /// Which page.
    pub page: PageRequest,
}

rpc!(ListDeliveries => Result<Page<Delivery>, ServiceError>, "service/list_deliveries");

impl Op for ListDeliveries {
    async fn run(self, service: Service) -> Self::Answer {
        let (t, _) = visible_trigger(&service, &self.caller, self.id).await?;
        service.list(Table::Deliveries(t.id), self.page).await
    }
}

served_by!(ListDeliveries, read, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// Re-queues a trigger's failed deliveries on every node (replicated: by each group's
/// leader); answers how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redeliver {
    /// Who asks.
    pub caller: Caller,
    /// The trigger (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(Redeliver => Result<u64, ServiceError>, "service/redeliver");

impl Op for Redeliver {
    async fn run(self, service: Service) -> Self::Answer {
        let (t, _) = visible_trigger(&service, &self.caller, self.id).await?;
        Ok(service.ask_leaders(Requeue(t.id)).await?.into_iter().sum())
    }
}

served_by!(Redeliver, deliveries, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// Counts of the node's deliveries of a trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryCounts(pub Uuid);

rpc!(DeliveryCounts => Result<Counts, ServiceError>, "service/delivery_counts");

impl Op for DeliveryCounts {
    async fn run(self, service: Service) -> Self::Answer {
        let (id, ctx) = (self.0, service.ctx.clone());
        Ok(service
            .ctx
            .store
            .run(move |s| s.delivery_counts(&id, &|a: &Uuid| ctx.delivers_to(a)))
            .await?)
    }
}

/// Re-queues the node's failed deliveries of a trigger; answers how many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requeue(pub Uuid);

rpc!(Requeue => Result<u64, ServiceError>, "service/requeue");

impl Op for Requeue {
    async fn run(self, service: Service) -> Self::Answer {
        service.requeue(Requeued::OfTrigger(self.0)).await
    }
}
