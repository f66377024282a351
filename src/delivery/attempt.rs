//! One delivery attempt: the exact request (body, legacy and Standard Webhooks signatures),
//! its classification (any 2xx is a success) and what the endpoint asked of the next
//! attempts: `410 Gone` stops deliveries to it, `Retry-After` on 429 or 503 delays the next
//! one.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use uuid::Uuid;

use super::signing::{pywebhooks_signature, standard_webhooks_signature};
use super::{Answer, EndpointClient};
use crate::store::Attempt;

/// Everything an attempt sends.
pub struct Request<'a> {
    /// The subscriber's current endpoint.
    pub endpoint: &'a str,
    /// The subscriber's current secret key.
    pub secret_key: &'a str,
    /// The secret key a reset replaced, while its grace period runs: `webhook-signature`
    /// carries a signature made with it too.
    pub previous_secret_key: Option<&'a str>,
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
    let sign = |secret: &str| {
        standard_webhooks_signature(secret.as_bytes(), &id, req.timestamp, &req.body)
    };
    // Standard Webhooks: several signatures, space-separated; a receiver accepts the
    // message when any verifies, so one holding either secret does during a rotation.
    let signatures = match req.previous_secret_key {
        Some(old) => format!("{} {}", sign(req.secret_key), sign(old)),
        None => sign(req.secret_key),
    };
    if let Some(v) = pair(signatures) {
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

/// What an endpoint asked of the next attempts, beyond this attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Nothing.
    None,
    /// 429 or 503 with a usable `Retry-After`: no attempt before this long from now
    /// (before the configured clamp).
    RetryAfter(Duration),
    /// `410 Gone`: the endpoint does not want deliveries any more.
    Gone,
}

/// An attempt made: its log entry and the endpoint's signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The attempt log entry.
    pub attempt: Attempt,
    /// What the endpoint asked of the next attempts.
    pub signal: Signal,
}

/// The error logged for a `410 Gone`.
pub const GONE: &str = "endpoint answered 410 Gone: deliveries to it are stopped";

/// Sends the attempt and records what happened; never fails itself.
pub async fn send(client: &EndpointClient, req: Request<'_>, at_us: u64) -> Sent {
    let started = Instant::now();
    let result = client
        .post(req.endpoint, || headers(&req), req.body.clone())
        .await;
    let duration_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(answer) => answered(answer, at_us, duration_us),
        Err(e) => Sent {
            attempt: Attempt {
                at_us,
                status: None,
                error: Some(e.to_string()),
                duration_us,
                response_body: None,
            },
            signal: Signal::None,
        },
    }
}

/// The log entry and signal of an answer.
fn answered(answer: Answer, at_us: u64, duration_us: u64) -> Sent {
    let status = answer.status;
    let (error, signal) = match status {
        200..=299 => (None, Signal::None),
        410 => (Some(GONE.to_string()), Signal::Gone),
        429 | 503 => {
            let wait = answer
                .retry_after
                .as_deref()
                .and_then(|v| retry_after(v, SystemTime::now()));
            (
                Some(format!("endpoint answered {status}")),
                wait.map_or(Signal::None, Signal::RetryAfter),
            )
        }
        _ => (Some(format!("endpoint answered {status}")), Signal::None),
    };
    Sent {
        attempt: Attempt {
            at_us,
            status: Some(status),
            error,
            duration_us,
            response_body: Some(String::from_utf8_lossy(&answer.body).into_owned()),
        },
        signal,
    }
}

/// How long a `Retry-After` value asks to wait from `now`: delay-seconds, or an HTTP date
/// (a date in the past: no wait). `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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
            previous_secret_key: None,
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
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn answers_become_log_entries_and_signals() {
        let answer = |status, retry: Option<&str>| Answer {
            status,
            retry_after: retry.map(str::to_string),
            body: Bytes::from_static(b"busy"),
        };
        let ok = answered(answer(204, None), 1, 2);
        assert_eq!((ok.attempt.error, ok.signal), (None, Signal::None));
        assert_eq!(ok.attempt.response_body.as_deref(), Some("busy"));
        let gone = answered(answer(410, None), 1, 2);
        assert_eq!(gone.signal, Signal::Gone);
        assert_eq!(gone.attempt.error.as_deref(), Some(GONE));
        let throttled = answered(answer(429, Some("7")), 1, 2);
        assert_eq!(throttled.signal, Signal::RetryAfter(Duration::from_secs(7)));
        let busy = answered(answer(503, Some("garbage")), 1, 2);
        assert_eq!(busy.signal, Signal::None);
        let other = answered(answer(500, Some("7")), 1, 2);
        assert_eq!(other.signal, Signal::None, "only 429 and 503 are honoured");
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_the_legacy_header_uses_the_new_one() {
        let body = Bytes::from_static(b"{}");
        let req = Request {
            endpoint: "http://127.0.0.1/",
            secret_key: "new",
            previous_secret_key: Some("old"),
            event: "",
            body: body.clone(),
            delivery_id: Uuid::nil(),
            timestamp: 7,
        };
        let h = headers(&req);
        let id = Uuid::nil().to_string();
        let both = format!(
            "{} {}",
            standard_webhooks_signature(b"new", &id, 7, &body),
            standard_webhooks_signature(b"old", &id, 7, &body)
        );
        assert_eq!(h["webhook-signature"], both.as_str());
        assert_eq!(
            h["pywebhooks-signature"],
            pywebhooks_signature("new", &body).as_str()
        );
    }

    #[test]
    fn empty_event_leaves_the_header_out() {
        let req = Request {
            endpoint: "http://127.0.0.1/",
            secret_key: "k",
            previous_secret_key: None,
            event: "",
            body: Bytes::new(),
            delivery_id: Uuid::nil(),
            timestamp: 0,
        };
        assert!(!headers(&req).contains_key("event"));
    }
}
