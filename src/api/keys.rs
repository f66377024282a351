//! `/v1/account/reset/apikey` and `/v1/account/reset/secretkey`.

use hyper::StatusCode;
use serde_json::json;

use super::{ApiResult, Call};
use crate::domain::{msg, Credentials, ServiceError};
use crate::http::{response, ApiError};
use crate::service::{ResetKey, ResetSecretKey};
use crate::store::KeyKind;

fn sent() -> ApiResult {
    Ok(response::json(
        StatusCode::OK,
        &json!({ "Message": msg::KEY_SENT }),
    ))
}

/// POST /v1/account/reset/apikey — only the username header, as in the original
/// (rate-limited per account instead).
pub async fn reset_api_key(c: Call) -> ApiResult {
    let username = c
        .req
        .header("username")
        .ok_or(ApiError::Service(ServiceError::BadRequest(
            msg::MISSING_USERNAME_RESET.into(),
        )))?;
    let kind = KeyKind::ApiKey;
    c.api.service.ask(ResetKey { username, kind }).await?;
    sent()
}

/// POST /v1/account/reset/secretkey — full auth.
pub async fn reset_secret_key(c: Call, credentials: Credentials) -> ApiResult {
    c.api.service.ask(ResetSecretKey(credentials)).await?;
    sent()
}
