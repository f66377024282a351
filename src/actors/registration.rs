//! The RegistrationActor: the one writer of a registration and of the subscriptions to it.
//!
//! Subscribing, unsubscribing, patching, deleting (with its subscriptions) and triggering a
//! registration all pass through its actor, so a subscribe can never race with the delete
//! that would orphan it.
//!
//! Its storage work runs on the storage threads, awaited, one round trip per message
//! (subscribes: per batch, see [`super::subscribes`]); its replies carry the commit their
//! caller waits for (see [`super::reply`]).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, SpawnErr};
use ractor_cluster::RactorMessage;
use uuid::Uuid;

use super::subscribes::Waiting;
use super::trigger;
use super::{NodeState, Reply, ReplyPort, Written};
use crate::cluster::ShardId;
use crate::domain::access::{self, Access};
use crate::domain::{msg, Caller, ServiceError, WriteResult};
use crate::store::{RecordWrite, SubscribeError, Subscription, Triggered, WriteOutcome};

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
    /// Subscribe every account waiting in the node's queue for this registration (see
    /// [`NodeState::subscribe`]); each is answered through its own channel.
    Subscribe {
        /// Answered once the batch is written.
        reply: ReplyPort<()>,
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
    /// The registration's shard.
    fn shard(&self) -> ShardId {
        self.ctx.cluster.map().shard_of_id(&self.id)
    }

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
        written: &mut Written,
    ) -> Result<WriteResult, ServiceError> {
        let id = self.id;
        let found = self.ctx.store.run(move |s| s.registration(&id)).await?;
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
        self.ctx
            .records
            .write_one(
                self.shard(),
                RecordWrite::UpdateRegistration(registration),
                written,
            )
            .await?;
        Ok(WriteResult::replaced())
    }

    async fn delete(
        &self,
        caller: Option<Caller>,
        written: &mut Written,
    ) -> Result<WriteResult, ServiceError> {
        let id = self.id;
        if let Some(caller) = &caller {
            let found = self.ctx.store.run(move |s| s.registration(&id)).await?;
            access::modify(caller, found.map(|r| r.account_id))?;
        }
        let records = &self.ctx.records;
        let begun = records
            .write_one(
                self.shard(),
                RecordWrite::BeginRegistrationDelete(id),
                written,
            )
            .await?;
        // The original deletes through a filter: a missing id counts nothing, not skipped.
        let WriteOutcome::RegistrationDeleting(Some(registration)) = begun else {
            return Ok(WriteResult::deleted(0));
        };
        records
            .write_one(
                self.shard(),
                RecordWrite::FinishRegistrationDelete(registration),
                written,
            )
            .await?;
        Ok(WriteResult::deleted(1))
    }

    /// Writes the waiting subscribes, in order, in one storage round trip, and answers
    /// each once the batch is committed.
    async fn subscribe(&self, waiting: Vec<Waiting>) {
        if waiting.is_empty() {
            return;
        }
        let cluster = &self.ctx.cluster;
        let shards = cluster.map();
        let shard = self.shard();
        let rows: Vec<(Subscription, bool)> = waiting
            .iter()
            .map(|w| {
                let row = Subscription {
                    id: shards.new_id_in(shard),
                    epoch_us: self.ctx.store.next_epoch_us(),
                    account_id: w.subscriber,
                    registration_id: self.id,
                };
                let subscriber = shards.shard_of_id(&w.subscriber);
                let together = self.ctx.records.stored_together(cluster, shard, subscriber);
                (row, together)
            })
            .collect();
        let mut written = Written::default();
        let write = RecordWrite::InsertSubscriptions(rows.clone());
        let inserted = match self.ctx.records.write_one(shard, write, &mut written).await {
            Ok(WriteOutcome::Subscribed(results)) if results.len() == rows.len() => {
                rows.into_iter().zip(results).collect::<Vec<_>>()
            }
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => ServiceError::Internal("subscribes answered out of shape".into()),
                };
                for w in waiting {
                    let _ = w.answer.send(Reply::failed(e.clone()));
                }
                return;
            }
        };
        for (w, ((row, _), result)) in waiting.into_iter().zip(inserted) {
            let result = match result {
                Ok(()) => Ok(row),
                Err(SubscribeError::NoRegistration) => Err(ServiceError::NotFound(
                    msg::NO_SUCH_REGISTRATION_SUBSCRIBE.into(),
                )),
                Err(SubscribeError::NoSubscriber) => {
                    Err(ServiceError::Unauthorized(msg::UNKNOWN_USERNAME.into()))
                }
            };
            let _ = w.answer.send(written.shared_reply(result));
        }
    }

    async fn unsubscribe(
        &self,
        caller: Caller,
        subscription: Uuid,
        written: &mut Written,
    ) -> Result<WriteResult, ServiceError> {
        let id = self.id;
        let found = self
            .ctx
            .store
            .run(move |s| s.subscription(&subscription))
            .await?
            .filter(|s| s.registration_id == id);
        let access = access::modify(&caller, found.as_ref().map(|s| s.account_id))?;
        let (Access::Granted, Some(s)) = (access, found) else {
            return Ok(WriteResult::skipped());
        };
        let write = RecordWrite::DeleteSubscriptions(vec![s]);
        self.ctx
            .records
            .write_one(self.shard(), write, written)
            .await?;
        Ok(WriteResult::deleted(1))
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
                let mut written = Written::default();
                let result = self.patch(caller, description, &mut written).await;
                let _ = reply.send(written.reply(result));
            }
            RegistrationMsg::Delete { caller, reply } => {
                let mut written = Written::default();
                let result = self.delete(caller, &mut written).await;
                let gone = matches!(&result, Ok(w) if w.deleted == 1);
                let _ = reply.send(written.reply(result));
                if gone {
                    // Nothing left to serialise: free the actor now, not when idle.
                    self.ctx.registrations.remove(&self.id, myself.get_id());
                    myself.stop(None);
                }
            }
            RegistrationMsg::Subscribe { reply } => {
                let waiting = self.ctx.subscribes.take(&self.id);
                self.subscribe(waiting).await;
                let _ = reply.send(Written::default().reply(Ok(())));
            }
            RegistrationMsg::Unsubscribe {
                caller,
                subscription,
                reply,
            } => {
                let mut written = Written::default();
                let result = self.unsubscribe(caller, subscription, &mut written).await;
                let _ = reply.send(written.reply(result));
            }
            RegistrationMsg::Trigger {
                caller,
                event_data,
                idempotency_key,
                reply,
            } => {
                let mut written = Written::default();
                let result = trigger::trigger(
                    &self.ctx,
                    self.id,
                    caller,
                    event_data,
                    idempotency_key,
                    &mut written,
                )
                .await;
                let _ = reply.send(written.reply(result));
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
