//! The persisted records and their encoding.
//!
//! Records are stored as a version byte followed by their encoding:
//! - version 1, JSON: for accounts, registrations, subscriptions and triggers, because JSON
//!   keeps `event_data` exactly as registered (key order, big numbers);
//! - version 3, bincode: for the records written once or more per delivery (delivery
//!   records, settled rows, pending and handoff batches, fan-out cursors): they are on
//!   the delivery path and need no exact form, and bincode is cheaper to encode and decode;
//! - version 2, bincode, as earlier releases wrote it: the same, except that an attempt of
//!   a delivery had no response fields. bincode is not self-describing, so the version
//!   byte tells the two layouts apart; [`decode_evolved`] reads such a record through its
//!   earlier type.
//!
//! [`decode`] reads every version, so a record's encoding can change without a migration.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, ConflictableTransactionResult};
use uuid::Uuid;

use super::StoreError;

const JSON_VERSION: u8 = 1;
/// bincode, in the layout of the records before attempts kept their response.
const BINCODE_V2: u8 = 2;
const BINCODE_VERSION: u8 = 3;

/// Encodes a record for storage, as JSON.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![JSON_VERSION];
    serde_json::to_writer(&mut out, record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Encodes a hot-path record compactly (bincode). Only for types without
/// `#[serde(default)]`/`skip` fields: bincode is not self-describing.
pub fn encode_compact<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(BINCODE_VERSION);
    bincode::serde::encode_into_std_write(record, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Decodes a stored record, whichever encoding it was written with.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&JSON_VERSION, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some((&(BINCODE_V2 | BINCODE_VERSION), body)) => decode_bincode(body),
        Some((v, _)) => Err(StoreError::Corrupt(format!("unknown record version {v}"))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// Decodes a bincode body that must be used whole.
fn decode_bincode<T: DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    match bincode::serde::decode_from_slice(body, bincode::config::standard()) {
        Ok((record, used)) if used == body.len() => Ok(record),
        Ok(_) => Err(StoreError::Corrupt("trailing bytes after a record".into())),
        Err(e) => Err(StoreError::Corrupt(e.to_string())),
    }
}

/// Decodes a record whose type changed layout since version 2: a version-2 record is read
/// as `Old` and converted with `upgrade`; any other as [`decode`] does.
pub fn decode_evolved<T: DeserializeOwned, Old: DeserializeOwned>(
    bytes: &[u8],
    upgrade: impl FnOnce(Old) -> T,
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&BINCODE_V2, body)) => decode_bincode(body).map(upgrade),
        _ => decode(bytes),
    }
}

/// Decodes inside a transaction, aborting it on corrupt data.
pub(super) fn tx_decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> ConflictableTransactionResult<T, StoreError> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

/// Encodes inside a transaction.
pub(super) fn tx_encode<T: serde::Serialize>(
    record: &T,
) -> ConflictableTransactionResult<Vec<u8>, StoreError> {
    encode(record).map_err(ConflictableTransactionError::Abort)
}

/// Which key a reset replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The API key (stored hashed).
    ApiKey,
    /// The signing secret (stored in plaintext: it is needed for HMAC).
    SecretKey,
}

impl KeyKind {
    /// The query parameter the new key travels in (`?api_key=` / `?secret_key=`).
    pub fn param(self) -> &'static str {
        match self {
            KeyKind::ApiKey => "api_key",
            KeyKind::SecretKey => "secret_key",
        }
    }
}

