//! Operations endpoints outside `/v1`: no Content-Type gate, no auth.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::ApiResult;
use crate::http::{response, App};

/// GET /health — the process is up.
pub fn health() -> ApiResult {
    Ok(response::json(StatusCode::OK, &json!({ "status": "ok" })))
}

/// GET /ready — storage answers (and, in a cluster, every shard owner is reachable).
pub fn ready(app: &App) -> ApiResult {
    let storage = app.node.is_ready();
    let status = if storage {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(response::json(
        status,
        &json!({
            "status": if storage { "ready" } else { "not ready" },
            "node": app.node_id,
            "storage": if storage { "ok" } else { "unavailable" },
        }),
    ))
}

/// GET /metrics — Prometheus text.
pub fn metrics(app: &App) -> ApiResult {
    let mut r = Response::new(Full::new(Bytes::from(app.metrics.render())));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
