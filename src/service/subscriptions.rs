//! Subscription operations: subscribe, unsubscribe, delete all.
//!
//! A subscription lives on its registration's shard, so the registration's actor orders
//! subscribes against the delete that would orphan them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{id_shard, Op, Service, ShardOp};
use crate::actors::RegistrationMsg;
use crate::cluster::{Rpc, ShardId, ShardMap};
use crate::domain::access;
use crate::domain::{msg, Caller, ServiceError, WriteResult};
use crate::store::Subscription;

pub(super) fn serve(service: &Service) {
    service.serve::<Subscribe>();
    service.serve::<DeleteSubscription>();
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

impl Rpc for Subscribe {
    type Answer = Result<Subscription, ServiceError>;
    const NAME: &'static str = "service/subscribe";
}

impl Op for Subscribe {
    async fn run(self, service: Service) -> Self::Answer {
        let missing = || ServiceError::NotFound(msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into());
        let registration = self.registration.ok_or_else(missing)?;
        if service.ctx.store.registration(&registration)?.is_none() {
            return Err(missing());
        }
        let subscriber = self.caller.id;
        service
            .ctx
            .ask_registration(registration, |reply| RegistrationMsg::Subscribe {
                subscriber,
                reply,
            })
            .await?
    }
}

impl ShardOp for Subscribe {
    fn shard(&self, shards: &ShardMap) -> Option<ShardId> {
        id_shard(shards, self.registration.as_ref())
    }
}

/// Removes a subscription (its subscriber, or an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteSubscription {
    /// Who asks.
    pub caller: Caller,
    /// Which (`None`: not a valid id).
    pub id: Option<Uuid>,
}

impl Rpc for DeleteSubscription {
    type Answer = Result<WriteResult, ServiceError>;
    const NAME: &'static str = "service/delete_subscription";
}

impl Op for DeleteSubscription {
    async fn run(self, service: Service) -> Self::Answer {
        let found = match self.id {
            Some(id) => service.ctx.store.subscription(&id)?,
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
            .await?
    }
}

impl ShardOp for DeleteSubscription {
    fn shard(&self, shards: &ShardMap) -> Option<ShardId> {
        id_shard(shards, self.id.as_ref())
    }
}

/// Deletes the node's subscriptions; answers how many. Asked of every node by the admin's
/// bulk delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteLocalSubscriptions;

impl Rpc for DeleteLocalSubscriptions {
    type Answer = Result<u64, ServiceError>;
    const NAME: &'static str = "service/delete_local_subscriptions";
}

impl Op for DeleteLocalSubscriptions {
    async fn run(self, service: Service) -> Self::Answer {
        let deleted = service.ctx.store.delete_all_subscriptions()?;
        service.ctx.store.flush().await?;
        Ok(deleted)
    }
}
