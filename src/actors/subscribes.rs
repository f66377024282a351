//! Subscribes waiting for their registration's actor, taken by it a batch at a time.
//!
//! Every subscribe to a registration is a write of that registration's actor, so a popular
//! registration's subscribes run one after another. One storage round trip per subscribe
//! would cap them at the round trip's rate (a few thousand a second on a busy machine).
//! Instead, a subscribe queues here, and the caller that finds its registration's queue
//! empty asks the actor to take the queue: the actor applies every subscribe waiting then,
//! in order, in one round trip, and answers each through its own channel, all waiting for
//! one group commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{NodeState, RegistrationMsg, Reply};
use crate::domain::ServiceError;
use crate::store::Subscription;

/// A subscribe waiting for its registration's actor.
pub struct Waiting {
    /// The subscribing account.
    pub subscriber: Uuid,
    /// Where the actor answers.
    pub answer: oneshot::Sender<Reply<Subscription>>,
}

/// The waiting subscribes, by registration.
#[derive(Default)]
pub struct SubscribeQueue {
    waiting: Mutex<HashMap<Uuid, Vec<Waiting>>>,
}

impl SubscribeQueue {
    /// Queues `w`; true when the registration's queue was empty (the caller then asks the
    /// actor to take it).
    fn push(&self, registration: Uuid, w: Waiting) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let queue = waiting.entry(registration).or_default();
        queue.push(w);
        queue.len() == 1
    }

    /// Every subscribe waiting for `registration`, in arrival order.
    pub fn take(&self, registration: &Uuid) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.remove(registration).unwrap_or_default()
    }
}

impl NodeState {
    /// Subscribes `subscriber` to `registration` through the registration's actor;
    /// answers once the subscription is committed.
    pub async fn subscribe(
        self: &Arc<Self>,
        registration: Uuid,
        subscriber: Uuid,
    ) -> Result<Subscription, ServiceError> {
        let (answer, answered) = oneshot::channel();
        if self
            .subscribes
            .push(registration, Waiting { subscriber, answer })
        {
            // A task of its own: were the caller cancelled before the actor was asked, the
            // queue would wait for good.
            let ctx = self.clone();
            tokio::spawn(async move {
                let asked = ctx
                    .ask_registration(registration, |reply| RegistrationMsg::Subscribe { reply })
                    .await;
                if let Err(e) = asked {
                    for w in ctx.subscribes.take(&registration) {
                        let _ = w.answer.send(Reply::failed(e.clone()));
                    }
                }
            });
        }
        answered
            .await
            .map_err(|_| ServiceError::Internal("a subscribe was dropped unanswered".into()))?
            .committed()
            .await
    }
}
