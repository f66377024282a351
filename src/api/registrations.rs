//! `/v1/webhook/registration` and `/v1/webhook/registrations`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{auth, auth_admin, ApiResult};
use crate::http::request::{invalid_field, parse_id, string_field, ApiRequest};
use crate::http::{response, ApiError, App};
use crate::service::ServiceError;
use crate::store::records::epoch_secs;
use crate::store::Registration;

/// The registration as the API shows it, `event_data` as registered.
fn render(r: &Registration) -> Value {
    let event_data: Value = serde_json::from_str(&r.event_data).unwrap_or(Value::Null);
    json!({
        "account_id": r.account_id.to_string(),
        "description": r.description,
        "epoch": epoch_secs(r.epoch_us),
        "event": r.event,
        "event_data": event_data,
        "id": r.id.to_string(),
    })
}

/// POST /v1/webhook/registration — any account.
pub async fn create(mut req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let body = req.json_object().await?;
    let event = string_field(&body, "event")?;
    if event.is_empty() {
        return Err(invalid_field("event"));
    }
    let description = string_field(&body, "description")?;
    let event_data = body
        .get("event_data")
        .ok_or_else(|| ApiError::BadRequest("Missing event_data field".into()))?;
    let event_data = serde_json::to_string(event_data).map_err(|_| invalid_field("event_data"))?;
    if event_data.len() > app.max_event_data {
        return Err(ApiError::EventDataTooLarge);
    }
    let registration = app
        .node
        .create_registration(&caller, event, description, event_data)
        .await?;
    Ok(response::json(StatusCode::CREATED, &render(&registration)))
}

/// GET /v1/webhook/registration — the caller's own.
pub async fn list_own(req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let page = app
        .node
        .list_own_registrations(&caller, req.page()?)
        .await?;
    Ok(response::page("registrations", page, |r| render(&r)))
}

/// GET /v1/webhook/registrations — everyone's.
pub async fn list(req: ApiRequest, app: &App) -> ApiResult {
    auth(&req, app).await?;
    let page = app.node.list_registrations(req.page()?).await?;
    Ok(response::page("registrations", page, |r| render(&r)))
}

/// PATCH /v1/webhook/registration/<id> — owner or admin; access is checked before the body.
pub async fn update(id: &str, mut req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let bytes = req.body_bytes().await?;
    let description = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(body)) => match body.get("description") {
            Some(Value::String(d)) => Ok(d.clone()),
            Some(_) => Err(ServiceError::BadRequest("Invalid description field".into())),
            None => Err(ServiceError::BadRequest("Description field missing".into())),
        },
        Ok(_) => Err(ServiceError::BadRequest(
            "JSON body must be an object".into(),
        )),
        Err(_) => Err(ServiceError::BadRequest("Invalid JSON body".into())),
    };
    let result = app
        .node
        .patch_registration(&caller, parse_id(id), description)
        .await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/registration/<id> — owner or admin; removes its subscriptions too.
pub async fn delete(id: &str, req: ApiRequest, app: &App) -> ApiResult {
    let caller = auth(&req, app).await?;
    let result = app.node.delete_registration(&caller, parse_id(id)).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/registrations — admin; every registration and subscription.
pub async fn delete_all(req: ApiRequest, app: &App) -> ApiResult {
    auth_admin(&req, app).await?;
    let result = app.node.delete_all_registrations().await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}
