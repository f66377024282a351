//! What the actors of one node ask of another's: the delivery engine's handoffs and
//! subscription checks, and the subscription half of an account's cascade.
//!
//! Each operation is declared once here with its answer, and [`serve`] registers the
//! handlers that run on the receiving node.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::BTreeMap;

use super::NodeState;
use crate::cluster::{rpc, ShardId};
use crate::domain::ServiceError;
use crate::store::{NewDelivery, RecordWrite, Subscription, Triggered};

/// Subscriptions removed per write by a delete that names them.
const DELETE_CHUNK: usize = 512;

/// Persist the deliveries of a fan-out batch whose subscribers the receiving node owns;
/// answers how many were created (a resent batch creates none twice).
#[derive(Debug, Serialize, Deserialize)]
pub struct AcceptDeliveries {
    /// The trigger (body and event included).
    pub triggered: Triggered,
    /// The subscriptions to serve.
    pub items: Vec<NewDelivery>,
}

rpc!(AcceptDeliveries => Result<u64, ServiceError>, "actors/accept_deliveries");

/// Does this subscription still exist? (Asked before retrying a delivery whose
/// subscription lives on another node.)
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriptionExists {
    /// The subscription.
    pub id: Uuid,
}

rpc!(SubscriptionExists => Result<bool, ServiceError>, "actors/subscription_exists");

/// Drop the receiving node's subscriptions held by a deleted account; answers how many.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteSubscriptionsOf {
    /// The deleted subscriber.
    pub account: Uuid,
}

rpc!(DeleteSubscriptionsOf => Result<u64, ServiceError>, "actors/delete_subscriptions_of");

impl NodeState {
    /// Drops the subscriptions held by `account` in the shards this node serves; answers
    /// how many. Replicated, only the groups this node leads: each group's rows are
    /// removed by a write of its own log, naming them, so that every voter removes the
    /// same ones.
    pub async fn delete_subscriptions_of(&self, account: Uuid) -> Result<u64, ServiceError> {
        if !self.records.is_replicated() {
            let deleted = self
                .store
                .run(move |s| s.delete_subscriptions_of_subscriber(&account))
                .await?;
            self.store.flush().await?;
            return Ok(deleted);
        }
        let held = self
            .store
            .run(move |s| s.subscriptions_of_subscriber(&account))
            .await?;
        self.delete_served_subscriptions(held).await
    }

    /// Deletes those of `subs` whose shards this node serves, by writes naming them (at
    /// most [`DELETE_CHUNK`] each, per shard); answers how many.
    pub async fn delete_served_subscriptions(
        &self,
        subs: Vec<Subscription>,
    ) -> Result<u64, ServiceError> {
        let cluster = &self.cluster;
        let mut by_shard: BTreeMap<ShardId, Vec<Subscription>> = BTreeMap::new();
        for sub in subs.into_iter().filter(|s| cluster.serves_id(&s.id)) {
            let shard = cluster.map().shard_of_id(&sub.id);
            by_shard.entry(shard).or_default().push(sub);
        }
        let mut deleted = 0;
        for (shard, subs) in by_shard {
            for chunk in subs.chunks(DELETE_CHUNK) {
                let write = RecordWrite::DeleteSubscriptions(chunk.to_vec());
                self.records.write_committed(shard, write).await?;
                deleted += chunk.len() as u64;
            }
        }
        Ok(deleted)
    }
}

/// Serves the operations above to the peers.
pub fn serve(ctx: &Arc<NodeState>) {
    let cluster = &ctx.cluster;
    let c = ctx.clone();
    cluster.serve(move |req: AcceptDeliveries| {
        let ctx = c.clone();
        async move { super::accept_batch(&ctx, req.triggered, req.items).await }
    });
    let c = ctx.clone();
    cluster.serve(move |req: SubscriptionExists| {
        let ctx = c.clone();
        async move {
            Ok(ctx
                .store
                .run(move |s| s.subscription(&req.id))
                .await?
                .is_some())
        }
    });
    let c = ctx.clone();
    cluster.serve(move |req: DeleteSubscriptionsOf| {
        let ctx = c.clone();
        async move { ctx.delete_subscriptions_of(req.account).await }
    });
}
