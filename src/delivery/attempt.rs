//! One delivery attempt: the exact request (body, legacy and Standard Webhooks signatures)
//! and its classification (any 2xx is a success).

use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use uuid::Uuid;

use super::signing::{pywebhooks_signature, standard_webhooks_signature};
use super::EndpointClient;
use crate::store::Attempt;

/// Everything an attempt sends.
pub struct Request<'a> {
    /// The subscriber's current endpoint.
    pub endpoint: &'a str,
    /// The subscriber's current secret key.
    pub secret_key: &'a str,
    /// The registration's event name (header left out when empty).
    pub event: &'a str,
    /// The Python-`json.dumps` body.
    pub body: Bytes,
    /// The delivery id (`webhook-id`).
    pub delivery_id: Uuid,
    /// This attempt's Unix time in seconds (`webhook-timestamp`).
    pub timestamp: i64,
}

/// The headers of a delivery, signatures included.
pub fn headers(req: &Request<'_>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(7);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    if let Ok(event) = HeaderValue::from_str(req.event) {
        if !req.event.is_empty() {
            h.insert(HeaderName::from_static("event"), event);
        }
    }
    let pair = |value: String| HeaderValue::from_str(&value).ok();
    if let Some(v) = pair(pywebhooks_signature(req.secret_key, &req.body)) {
        h.insert(HeaderName::from_static("pywebhooks-signature"), v);
    }
    let id = req.delivery_id.to_string();
    if let Some(v) = pair(standard_webhooks_signature(
        req.secret_key.as_bytes(),
        &id,
        req.timestamp,
        &req.body,
    )) {
        h.insert(HeaderName::from_static("webhook-signature"), v);
    }
    if let Some(v) = pair(id) {
        h.insert(HeaderName::from_static("webhook-id"), v);
    }
    h.insert(
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(req.timestamp),
    );
    h
}

/// Sends the attempt and records what happened; never fails itself.
pub async fn send(client: &EndpointClient, req: Request<'_>, at_us: u64) -> Attempt {
    let started = Instant::now();
    let result = client
        .post(req.endpoint, || headers(&req), req.body.clone())
        .await;
    let duration_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(status) if (200..300).contains(&status) => Attempt {
            at_us,
            status: Some(status),
            error: None,
            duration_us,
        },
        Ok(status) => Attempt {
            at_us,
            status: Some(status),
            error: Some(format!("endpoint answered {status}")),
            duration_us,
        },
        Err(e) => Attempt {
            at_us,
            status: None,
            error: Some(e.to_string()),
            duration_us,
        },
    }
}

/// True when the attempt delivered (any 2xx).
pub fn succeeded(attempt: &Attempt) -> bool {
    attempt.status.is_some_and(|s| (200..300).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_both_signatures_over_the_exact_body() {
        let body = Bytes::from_static(br#"{"a": 1}"#);
        let id = Uuid::nil();
        let req = Request {
            endpoint: "http://127.0.0.1/",
            secret_key: "s3cret",
            event: "thing.happened",
            body: body.clone(),
            delivery_id: id,
            timestamp: 1_649_367_553,
        };
        let h = headers(&req);
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["event"], "thing.happened");
        assert_eq!(
            h["pywebhooks-signature"],
            pywebhooks_signature("s3cret", &body).as_str()
        );
        let msg_id = id.to_string();
        assert_eq!(h["webhook-id"], msg_id.as_str());
        assert_eq!(h["webhook-timestamp"], "1649367553");
        assert_eq!(
            h["webhook-signature"],
            standard_webhooks_signature(b"s3cret", &msg_id, 1_649_367_553, &body).as_str()
        );
    }

    #[test]
    fn empty_event_leaves_the_header_out() {
        let req = Request {
            endpoint: "http://127.0.0.1/",
            secret_key: "k",
            event: "",
            body: Bytes::new(),
            delivery_id: Uuid::nil(),
            timestamp: 0,
        };
        assert!(!headers(&req).contains_key("event"));
    }
}
