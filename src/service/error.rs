//! The domain layer's error: every outcome of a `/v1` operation that is not a success.
//!
//! The messages are the API's exact strings; `http::error` maps each variant to its status.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

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
    /// 503: the shard's owner cannot be reached.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Seconds after which a retry may succeed.
        retry_after_secs: u64,
    },
    /// A peer refused this node: their cluster configurations differ.
    #[error("cluster configuration differs from the peer's")]
    Refused {
        /// The refusing peer's (shards, members) digest.
        digest: u64,
    },
    /// 500: a bug or a storage failure; details are logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

impl From<crate::crypto::RandomError> for ServiceError {
    fn from(e: crate::crypto::RandomError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

/// The exact messages of the API that several places produce.
pub mod msg {
    /// §3.2 step 1.
    pub const MISSING_API_KEY: &str = "Missing API key header value";
    /// §3.2 step 2.
    pub const MISSING_USERNAME: &str = "Missing username header value";
    /// §3.2 step 3.
    pub const UNKNOWN_USERNAME: &str = "Invalid API key or Username";
    /// §3.2 step 4.
    pub const INVALID_API_KEY: &str = "Invalid API key";
    /// §3.2 step 5.
    pub const NOT_ADMIN: &str = "Not an Admin";
    /// §3.5.
    pub const NOT_AUTHORIZED: &str = "Not authorized";
    /// §3.3.
    pub const MISSING_USERNAME_RESET: &str = "Missing the username header value";
    /// §3.3.
    pub const USERNAME_NOT_FOUND: &str = "Username not found";
    /// §7.
    pub const ECHO_FAILED: &str = "Echo response failed";
    /// §4.2.
    pub const ENDPOINT_NOT_FOUND: &str = "Endpoint not found";
    /// §4.2.
    pub const RESET_FAILED: &str =
        "Failed to contact the endpoint or wrong HTTP status code returned";
    /// §4.2.
    pub const KEY_SENT: &str = "New key sent to endpoint";
    /// §4.4.
    pub const NO_SUCH_REGISTRATION_SUBSCRIBE: &str = "The registration id does not exist";
    /// §4.5.
    pub const NO_SUCH_REGISTRATION_TRIGGER: &str = "Registration id not found";
    /// §4.5.
    pub const NOT_REGISTRATION_OWNER: &str =
        "You don't have access to this registration record or it no longer exists";
    /// api.md C.3: no triggered record with that id.
    pub const NO_SUCH_TRIGGER: &str = "Triggered webhook not found";
    /// api.md B.4.
    pub const LAST_ADMIN: &str = "Cannot delete the last admin account";
}
