//! `/v1/account` and `/v1/accounts`: create, read, change endpoint, delete, list, bulk delete.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{ApiResult, Call};
use crate::delivery::client::parse_endpoint;
use crate::delivery::signing::standard_webhooks_secret;
use crate::domain::{Credentials, WriteResult};
use crate::http::request::{invalid_field, string_field};
use crate::http::{response, ApiError};
use crate::service::{
    CreateAccount, DeleteAccount, DeleteLocalAccounts, GetAccount, Table, UpdateEndpoint,
};
use crate::store::records::epoch_secs;
use crate::store::Account;

/// Longest accepted username.
const MAX_USERNAME_CHARS: usize = 256;

/// The account as the API shows it; `api_key` is the hash unless the plaintext is given.
/// `deliveries_stopped` is added to PyWebhooks' fields: `null`, or when and why deliveries
/// to the endpoint stopped (a `410 Gone`; `PATCH /v1/account` resumes them).
fn render(a: &Account, plaintext_key: Option<&str>) -> Value {
    let stopped = a.deliveries_stopped_us.map(|at| {
        json!({
            "at": epoch_secs(at),
            "reason": "endpoint answered 410 Gone",
        })
    });
    json!({
        "api_key": plaintext_key.unwrap_or(&a.api_key_hash),
        "deliveries_stopped": stopped,
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
fn endpoint_field(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    let endpoint = string_field(body, "endpoint")?;
    parse_endpoint(&endpoint)
        .map(|_| endpoint)
        .ok_or_else(|| invalid_field("endpoint"))
}

/// POST /v1/account — no auth; body → uniqueness → echo → 201 with the plaintext key.
pub async fn create(mut c: Call) -> ApiResult {
    let body = c.req.json_object().await?;
    let username = string_field(&body, "username")?;
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || username.chars().any(char::is_control)
    {
        return Err(invalid_field("username"));
    }
    let endpoint = endpoint_field(&body)?;
    let created = c
        .api
        .service
        .ask(CreateAccount { username, endpoint })
        .await?;
    Ok(response::json(
        StatusCode::CREATED,
        &render(&created.account, Some(&created.api_key)),
    ))
}

/// GET /v1/account/<id> — the caller's own record only.
pub async fn get(c: Call, credentials: Credentials) -> ApiResult {
    let id = c.id();
    let account = c.api.service.ask(GetAccount { credentials, id }).await?;
    Ok(response::json(StatusCode::OK, &render(&account, None)))
}

/// PATCH /v1/account — change the caller's endpoint (echo-checked).
pub async fn update(mut c: Call, credentials: Credentials) -> ApiResult {
    let endpoint = match c.req.json_object().await {
        Ok(body) => endpoint_field(&body),
        Err(e) => Err(e),
    };
    let endpoint = endpoint.map_err(ApiError::deferred);
    let update = UpdateEndpoint {
        credentials,
        endpoint,
    };
    let result = c.api.service.ask(update).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/account/<id> — self or an admin; cascades.
pub async fn delete(c: Call, credentials: Credentials) -> ApiResult {
    let id = c.id();
    let result = c.api.service.ask(DeleteAccount { credentials, id }).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// GET /v1/accounts — admin.
pub async fn list(c: Call) -> ApiResult {
    let page = c.api.service.list(Table::Accounts, c.req.page()?).await?;
    Ok(response::page("accounts", page, |a| render(&a, None)))
}

/// DELETE /v1/accounts — admin; every non-admin account, with cascades.
pub async fn delete_all(c: Call) -> ApiResult {
    let counts = c.api.service.ask_leaders(DeleteLocalAccounts).await?;
    let result = WriteResult::deleted(counts.into_iter().sum());
    Ok(response::json(StatusCode::OK, &json!(result)))
}
