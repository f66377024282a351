//! `/v1/webhook/triggered`: fire a registration, list triggers, inspect and redeliver.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{ApiResult, Call};
use crate::domain::Caller;
use crate::http::{response, ApiError};
use crate::service::{ListDeliveries, Redeliver, Table, Trigger, TriggerStatus};
use crate::store::records::epoch_secs;
use crate::store::{Attempt, Delivery, Triggered};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The triggered record as the API shows it.
fn render(t: &Triggered) -> Value {
    json!({
        "epoch": epoch_secs(t.epoch_us),
        "id": t.id.to_string(),
        "registration_id": t.registration_id.to_string(),
    })
}

fn render_attempt(a: &Attempt) -> Value {
    json!({
        "at": epoch_secs(a.at_us),
        "duration_ms": a.duration_us as f64 / 1000.0,
        "error": a.error,
        "response_body": a.response_body,
        "status_code": a.status,
    })
}

fn render_delivery(d: &Delivery) -> Value {
    json!({
        "account_id": d.account_id.to_string(),
        "attempts": d.attempts.iter().map(render_attempt).collect::<Vec<_>>(),
        "id": d.id.to_string(),
        "next_attempt": d.next_attempt_us.map(epoch_secs),
        "state": d.state,
        "subscription_id": d.subscription_id.to_string(),
    })
}

/// POST /v1/webhook/triggered/<registration_id> — the owner only (no admin bypass).
///
/// An optional body `{"event_data": ...}` replaces the payload for this trigger; an
/// `Idempotency-Key` repeated within 24 h answers 200 with the first trigger.
pub async fn create(mut c: Call, caller: Caller) -> ApiResult {
    let idempotency_key = c.req.header("idempotency-key");
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ApiError::BadRequest(
            "Invalid Idempotency-Key header".into(),
        ));
    }
    let event_data = match c.req.optional_json_object().await? {
        Some(body) => match body.get("event_data") {
            Some(v) => Some(
                serde_json::to_string(v)
                    .map_err(|_| ApiError::BadRequest("Invalid event_data field".into()))?,
            ),
            None => None,
        },
        None => None,
    };
    if event_data
        .as_ref()
        .is_some_and(|d| d.len() > c.api.max_event_data)
    {
        return Err(ApiError::EventDataTooLarge);
    }
    let trigger = Trigger {
        caller,
        registration: c.id(),
        event_data,
        idempotency_key,
    };
    let (triggered, replayed) = c.api.service.ask(trigger).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(response::json(status, &render(&triggered)))
}

/// GET /v1/webhook/triggered — every triggered record (authentication is checked before paging).
pub async fn list(c: Call) -> ApiResult {
    let page = c.api.service.list(Table::Triggered, c.req.page()?).await?;
    Ok(response::page("triggered_webhooks", page, |t| render(&t)))
}

/// GET /v1/webhook/triggered/<id> — the record with its delivery counts (owner or admin).
pub async fn status(c: Call, caller: Caller) -> ApiResult {
    let id = c.id();
    let (t, counts, fanout_complete) = c.api.service.ask(TriggerStatus { caller, id }).await?;
    let mut body = render(&t);
    if let Value::Object(map) = &mut body {
        map.insert("deliveries".into(), json!(counts));
        map.insert("event".into(), json!(t.event));
        map.insert("fanout_complete".into(), json!(fanout_complete));
    }
    Ok(response::json(StatusCode::OK, &body))
}

/// GET /v1/webhook/triggered/<id>/deliveries — one row per subscriber delivery.
pub async fn deliveries(c: Call, caller: Caller) -> ApiResult {
    let (id, page) = (c.id(), c.req.page()?);
    let page = c
        .api
        .service
        .ask(ListDeliveries { caller, id, page })
        .await?;
    Ok(response::page("deliveries", page, |d| render_delivery(&d)))
}

/// POST /v1/webhook/triggered/<id>/redeliver — re-queue the failed deliveries.
pub async fn redeliver(c: Call, caller: Caller) -> ApiResult {
    let id = c.id();
    let requeued = c.api.service.ask(Redeliver { caller, id }).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "requeued": requeued }),
    ))
}
