//! The RegistrationActor: the one writer of a registration and of the subscriptions to it.
//!
//! Subscribing, unsubscribing, patching, deleting (with its subscriptions) and triggering a
//! registration all pass through its actor, so a subscribe can never race with the delete
//! that would orphan it.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, SpawnErr};
use ractor_cluster::RactorMessage;
use uuid::Uuid;

use super::fanout::{self, run_fanout, PreparedStep};
use super::{now_us, NodeState, ReplyPort};
use crate::delivery::pyjson::to_python_json;
use crate::domain::access::{self, Access};
use crate::domain::{msg, Caller, ServiceError, WriteResult};
use crate::store::{SubscribeError, Subscription, Triggered};

/// Requests a RegistrationActor serves.
#[derive(RactorMessage)]
pub enum RegistrationMsg {
    /// Change the description (owner or admin); the body is checked after access.
    Patch {
        /// Who asks.
        caller: Caller,
        /// The new description, or the body error to report once access is granted.
        description: Result<String, ServiceError>,
        /// Write result.
        reply: ReplyPort<WriteResult>,
    },
    /// Delete the registration and every subscription to it.
    Delete {
        /// Who asks; `None` for a cascade from the owner's account delete.
        caller: Option<Caller>,
        /// Write result.
        reply: ReplyPort<WriteResult>,
    },
    /// Subscribe `subscriber` (any live account) to this registration.
    Subscribe {
        /// The subscribing account.
        subscriber: Uuid,
        /// The new subscription.
        reply: ReplyPort<Subscription>,
    },
    /// Remove one subscription to this registration (subscriber or admin).
    Unsubscribe {
        /// Who asks.
        caller: Caller,
        /// The subscription.
        subscription: Uuid,
        /// Write result.
        reply: ReplyPort<WriteResult>,
    },
    /// Record a trigger (owner only) and start its fan-out.
    Trigger {
        /// Who asks.
        caller: Caller,
        /// This trigger's payload as JSON text, replacing the registered `event_data`.
        event_data: Option<String>,
        /// An `Idempotency-Key`: a repeat within 24 h returns the first trigger.
        idempotency_key: Option<String>,
        /// The triggered record, and whether it is a replay of an earlier trigger.
        reply: ReplyPort<(Triggered, bool)>,
    },
    /// Timer tick: stop when idle.
    IdleCheck,
}

/// The actor of one registration.
pub struct RegistrationActor {
    ctx: Arc<NodeState>,
    id: Uuid,
}

/// Mutable state between messages.
pub struct RegistrationState {
    last_active: Instant,
}

impl RegistrationActor {
    /// Spawns the actor of registration `id`.
    pub async fn spawn_for(
        ctx: Arc<NodeState>,
        id: Uuid,
    ) -> Result<ActorRef<RegistrationMsg>, SpawnErr> {
        let (actor, _) = Actor::spawn(None, RegistrationActor { ctx, id }, ()).await?;
        Ok(actor)
    }

    async fn patch(
        &self,
        caller: Caller,
        description: Result<String, ServiceError>,
    ) -> Result<WriteResult, ServiceError> {
        let found = self.ctx.store.registration(&self.id)?;
        let access = access::modify(&caller, found.as_ref().map(|r| r.account_id))?;
        let (Access::Granted, Some(mut registration)) = (access, found) else {
            description?;
            return Ok(WriteResult::skipped());
        };
        let description = description?;
        if registration.description == description {
            return Ok(WriteResult::unchanged());
        }
        registration.description = description;
        self.ctx.store.update_registration(&registration)?;
        self.ctx.store.flush().await?;
        Ok(WriteResult::replaced())
    }

    async fn delete(&self, caller: Option<Caller>) -> Result<WriteResult, ServiceError> {
        if let Some(caller) = &caller {
            let found = self.ctx.store.registration(&self.id)?;
            access::modify(caller, found.map(|r| r.account_id))?;
        }
        // The original deletes through a filter: a missing id counts nothing, not skipped.
        let Some(registration) = self.ctx.store.begin_registration_delete(&self.id)? else {
            return Ok(WriteResult::deleted(0));
        };
        self.ctx.store.finish_registration_delete(&registration)?;
        self.ctx.store.flush().await?;
        Ok(WriteResult::deleted(1))
    }

