//! The actors that own every mutation: one [`AccountActor`] per active account, one
//! [`RegistrationActor`] per active registration.
//!
//! Serialising the changes of one record through one actor makes read-modify-write
//! sequences (key resets, `failed_count`, cascades racing with subscribes) atomic without
//! locks. Actors are spawned on first use and stop when idle.

mod account;
mod delivery;
mod directory;
mod fanout;
mod records;
mod registration;
pub mod remote;
mod replicated_fanout;
mod reply;
mod subscribes;
mod trigger;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use account::{AccountActor, AccountMsg};
pub use delivery::{
    accept_batch, run_handoff, run_peer_handoffs, write_rows_replicated, DeliveryContext,
    DeliveryMsg, DeliverySupervisor,
};
pub use directory::Directory;
pub use records::{Fenced, Records, Replicated, ReplicatedRecords};
pub use registration::{RegistrationActor, RegistrationMsg};
pub use replicated_fanout::RunningFanouts;
pub use reply::{noting_log_commits, Reply, Written};
pub use subscribes::SubscribeQueue;

use crate::auth_throttle::AuthThrottle;
use crate::cluster::Cluster;
use crate::crypto::AuthCache;
use crate::delivery::EndpointClient;
use crate::domain::ServiceError;
use crate::store::Store;

/// Where an actor sends the outcome of a request (given to the caller once committed).
pub type ReplyPort<T> = ractor::RpcReplyPort<Reply<T>>;

/// Settings the actors need from the configuration.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// PBKDF2 iterations for new API key hashes.
    pub pbkdf2_iterations: u32,
    /// Key resets allowed per account per rolling hour.
    pub key_resets_per_hour: u32,
    /// Idle time after which an actor stops.
    pub idle_stop: Duration,
    /// How long a replaced secret key keeps signing deliveries beside the new one.
    pub secret_rotation_grace: Duration,
}

/// The node's shared state: its storage, outbound client, view of the cluster, live actors
/// and delivery engine. The actors and the service's operations reach everything through it.
pub struct NodeState {
    /// The node's database.
    pub store: Store,
    /// Where record writes go (this node's storage, or the shard groups' logs).
    pub records: Records,
    /// Outbound calls to endpoints.
    pub client: EndpointClient,
    /// Shards, their owners and the peers.
    pub cluster: Arc<Cluster>,
    /// Recent successful API key verifications.
    pub auth_cache: AuthCache,
    /// Failed key checks per username and client address.
    pub auth_throttle: AuthThrottle,
    /// Tunables.
    pub settings: ActorSettings,
    /// Live account actors.
    pub accounts: Directory<AccountMsg>,
    /// Live registration actors.
    pub registrations: Directory<RegistrationMsg>,
    /// Subscribes waiting for their registration's actor.
    pub subscribes: SubscribeQueue,
    /// The delivery engine.
    pub delivery: DeliveryContext,
}

impl NodeState {
    /// Asks account `id`'s actor, spawning it if needed; answers once its writes are
    /// committed.
    pub async fn ask_account<T: Send + 'static>(
        self: &Arc<Self>,
        id: Uuid,
        build: impl Fn(ReplyPort<T>) -> AccountMsg,
    ) -> Result<T, ServiceError> {
        let ctx = self.clone();
        self.accounts
            .ask(id, |id| AccountActor::spawn_for(ctx.clone(), id), build)
            .await?
            .committed()
            .await
    }

    /// Asks registration `id`'s actor, spawning it if needed; answers once its writes are
    /// committed.
    pub async fn ask_registration<T: Send + 'static>(
        self: &Arc<Self>,
        id: Uuid,
        build: impl Fn(ReplyPort<T>) -> RegistrationMsg,
    ) -> Result<T, ServiceError> {
        let ctx = self.clone();
        self.registrations
            .ask(
                id,
                |id| RegistrationActor::spawn_for(ctx.clone(), id),
                build,
            )
            .await?
            .committed()
            .await
    }

    /// Hashes an API key off the async threads (PBKDF2 is deliberately slow).
    pub async fn hash_key(&self, key: String) -> Result<String, ServiceError> {
        let iterations = self.settings.pbkdf2_iterations;
        tokio::task::spawn_blocking(move || crate::crypto::hash_key(&key, iterations))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(ServiceError::from)
    }

    /// Finishes the cascades a crash interrupted (tombstoned accounts and registrations)
    /// of the shards this node serves. Replicated, it runs whenever the node takes the lead
    /// of a group: the leader that began a cascade may be gone.
    pub async fn resume_cascades(self: &Arc<Self>) -> Result<(), ServiceError> {
        let cluster = &self.cluster;
        let accounts = self.store.run(|s| s.accounts_being_deleted()).await?;
        for account in accounts.into_iter().filter(|a| cluster.serves_id(&a.id)) {
            tracing::info!(account = %account.id, "finishing an interrupted account delete");
            account::cascade(self, &account).await?;
        }
        let registrations = self.store.run(|s| s.registrations_being_deleted()).await?;
        let mut written = Written::default();
        for registration in registrations
            .into_iter()
            .filter(|r| cluster.serves_id(&r.id))
        {
            tracing::info!(registration = %registration.id, "finishing an interrupted registration delete");
            let shard = cluster.map().shard_of_id(&registration.id);
            let write = crate::store::RecordWrite::FinishRegistrationDelete(registration);
            self.records.write_one(shard, write, &mut written).await?;
        }
        if let Some(commit) = written.commit() {
            commit.wait().await?;
        }
        Ok(())
    }

    /// Restarts the fan-outs a stop or crash interrupted.
    pub async fn resume_fanouts(self: &Arc<Self>) -> Result<(), ServiceError> {
        for (triggered, cursor) in self.store.run(|s| s.fanouts()).await? {
            tracing::info!(%triggered, "resuming an interrupted fan-out");
            tokio::spawn(fanout::run_fanout(
                self.clone(),
                cursor.registration_id,
                triggered,
                false,
            ));
        }
        Ok(())
    }
}

/// The current Unix time in µs.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
