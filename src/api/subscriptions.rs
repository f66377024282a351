//! `/v1/webhook/subscription` and `/v1/webhook/subscriptions`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{auth, auth_admin, ApiResult};
use crate::http::request::{parse_id, ApiRequest};
use crate::http::{response, App};
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
pub async fn create(registration: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let subscription = app.node.subscribe(&caller, parse_id(registration)).await?;
    Ok(response::json(StatusCode::CREATED, &render(&subscription)))
}

/// GET /v1/webhook/subscription — the caller's own.
pub async fn list_own(req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let page = app
        .node
        .list_own_subscriptions(&caller, req.page()?)
        .await?;
    Ok(response::page("subscriptions", page, |s| render(&s)))
}

/// GET /v1/webhook/subscriptions — everyone's (auth before paging, api.md B.8).
pub async fn list(req: ApiRequest, app: &App) -> ApiResult {
    auth(&req, app).await?;
    let page = app.node.list_subscriptions(req.page()?).await?;
    Ok(response::page("subscriptions", page, |s| render(&s)))
}

/// DELETE /v1/webhook/subscription/<id> — the subscriber or an admin.
pub async fn delete(id: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let result = app.node.delete_subscription(&caller, parse_id(id)).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/subscriptions — admin.
pub async fn delete_all(req: ApiRequest, app: &App) -> ApiResult {
    auth_admin(&req, app).await?;
    let result = app.node.delete_all_subscriptions().await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}
