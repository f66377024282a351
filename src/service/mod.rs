//! The node's operations, wherever their records live.
//!
//! Each operation is one type ([`Op`]) declared in the file of its resource: its fields,
//! its answer, the shard whose owner serves it ([`ShardOp`]) and what the owner does. The
//! API builds the operation and calls [`Service::ask`]; `ask` serves it here when this node
//! owns the shard and otherwise sends it, in one request, to the owner, which serves it
//! the same way. Operations that concern every node ([`Service::ask_everywhere`]) run here and
//! on each peer. Handlers never see sled, actors or the wire.

mod accounts;
mod group_writes;
mod listing;
mod members;
mod recovery;
mod registrations;
mod replicated;
mod subscriptions;
mod triggers;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use uuid::Uuid;

/// The replicated member list, as the API renders it.
pub use crate::replication::MemberList;
pub use accounts::{
    Authenticate, CreateAccount, DeleteAccount, DeleteLocalAccounts, GetAccount, ResetKey,
    ResetSecretKey, UpdateEndpoint,
};
pub use listing::{Listed, Table};
pub use members::{Admitted, MemberView};
pub use recovery::{RecoverDeliveries, RequeueFailedOf, Window};
pub use registrations::{
    CreateRegistration, DeleteLocalRegistrations, DeleteRegistration, ListOwnRegistrations,
    NewRegistration, PatchRegistration,
};
pub use subscriptions::{DeleteLocalSubscriptions, DeleteSubscription, Subscribe};
pub use triggers::{DeliveryCounts, ListDeliveries, Redeliver, Requeue, Trigger, TriggerStatus};

use crate::actors::NodeState;
use crate::cluster::{Rpc, ShardId, ShardMap};
use crate::crypto;
use crate::domain::{msg, Caller, Credentials, NewAccount, ServiceError, ADMIN_USERNAME};
use crate::replication::Replication;
use crate::store::{RecordWrite, StoreError, WriteOutcome};

/// How long readiness waits for a storage read: storage threads stuck on a broken disk
/// make the node not ready, not its probe hang.
const READY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// An operation a node serves, for itself or for a peer.
pub trait Op: Rpc {
    /// Serves the operation on this node.
    fn run(self, service: Service) -> impl Future<Output = Self::Answer> + Send;
}

/// An operation served by the owner of one shard.
pub trait ShardOp: Op {
    /// The shard whose owner serves it; `None` when no node owns its record (an invalid
    /// id), so any node answers.
    fn shard(&self, shards: &ShardMap) -> Option<ShardId>;

    /// What serving it may change: decides how a replicated group's leader confirms its
    /// lead, and whether a request whose leader was lost on the way is sent again.
    const EFFECT: Effect = Effect::Records;
}

/// What serving a [`ShardOp`] may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: a request whose leader was lost on the way is sent again to the new one.
    Nothing,
    /// Records, through the group's log. A change that commits proves the lead it was
    /// decided under, so the leader confirms its lead only when it answers without one.
    Records,
    /// This node's unreplicated delivery state: the lead is confirmed before serving.
    Deliveries,
}

/// Declares which shard's owner serves an operation: `served_by!(Op, |op, shards| …)` for
/// one that changes records, `served_by!(Op, read, …)` for one that changes nothing,
/// `served_by!(Op, deliveries, …)` for one that changes deliveries.
macro_rules! served_by {
    ($op:ty, read, |$this:ident, $shards:ident| $shard:expr) => {
        $crate::service::served_by!(@impl $op, Nothing, |$this, $shards| $shard);
    };
    ($op:ty, deliveries, |$this:ident, $shards:ident| $shard:expr) => {
        $crate::service::served_by!(@impl $op, Deliveries, |$this, $shards| $shard);
    };
    ($op:ty, |$this:ident, $shards:ident| $shard:expr) => {
        $crate::service::served_by!(@impl $op, Records, |$this, $shards| $shard);
    };
    (@impl $op:ty, $effect:ident, |$this:ident, $shards:ident| $shard:expr) => {
        impl $crate::service::ShardOp for $op {
            fn shard(
                &self,
                $shards: &$crate::cluster::ShardMap,
            ) -> Option<$crate::cluster::ShardId> {
                let $this = self;
                $shard
            }

            const EFFECT: $crate::service::Effect = $crate::service::Effect::$effect;
        }
    };
}
pub(crate) use served_by;

/// The node's operations. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    ctx: Arc<NodeState>,
    /// The node's Raft groups, once started (never, with `replication_factor = 1`).
    replication: Arc<OnceLock<Arc<Replication>>>,
}

