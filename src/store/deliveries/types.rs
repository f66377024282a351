//! The delivery store's types: a delivery's record and state, what a fan-out step and a
//! handed-over batch create, the entries that schedule attempts, and their outcomes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::keys::{read_u64, read_uuid, record_key};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt got a 2xx.
    Succeeded,
    /// Every scheduled attempt failed.
    Failed,
    /// Not attempted: the subscriber's `failed_count` had reached the limit.
    Skipped,
    /// Ended because the subscription or the subscriber account was deleted.
    Cancelled,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (Unix µs).
    pub at_us: u64,
    /// The endpoint's status code, when it answered.
    pub status: Option<u16>,
    /// Why it failed without a status (or with a non-2xx one).
    pub error: Option<String>,
    /// How long it took (µs).
    pub duration_us: u64,
    /// The start of the endpoint's response body (lossy UTF-8), when it answered and
    /// `delivery.response_capture_bytes` is not 0.
    pub response_body: Option<String>,
}

/// One subscriber's delivery of one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Deterministic id (the `webhook-id` header), the same on every retry.
    pub id: Uuid,
    /// The trigger.
    pub triggered_id: Uuid,
    /// The triggered registration.
    pub registration_id: Uuid,
    /// The subscription it serves.
    pub subscription_id: Uuid,
    /// Creation time of that subscription (orders a trigger's deliveries).
    pub subscription_epoch_us: u64,
    /// The subscriber.
    pub account_id: Uuid,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending only).
    pub next_attempt_us: Option<u64>,
    /// When it reached a final state.
    pub finished_us: Option<u64>,
}

/// Counts of a trigger's deliveries by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Waiting for an attempt.
    pub pending: u64,
    /// Delivered.
    pub succeeded: u64,
    /// Gave up.
    pub failed: u64,
    /// Not attempted (failed_count limit).
    pub skipped: u64,
    /// Ended by a deletion.
    pub cancelled: u64,
}

/// A fan-out in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutCursor {
    /// The registration being fanned out.
    pub registration_id: Uuid,
    /// Last `subscriptions_by_registration` key already handed over.
    pub after: Option<Vec<u8>>,
}

/// The fan-out side of [`Store::prepare_step`](crate::store::Store::prepare_step): where
/// the cursor moves and what other nodes must receive.
#[derive(Debug, Clone, Default)]
pub struct FanoutStep {
    /// Last subscription index key handed over.
    pub after: Option<Vec<u8>>,
    /// True when no subscription remains.
    pub finished: bool,
    /// Batches for subscribers owned by other nodes, by node id.
    pub handoffs: Vec<(String, Vec<NewDelivery>)>,
    /// [`Store::subscription_deletions`](crate::store::Store::subscription_deletions)
    /// before the step read its subscriptions.
    pub subscriptions_read_at: u64,
}

/// A fan-out batch waiting for the node that owns its subscribers.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// Its key (to remove it once handed over).
    pub key: Vec<u8>,
    /// The trigger.
    pub triggered: Uuid,
    /// The subscribers to serve.
    pub items: Vec<NewDelivery>,
}

/// A delivery to create, from one subscription of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its creation time.
    pub subscription_epoch_us: u64,
    /// The subscriber.
    pub account_id: Uuid,
}

impl NewDelivery {
    /// The key of its record for trigger `triggered`.
    pub(super) fn record_key(&self, triggered: &Uuid) -> Vec<u8> {
        record_key(triggered, self.subscription_epoch_us, &self.subscription_id)
    }
}

impl Delivery {
    /// The key of its record (or the one it would have, when it is in a settled row).
    pub(super) fn record_key(&self) -> Vec<u8> {
        record_key(
            &self.triggered_id,
            self.subscription_epoch_us,
            &self.subscription_id,
        )
    }
}

/// What scheduled an attempt, and so what its outcome removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduled {
    /// An entry of the due queue (a retry or a redelivery): its full key.
    Queue(Vec<u8>),
    /// A pending batch (a first attempt, whose record its outcome creates).
    Batch {
        /// The batch's key.
        key: Vec<u8>,
        /// The triggered registration (for the record).
        registration_id: Uuid,
        /// [`Store::subscription_deletions`](crate::store::Store::subscription_deletions)
        /// before the subscription was read here, when it was (a local fan-out step).
        subscriptions_read_at: Option<u64>,
    },
}

/// An attempt to make: when, which record, and what the attempt needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// What scheduled it.
    pub scheduled: Scheduled,
    /// The record key.
    pub record_key: Vec<u8>,
    /// When it is due (Unix µs).
    pub due_us: u64,
    /// The delivery id (`webhook-id`).
    pub delivery_id: Uuid,
    /// The subscriber.
    pub account_id: Uuid,
    /// Attempts already made.
    pub attempts: u16,
}

impl DueEntry {
    /// The trigger whose delivery this is (`due_entries` checked the key's length).
    pub fn triggered_id(&self) -> Uuid {
        read_uuid(&self.record_key, 1).unwrap_or_default()
    }

    /// The subscription the delivery serves.
    pub fn subscription_id(&self) -> Uuid {
        read_uuid(&self.record_key, 25).unwrap_or_default()
    }

    /// The creation time of that subscription.
    pub fn subscription_epoch_us(&self) -> u64 {
        read_u64(&self.record_key, 17).unwrap_or_default()
    }

    /// The due-queue key of a retry or redelivery.
    pub fn due_key(&self) -> Option<&[u8]> {
        match &self.scheduled {
            Scheduled::Queue(key) => Some(key),
            Scheduled::Batch { .. } => None,
        }
    }

    /// True for a first attempt out of its pending batch (part of the fan-out backlog); a
    /// deferred first attempt made later, from the due queue, is not one.
    pub fn is_first_attempt(&self) -> bool {
        self.attempts == 0 && self.due_key().is_none()
    }

    /// The record of a delivery not attempted yet (what its first outcome starts from).
    pub(super) fn first_record(&self, registration_id: Uuid) -> Delivery {
        Delivery {
            id: self.delivery_id,
            triggered_id: self.triggered_id(),
            registration_id,
            subscription_id: self.subscription_id(),
            subscription_epoch_us: self.subscription_epoch_us(),
            account_id: self.account_id,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_us: Some(self.due_us),
            finished_us: None,
        }
    }
}

/// The recorded result of one attempt, to apply in a batch.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The due entry that scheduled this attempt.
    pub due: DueEntry,
    /// The attempt, or `None` when the delivery ended without one (deleted target).
    pub attempt: Option<Attempt>,
    /// The new state.
    pub state: DeliveryState,
    /// The next attempt's due time, when there is one.
    pub next_due_us: Option<u64>,
    /// `failed_count` change for the subscriber.
    pub failed_count: FailedCountChange,
    /// The endpoint answered `410 Gone`: stop deliveries to the subscriber.
    pub gone: bool,
}

/// What an outcome does to the subscriber's `failed_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedCountChange {
    /// Leave it.
    Keep,
    /// +1 (a failed attempt).
    Increment,
    /// 0 (a success).
    Reset,
}

/// The deterministic delivery id of (trigger, subscription).
pub(super) fn delivery_id(triggered: &Uuid, subscription: &Uuid) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(triggered.as_bytes());
    h.update(subscription.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_deterministic() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(delivery_id(&a, &b), delivery_id(&a, &b));
        assert_ne!(delivery_id(&a, &b), delivery_id(&b, &a));
    }
}
