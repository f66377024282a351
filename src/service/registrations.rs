//! Registration operations: create, list the caller's own, patch, delete (one or all).
//!
//! A registration lives on its own shard, minted in its owner's shard at creation; its
//! actor decides every change, and [`crate::domain::access`] who may make it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::served_by;
use super::{id_shard, username_shard, Op, Service};
use crate::actors::{AccountMsg, RegistrationMsg};
use crate::cluster::rpc;
use crate::domain::access;
use crate::domain::{Caller, Credentials, ServiceError, WriteResult};
use crate::store::{Page, PageRequest, Registration};

pub(super) fn serve(service: &Service) {
    service.serve_owned::<CreateRegistration, _>();
    service.serve_owned::<ListOwnRegistrations, _>();
    service.serve_owned::<PatchRegistration, _>();
    service.serve_owned::<DeleteRegistration, _>();
    service.serve::<DeleteLocalRegistrations>();
}

/// The fields of a new registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRegistration {
    /// Event name.
    pub event: String,
    /// Description.
    pub description: String,
    /// Payload, JSON text.
    pub event_data: String,
}

/// Registers a webhook owned by the caller (its registrations live on its shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRegistration {
    /// Who asks.
    pub credentials: Credentials,
    /// The registration, or the body's error, reported once the caller is authenticated.
    pub registration: Result<NewRegistration, ServiceError>,
}

rpc!(CreateRegistration => Result<Registration, ServiceError>, "service/create_registration");

impl Op for CreateRegistration {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        let NewRegistration {
            event,
            description,
            event_data,
        } = self.registration?;
        service
            .ctx
            .ask_account(caller.id, |reply| AccountMsg::CreateRegistration {
                event: event.clone(),
                description: description.clone(),
                event_data: event_data.clone(),
                reply,
            })
            .await
    }
}

served_by!(CreateRegistration, |op, shards| Some(username_shard(
    shards,
    &op.credentials.username
)));

/// A page of the caller's registrations (they live on the caller's shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOwnRegistrations {
    /// Who asks.
    pub credentials: Credentials,
    /// Which page, or the paging error, reported once the caller is authenticated.
    pub page: Result<PageRequest, ServiceError>,
}

rpc!(ListOwnRegistrations => Result<Page<Registration>, ServiceError>, "service/list_own_registrations");

impl Op for ListOwnRegistrations {
    async fn run(self, service: Service) -> Self::Answer {
        let caller = service.authenticate_here(&self.credentials).await?;
        let page = self.page?;
        Ok(service
            .ctx
            .store
            .run(move |s| s.list_account_registrations(&caller.id, page))
            .await?)
    }
}

served_by!(ListOwnRegistrations, read, |op, shards| Some(
    username_shard(shards, &op.credentials.username)
));

/// Changes a registration's description (owner or admin; access is checked before the
/// body, so a body error travels with the request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchRegistration {
    /// Who asks.
    pub caller: Caller,
    /// Which (`None`: not a valid id).
    pub id: Option<Uuid>,
    /// The description, or the body error to report once access is granted.
    pub description: Result<String, ServiceError>,
}

rpc!(PatchRegistration => Result<WriteResult, ServiceError>, "service/patch_registration");

impl Op for PatchRegistration {
    async fn run(self, service: Service) -> Self::Answer {
        let Self {
            caller,
            id,
            description,
        } = self;
        // No actor for a record that does not exist (it would linger until idle).
        let Some(id) = service.existing_registration(id).await else {
            access::modify(&caller, None)?;
            description?;
            return Ok(WriteResult::skipped());
        };
        service
            .ctx
            .ask_registration(id, |reply| RegistrationMsg::Patch {
                caller: caller.clone(),
                description: description.clone(),
                reply,
            })
            .await
    }
}

served_by!(PatchRegistration, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// Deletes a registration and its subscriptions (owner or admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRegistration {
    /// Who asks.
    pub caller: Caller,
    /// Which (`None`: not a valid id).
    pub id: Option<Uuid>,
}

rpc!(DeleteRegistration => Result<WriteResult, ServiceError>, "service/delete_registration");

impl Op for DeleteRegistration {
    async fn run(self, service: Service) -> Self::Answer {
        let Self { caller, id } = self;
        let Some(id) = service.existing_registration(id).await else {
            // The original deleted through a filter: a missing id counts nothing.
            access::modify(&caller, None)?;
            return Ok(WriteResult::deleted(0));
        };
        service
            .ctx
            .ask_registration(id, |reply| RegistrationMsg::Delete {
                caller: Some(caller.clone()),
                reply,
            })
            .await
    }
}

served_by!(DeleteRegistration, |op, shards| id_shard(
    shards,
    op.id.as_ref()
));

/// Deletes the registrations of the shards the node serves (replicated: the groups it
/// leads), with their subscriptions; answers how many. Asked of
/// every node by the admin's bulk delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteLocalRegistrations;

rpc!(DeleteLocalRegistrations => Result<u64, ServiceError>, "service/delete_local_registrations");

impl Op for DeleteLocalRegistrations {
    async fn run(self, service: Service) -> Self::Answer {
        let mut deleted = 0;
        for id in service.ctx.store.run(|s| s.registration_ids()).await? {
            if !service.ctx.cluster.serves_id(&id) {
                continue;
            }
            let result = service
                .ctx
                .ask_registration(id, |reply| RegistrationMsg::Delete {
                    caller: None,
                    reply,
                })
                .await?;
            deleted += result.deleted;
        }
        Ok(deleted)
    }
}