impl Service {
    /// Wraps the shared context and serves every operation to the peers.
    pub fn new(ctx: Arc<NodeState>) -> Self {
        let service = Self {
            ctx,
            replication: Arc::default(),
        };
        accounts::serve(&service);
        listing::serve(&service);
        recovery::serve(&service);
        registrations::serve(&service);
        subscriptions::serve(&service);
        triggers::serve(&service);
        crate::actors::remote::serve(&service.ctx);
        service
    }

    /// The shared context (for start-up and shutdown tasks).
    pub fn context(&self) -> &Arc<NodeState> {
        &self.ctx
    }

    /// Serves `O` to the peers.
    fn serve<O: Op>(&self) {
        let service = self.clone();
        self.ctx.cluster.serve(move |op: O| op.run(service.clone()));
    }

    /// Serves `O` to the peers that take this node for its shard's owner: replicated, only
    /// while this node leads the shard's group (see [`Service::ask`]).
    fn serve_owned<O, T>(&self)
    where
        O: ShardOp<Answer = Result<T, ServiceError>>,
        T: Send,
    {
        let service = self.clone();
        self.ctx.cluster.serve(move |op: O| {
            let service = service.clone();
            async move {
                let shard = op.shard(service.ctx.cluster.map());
                match (shard, service.replication()) {
                    (Some(shard), Some(replication)) => {
                        service.serve_as_leader(replication, shard, op).await
                    }
                    // Starting: this node's copy may be stale until its groups run.
                    (Some(_), None) if service.ctx.records.awaits_groups() => {
                        Err(ServiceError::NotServedHere { leader: None })
                    }
                    _ => op.run(service).await,
                }
            }
        });
    }

    /// Serves `op` here when this node owns its shard, else asks the owner. Replicated,
    /// the owner is the shard group's leader, and the operation follows the lead while it
    /// moves (see `replicated.rs`).
    pub async fn ask<O, T>(&self, op: O) -> Result<T, ServiceError>
    where
        O: ShardOp<Answer = Result<T, ServiceError>> + Clone,
        T: Send,
    {
        let cluster = &self.ctx.cluster;
        let Some(shard) = op.shard(cluster.map()) else {
            return op.run(self.clone()).await;
        };
        if let Some(replication) = self.replication() {
            return self.ask_leader(replication, shard, op).await;
        }
        if self.ctx.records.awaits_groups() {
            return Err(ServiceError::Unavailable {
                message: "This node is starting, try again shortly".into(),
                retry_after_secs: 1,
            });
        }
        match cluster.remote_owner(shard) {
            None => op.run(self.clone()).await,
            Some(peer) => cluster.call(&peer, &op).await?,
        }
    }

    /// Serves `op` here and on every peer; 503 as soon as one is unavailable.
    pub async fn ask_everywhere<O, T>(&self, op: O) -> Result<Vec<T>, ServiceError>
    where
        O: Op<Answer = Result<T, ServiceError>> + Clone,
    {
        let cluster = &self.ctx.cluster;
        let mut answers = Vec::with_capacity(cluster.peers().len() + 1);
        answers.push(op.clone().run(self.clone()).await?);
        for peer in cluster.peers().iter() {
            answers.push(cluster.call(peer, &op).await??);
        }
        Ok(answers)
    }

    /// Serves `op` on the nodes that serve shards: unreplicated, every node (as
    /// [`Service::ask_everywhere`]); replicated, every node that is up, once together they
    /// lead every group (each acts on the groups it leads), 503 if they do not within
    /// `cluster.failover_wait_ms`.
    pub async fn ask_leaders<O, T>(&self, op: O) -> Result<Vec<T>, ServiceError>
    where
        O: Op<Answer = Result<T, ServiceError>> + Clone,
    {
        match self.replication() {
            None => self.ask_everywhere(op).await,
            Some(replication) => self.ask_up_leaders(replication, op).await,
        }
    }

