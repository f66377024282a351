//! The node-to-node protocol: commands a node asks of the owner of a shard, and answers.
//!
//! Encoded with bincode 2 (serde mode) behind a version number, so a node that receives a
//! message of another protocol version refuses it with a clear error instead of
//! misreading it. `event_data` travels as JSON text (bincode cannot carry
//! `serde_json::Value`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::service::{Caller, NewAccount, ServiceError, WriteResult};
use crate::store::{
    Account, Delivery, DeliveryCounts, KeyKind, NewDelivery, Page, PageRequest, Registration,
    Subscription, Triggered,
};

/// Version of this protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// A request to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Heartbeat; carries the sender's (shards, members) digest.
    Ping {
        /// Sender's node id.
        from: String,
        /// Sender's digest.
        digest: u64,
    },
    /// Authenticate `username` with `api_key` (the username's shard owner checks).
    Authenticate {
        /// `api-key` header.
        api_key: String,
        /// `username` header.
        username: String,
    },
    /// Create an account (username's shard).
    CreateAccount {
        /// Username.
        username: String,
        /// Endpoint.
        endpoint: String,
    },
    /// Read an account (its shard).
    GetAccount {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
    },
    /// Change the caller's endpoint.
    UpdateEndpoint {
        /// Who asks.
        caller: Caller,
        /// The new endpoint.
        endpoint: String,
    },
    /// Delete an account with its cascade.
    DeleteAccount {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
    },
    /// Reset a key of the account named `username`.
    ResetKey {
        /// The account.
        username: String,
        /// Which key.
        kind: KeyKind,
    },
    /// Create a registration for the caller.
    CreateRegistration {
        /// The owner.
        caller: Caller,
        /// Event name.
        event: String,
        /// Description.
        description: String,
        /// Payload, JSON text.
        event_data: String,
    },
    /// The caller's registrations.
    ListOwnRegistrations {
        /// The owner.
        caller: Caller,
        /// Page.
        req: PageRequest,
    },
    /// Patch a registration's description.
    PatchRegistration {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
        /// The description, or the body error to report after access.
        description: Result<String, ServiceError>,
    },
    /// Delete a registration with its subscriptions.
    DeleteRegistration {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
    },
    /// Subscribe the caller.
    Subscribe {
        /// The subscriber.
        caller: Caller,
        /// The registration.
        registration: Uuid,
    },
    /// Remove a subscription.
    DeleteSubscription {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
    },
    /// Trigger a registration.
    Trigger {
        /// Who asks.
        caller: Caller,
        /// The registration.
        registration: Uuid,
        /// Payload override, JSON text.
        event_data: Option<String>,
        /// `Idempotency-Key`.
        idempotency_key: Option<String>,
    },
    /// A trigger the caller may inspect, and whether its fan-out finished.
    GetTrigger {
        /// Who asks.
        caller: Caller,
        /// Which.
        id: Uuid,
    },
    /// The first `limit` rows of one of this node's tables (for global pages).
    LocalRows {
        /// Which rows.
        table: Table,
        /// How many at most.
        limit: u64,
    },
    /// Delete this node's non-admin accounts (with cascades).
    DeleteLocalAccounts,
    /// Delete this node's registrations (with their subscriptions).
    DeleteLocalRegistrations,
    /// Delete this node's subscriptions.
    DeleteLocalSubscriptions,
    /// Delete this node's subscriptions held by `account` (an account cascade).
    DeleteSubscriptionsOf {
        /// The deleted subscriber.
        account: Uuid,
    },
    /// Counts of this node's deliveries of a trigger.
    DeliveryCounts {
        /// The trigger.
        triggered: Uuid,
    },
    /// Re-queue this node's failed deliveries of a trigger.
    Requeue {
        /// The trigger.
        triggered: Uuid,
    },
    /// Persist the deliveries of a fan-out batch (subscribers owned by this node).
    AcceptDeliveries {
        /// The trigger (body and event included).
        triggered: Triggered,
        /// The subscriptions to serve.
        items: Vec<NewDelivery>,
    },
    /// Does this subscription still exist?
    SubscriptionExists {
        /// Which.
        id: Uuid,
    },
}

/// Rows a global listing merges from every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// Accounts.
    Accounts,
    /// Registrations.
    Registrations,
    /// Subscriptions, optionally only those of one subscriber.
    Subscriptions(Option<Uuid>),
    /// Triggered records.
    Triggered,
    /// Deliveries of one trigger.
    Deliveries(Uuid),
}

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// To `Ping`.
    Pong {
        /// The answering node's digest.
        digest: u64,
    },
    /// An authenticated caller.
    Caller(Caller),
    /// A created account with its plaintext key.
    NewAccount(NewAccount),
    /// An account.
    Account(Account),
    /// A write result.
    Write(WriteResult),
    /// Nothing to return.
    Done,
    /// A registration.
    Registration(Registration),
    /// A page of registrations.
    Registrations(Page<Registration>),
    /// A subscription.
    Subscription(Subscription),
    /// A trigger and whether it is a replay / its fan-out finished.
    Triggered(Triggered, bool),
    /// Rows of a table.
    Rows(Rows),
    /// A count.
    Count(u64),
    /// Delivery counts.
    Counts(DeliveryCounts),
    /// Yes or no.
    Bool(bool),
}

/// Rows of one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rows {
    /// Accounts.
    Accounts(Vec<Account>),
    /// Registrations.
    Registrations(Vec<Registration>),
    /// Subscriptions.
    Subscriptions(Vec<Subscription>),
    /// Triggered records.
    Triggered(Vec<Triggered>),
    /// Deliveries.
    Deliveries(Vec<Delivery>),
}

/// The answer to a command.
pub type Reply = Result<Answer, ServiceError>;

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Sent by a node speaking another protocol version.
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// Corrupt or unknown content.
    #[error("undecodable message: {0}")]
    Decode(String),
}

/// Encodes a message with the protocol version in front.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = PROTOCOL_VERSION.to_be_bytes().to_vec();
    // Encoding plain data structures into a Vec cannot fail; an empty body would be
    // refused by the receiver rather than misread.
    if let Ok(body) = bincode::serde::encode_to_vec(message, bincode::config::standard()) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a message, checking its protocol version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let (version, body) = bytes
        .split_at_checked(2)
        .ok_or_else(|| ProtocolError::Decode("short message".into()))?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| ProtocolError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let caller = Caller {
            id: Uuid::new_v4(),
            username: "u".into(),
            is_admin: false,
        };
        let cmd = Command::PatchRegistration {
            caller,
            id: Uuid::new_v4(),
            description: Err(ServiceError::BadRequest("Description field missing".into())),
        };
        let back: Command = decode(&encode(&cmd)).unwrap();
        assert_eq!(format!("{cmd:?}"), format!("{back:?}"));
    }

    #[test]
    fn replies_carry_service_errors() {
        let reply: Reply = Err(ServiceError::Unauthorized("Not authorized".into()));
        let back: Reply = decode(&encode(&reply)).unwrap();
        assert!(matches!(back, Err(ServiceError::Unauthorized(m)) if m == "Not authorized"));
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut bytes = encode(&Command::DeleteLocalAccounts);
        bytes[1] ^= 0xff;
        assert!(matches!(
            decode::<Command>(&bytes),
            Err(ProtocolError::Version(_))
        ));
        assert!(decode::<Command>(&[0]).is_err());
        assert!(decode::<Command>(&[0, 1, 200, 200, 200]).is_err());
    }
}
