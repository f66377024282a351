//! `/v1/webhook/registration` and `/v1/webhook/registrations`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{ApiResult, Call};
use crate::domain::{Caller, Credentials, ServiceError, WriteResult};
use crate::http::request::{invalid_field, string_field};
use crate::http::{response, ApiError};
use crate::service::{
    CreateRegistration, DeleteLocalRegistrations, DeleteRegistration, ListOwnRegistrations,
    NewRegistration, PatchRegistration, Table,
};
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
pub async fn create(mut c: Call, credentials: Credentials) -> ApiResult {
    let registration = new_registration(&mut c).await.map_err(ApiError::deferred);
    let create = CreateRegistration {
        credentials,
        registration,
    };
    let registration = c.api.service.ask(create).await?;
    Ok(response::json(StatusCode::CREATED, &render(&registration)))
}

/// The body of a new registration.
async fn new_registration(c: &mut Call) -> Result<NewRegistration, ApiError> {
    let body = c.req.json_object().await?;
    let event = string_field(&body, "event")?;
    if event.is_empty() {
        return Err(invalid_field("event"));
    }
    let description = string_field(&body, "description")?;
    let event_data = body
        .get("event_data")
        .ok_or_else(|| ApiError::BadRequest("Missing event_data field".into()))?;
    let event_data = serde_json::to_string(event_data).map_err(|_| invalid_field("event_data"))?;
    if event_data.len() > c.api.max_event_data {
        return Err(ApiError::EventDataTooLarge);
    }
    Ok(NewRegistration {
        event,
        description,
        event_data,
    })
}

/// GET /v1/webhook/registration — the caller's own.
pub async fn list_own(c: Call, credentials: Credentials) -> ApiResult {
    let page = c.req.page().map_err(ApiError::deferred);
    let list = ListOwnRegistrations { credentials, page };
    let page = c.api.service.ask(list).await?;
    Ok(response::page("registrations", page, |r| render(&r)))
}

/// GET /v1/webhook/registrations — everyone's.
pub async fn list(c: Call) -> ApiResult {
    let page = c
        .api
        .service
        .list(Table::Registrations, c.req.page()?)
        .await?;
    Ok(response::page("registrations", page, |r| render(&r)))
}

/// PATCH /v1/webhook/registration/<id> — owner or admin; access is checked before the body.
pub async fn update(mut c: Call, caller: Caller) -> ApiResult {
    let bytes = c.req.body_bytes().await?;
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
    let id = c.id();
    let patch = PatchRegistration {
        caller,
        id,
        description,
    };
    let result = c.api.service.ask(patch).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/registration/<id> — owner or admin; removes its subscriptions too.
pub async fn delete(c: Call, caller: Caller) -> ApiResult {
    let id = c.id();
    let result = c.api.service.ask(DeleteRegistration { caller, id }).await?;
    Ok(response::json(StatusCode::OK, &json!(result)))
}

/// DELETE /v1/webhook/registrations — admin; every registration and subscription.
pub async fn delete_all(c: Call) -> ApiResult {
    let counts = c.api.service.ask_leaders(DeleteLocalRegistrations).await?;
    let result = WriteResult::deleted(counts.into_iter().sum());
    Ok(response::json(StatusCode::OK, &json!(result)))
}