    /// Authenticates credentials against this node's store (the username's shard owner).
    async fn authenticate_here(&self, credentials: &Credentials) -> Result<Caller, ServiceError> {
        let Credentials {
            api_key,
            username,
            client,
        } = credentials;
        let name = username.clone();
        let account = self
            .ctx
            .store
            .run(move |s| s.account_by_username(&name))
            .await?
            .ok_or(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()))?;
        let cache = &self.ctx.auth_cache;
        if !cache.hit(username, api_key, &account.api_key_hash) {
            // Refused before hashing: a wrong key costs a full PBKDF2.
            let throttle = &self.ctx.auth_throttle;
            throttle.check(username, *client).map_err(|wait| {
                ServiceError::TooManyAuthFailures {
                    retry_after_secs: wait.secs(),
                }
            })?;
            let (key, hash) = (api_key.clone(), account.api_key_hash.clone());
            let valid = tokio::task::spawn_blocking(move || crypto::verify_key(&key, &hash))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            if !valid {
                throttle.record_failure(username, *client);
                return Err(ServiceError::Unauthorized(msg::INVALID_API_KEY.into()));
            }
            cache.insert(username, api_key, &account.api_key_hash);
        }
        Ok(Caller::of(&account))
    }

    /// Inserts a new account with a fresh key pair, in its username's shard.
    async fn insert_account(
        &self,
        username: String,
        endpoint: String,
        is_admin: bool,
    ) -> Result<NewAccount, ServiceError> {
        let NewAccount { account, api_key } =
            self.new_account(username, endpoint, is_admin).await?;
        let shard = self.ctx.cluster.map().shard_of_id(&account.id);
        let write = RecordWrite::InsertAccount(account.clone());
        match self.ctx.records.write_committed(shard, write).await? {
            WriteOutcome::UsernameTaken => Err(ServiceError::UsernameTaken),
            _ => Ok(NewAccount { account, api_key }),
        }
    }

    /// Creates the admin account unless one exists; returns it (with its key) when created.
    pub async fn bootstrap_admin(&self) -> Result<Option<NewAccount>, ServiceError> {
        if let Some(replication) = self.replication() {
            return self.bootstrap_replicated_admin(&replication.clone()).await;
        }
        if self
            .ctx
            .cluster
            .remote_owner(username_shard(self.ctx.cluster.map(), ADMIN_USERNAME))
            .is_some()
            || self
                .ctx
                .store
                .run(|s| s.username_taken(ADMIN_USERNAME))
                .await?
        {
            return Ok(None);
        }
        self.insert_account(ADMIN_USERNAME.into(), String::new(), true)
            .await
            .map(Some)
    }

    /// The delivery engine's and the authentication throttle's metrics, as Prometheus text.
    pub fn metrics(&self) -> String {
        let mut text = self.ctx.delivery.metrics.render();
        self.ctx.auth_throttle.render_metrics(&mut text);
        text
    }

    /// This node's view of the cluster.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.ctx.cluster
    }

    /// True when storage answers a read within [`READY_READ_TIMEOUT`] (readiness).
    pub async fn is_ready(&self) -> bool {
        let answered = self.ctx.store.run(|s| Ok::<_, StoreError>(s.is_healthy()));
        matches!(
            tokio::time::timeout(READY_READ_TIMEOUT, answered).await,
            Ok(Ok(true))
        )
    }

    /// Whether registration `id` exists (and is not being deleted).
    pub(crate) async fn registration_exists(&self, id: Uuid) -> Result<bool, ServiceError> {
        let found = self.ctx.store.run(move |s| s.registration(&id)).await?;
        Ok(found.is_some())
    }

    /// `id`, if it names an existing registration (a failed read counts as none).
    pub(crate) async fn existing_registration(&self, id: Option<Uuid>) -> Option<Uuid> {
        let id = id?;
        matches!(self.registration_exists(id).await, Ok(true)).then_some(id)
    }

    /// Whether storage takes writes (never touches the disk).
    pub fn storage_state(&self) -> crate::store::StorageState {
        self.ctx.store.state()
    }
}

/// The shard of a username (and so of its account).
fn username_shard(shards: &ShardMap, username: &str) -> ShardId {
    shards.shard_of(username.as_bytes())
}

/// The shard of a record id, if it is one.
fn id_shard(shards: &ShardMap, id: Option<&Uuid>) -> Option<ShardId> {
    id.map(|id| shards.shard_of_id(id))
}

/// Replaces the admin's API key directly in storage (offline; the node must be stopped).
///
/// The admin has no endpoint, so this is its only way to recover a lost key.
pub fn reset_admin_key_offline(
    store: &crate::store::Store,
    iterations: u32,
) -> Result<String, ServiceError> {
    let mut admin = store.account_by_username(ADMIN_USERNAME)?.ok_or_else(|| {
        ServiceError::Internal(
            "there is no admin account in this service's storage (in a cluster, run this on \
                 the service that printed the admin keys)"
                .into(),
        )
    })?;
    let key = crypto::generate_key()?;
    admin.api_key_hash = crypto::hash_key(&key, iterations)?;
    store.update_account(&admin)?;
    store.flush_blocking()?;
    Ok(key)
}
