//! `/v1/account` and `/v1/accounts`: create, read, change endpoint, delete, list, bulk delete.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{auth, auth_admin, ApiResult};
use crate::delivery::client::parse_endpoint;
use crate::delivery::signing::standard_webhooks_secret;
use crate::http::request::{invalid_field, parse_id, string_field, ApiRequest};
use crate::http::{response, App};
use crate::store::records::epoch_secs;
use crate::store::Account;

/// Longest accepted username.
const MAX_USERNAME_CHARS: usize = 256;

/// The account as the API shows it; `api_key` is the hash unless the plaintext is given.
fn render(a: &Account, plaintext_key: Option<&str>) -> Value {
    json!({
        "api_key": plaintext_key.unwrap_or(&a.api_key_hash),
        "endpoint": a.endpoint,
        "epoch": epoch_secs(a.epoch_us),
        "failed_count": a.failed_count,
        "id": a.id.to_string(),
        "is_admin": a.is_admin,
        "secret_key": a.secret_key,
        "standard_webhooks_secret": standard_webhooks_secret(&a.secret_key),
        "username": a.username,
    })
}

/// `endpoint` must be an absolute http(s) URL.
fn endpoint_field(body: &serde_json::Map<String, Value>) -> Result<String, crate::http::ApiError> {
    let endpoint = string_field(body, "endpoint")?;
    parse_endpoint(&endpoint)
        .map(|_| endpoint)
        .ok_or_else(|| invalid_field("endpoint"))
}

/// POST /v1/account — no auth; body → uniqueness → echo → 201 with the plaintext key.
pub async fn create(mut req: ApiRequest, app: &App) -> ApiResult {
    let body = req.json_object().await?;
    let username = string_field(&body, "username")?;
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || username.chars().any(char::is_control)
    {
        return Err(invalid_field("username"));
    }
    let endpoint = endpoint_field(&body)?;
    let created = app.node.create_account(username, endpoint).await?;
    Ok(response::json(
        StatusCode::CREATED,
        &render(&created.account, Some(&created.api_key)),
    ))
}

/// GET /v1/account/<id> — the caller's own record only.
pub async fn get(id: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let account = app.node.get_account(&caller, parse_id(id)).await?;
    Ok(response::json(StatusCode::OK, &render(&account, None)))
}

/// PATCH /v1/account — change the caller's endpoint (echo-checked).
pub async fn update(mut req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let body = req.json_object().await?;
    let endpoint = endpoint_field(&body)?;
    let result = app.node.update_endpoint(&caller, endpoint).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/account/<id> — self or an admin; cascades.
pub async fn delete(id: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let result = app.node.delete_account(&caller, parse_id(id)).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// GET /v1/accounts — admin.
pub async fn list(req: ApiRequest, app: &App) -> ApiResult {
    auth_admin(&req, app).await?;
    let page = app.node.list_accounts(req.page()?).await?;
    Ok(response::page("accounts", page, |a| render(&a, None)))
}

/// DELETE /v1/accounts — admin; every non-admin account, with cascades.
pub async fn delete_all(req: ApiRequest, app: &App) -> ApiResult {
    auth_admin(&req, app).await?;
    let result = app.node.delete_all_accounts().await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}
