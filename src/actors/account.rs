//! The AccountActor: the one writer of an account.
//!
//! It owns endpoint changes (with the echo challenge), key resets (pending → sent →
//! committed, rate-limited), the creation of the account's registrations and the account's
//! cascade delete. Running them one at a time per account makes each atomic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SpawnErr};
use ractor_cluster::RactorMessage;
use uuid::Uuid;

use super::remote::DeleteSubscriptionsOf;
use super::{now_us, NodeState, RegistrationMsg, ReplyPort, Written};
use crate::cluster::ShardId;
use crate::crypto;
use crate::domain::{msg, ServiceError, WriteResult};
use crate::store::{
    Account, KeyKind, PendingKey, PreviousSecret, RecordWrite, Registration, StoreError,
    WriteOutcome,
};

const HOUR_US: u64 = 3_600_000_000;

/// Requests an AccountActor serves.
#[derive(RactorMessage)]
pub enum AccountMsg {
    /// Echo-check `endpoint`, then make it the account's endpoint, reset `failed_count` and
    /// lift a `410 Gone` stop (the same endpoint re-verified lifts it too).
    UpdateEndpoint {
        /// The new endpoint (already validated as an http(s) URL).
        endpoint: String,
        /// Write result.
        reply: ReplyPort<WriteResult>,
    },
    /// Generate a new key, deliver it to the endpoint, commit it on success.
    ResetKey {
        /// Which key.
        kind: KeyKind,
        /// Unit on success.
        reply: ReplyPort<()>,
    },
    /// Create a registration owned by this account.
    CreateRegistration {
        /// `event` header value.
        event: String,
        /// Description.
        description: String,
        /// The payload as JSON text.
        event_data: String,
        /// The new record.
        reply: ReplyPort<Registration>,
    },
    /// Delete the account and everything that hangs off it.
    Delete {
        /// `deleted: 1`, or `skipped: 1` when there is no such account.
        reply: ReplyPort<WriteResult>,
    },
    /// Timer tick: stop when idle.
    IdleCheck,
}

/// The actor of one account.
pub struct AccountActor {
    ctx: Arc<NodeState>,
    id: Uuid,
}

/// Mutable state between messages.
pub struct AccountState {
    last_active: Instant,
}

impl AccountActor {
    /// Spawns the actor of account `id`.
    pub async fn spawn_for(
        ctx: Arc<NodeState>,
        id: Uuid,
    ) -> Result<ActorRef<AccountMsg>, SpawnErr> {
        let (actor, _) = Actor::spawn(None, AccountActor { ctx, id }, ()).await?;
        Ok(actor)
    }

