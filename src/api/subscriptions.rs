//! `/v1/webhook/subscription` and `/v1/webhook/subscriptions`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{ApiResult, Call};
use crate::domain::{Caller, WriteResult};
use crate::http::response;
use crate::service::{DeleteLocalSubscriptions, DeleteSubscription, Subscribe, Table};
use crate::store::records::epoch_secs;
use crate::store::Subscription;

/// The subscription as the API shows it.
fn render(s: &Subscription) -> Value {
    json!({
        "account_id": s.account_id.to_string(),
        "epoch": epoch_secs(s.epoch_us),
        "id": s.id.to_string(),
        "registration_id": s.registration_id.to_string(),
    })
}

/// POST /v1/webhook/subscription/<registration_id> — any account; the body is ignored.
pub async fn create(c: Call, caller: Caller) -> ApiResult {
    let registration = c.id();
    let subscription = c
        .api
        .service
        .ask(Subscribe {
            caller,
            registration,
        })
        .await?;
    Ok(response::json(StatusCode::CREATED, &render(&subscription)))
}

/// GET /v1/webhook/subscription — the caller's own.
pub async fn list_own(c: Call, caller: Caller) -> ApiResult {
    let table = Table::Subscriptions(Some(caller.id));
    let page = c.api.service.list(table, c.req.page()?).await?;
    Ok(response::page("subscriptions", page, |s| render(&s)))
}

/// GET /v1/webhook/subscriptions — everyone's (authentication is checked before paging).
pub async fn list(c: Call) -> ApiResult {
    let table = Table::Subscriptions(None);
    let page = c.api.service.list(table, c.req.page()?).await?;
    Ok(response::page("subscriptions", page, |s| render(&s)))
}

/// DELETE /v1/webhook/subscription/<id> — the subscriber or an admin.
pub async fn delete(c: Call, caller: Caller) -> ApiResult {
    let id = c.id();
    let result = c.api.service.ask(DeleteSubscription { caller, id }).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/subscriptions — admin.
pub async fn delete_all(c: Call) -> ApiResult {
    let counts = c.api.service.ask_leaders(DeleteLocalSubscriptions).await?;
    let result = WriteResult::deleted(counts.into_iter().sum());
    Ok(response::json(StatusCode::OK, &json!(result)))
}
