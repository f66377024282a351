//! `/v1/webhook/triggered`: fire a registration, list the triggered records.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{auth, ApiResult};
use crate::http::request::{parse_id, ApiRequest};
use crate::http::{response, App};
use crate::store::records::epoch_secs;
use crate::store::Triggered;

/// The triggered record as the API shows it.
fn render(t: &Triggered) -> Value {
    json!({
        "epoch": epoch_secs(t.epoch_us),
        "id": t.id.to_string(),
        "registration_id": t.registration_id.to_string(),
    })
}

/// POST /v1/webhook/triggered/<registration_id> — the owner only (no admin bypass).
pub async fn create(registration: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let triggered = app.node.trigger(&caller, parse_id(registration)).await?;
    Ok(response::json(StatusCode::CREATED, &render(&triggered)))
}

/// GET /v1/webhook/triggered — every triggered record (auth before paging, api.md B.8).
pub async fn list(req: ApiRequest, app: &App) -> ApiResult {
    auth(&req, app).await?;
    let page = app.node.list_triggered(req.page()?)?;
    Ok(response::page("triggered_webhooks", page, |t| render(&t)))
}
