//! `/v1/webhook/deliveries/recover`: bulk recovery of failed deliveries after an outage.

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::{ApiResult, Call};
use crate::domain::Credentials;
use crate::http::request::invalid_field;
use crate::http::{response, ApiError};
use crate::service::{RecoverDeliveries, Window};

/// POST /v1/webhook/deliveries/recover — any account: queues again its failed deliveries
/// (to its endpoint, and of its registrations) that failed within `since`..`until`.
pub async fn recover(mut c: Call, credentials: Credentials) -> ApiResult {
    let window = window(&mut c).await.map_err(ApiError::deferred);
    let recover = RecoverDeliveries {
        credentials,
        window,
    };
    let requeued = c.api.service.ask(recover).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "requeued": requeued }),
    ))
}

/// The body `{"since": <epoch seconds>, "until": <epoch seconds, optional: now>}`.
async fn window(c: &mut Call) -> Result<Window, ApiError> {
    let body = c.req.json_object().await?;
    let since_us = epoch_us_field(&body, "since")?
        .ok_or_else(|| ApiError::BadRequest("Missing since field".into()))?;
    // An `until` before `since` is an empty window: nothing to requeue.
    let until_us = epoch_us_field(&body, "until")?.unwrap_or(u64::MAX);
    Ok(Window { since_us, until_us })
}

/// The optional field `name`: Unix seconds (fractions allowed, not negative) as µs.
fn epoch_us_field(body: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = body.get(name) else {
        return Ok(None);
    };
    match value.as_f64() {
        // Saturating: a time far in the future is just "until the end".
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some((secs * 1e6) as u64)),
        _ => Err(invalid_field(name)),
    }
}
