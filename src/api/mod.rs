//! The `/v1` API: one module per resource, each handler shaped
//! parse → authorise → ask the node → respond.

mod accounts;
mod keys;
mod ops;
mod registrations;
mod subscriptions;
mod triggers;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::http::request::ApiRequest;
use crate::http::router::Endpoint;
use crate::http::{ApiError, App};
use crate::service::Caller;

/// A handler's outcome.
pub type ApiResult = Result<Response<Full<Bytes>>, ApiError>;

/// Authenticates from the `api-key` and `username` headers.
async fn auth(req: &ApiRequest, app: &App) -> Result<Caller, ApiError> {
    let key = req.header("api-key");
    let user = req.header("username");
    Ok(app
        .node
        .authenticate(key.as_deref(), user.as_deref())
        .await?)
}

/// Authenticates and requires an administrator.
async fn auth_admin(req: &ApiRequest, app: &App) -> Result<Caller, ApiError> {
    let key = req.header("api-key");
    let user = req.header("username");
    Ok(app
        .node
        .authenticate_admin(key.as_deref(), user.as_deref())
        .await?)
}

/// Runs the endpoint's handler behind the Content-Type gate.
pub async fn handle(endpoint: Endpoint, req: ApiRequest, app: &App) -> ApiResult {
    if endpoint.is_api() {
        req.require_json_content_type()?;
    }
    match endpoint {
        Endpoint::CreateAccount => accounts::create(req, app).await,
        Endpoint::GetAccount(id) => accounts::get(&id, req, app).await,
        Endpoint::UpdateAccount => accounts::update(req, app).await,
        Endpoint::DeleteAccount(id) => accounts::delete(&id, req, app).await,
        Endpoint::ListAccounts => accounts::list(req, app).await,
        Endpoint::DeleteAccounts => accounts::delete_all(req, app).await,
        Endpoint::ResetApiKey => keys::reset_api_key(req, app).await,
        Endpoint::ResetSecretKey => keys::reset_secret_key(req, app).await,
        Endpoint::CreateRegistration => registrations::create(req, app).await,
        Endpoint::ListOwnRegistrations => registrations::list_own(req, app).await,
        Endpoint::UpdateRegistration(id) => registrations::update(&id, req, app).await,
        Endpoint::DeleteRegistration(id) => registrations::delete(&id, req, app).await,
        Endpoint::ListRegistrations => registrations::list(req, app).await,
        Endpoint::DeleteRegistrations => registrations::delete_all(req, app).await,
        Endpoint::Subscribe(id) => subscriptions::create(&id, req, app).await,
        Endpoint::ListOwnSubscriptions => subscriptions::list_own(req, app).await,
        Endpoint::DeleteSubscription(id) => subscriptions::delete(&id, req, app).await,
        Endpoint::ListSubscriptions => subscriptions::list(req, app).await,
        Endpoint::DeleteSubscriptions => subscriptions::delete_all(req, app).await,
        Endpoint::Trigger(id) => triggers::create(&id, req, app).await,
        Endpoint::ListTriggered => triggers::list(req, app).await,
        Endpoint::TriggerStatus(id) => triggers::status(&id, req, app).await,
        Endpoint::ListDeliveries(id) => triggers::deliveries(&id, req, app).await,
        Endpoint::Redeliver(id) => triggers::redeliver(&id, req, app).await,
        Endpoint::Cluster => ops::cluster(req, app).await,
        Endpoint::Health => ops::health(),
        Endpoint::Ready => ops::ready(app),
        Endpoint::Metrics => ops::metrics(app),
        Endpoint::OpenApi => ops::openapi(),
    }
}
