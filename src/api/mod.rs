//! The `/v1` API: the route table ([`routes`]), one module per resource, each handler
//! shaped parse → authorise → ask the node → respond.
//!
//! [`Api`] is the HTTP layer's [`Handler`]: it matches the table, applies the gates a
//! route declares (Content-Type, then authentication) and calls the route's handler.

mod accounts;
mod deliveries;
mod keys;
mod members;
mod ops;
mod registrations;
mod routes;
mod subscriptions;
mod triggers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use uuid::Uuid;

use crate::domain::{Caller, Credentials};
use crate::http::metrics::Metrics;
use crate::http::request::{parse_id, ApiRequest};
use crate::http::router::Routes;
use crate::http::{ApiError, Handler};
use crate::service::{Authenticate, Service};

pub use routes::table;

/// A handler's outcome.
pub type ApiResult = Result<Response<Full<Bytes>>, ApiError>;
/// A handler's outcome, to come.
pub type Pending = Pin<Box<dyn Future<Output = ApiResult> + Send>>;

/// A request as a handler receives it.
pub struct Call {
    /// The request (headers, query, body).
    pub req: ApiRequest,
    /// What every handler shares.
    pub api: Arc<Api>,
    /// The raw `{id}` path segment, if the route has one.
    pub raw_id: Option<String>,
}

impl Call {
    /// The path id; a malformed UUID is an id that matches nothing.
    pub fn id(&self) -> Option<Uuid> {
        self.raw_id.as_deref().and_then(parse_id)
    }

    /// The `api-key` and `username` headers (401 for the first missing).
    pub fn credentials(&self) -> Result<Credentials, ApiError> {
        Ok(Credentials::from_headers(
            self.req.header("api-key"),
            self.req.header("username"),
            self.req.client_ip(),
        )?)
    }
}

/// What serves a route: its authentication gate (what the caller must prove) and the
/// handler that then gets what was proven.
pub enum Endpoint {
    /// No authentication.
    Open(fn(Call) -> Pending),
    /// The handler's operation authenticates the credentials where the caller's account
    /// lives, in the same request as the work (one round trip).
    Credentials(fn(Call, Credentials) -> Pending),
    /// Any authenticated account.
    Caller(fn(Call, Caller) -> Pending),
    /// An authenticated administrator.
    Admin(fn(Call, Caller) -> Pending),
}

/// The API: what every request handler shares; the HTTP layer's [`Handler`].
pub struct Api {
    /// The node's operations.
    pub service: Service,
    /// Request counters (shared with the HTTP server, which records them).
    pub metrics: Arc<Metrics>,
    /// `security.max_event_data_bytes`.
    pub max_event_data: usize,
    /// This node's id (shown by `/ready`).
    pub node_id: String,
    /// The route table.
    pub routes: Routes<Endpoint>,
}

impl Api {
    /// Passes the route's gates and runs its handler.
    async fn dispatch(self: Arc<Self>, req: ApiRequest) -> (Response<Full<Bytes>>, &'static str) {
        let (handler, gated, template, raw_id) = match self.routes.find(req.method(), req.path()) {
            Ok(m) => (&m.route.endpoint, m.route.gated, m.route.template, m.id),
            Err(miss) => {
                let gate = match miss.gated {
                    true => req.require_json_content_type().err(),
                    false => None,
                };
                return (gate.unwrap_or(miss.error).into_response(), miss.template);
            }
        };
        if gated {
            if let Err(e) = req.require_json_content_type() {
                return (e.into_response(), template);
            }
        }
        let call = Call {
            req,
            api: self.clone(),
            raw_id,
        };
        let result = async {
            match handler {
                Endpoint::Open(h) => h(call).await,
                Endpoint::Credentials(h) => {
                    let credentials = call.credentials()?;
                    h(call, credentials).await
                }
                Endpoint::Caller(h) => {
                    let caller = self.authenticate(&call).await?;
                    h(call, caller).await
                }
                Endpoint::Admin(h) => {
                    let admin = self.authenticate(&call).await?.admin()?;
                    h(call, admin).await
                }
            }
        };
        (
            result.await.unwrap_or_else(ApiError::into_response),
            template,
        )
    }

    async fn authenticate(&self, call: &Call) -> Result<Caller, ApiError> {
        Ok(self.service.ask(Authenticate(call.credentials()?)).await?)
    }
}

impl Handler for Api {
    fn answer(
        self: Arc<Self>,
        request: ApiRequest,
    ) -> impl Future<Output = (Response<Full<Bytes>>, &'static str)> + Send {
        self.dispatch(request)
    }
}