    async fn live(&self) -> Result<Account, ServiceError> {
        // The caller authenticated just before; if the account vanished since, it is as if
        // the credentials were wrong.
        let id = self.id;
        self.ctx
            .store
            .run(move |s| s.account(&id))
            .await?
            .ok_or(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()))
    }

    async fn update_endpoint(
        &self,
        endpoint: String,
        written: &mut Written,
    ) -> Result<WriteResult, ServiceError> {
        let mut account = self.live().await?;
        if let Err(e) = self.ctx.client.echo(&endpoint).await {
            tracing::info!(account = %self.id, error = %e, "echo challenge failed");
            return Err(ServiceError::BadRequest(msg::ECHO_FAILED.into()));
        }
        let stopped = account.deliveries_stopped_us.is_some();
        if account.endpoint == endpoint && account.failed_count == 0 && !stopped {
            return Ok(WriteResult::unchanged());
        }
        account.endpoint = endpoint;
        let writes = vec![
            RecordWrite::UpdateAccount(account),
            RecordWrite::ResumeDeliveries(self.id),
        ];
        self.ctx
            .records
            .write(self.shard(), writes, written)
            .await?;
        Ok(WriteResult::replaced())
    }

    async fn reset_key(&self, kind: KeyKind, written: &mut Written) -> Result<(), ServiceError> {
        let mut account = self.live().await?;
        if account.endpoint.is_empty() {
            return Err(ServiceError::NotFound(msg::ENDPOINT_NOT_FOUND.into()));
        }
        let now = now_us();
        account
            .key_resets_us
            .retain(|t| now.saturating_sub(*t) < HOUR_US);
        let limit = self.ctx.settings.key_resets_per_hour as usize;
        if account.key_resets_us.len() >= limit {
            let oldest = account.key_resets_us.iter().min().copied().unwrap_or(now);
            let wait_us = (oldest + HOUR_US).saturating_sub(now);
            return Err(ServiceError::TooManyKeyResets {
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
            });
        }
        let key = crypto::generate_key()?;
        let stored_value = match kind {
            KeyKind::ApiKey => self.ctx.hash_key(key.clone()).await?,
            KeyKind::SecretKey => key.clone(),
        };
        // Pending first: the attempt counts against the limit even if the node crashes
        // while the key is on its way.
        account.key_resets_us.push(now);
        account.pending_key = Some(PendingKey {
            kind,
            stored_value,
            at_us: now,
        });
        let write = RecordWrite::UpdateAccount(account.clone());
        self.ctx
            .records
            .write_committed(self.shard(), write)
            .await?;

        let sent = self
            .ctx
            .client
            .send_key(&account.endpoint, kind, &key)
            .await;
        let pending = account.pending_key.take();
        match (sent, pending) {
            (Ok(()), Some(p)) => {
                match p.kind {
                    KeyKind::ApiKey => account.api_key_hash = p.stored_value,
                    KeyKind::SecretKey => {
                        let grace = self.ctx.settings.secret_rotation_grace.as_micros() as u64;
                        account.previous_secret = Some(PreviousSecret {
                            secret_key: std::mem::replace(&mut account.secret_key, p.stored_value),
                            until_us: now_us().saturating_add(grace),
                        });
                    }
                }
                self.write_account(&account, written).await?;
                self.ctx.auth_cache.invalidate(&account.username);
                Ok(())
            }
            (result, _) => {
                if let Err(e) = result {
                    tracing::info!(account = %self.id, error = %e, "key delivery failed");
                }
                self.write_account(&account, written).await?;
                Err(ServiceError::BadRequest(msg::RESET_FAILED.into()))
            }
        }
    }

    async fn write_account(
        &self,
        account: &Account,
        written: &mut Written,
    ) -> Result<(), ServiceError> {
        let write = RecordWrite::UpdateAccount(account.clone());
        self.ctx
            .records
            .write_one(self.shard(), write, written)
            .await?;
        Ok(())
    }

    /// The account's shard.
    fn shard(&self) -> ShardId {
        self.ctx.cluster.map().shard_of_id(&self.id)
    }

    async fn create_registration(
        &self,
        event: String,
        description: String,
        event_data: String,
        written: &mut Written,
    ) -> Result<Registration, ServiceError> {
        let shards = self.ctx.cluster.map();
        let registration = Registration {
            id: shards.new_id_in(shards.shard_of_id(&self.id)),
            epoch_us: self.ctx.store.next_epoch_us(),
            account_id: self.id,
            event,
            description,
            event_data,
            deleting: false,
        };
        let write = RecordWrite::InsertRegistration(registration.clone());
        let inserted = self
            .ctx
            .records
            .write_one(self.shard(), write, written)
            .await?;
        if inserted != WriteOutcome::Inserted(true) {
            return Err(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()));
        }
        Ok(registration)
    }

    async fn delete(&self, written: &mut Written) -> Result<WriteResult, ServiceError> {
        let id = self.id;
        let last_admin = self
            .ctx
            .store
            .run(move |s| {
                let Some(account) = s.account(&id)? else {
                    return Ok::<_, StoreError>(None);
                };
                Ok(Some(account.is_admin && s.admin_count()? <= 1))
            })
            .await?;
        match last_admin {
            None => return Ok(WriteResult::skipped()),
            Some(true) => return Err(ServiceError::BadRequest(msg::LAST_ADMIN.into())),
            Some(false) => {}
        }
        let begun = self
            .ctx
            .records
            .write_one(self.shard(), RecordWrite::BeginAccountDelete(id), written)
            .await?;
        let WriteOutcome::AccountDeleting(Some(account)) = begun else {
            return Ok(WriteResult::skipped());
        };
        self.ctx.auth_cache.invalidate(&account.username);
        cascade(&self.ctx, &account).await?;
        Ok(WriteResult::deleted(1))
    }
}

