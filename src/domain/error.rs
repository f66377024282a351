//! The domain's error: every outcome of a `/v1` operation that is not a success.
//!
//! The messages are the API's exact strings (the original's, kept byte for byte so that
//! existing clients matching on them keep working); `http::error` maps each variant to
//! its status.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::cluster::CallError;
use crate::store::StoreError;

/// Seconds a client is told to wait before retrying a call for an unreachable node's shard.
const RETRY_AFTER_SECS: u64 = 5;

/// A failed domain operation. Serializable: peers return it over the cluster as it is.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ServiceError {
    /// 400 with the given message (validation, echo failure, …).
    #[error("{0}")]
    BadRequest(String),
    /// 401 with the given message (authentication and ownership).
    #[error("{0}")]
    Unauthorized(Cow<'static, str>),
    /// 404 with the given message.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// 409: the username is taken.
    #[error("Username already exists")]
    UsernameTaken,
    /// 429: too many key resets; retry after this many seconds.
    #[error("Too many key resets")]
    TooManyKeyResets {
        /// Seconds until a reset is allowed again.
        retry_after_secs: u64,
    },
    /// 429: too many failed key checks for this username or client address.
    #[error("Too many failed authentications")]
    TooManyAuthFailures {
        /// Seconds until key checks are allowed again.
        retry_after_secs: u64,
    },
    /// 503: the shard's owner cannot be reached.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Seconds after which a retry may succeed.
        retry_after_secs: u64,
    },
    /// 413 with the given message: a request body, or a part of it, over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 500: a bug or corrupt data; details are logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// 507: the disk failed (full, I/O error, stuck), so the change could not be stored;
    /// details are logged, not shown. Last, so that peers' encodings of the others hold.
    #[error("Insufficient storage")]
    InsufficientStorage(String),
    /// 503: this node no longer serves the shard (its group's lead moved, to `leader` when
    /// known), and nothing was done. The asking node follows the lead; a client that still
    /// sees it retries after a second.
    #[error("This node does not serve that record at the moment, try again later")]
    NotServedHere {
        /// The member this node believes leads the shard's group.
        leader: Option<String>,
    },
    /// 409 with the given message: the change conflicts with the current state (a member
    /// id or address in use).
    #[error("{0}")]
    Conflict(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_fault() {
            ServiceError::InsufficientStorage(e.to_string())
        } else {
            ServiceError::Internal(e.to_string())
        }
    }
}

impl From<CallError> for ServiceError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unavailable(node) | CallError::Version { node, .. } => {
                ServiceError::Unavailable {
                    message: format!("Node {node} is unavailable, try again later"),
                    retry_after_secs: RETRY_AFTER_SECS,
                }
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<crate::crypto::RandomError> for ServiceError {
    fn from(e: crate::crypto::RandomError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

/// The exact messages of the API that several places produce.
pub mod msg {
    /// No `api-key` header (authentication, first check).
    pub const MISSING_API_KEY: &str = "Missing API key header value";
    /// No `username` header (authentication, second check).
    pub const MISSING_USERNAME: &str = "Missing username header value";
    /// No account has that username.
    pub const UNKNOWN_USERNAME: &str = "Invalid API key or Username";
    /// The key does not match the account.
    pub const INVALID_API_KEY: &str = "Invalid API key";
    /// An administrator-only route, asked by another account.
    pub const NOT_ADMIN: &str = "Not an Admin";
    /// A record of another account, or one that does not exist.
    pub const NOT_AUTHORIZED: &str = "Not authorized";
    /// An API key reset without a `username` header.
    pub const MISSING_USERNAME_RESET: &str = "Missing the username header value";
    /// An API key reset for a username no account has.
    pub const USERNAME_NOT_FOUND: &str = "Username not found";
    /// The endpoint did not answer the echo challenge.
    pub const ECHO_FAILED: &str = "Echo response failed";
    /// A key reset for an account without an endpoint (the admin).
    pub const ENDPOINT_NOT_FOUND: &str = "Endpoint not found";
    /// The endpoint refused or did not take the new key.
    pub const RESET_FAILED: &str =
        "Failed to contact the endpoint or wrong HTTP status code returned";
    /// A key reset succeeded.
    pub const KEY_SENT: &str = "New key sent to endpoint";
    /// A subscribe to a registration that does not exist.
    pub const NO_SUCH_REGISTRATION_SUBSCRIBE: &str = "The registration id does not exist";
    /// A trigger of a registration that does not exist.
    pub const NO_SUCH_REGISTRATION_TRIGGER: &str = "Registration id not found";
    /// A trigger of another account's registration.
    pub const NOT_REGISTRATION_OWNER: &str =
        "You don't have access to this registration record or it no longer exists";
    /// No triggered record with that id.
    pub const NO_SUCH_TRIGGER: &str = "Triggered webhook not found";
    /// Deleting the only administrator.
    pub const LAST_ADMIN: &str = "Cannot delete the last admin account";
}
