//! The node's domain façade: what an API handler may ask, whichever actor or shard answers.
//!
//! Handlers call [`Node`]; it authenticates, picks the record's actor (or reads the
//! store for listings) and returns domain results. Handlers never see sled or actors.

mod error;
mod listing;
mod remote;
mod write_result;

use std::sync::Arc;

use uuid::Uuid;

pub use error::{msg, ServiceError};
pub use write_result::WriteResult;

use crate::actors::{AccountMsg, NodeContext, RegistrationMsg};
use crate::cluster::protocol::{Answer, Command, Table};
use crate::crypto;
use crate::store::{
    Account, Delivery, DeliveryCounts, KeyKind, NewAccountError, Page, PageRequest, Registration,
    Subscription, Triggered,
};

/// The authenticated account making a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    /// Its account id.
    pub id: Uuid,
    /// Its username.
    pub username: String,
    /// Whether it is an administrator.
    pub is_admin: bool,
}

/// A freshly created account and its plaintext API key (shown once).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewAccount {
    /// The stored record.
    pub account: Account,
    /// The API key in plaintext.
    pub api_key: String,
}

/// The reserved username of the bootstrap administrator.
pub const ADMIN_USERNAME: &str = "admin";

/// Forwards to the peer owning `$shard` and returns its answer (matched by `$pat`), or
/// falls through when the shard is local.
macro_rules! forward {
    ($self:ident, $shard:expr, $command:expr, $pat:pat => $out:expr) => {
        if let Some(peer) = $self.ctx.cluster.remote_owner($shard) {
            return match $self.ctx.cluster.call(peer, &$command).await? {
                $pat => Ok($out),
                other => Err(remote::unexpected(other)),
            };
        }
    };
}

/// The node's operations, wherever the shard lives. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    ctx: Arc<NodeContext>,
}

impl Node {
    /// Wraps the shared context.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }

    /// The shared context (for start-up and shutdown tasks).
    pub fn context(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Authenticates from the `api-key` and `username` headers, in the original's order.
    pub async fn authenticate(
        &self,
        api_key: Option<&str>,
        username: Option<&str>,
    ) -> Result<Caller, ServiceError> {
        let api_key = api_key.ok_or(ServiceError::Unauthorized(msg::MISSING_API_KEY.into()))?;
        let username = username.ok_or(ServiceError::Unauthorized(msg::MISSING_USERNAME.into()))?;
        forward!(self, self.username_shard(username), Command::Authenticate {
            api_key: api_key.to_string(),
            username: username.to_string(),
        }, Answer::Caller(c) => c);
        let account = self
            .ctx
            .store
            .account_by_username(username)?
            .ok_or(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()))?;
        let cache = &self.ctx.auth_cache;
        if !cache.hit(username, api_key, &account.api_key_hash) {
            let (key, hash) = (api_key.to_string(), account.api_key_hash.clone());
            let valid = tokio::task::spawn_blocking(move || crypto::verify_key(&key, &hash))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            if !valid {
                return Err(ServiceError::Unauthorized(msg::INVALID_API_KEY.into()));
            }
            cache.insert(username, api_key, &account.api_key_hash);
        }
        Ok(Caller {
            id: account.id,
            username: account.username,
            is_admin: account.is_admin,
        })
    }

    /// Authenticates and requires an administrator.
    pub async fn authenticate_admin(
        &self,
        api_key: Option<&str>,
        username: Option<&str>,
    ) -> Result<Caller, ServiceError> {
        let caller = self.authenticate(api_key, username).await?;
        if caller.is_admin {
            Ok(caller)
        } else {
            Err(ServiceError::Unauthorized(msg::NOT_ADMIN.into()))
        }
    }

    /// Creates an account: uniqueness first, then the echo challenge, then an atomic insert.
    pub async fn create_account(
        &self,
        username: String,
        endpoint: String,
    ) -> Result<NewAccount, ServiceError> {
        forward!(self, self.username_shard(&username), Command::CreateAccount {
            username: username.clone(),
            endpoint: endpoint.clone(),
        }, Answer::NewAccount(a) => a);
        if username == ADMIN_USERNAME || self.ctx.store.username_taken(&username)? {
            return Err(ServiceError::UsernameTaken);
        }
        if let Err(e) = self.ctx.client.echo(&endpoint).await {
            tracing::info!(error = %e, "echo challenge failed on account creation");
            return Err(ServiceError::BadRequest(msg::ECHO_FAILED.into()));
        }
        self.insert_account(username, endpoint, false).await
    }

