//! `/v1/account/reset/apikey` and `/v1/account/reset/secretkey`.

use hyper::StatusCode;
use serde_json::json;

use super::{auth, ApiResult};
use crate::http::request::ApiRequest;
use crate::http::{response, ApiError, App};
use crate::service::{msg, ServiceError};
use crate::store::KeyKind;

fn sent() -> ApiResult {
    Ok(response::json(
        StatusCode::OK,
        &json!({ "Message": msg::KEY_SENT }),
    ))
}

/// POST /v1/account/reset/apikey — only the username header, as in the original
/// (rate-limited per account instead).
pub async fn reset_api_key(req: ApiRequest, app: &App) -> ApiResult {
    let username = req
        .header("username")
        .ok_or(ApiError::Service(ServiceError::BadRequest(
            msg::MISSING_USERNAME_RESET.into(),
        )))?;
    app.node.reset_key(&username, KeyKind::ApiKey).await?;
    sent()
}

/// POST /v1/account/reset/secretkey — full auth.
pub async fn reset_secret_key(req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    app.node
        .reset_key(&caller.username, KeyKind::SecretKey)
        .await?;
    sent()
}