    async fn subscribe(&self, subscriber: Uuid) -> Result<Subscription, ServiceError> {
        let shards = self.ctx.cluster.map();
        let subscription = Subscription {
            id: shards.new_id_in(shards.shard_of_id(&self.id)),
            epoch_us: self.ctx.store.next_epoch_us(),
            account_id: subscriber,
            registration_id: self.id,
        };
        let subscriber_local =
            shards.owner(shards.shard_of_id(&subscriber)) == Some(self.ctx.cluster.node_id());
        match self
            .ctx
            .store
            .insert_subscription(&subscription, subscriber_local)?
        {
            Ok(()) => {}
            Err(SubscribeError::NoRegistration) => {
                return Err(ServiceError::NotFound(
                    msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into(),
                ))
            }
            Err(SubscribeError::NoSubscriber) => {
                return Err(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()))
            }
        }
        self.ctx.store.flush().await?;
        Ok(subscription)
    }

    async fn unsubscribe(
        &self,
        caller: Caller,
        subscription: Uuid,
    ) -> Result<WriteResult, ServiceError> {
        let found = self
            .ctx
            .store
            .subscription(&subscription)?
            .filter(|s| s.registration_id == self.id);
        let access = access::modify(&caller, found.as_ref().map(|s| s.account_id))?;
        let (Access::Granted, Some(s)) = (access, found) else {
            return Ok(WriteResult::skipped());
        };
        self.ctx
            .store
            .delete_subscriptions(std::slice::from_ref(&s))?;
        self.ctx.store.flush().await?;
        Ok(WriteResult::deleted(1))
    }

    async fn trigger(
        &self,
        caller: Caller,
        event_data: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<(Triggered, bool), ServiceError> {
        let registration = self
            .ctx
            .store
            .registration(&self.id)?
            .ok_or(ServiceError::NotFound(
                msg::NO_SUCH_REGISTRATION_TRIGGER.into(),
            ))?;
        access::trigger(&caller, registration.account_id)?;
        if let Some(key) = &idempotency_key {
            if let Some(first) = self.ctx.store.idempotent_trigger(&self.id, key, now_us())? {
                return Ok((first, true));
            }
        }
        let data = event_data.as_deref().unwrap_or(&registration.event_data);
        let value: serde_json::Value = serde_json::from_str(data)
            .map_err(|e| ServiceError::Internal(format!("stored event_data: {e}")))?;
        let shards = self.ctx.cluster.map();
        let triggered = Triggered {
            id: shards.new_id_in(shards.shard_of_id(&self.id)),
            epoch_us: self.ctx.store.next_epoch_us(),
            registration_id: self.id,
            account_id: registration.account_id,
            event: registration.event,
            body: to_python_json(&value),
        };
        // The fan-out's first step is written with the trigger (one commit; a registration
        // of up to FIRST_BATCH subscribers needs no other), unless the node's backlog says
        // fan-outs must wait.
        let first = match fanout::backlog_allows(&self.ctx) {
            true => Some(PreparedStep::read(
                &self.ctx,
                &self.id,
                &triggered.id,
                None,
                fanout::FIRST_BATCH,
            )?),
            false => None,
        };
        let first_writes = first.as_ref().map(|step| &step.deliveries);
        self.ctx
            .store
            .insert_triggered(&triggered, idempotency_key.as_deref(), first_writes)?;
        let flushed = self.ctx.store.flush().await;
        // Written, so delivered even if the flush failed: it lands with the next one.
        let started = first.is_some();
        let more = match first {
            Some(step) => {
                let entries = self.ctx.store.committed_with_trigger(step.deliveries);
                step.outcome.written(&self.ctx, entries)
            }
            None => true,
        };
        if more {
            // Streamed by its own task, so the next trigger is not held up.
            tokio::spawn(run_fanout(self.ctx.clone(), self.id, triggered.id, started));
        }
        flushed?;
        Ok((triggered, false))
    }
}

impl Actor for RegistrationActor {
    type Msg = RegistrationMsg;
    type State = RegistrationState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(self.ctx.settings.idle_stop / 2, || {
            RegistrationMsg::IdleCheck
        });
        Ok(RegistrationState {
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, RegistrationMsg::IdleCheck) {
            state.last_active = Instant::now();
        }
        // A dropped reply port means the caller gave up; nothing to do about it.
        match message {
            RegistrationMsg::Patch {
                caller,
                description,
                reply,
            } => {
                let _ = reply.send(self.patch(caller, description).await);
            }
            RegistrationMsg::Delete { caller, reply } => {
                let result = self.delete(caller).await;
                let gone = matches!(&result, Ok(w) if w.deleted == 1);
                let _ = reply.send(result);
                if gone {
                    // Nothing left to serialise: free the actor now, not when idle.
                    self.ctx.registrations.remove(&self.id, myself.get_id());
                    myself.stop(None);
                }
            }
            RegistrationMsg::Subscribe { subscriber, reply } => {
                let _ = reply.send(self.subscribe(subscriber).await);
            }
            RegistrationMsg::Unsubscribe {
                caller,
                subscription,
                reply,
            } => {
                let _ = reply.send(self.unsubscribe(caller, subscription).await);
            }
            RegistrationMsg::Trigger {
                caller,
                event_data,
                idempotency_key,
                reply,
            } => {
                let result = self.trigger(caller, event_data, idempotency_key).await;
                let _ = reply.send(result);
            }
            RegistrationMsg::IdleCheck => {
                if state.last_active.elapsed() >= self.ctx.settings.idle_stop {
                    self.ctx.registrations.remove(&self.id, myself.get_id());
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }
}
