//! Subscription operations: subscribe, unsubscribe, delete all.
//!
//! A subscription lives on its registration's shard, so the registration's actor orders
//! subscribes against the delete that would orphan them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::served_by;
use super::{id_shard, Op, Service};
use crate::actors::RegistrationMsg;
use crate::cluster::rpc;
use crate::domain::access;
use crate::domain::{msg, Caller, ServiceError, WriteResult};
use crate::store::Subscription;

pub(super) fn serve(service: &Service) {
    service.serve_owned::<Subscribe, _>();
    service.serve_owned::<DeleteSubscription, _>();
    service.serve::<DeleteLocalSubscriptions>();
}

/// Subscribes the caller to a registration (anyone's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscribe {
    /// The subscriber.
    pub caller: Caller,
    /// The registration (`None`: not a valid id).
    pub registration: Option<Uuid>,
}

rpc!(Subscribe => Result<Subscription, ServiceError>, "service/subscribe");

impl Op for Subscribe {
    async fn run(self, service: Service) -> Self::Answer {
        let missing = || ServiceError::NotFound(msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into());
        let registration = self.registration.ok_or_else(missing)?;
        // No actor for a record that does not exist (it would linger until idle); a live
        // actor's registration existed a moment ago, and its write checks again.
        if !service.ctx.registrations.is_live(&registration)
            && !service.registration_exists(registration).await?
        {
            return Err(missing());
        }
        service.ctx.subscribe(registration, self.caller.id).await
    }
}

served_by!(Subscribe, |op, shards| id_shard(
    shards,
    op.registration.as_ref()
));

/// Removes a subscription (its subscriber, or an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteSubscription {
    /// Who asks.
    pub caller: Caller,
    /// Which (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(DeleteSubscription => Result<WriteResult, ServiceError>, "service/delete_subscription");

impl Op for DeleteSubscription {
    async fn run(self, service: Service) -> Self::Answer {
        let found = match self.id {
            Some(id) => service.ctx.store.run(move |s| s.subscription(&id)).await?,
            None => None,
        };
        let Some(subscription) = found else {
            access::modify(&self.caller, None)?;
            return Ok(WriteResult::skipped());
        };
        let caller = self.caller;
        service
            .ctx
            .ask_registration(subscription.registration_id, |reply| {
                RegistrationMsg::Unsubscribe {
                    caller: caller.clone(),
                    subscription: subscription.id,
                    reply,
                }
            })
            .await
    }
}

served_by!(DeleteSubscription, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// Deletes the subscriptions of the shards the node serves (replicated: the groups it
/// leads); answers how many. Asked of every node by the admin's
/// bulk delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteLocalSubscriptions;

rpc!(DeleteLocalSubscriptions => Result<u64, ServiceError>, "service/delete_local_subscriptions");

impl Op for DeleteLocalSubscriptions {
    async fn run(self, service: Service) -> Self::Answer {
        if service.replication().is_none() {
            let deleted = service
                .ctx
                .store
                .run(|s| s.delete_all_subscriptions())
                .await?;
            service.ctx.store.flush().await?;
            return Ok(deleted);
        }
        service.delete_led_subscriptions().await
    }
}