/// A key reset that has been generated but not yet confirmed by the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingKey {
    /// Which key it replaces.
    pub kind: KeyKind,
    /// The value to commit: the hash for an API key, the plaintext for a secret.
    pub stored_value: String,
    /// When it was generated (Unix µs).
    pub at_us: u64,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Shard-aligned with the username.
    pub id: Uuid,
    /// Creation time, Unix µs (unique per node, so it also orders creations).
    pub epoch_us: u64,
    /// Unique login name.
    pub username: String,
    /// Where echo challenges, key resets and deliveries go (`""` for the admin).
    pub endpoint: String,
    /// Administrators may list and bulk-delete, and bypass ownership checks.
    pub is_admin: bool,
    /// Consecutive failed delivery attempts. The truth lives with the delivery engine's
    /// data (`deliveries` tree, `f` keys) so that delivery outcomes update it in the same
    /// atomic batch without rewriting the account; the store fills this field in on every
    /// read.
    #[serde(default)]
    pub failed_count: u64,
    /// Werkzeug-format PBKDF2 hash of the API key.
    pub api_key_hash: String,
    /// Signing secret, 40 hex.
    pub secret_key: String,
    /// A key reset waiting for the endpoint's confirmation.
    #[serde(default)]
    pub pending_key: Option<PendingKey>,
    /// Times (Unix µs) of the key resets of the last hour, for the rate limit.
    #[serde(default)]
    pub key_resets_us: Vec<u64>,
    /// Set while the account's cascade delete runs; the account is gone for every reader.
    #[serde(default)]
    pub deleting: bool,
    /// When its endpoint answered `410 Gone` (Unix µs): deliveries to it are stopped. Like
    /// `failed_count`, the truth lives in the `deliveries` tree (`g` keys) and the store
    /// fills this in on every read.
    #[serde(default)]
    pub deliveries_stopped_us: Option<u64>,
    /// The secret replaced by the last secret-key reset, still signing deliveries beside
    /// the new one until its grace period ends.
    #[serde(default)]
    pub previous_secret: Option<PreviousSecret>,
}

/// A replaced signing secret and when it stops signing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// The old `secret_key`.
    pub secret_key: String,
    /// Until when (Unix µs) deliveries carry its signature too.
    pub until_us: u64,
}

/// A webhook registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Shard-aligned with the owner account id.
    pub id: Uuid,
    /// Creation time, Unix µs.
    pub epoch_us: u64,
    /// The owner.
    pub account_id: Uuid,
    /// Sent as the `event` header.
    pub event: String,
    /// Free text, the only patchable field.
    pub description: String,
    /// The payload as JSON text, exactly as registered.
    pub event_data: String,
    /// Set while the cascade delete runs.
    #[serde(default)]
    pub deleting: bool,
}

/// A subscription of an account to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Shard-aligned with the registration id.
    pub id: Uuid,
    /// Creation time, Unix µs.
    pub epoch_us: u64,
    /// The subscriber.
    pub account_id: Uuid,
    /// What it subscribes to.
    pub registration_id: Uuid,
}

/// A record of one trigger of a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    /// Shard-aligned with the registration id.
    pub id: Uuid,
    /// Trigger time, Unix µs.
    pub epoch_us: u64,
    /// The registration that was triggered.
    pub registration_id: Uuid,
    /// The registration's owner (who may inspect the deliveries).
    #[serde(default)]
    pub account_id: Uuid,
    /// The `event` header of its deliveries.
    #[serde(default)]
    pub event: String,
    /// The exact body of its deliveries (Python `json.dumps` form of the event data).
    #[serde(default)]
    pub body: String,
}

/// Unix µs as the float seconds the API shows (`1441164550.515677`).
pub fn epoch_secs(epoch_us: u64) -> f64 {
    epoch_us as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_event_data_text() {
        let r = Registration {
            id: Uuid::new_v4(),
            epoch_us: 1,
            account_id: Uuid::new_v4(),
            event: "e".into(),
            description: "d".into(),
            event_data: r#"{"z": 1, "a": 123456789012345678901234567890}"#.into(),
            deleting: false,
        };
        let back: Registration = decode(&encode(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn compact_records_round_trip_and_refuse_garbage() {
        let s = Subscription {
            id: Uuid::new_v4(),
            epoch_us: u64::MAX,
            account_id: Uuid::new_v4(),
            registration_id: Uuid::nil(),
        };
        let bytes = encode_compact(&s).unwrap();
        assert!(bytes.len() < encode(&s).unwrap().len() / 2);
        assert_eq!(decode::<Subscription>(&bytes).unwrap(), s);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Subscription>(&longer).is_err());
        assert!(decode::<Subscription>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn unknown_version_is_corrupt_and_empty_is_refused() {
        assert!(decode::<Triggered>(b"\x09{}").is_err());
        assert!(decode::<Triggered>(b"").is_err());
    }
}