/// Removes a tombstoned account's subscriptions, its registrations (with everyone's
/// subscriptions to them) and finally the account. Idempotent, so a restart can rerun it.
///
/// The account's own subscriptions live with the registrations they subscribe to, on
/// any node: every peer is told to drop them. While a peer is unreachable the tombstone
/// stays (the account is already gone for every reader) and a background task retries.
pub(super) async fn cascade(ctx: &Arc<NodeState>, account: &Account) -> Result<(), ServiceError> {
    let id = account.id;
    ctx.delete_subscriptions_of(id).await?;
    let registrations = ctx.store.run(move |s| s.registration_ids_of(&id)).await?;
    for registration in registrations {
        ctx.ask_registration(registration, |reply| RegistrationMsg::Delete {
            caller: None,
            reply,
        })
        .await?;
    }
    if remote_cleanup(ctx, &account.id).await {
        finish_delete(ctx, account).await?;
    } else {
        let (ctx, account) = (ctx.clone(), account.clone());
        tokio::spawn(async move {
            while !remote_cleanup(&ctx, &account.id).await {
                tokio::time::sleep(CLEANUP_RETRY).await;
            }
            if let Err(e) = finish_delete(&ctx, &account).await {
                tracing::error!(error = %e, account = %account.id, "finishing a delete failed");
            }
        });
    }
    Ok(())
}

/// Removes the tombstoned account's record (the cascade's last step).
async fn finish_delete(ctx: &NodeState, account: &Account) -> Result<(), ServiceError> {
    let shard = ctx.cluster.map().shard_of_id(&account.id);
    let write = RecordWrite::FinishAccountDelete(account.clone());
    ctx.records.write_committed(shard, write).await?;
    Ok(())
}

/// How often an account cascade waiting for an unreachable peer retries.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Tells every peer to drop the subscriptions held by `account`; true when all did.
async fn remote_cleanup(ctx: &NodeState, account: &Uuid) -> bool {
    let mut all = true;
    for peer in ctx.cluster.peers().iter() {
        let command = DeleteSubscriptionsOf { account: *account };
        if !matches!(ctx.cluster.call(peer, &command).await, Ok(Ok(_))) {
            all = false;
        }
    }
    all
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(self.ctx.settings.idle_stop / 2, || AccountMsg::IdleCheck);
        Ok(AccountState {
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, AccountMsg::IdleCheck) {
            state.last_active = Instant::now();
        }
        // A dropped reply port means the caller gave up; nothing to do about it.
        match message {
            AccountMsg::UpdateEndpoint { endpoint, reply } => {
                let mut written = Written::default();
                let result = self.update_endpoint(endpoint, &mut written).await;
                let _ = reply.send(written.reply(result));
            }
            AccountMsg::ResetKey { kind, reply } => {
                let mut written = Written::default();
                let result = self.reset_key(kind, &mut written).await;
                let _ = reply.send(written.reply(result));
            }
            AccountMsg::CreateRegistration {
                event,
                description,
                event_data,
                reply,
            } => {
                let mut written = Written::default();
                let result = self
                    .create_registration(event, description, event_data, &mut written)
                    .await;
                let _ = reply.send(written.reply(result));
            }
            AccountMsg::Delete { reply } => {
                let mut written = Written::default();
                let result = self.delete(&mut written).await;
                let gone = matches!(&result, Ok(w) if w.deleted == 1);
                let _ = reply.send(written.reply(result));
                if gone {
                    // Nothing left to serialise: free the actor now, not when idle.
                    self.ctx.accounts.remove(&self.id, myself.get_id());
                    myself.stop(None);
                }
            }
            AccountMsg::IdleCheck => {
                if state.last_active.elapsed() >= self.ctx.settings.idle_stop {
                    self.ctx.accounts.remove(&self.id, myself.get_id());
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }
}
