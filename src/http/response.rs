//! Success responses: JSON bodies, pages, 204.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value};

use crate::store::Page;

/// A JSON response.
pub fn json(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// 204 with an empty body.
pub fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// A listing: 204 when empty, else `{"<key>": [...], "next_start": n?}`.
pub fn page<T>(key: &str, page: Page<T>, render: impl Fn(T) -> Value) -> Response<Full<Bytes>> {
    if page.items.is_empty() {
        return no_content();
    }
    let mut body = Map::new();
    body.insert(
        key.to_string(),
        Value::Array(page.items.into_iter().map(render).collect()),
    );
    if let Some(next) = page.next_start {
        body.insert("next_start".into(), Value::from(next));
    }
    json(StatusCode::OK, &Value::Object(body))
}
