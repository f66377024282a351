//! Account operations: authenticate, create, read, change the endpoint, reset a key,
//! delete (one or all).
//!
//! An account lives on its username's shard (its id is minted there), so an operation on
//! the caller's own account authenticates and acts on one node, in one request.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::served_by;
use super::{id_shard, username_shard, Op, Service};
use crate::actors::AccountMsg;
use crate::cluster::rpc;
use crate::domain::{
    access, msg, Caller, Credentials, NewAccount, ServiceError, WriteResult, ADMIN_USERNAME,
};
use crate::store::{Account, KeyKind};

pub(super) fn serve(service: &Service) {
    service.serve_owned::<Authenticate, _>();
    service.serve_owned::<CreateAccount, _>();
    service.serve_owned::<GetAccount, _>();
    service.serve_owned::<UpdateEndpoint, _>();
    service.serve_owned::<DeleteAccount, _>();
    service.serve_owned::<DeleteAccountById, _>();
    service.serve_owned::<ResetKey, _>();
    service.serve_owned::<ResetSecretKey, _>();
    service.serve::<DeleteLocalAccounts>();
}

/// Checks credentials; answers who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authenticate(pub Credentials);

rpc!(Authenticate => Result<Caller, ServiceError>, "service/authenticate");

impl Op for Authenticate {
    async fn run(self, service: Service) -> Self::Answer {
        service.authenticate_here(&self.0).await
    }
}

served_by!(Authenticate, read, |op, shards| Some(username_shard(
    shards,
    &op.0.username
)));

/// Creates an account: uniqueness first, then the echo challenge, then an atomic insert.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAccount {
    /// The username (validated by the API).
    pub username: String,
    /// The endpoint (an absolute http(s) URL).
    pub endpoint: String,
}

rpc!(CreateAccount => Result<NewAccount, ServiceError>, "service/create_account");

impl Op for CreateAccount {
    async fn run(self, service: Service) -> Self::Answer {
        let username = self.username.clone();
        if self.username == ADMIN_USERNAME
            || service
                .ctx
                .store
                .run(move |s| s.username_taken(&username))
                .await?
        {
            return Err(ServiceError::UsernameTaken);
        }
        if let Err(e) = service.ctx.client.echo(&self.endpoint).await {
            tracing::info!(error = %e, "echo challenge failed on account creation");
            return Err(ServiceError::BadRequest(msg::ECHO_FAILED.into()));
        }
        service
            .insert_account(self.username, self.endpoint, false)
            .await
    }
}

served_by!(CreateAccount, |op, shards| Some(username_shard(
    shards,
    &op.username
)));

/// The caller's own account (no admin bypass, as in the original).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetAccount {
    /// Who asks.
    pub credentials: Credentials,
    /// The account asked for (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(GetAccount => Result<Account, ServiceError>, "service/get_account");

impl Op for GetAccount {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        let id = access::read_account(&caller, self.id)?;
        service
            .ctx
            .store
            .run(move |s| s.account(&id))
            .await?
            .ok_or(ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into()))
    }
}

served_by!(GetAccount, read, |op, shards| Some(username_shard(
    shards,
    &op.credentials.username
)));

/// Changes the caller's endpoint (echo-checked) and resets its `failed_count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateEndpoint {
    /// Who asks.
    pub credentials: Credentials,
    /// The new endpoint, or the body's error, reported once the caller is authenticated.
    pub endpoint: Result<String, ServiceError>,
}

rpc!(UpdateEndpoint => Result<WriteResult, ServiceError>, "service/update_endpoint");

impl Op for UpdateEndpoint {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        let endpoint = self.endpoint?;
        service
            .ctx
            .ask_account(caller.id, |reply| AccountMsg::UpdateEndpoint {
                endpoint: endpoint.clone(),
                reply,
            })
            .await
    }
}

served_by!(UpdateEndpoint, |op, shards| Some(username_shard(
    shards,
    &op.credentials.username
)));

/// Deletes an account with its cascade (the account itself, or an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteAccount {
    /// Who asks.
    pub credentials: Credentials,
    /// The account (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(DeleteAccount => Result<WriteResult, ServiceError>, "service/delete_account");

impl Op for DeleteAccount {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        access::delete_account(&caller, self.id)?;
        let Some(id) = self.id else {
            return Ok(WriteResult::skipped());
        };
        // An account deleting itself is on this node; an admin's target may not be.
        service.ask(DeleteAccountById(id)).await
    }
}

served_by!(DeleteAccount, |op, shards| Some(username_shard(
    shards,
    &op.credentials.username
)));

/// Deletes an account by id, once the caller was allowed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeleteAccountById(Uuid);

rpc!(DeleteAccountById => Result<WriteResult, ServiceError>, "service/delete_account_by_id");

impl Op for DeleteAccountById {
    async fn run(self, service: Service) -> Self::Answer {
        let id = self.0;
        if service
            .ctx
            .store
            .run(move |s| s.account(&id))
            .await?
            .is_none()
        {
            return Ok(WriteResult::skipped());
        }
        service
            .ctx
            .ask_account(self.0, |reply| AccountMsg::Delete { reply })
            .await
    }
}

served_by!(DeleteAccountById, |op, shards| id_shard(
    shards,
    Some(&op.0)
));

/// Resets a key of the account named `username` and sends it to the account's endpoint.
/// The API key reset needs no credentials: the new key goes to the registered endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetKey {
    /// The account.
    pub username: String,
    /// Which key.
    pub kind: KeyKind,
}

rpc!(ResetKey => Result<(), ServiceError>, "service/reset_key");

impl Op for ResetKey {
    async fn run(self, service: Service) -> Self::Answer {
        let username = self.username;
        let account = service
            .ctx
            .store
            .run(move |s| s.account_by_username(&username))
            .await?
            .ok_or(ServiceError::NotFound(msg::USERNAME_NOT_FOUND.into()))?;
        let kind = self.kind;
        service
            .ctx
            .ask_account(account.id, |reply| AccountMsg::ResetKey { kind, reply })
            .await
    }
}

served_by!(ResetKey, |op, shards| Some(username_shard(
    shards,
    &op.username
)));

/// Resets the caller's secret key (authenticated, unlike the API key reset).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetSecretKey(pub Credentials);

rpc!(ResetSecretKey => Result<(), ServiceError>, "service/reset_secret_key");

impl Op for ResetSecretKey {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.0).await?;
        let reset = ResetKey {
            username: caller.username,
            kind: KeyKind::SecretKey,
        };
        reset.run(service).await
    }
}

served_by!(ResetSecretKey, |op, shards| Some(username_shard(
    shards,
    &op.0.username
)));

/// Deletes the non-admin accounts of the shards the node serves (replicated: the groups
/// it leads), each with its cascade; answers how many. Asked
/// of every node ([`Service::ask_everywhere`]) by the admin's bulk delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteLocalAccounts;

rpc!(DeleteLocalAccounts => Result<u64, ServiceError>, "service/delete_local_accounts");

impl Op for DeleteLocalAccounts {
    async fn run(self, service: Service) -> Self::Answer {
        let mut deleted = 0;
        for (id, is_admin) in service.ctx.store.run(|s| s.account_ids()).await? {
            if !is_admin && service.ctx.cluster.serves_id(&id) {
                let result = service
                    .ctx
                    .ask_account(id, |reply| AccountMsg::Delete { reply })
                    .await?;
                deleted += result.deleted;
            }
        }
        Ok(deleted)
    }
}