    async fn insert_account(
        &self,
        username: String,
        endpoint: String,
        is_admin: bool,
    ) -> Result<NewAccount, ServiceError> {
        let api_key = crypto::generate_key()?;
        let shards = self.ctx.cluster.map();
        let account = Account {
            id: shards.new_id_in(shards.shard_of(username.as_bytes())),
            epoch_us: self.ctx.store.next_epoch_us(),
            username,
            endpoint,
            is_admin,
            failed_count: 0,
            api_key_hash: self.ctx.hash_key(api_key.clone()).await?,
            secret_key: crypto::generate_key()?,
            pending_key: None,
            key_resets_us: Vec::new(),
            deleting: false,
        };
        match self.ctx.store.insert_account(&account) {
            Ok(()) => {}
            Err(NewAccountError::UsernameTaken) => return Err(ServiceError::UsernameTaken),
            Err(NewAccountError::Store(e)) => return Err(e.into()),
        }
        self.ctx.store.flush().await?;
        Ok(NewAccount { account, api_key })
    }

    /// Creates the admin account unless one exists; returns it (with its key) when created.
    pub async fn bootstrap_admin(&self) -> Result<Option<NewAccount>, ServiceError> {
        if self
            .ctx
            .cluster
            .remote_owner(self.username_shard(ADMIN_USERNAME))
            .is_some()
            || self.ctx.store.username_taken(ADMIN_USERNAME)?
        {
            return Ok(None);
        }
        self.insert_account(ADMIN_USERNAME.into(), String::new(), true)
            .await
            .map(Some)
    }

