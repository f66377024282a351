//! Operations endpoints outside `/v1`, and the OpenAPI document: no Content-Type gate, no auth.

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
    let mut text = app.metrics.render();
    text.push_str(&app.node.delivery_metrics());
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// The OpenAPI 3 description of the API, as shipped in `openapi/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

/// GET /v1/openapi.json — the API's OpenAPI document.
pub fn openapi() -> ApiResult {
    let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI_JSON.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_valid_json_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        // The 21 `/v1` pairs, /health, /ready, /metrics and the document itself.
        assert_eq!(operations, 25);
        assert!(paths.contains_key("/v1/openapi.json"));
    }
}
