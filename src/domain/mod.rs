//! The domain's vocabulary, shared by the actors, the service and the API: who is asking,
//! what a write did, what went wrong, and who may touch what.
//!
//! It sits below the actors and the service so that both can speak it without importing
//! each other.

pub mod access;
mod error;
mod write_result;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use error::{msg, ServiceError};
pub use write_result::WriteResult;

use crate::store::Account;

/// The reserved username of the bootstrap administrator.
pub const ADMIN_USERNAME: &str = "admin";

/// The `api-key` and `username` headers of a request, checked by the username's shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The `api-key` header.
    pub api_key: String,
    /// The `username` header.
    pub username: String,
    /// The client's address, for throttling failed checks.
    pub client: Option<IpAddr>,
}

impl Credentials {
    /// The credentials of a request, or the 401 for the first missing header (the API key
    /// is checked first, as in the original).
    pub fn from_headers(
        api_key: Option<String>,
        username: Option<String>,
        client: Option<IpAddr>,
    ) -> Result<Self, ServiceError> {
        let api_key = api_key.ok_or(ServiceError::Unauthorized(msg::MISSING_API_KEY.into()))?;
        let username = username.ok_or(ServiceError::Unauthorized(msg::MISSING_USERNAME.into()))?;
        Ok(Self {
            api_key,
            username,
            client,
        })
    }
}

/// The authenticated account making a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Its account id.
    pub id: Uuid,
    /// Its username.
    pub username: String,
    /// Whether it is an administrator.
    pub is_admin: bool,
}

impl Caller {
    /// The caller an account authenticates as.
    pub fn of(account: &Account) -> Self {
        Self {
            id: account.id,
            username: account.username.clone(),
            is_admin: account.is_admin,
        }
    }

    /// Requires an administrator.
    pub fn admin(self) -> Result<Self, ServiceError> {
        if self.is_admin {
            Ok(self)
        } else {
            Err(ServiceError::Unauthorized(msg::NOT_ADMIN.into()))
        }
    }
}

/// A freshly created account and its plaintext API key (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccount {
    /// The stored record.
    pub account: Account,
    /// The API key in plaintext.
    pub api_key: String,
}
