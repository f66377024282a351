//! A directory of keyed actors: one live actor per record id, spawned on first use.
//!
//! Actors stop themselves when idle and leave the directory; a caller that raced with such
//! a stop sees its message dropped and simply asks again, reaching a fresh actor.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef, Message, RpcReplyPort};
use uuid::Uuid;

use crate::domain::ServiceError;

/// How often a call is retried when its actor stopped under it.
const ATTEMPTS: usize = 3;

/// Upper bound of one actor call; an actor call includes at most one outbound HTTP request
/// (bounded by `http_client.timeout_secs`) plus local storage work.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Live actors of one kind, by record id.
pub struct Directory<M: Message> {
    kind: &'static str,
    entries: Mutex<HashMap<Uuid, ActorRef<M>>>,
    spawn_lock: tokio::sync::Mutex<()>,
}

impl<M: Message> Directory<M> {
    /// An empty directory; `kind` names the actors in logs and errors.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            entries: Mutex::new(HashMap::new()),
            spawn_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lookup(&self, id: &Uuid) -> Option<ActorRef<M>> {
        self.entries.lock().ok()?.get(id).cloned()
    }

    /// Forgets `id` if it still maps to the actor `actor` (called by a stopping actor).
    pub fn remove(&self, id: &Uuid, actor: ActorId) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.get(id).is_some_and(|a| a.get_id() == actor) {
                entries.remove(id);
            }
        }
    }

    /// True when `id` has a live actor.
    pub fn is_live(&self, id: &Uuid) -> bool {
        self.lookup(id).is_some()
    }

    /// Number of live actors.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live actor (for shutdown).
    pub fn all(&self) -> Vec<ActorRef<M>> {
        self.entries
            .lock()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The actor for `id`, spawning it with `spawn` when none is live.
    async fn get_or_spawn<F, Fut>(&self, id: Uuid, spawn: &F) -> Result<ActorRef<M>, ServiceError>
    where
        F: Fn(Uuid) -> Fut,
        Fut: Future<Output = Result<ActorRef<M>, ractor::SpawnErr>>,
    {
        if let Some(actor) = self.lookup(&id) {
            return Ok(actor);
        }
        // One spawner at a time, so two callers never create two actors for one record.
        let _guard = self.spawn_lock.lock().await;
        if let Some(actor) = self.lookup(&id) {
            return Ok(actor);
        }
        let actor = spawn(id)
            .await
            .map_err(|e| ServiceError::Internal(format!("spawning {} actor: {e}", self.kind)))?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(id, actor.clone());
        }
        Ok(actor)
    }

    /// Sends the message built by `build` to `id`'s actor and waits for the reply.
    pub async fn ask<T, B, F, Fut>(&self, id: Uuid, spawn: F, build: B) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        B: Fn(RpcReplyPort<T>) -> M,
        F: Fn(Uuid) -> Fut,
        Fut: Future<Output = Result<ActorRef<M>, ractor::SpawnErr>>,
    {
        for _ in 0..ATTEMPTS {
            let actor = self.get_or_spawn(id, &spawn).await?;
            match actor.call(&build, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(reply)) => return Ok(reply),
                Ok(CallResult::Timeout) => {
                    return Err(ServiceError::Internal(format!(
                        "{} actor {id} did not answer in time",
                        self.kind
                    )))
                }
                // The actor stopped (idle, or failed) before answering: forget it, try anew.
                Ok(CallResult::SenderError) | Err(_) => self.remove(&id, actor.get_id()),
            }
        }
        Err(ServiceError::Internal(format!(
            "{} actor {id} kept stopping",
            self.kind
        )))
    }
}
