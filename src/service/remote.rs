//! The node's side of the cluster protocol: executing a peer's [`Command`] with the node's
//! own operations, and broadcasting a command to every peer.

use super::{Node, ServiceError};
use crate::cluster::protocol::{Answer, Command, Reply};
use crate::store::PageRequest;

/// The error for an answer of the wrong kind (a protocol bug).
pub fn unexpected(answer: Answer) -> ServiceError {
    ServiceError::Internal(format!("unexpected answer from a peer: {answer:?}"))
}

impl Node {
    /// Sends `command` to every peer; 503 as soon as one is unavailable.
    pub(super) async fn broadcast(&self, command: &Command) -> Result<Vec<Answer>, ServiceError> {
        let cluster = &self.ctx.cluster;
        let mut answers = Vec::with_capacity(cluster.peers().len());
        for peer in cluster.peers() {
            answers.push(cluster.call(peer, command).await?);
        }
        Ok(answers)
    }

    /// Broadcasts a command answered with counts, and sums them.
    pub(super) async fn broadcast_count(&self, command: &Command) -> Result<u64, ServiceError> {
        let mut total = 0;
        for answer in self.broadcast(command).await? {
            match answer {
                Answer::Count(n) => total += n,
                other => return Err(unexpected(other)),
            }
        }
        Ok(total)
    }

    /// Executes a command received from a peer.
    pub async fn execute(&self, command: Command) -> Reply {
        match command {
            Command::Ping { from, digest } => self.ctx.cluster.pong(&from, digest),
            Command::Authenticate { api_key, username } => self
                .authenticate(Some(&api_key), Some(&username))
                .await
                .map(Answer::Caller),
            Command::CreateAccount { username, endpoint } => self
                .create_account(username, endpoint)
                .await
                .map(Answer::NewAccount),
            Command::GetAccount { caller, id } => self
                .get_account(&caller, Some(id))
                .await
                .map(Answer::Account),
            Command::UpdateEndpoint { caller, endpoint } => self
                .update_endpoint(&caller, endpoint)
                .await
                .map(Answer::Write),
            Command::DeleteAccount { caller, id } => self
                .delete_account(&caller, Some(id))
                .await
                .map(Answer::Write),
            Command::ResetKey { username, kind } => {
                self.reset_key(&username, kind).await.map(|()| Answer::Done)
            }
            Command::CreateRegistration {
                caller,
                event,
                description,
                event_data,
            } => self
                .create_registration(&caller, event, description, event_data)
                .await
                .map(Answer::Registration),
            Command::ListOwnRegistrations { caller, req } => self
                .list_own_registrations(&caller, req)
                .await
                .map(Answer::Registrations),
            Command::PatchRegistration {
                caller,
                id,
                description,
            } => self
                .patch_registration(&caller, Some(id), description)
                .await
                .map(Answer::Write),
            Command::DeleteRegistration { caller, id } => self
                .delete_registration(&caller, Some(id))
                .await
                .map(Answer::Write),
            Command::Subscribe {
                caller,
                registration,
            } => self
                .subscribe(&caller, Some(registration))
                .await
                .map(Answer::Subscription),
            Command::DeleteSubscription { caller, id } => self
                .delete_subscription(&caller, Some(id))
                .await
                .map(Answer::Write),
            Command::Trigger {
                caller,
                registration,
                event_data,
                idempotency_key,
            } => self
                .trigger(&caller, Some(registration), event_data, idempotency_key)
                .await
                .map(|(t, replayed)| Answer::Triggered(t, replayed)),
            Command::GetTrigger { caller, id } => self
                .visible_trigger(&caller, Some(id))
                .await
                .map(|(t, done)| Answer::Triggered(t, done)),
            Command::LocalRows { table, limit } => self
                .local_rows(table, PageRequest { start: 0, limit })
                .map(Answer::Rows),
            Command::DeleteLocalAccounts => self.local_delete_accounts().await.map(Answer::Count),
            Command::DeleteLocalRegistrations => {
                self.local_delete_registrations().await.map(Answer::Count)
            }
            Command::DeleteLocalSubscriptions => {
                self.local_delete_subscriptions().await.map(Answer::Count)
            }
            Command::DeleteSubscriptionsOf { account } => {
                let n = self
                    .ctx
                    .store
                    .delete_subscriptions_of_subscriber(&account)?;
                self.ctx.store.flush().await?;
                Ok(Answer::Count(n))
            }
            Command::DeliveryCounts { triggered } => {
                Ok(Answer::Counts(self.ctx.store.delivery_counts(&triggered)?))
            }
            Command::Requeue { triggered } => {
                self.local_requeue(&triggered).await.map(Answer::Count)
            }
            Command::AcceptDeliveries { triggered, items } => {
                let created = crate::actors::accept_remote_batch(&self.ctx, &triggered, &items)?;
                self.ctx.store.flush().await?;
                Ok(Answer::Count(created))
            }
            Command::SubscriptionExists { id } => {
                Ok(Answer::Bool(self.ctx.store.subscription(&id)?.is_some()))
            }
        }
    }
}