    /// The caller's own account (no admin bypass, as in the original).
    pub async fn get_account(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<Account, ServiceError> {
        if id != Some(caller.id) {
            return Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()));
        }
        forward!(self, self.id_shard(&caller.id), Command::GetAccount {
            caller: caller.clone(),
            id: caller.id,
        }, Answer::Account(a) => a);
        self.ctx
            .store
            .account(&caller.id)?
            .ok_or(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()))
    }

    /// Changes the caller's endpoint (echo-checked) and resets its `failed_count`.
    pub async fn update_endpoint(
        &self,
        caller: &Caller,
        endpoint: String,
    ) -> Result<WriteResult, ServiceError> {
        forward!(self, self.id_shard(&caller.id), Command::UpdateEndpoint {
            caller: caller.clone(),
            endpoint: endpoint.clone(),
        }, Answer::Write(w) => w);
        self.ctx
            .ask_account(caller.id, |reply| AccountMsg::UpdateEndpoint {
                endpoint: endpoint.clone(),
                reply,
            })
            .await?
    }

    /// Deletes an account with its cascade (self, or an admin).
    pub async fn delete_account(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<WriteResult, ServiceError> {
        if !caller.is_admin && id != Some(caller.id) {
            return Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()));
        }
        let Some(id) = id else {
            return Ok(WriteResult::skipped());
        };
        forward!(self, self.id_shard(&id), Command::DeleteAccount {
            caller: caller.clone(),
            id,
        }, Answer::Write(w) => w);
        if self.ctx.store.account(&id)?.is_none() {
            return Ok(WriteResult::skipped());
        }
        self.ctx
            .ask_account(id, |reply| AccountMsg::Delete { reply })
            .await?
    }

    /// A page of all accounts (admin), merged from every node.
    pub async fn list_accounts(&self, req: PageRequest) -> Result<Page<Account>, ServiceError> {
        self.global_page(Table::Accounts, req).await
    }

    /// Deletes every non-admin account, each with its cascade (admin), on every node.
    pub async fn delete_all_accounts(&self) -> Result<WriteResult, ServiceError> {
        let deleted = self.local_delete_accounts().await?
            + self.broadcast_count(&Command::DeleteLocalAccounts).await?;
        Ok(WriteResult::deleted(deleted))
    }

    /// Deletes this node's non-admin accounts.
    async fn local_delete_accounts(&self) -> Result<u64, ServiceError> {
        let mut deleted = 0;
        for (id, is_admin) in self.ctx.store.account_ids()? {
            if !is_admin {
                let result = self
                    .ctx
                    .ask_account(id, |reply| AccountMsg::Delete { reply })
                    .await??;
                deleted += result.deleted;
            }
        }
        Ok(deleted)
    }

    /// Resets a key of the account named `username` (already authenticated for secrets).
    pub async fn reset_key(&self, username: &str, kind: KeyKind) -> Result<(), ServiceError> {
        forward!(self, self.username_shard(username), Command::ResetKey {
            username: username.to_string(),
            kind,
        }, Answer::Done => ());
        let account = self
            .ctx
            .store
            .account_by_username(username)?
            .ok_or(ServiceError::NotFound(msg::USERNAME_NOT_FOUND.into()))?;
        self.ctx
            .ask_account(account.id, |reply| AccountMsg::ResetKey { kind, reply })
            .await?
    }

    /// Registers a webhook owned by the caller.
    pub async fn create_registration(
        &self,
        caller: &Caller,
        event: String,
        description: String,
        event_data: String,
    ) -> Result<Registration, ServiceError> {
        forward!(self, self.id_shard(&caller.id), Command::CreateRegistration {
            caller: caller.clone(),
            event: event.clone(),
            description: description.clone(),
            event_data: event_data.clone(),
        }, Answer::Registration(r) => r);
        self.ctx
            .ask_account(caller.id, |reply| AccountMsg::CreateRegistration {
                event: event.clone(),
                description: description.clone(),
                event_data: event_data.clone(),
                reply,
            })
            .await?
    }

    /// A page of the caller's registrations (they live on the caller's shard).
    pub async fn list_own_registrations(
        &self,
        caller: &Caller,
        req: PageRequest,
    ) -> Result<Page<Registration>, ServiceError> {
        forward!(self, self.id_shard(&caller.id), Command::ListOwnRegistrations {
            caller: caller.clone(),
            req,
        }, Answer::Registrations(p) => p);
        Ok(self.ctx.store.list_account_registrations(&caller.id, req)?)
    }

    /// A page of every registration, merged from every node.
    pub async fn list_registrations(
        &self,
        req: PageRequest,
    ) -> Result<Page<Registration>, ServiceError> {
        self.global_page(Table::Registrations, req).await
    }

    /// Changes a registration's description (owner or admin; access before body).
    pub async fn patch_registration(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
        description: Result<String, ServiceError>,
    ) -> Result<WriteResult, ServiceError> {
        let Some(id) = id else {
            return patch_missing_registration(caller, description);
        };
        forward!(self, self.id_shard(&id), Command::PatchRegistration {
            caller: caller.clone(),
            id,
            description: description.clone(),
        }, Answer::Write(w) => w);
        if self.ctx.store.registration(&id)?.is_none() {
            // No actor for a record that does not exist (it would linger until idle).
            return patch_missing_registration(caller, description);
        }
        self.ctx
            .ask_registration(id, |reply| RegistrationMsg::Patch {
                caller: caller.clone(),
                description: description.clone(),
                reply,
            })
            .await?
    }

    /// Deletes a registration and its subscriptions (owner or admin).
    pub async fn delete_registration(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<WriteResult, ServiceError> {
        let Some(id) = id else {
            return delete_missing_registration(caller);
        };
        forward!(self, self.id_shard(&id), Command::DeleteRegistration {
            caller: caller.clone(),
            id,
        }, Answer::Write(w) => w);
        if self.ctx.store.registration(&id)?.is_none() {
            return delete_missing_registration(caller);
        }
        self.ctx
            .ask_registration(id, |reply| RegistrationMsg::Delete {
                caller: Some(caller.clone()),
                reply,
            })
            .await?
    }

    /// Deletes every registration with its subscriptions (admin), on every node.
    pub async fn delete_all_registrations(&self) -> Result<WriteResult, ServiceError> {
        let deleted = self.local_delete_registrations().await?
            + self
                .broadcast_count(&Command::DeleteLocalRegistrations)
                .await?;
        Ok(WriteResult::deleted(deleted))
    }

    /// Deletes this node's registrations.
    async fn local_delete_registrations(&self) -> Result<u64, ServiceError> {
        let mut deleted = 0;
        for id in self.ctx.store.registration_ids()? {
            let result = self
                .ctx
                .ask_registration(id, |reply| RegistrationMsg::Delete {
                    caller: None,
                    reply,
                })
                .await??;
            deleted += result.deleted;
        }
        Ok(deleted)
    }

    /// Subscribes the caller to a registration (anyone's).
    pub async fn subscribe(
        &self,
        caller: &Caller,
        registration: Option<Uuid>,
    ) -> Result<Subscription, ServiceError> {
        let registration = registration.ok_or(ServiceError::NotFound(
            msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into(),
        ))?;
        forward!(self, self.id_shard(&registration), Command::Subscribe {
            caller: caller.clone(),
            registration,
        }, Answer::Subscription(s) => s);
        if self.ctx.store.registration(&registration)?.is_none() {
            return Err(ServiceError::NotFound(
                msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into(),
            ));
        }
        self.ctx
            .ask_registration(registration, |reply| RegistrationMsg::Subscribe {
                subscriber: caller.id,
                reply,
            })
            .await?
    }

    /// A page of the caller's subscriptions (spread over the registrations' nodes).
    pub async fn list_own_subscriptions(
        &self,
        caller: &Caller,
        req: PageRequest,
    ) -> Result<Page<Subscription>, ServiceError> {
        self.global_page(Table::Subscriptions(Some(caller.id)), req)
            .await
    }

    /// A page of every subscription, merged from every node.
    pub async fn list_subscriptions(
        &self,
        req: PageRequest,
    ) -> Result<Page<Subscription>, ServiceError> {
        self.global_page(Table::Subscriptions(None), req).await
    }

    /// Removes a subscription (its subscriber, or an admin).
    pub async fn delete_subscription(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<WriteResult, ServiceError> {
        if let Some(id) = id {
            forward!(self, self.id_shard(&id), Command::DeleteSubscription {
                caller: caller.clone(),
                id,
            }, Answer::Write(w) => w);
        }
        let found = match id {
            Some(id) => self.ctx.store.subscription(&id)?,
            None => None,
        };
        let Some(subscription) = found else {
            return if caller.is_admin {
                Ok(WriteResult::skipped())
            } else {
                Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()))
            };
        };
        self.ctx
            .ask_registration(subscription.registration_id, |reply| {
                RegistrationMsg::Unsubscribe {
                    caller: caller.clone(),
                    subscription: subscription.id,
                    reply,
                }
            })
            .await?
    }

    /// Deletes every subscription (admin), on every node.
    pub async fn delete_all_subscriptions(&self) -> Result<WriteResult, ServiceError> {
        let deleted = self.local_delete_subscriptions().await?
            + self
                .broadcast_count(&Command::DeleteLocalSubscriptions)
                .await?;
        Ok(WriteResult::deleted(deleted))
    }

    async fn local_delete_subscriptions(&self) -> Result<u64, ServiceError> {
        let deleted = self.ctx.store.delete_all_subscriptions()?;
        self.ctx.store.flush().await?;
        Ok(deleted)
    }

    /// Triggers a registration (its owner only): records it, answers, then fans out.
    ///
    /// `event_data` (JSON text) replaces the registered payload for this trigger; a repeated
    /// `idempotency_key` within 24 h returns the first trigger, flagged as a replay.
    pub async fn trigger(
        &self,
        caller: &Caller,
        registration: Option<Uuid>,
        event_data: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<(Triggered, bool), ServiceError> {
        let registration = registration.ok_or(ServiceError::NotFound(
            msg::NO_SUCH_REGISTRATION_TRIGGER.into(),
        ))?;
        forward!(self, self.id_shard(&registration), Command::Trigger {
            caller: caller.clone(),
            registration,
            event_data: event_data.clone(),
            idempotency_key: idempotency_key.clone(),
        }, Answer::Triggered(t, replayed) => (t, replayed));
        if self.ctx.store.registration(&registration)?.is_none() {
            return Err(ServiceError::NotFound(
                msg::NO_SUCH_REGISTRATION_TRIGGER.into(),
            ));
        }
        self.ctx
            .ask_registration(registration, |reply| RegistrationMsg::Trigger {
                caller: caller.clone(),
                event_data: event_data.clone(),
                idempotency_key: idempotency_key.clone(),
                reply,
            })
            .await?
    }

    /// A trigger the caller may inspect (the registration's owner, or an admin), and
    /// whether its fan-out finished.
    async fn visible_trigger(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<(Triggered, bool), ServiceError> {
        let id = id.ok_or(ServiceError::NotFound(msg::NO_SUCH_TRIGGER.into()))?;
        forward!(self, self.id_shard(&id), Command::GetTrigger {
            caller: caller.clone(),
            id,
        }, Answer::Triggered(t, done) => (t, done));
        match self.ctx.store.triggered(&id)? {
            Some(t) if caller.is_admin || t.account_id == caller.id => {
                let done = self.ctx.store.fanout(&t.id)?.is_none();
                Ok((t, done))
            }
            Some(_) => Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into())),
            None => Err(ServiceError::NotFound(msg::NO_SUCH_TRIGGER.into())),
        }
    }

    /// A trigger with its delivery counts (summed over the nodes that deliver it) and
    /// whether its fan-out finished.
    pub async fn trigger_status(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<(Triggered, DeliveryCounts, bool), ServiceError> {
        let (t, fanout_done) = self.visible_trigger(caller, id).await?;
        let mut counts = self.ctx.store.delivery_counts(&t.id)?;
        for answer in self
            .broadcast(&Command::DeliveryCounts { triggered: t.id })
            .await?
        {
            match answer {
                Answer::Counts(c) => {
                    counts.pending += c.pending;
                    counts.succeeded += c.succeeded;
                    counts.failed += c.failed;
                    counts.skipped += c.skipped;
                    counts.cancelled += c.cancelled;
                }
                other => return Err(remote::unexpected(other)),
            }
        }
        Ok((t, counts, fanout_done))
    }

    /// A page of a trigger's deliveries with their attempt logs, from every node.
    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        id: Option<Uuid>,
        req: PageRequest,
    ) -> Result<Page<Delivery>, ServiceError> {
        let (t, _) = self.visible_trigger(caller, id).await?;
        self.global_page(Table::Deliveries(t.id), req).await
    }

    /// Re-queues a trigger's failed deliveries on every node; returns how many.
    pub async fn redeliver(&self, caller: &Caller, id: Option<Uuid>) -> Result<u64, ServiceError> {
        let (t, _) = self.visible_trigger(caller, id).await?;
        Ok(self.local_requeue(&t.id).await?
            + self
                .broadcast_count(&Command::Requeue { triggered: t.id })
                .await?)
    }

    async fn local_requeue(&self, triggered: &Uuid) -> Result<u64, ServiceError> {
        let n = self
            .ctx
            .store
            .requeue_failed(triggered, crate::actors::now_us())?;
        self.ctx.store.flush().await?;
        self.ctx
            .delivery
            .metrics
            .due
            .fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
        self.ctx.delivery.wake();
        Ok(n)
    }

    /// A page of every triggered record, merged from every node.
    pub async fn list_triggered(&self, req: PageRequest) -> Result<Page<Triggered>, ServiceError> {
        self.global_page(Table::Triggered, req).await
    }

    /// The delivery engine's metrics, as Prometheus text.
    pub fn delivery_metrics(&self) -> String {
        self.ctx.delivery.metrics.render()
    }

    /// This node's view of the cluster.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.ctx.cluster
    }

    /// True when storage answers (readiness).
    pub fn is_ready(&self) -> bool {
        self.ctx.store.is_healthy()
    }

    /// The shard of a username (and so of its account).
    fn username_shard(&self, username: &str) -> crate::cluster::ShardId {
        self.ctx.cluster.map().shard_of(username.as_bytes())
    }

    /// The shard of an id.
    fn id_shard(&self, id: &Uuid) -> crate::cluster::ShardId {
        self.ctx.cluster.map().shard_of_id(id)
    }
}

/// PATCH of a registration that does not exist: 401 for a non-admin, else the body is
/// still checked and the answer is `skipped: 1`.
fn patch_missing_registration(
    caller: &Caller,
    description: Result<String, ServiceError>,
) -> Result<WriteResult, ServiceError> {
    if !caller.is_admin {
        return Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()));
    }
    description?;
    Ok(WriteResult::skipped())
}

/// DELETE of a registration that does not exist: 401 for a non-admin, else `deleted: 0`
/// (the original deleted through a filter, so nothing counts as skipped).
fn delete_missing_registration(caller: &Caller) -> Result<WriteResult, ServiceError> {
    if caller.is_admin {
        Ok(WriteResult::deleted(0))
    } else {
        Err(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()))
    }
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
            "there is no admin account in this node's storage (in a cluster, run this on \
                 the node that printed the admin keys)"
                .into(),
        )
    })?;
    let key = crypto::generate_key()?;
    admin.api_key_hash = crypto::hash_key(&key, iterations)?;
    store.update_account(&admin)?;
    store.flush_blocking()?;
    Ok(key)
}
