//! The delivery engine, black-box: a real `webhookd serve` process delivering to a real
//! receiver ([`EndpointServer`]) on loopback.
//!
//! Covers duplicate subscriptions, the delivery bytes and the legacy signature,
//! `max_failed_count`, success (any 2xx), retries, `failed_count`, deletions ending retries,
//! the Standard Webhooks headers, dynamic payloads and idempotency, delivery visibility and
//! redeliver, plus the delivery metrics; the delivery policy: receivers' signals
//! (`Retry-After`, `410 Gone`), jitter, secret rotation, the captured response, bulk
//! recovery, and endpoint isolation (per-endpoint cap, circuit breaker).

mod capture;
mod connections;
mod deletions;
mod fanout;
mod isolation;
mod payload;
mod recovery;
mod redeliver;
mod retries;
mod rotation;
mod signals;

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Fast retries (1 attempt + 3 retries ~50 ms apart) and a short outbound timeout.
const FAST: &str = r#"
[delivery]
retry_delays_secs = [0.05, 0.05, 0.05]
max_failed_count = 250
max_in_flight = 64
[http_client]
timeout_secs = 1.0
"#;

/// How long a delivery that should happen now may take to be recorded.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20);

/// A registered `event_data` exercising the `json.dumps` rules: non-ASCII (BMP and
/// astral), a float needing Python's exponent spelling, `-0.0`, a big integer, key order
/// that is not sorted, and the short escapes. Sent verbatim as the registration body.
const EVENT_DATA: &str = r#"{"message": "héllo ✓ 😀", "n": [1, 2.5, 1e100, -0.0, 0.1, 12345678901234567890], "z": {"b": 1, "a": null, "t": true, "s": "q\"/\\\n"}}"#;

/// `json.dumps(json.loads(EVENT_DATA))`, produced by python3 3.x and pasted here.
const EVENT_DATA_PYTHON: &str = r#"{"message": "h\u00e9llo \u2713 \ud83d\ude00", "n": [1, 2.5, 1e+100, -0.0, 0.1, 12345678901234567890], "z": {"b": 1, "a": null, "t": true, "s": "q\"/\\\n"}}"#;

/// The event_data `TestNode::register` uses, and its `json.dumps` form (python3).
const DEFAULT_EVENT_DATA_PYTHON: &str =
    r#"{"message": "hello world", "items": [{"item1": 1}, {"item2": 2}]}"#;

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {v}"))
}

fn attempts_of(row: &Value) -> Vec<Value> {
    row["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("delivery row without `attempts` array: {row}"))
        .clone()
}

/// One delivery row that reached `state`.
fn single_row_in_state(rows: &[Value], state: &str) -> bool {
    rows.len() == 1 && rows[0]["state"] == state
}

/// Asserts the shape of an attempt log entry and its outcome.
#[track_caller]
fn assert_attempt(attempt: &Value, status: Option<u16>, failed: bool) {
    let obj = attempt
        .as_object()
        .unwrap_or_else(|| panic!("attempt is not an object: {attempt}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["at", "duration_ms", "error", "response_body", "status_code"],
        "attempt keys: {attempt}"
    );
    assert!(attempt["at"].is_number(), "attempt `at`: {attempt}");
    assert!(
        attempt["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "attempt `duration_ms`: {attempt}"
    );
    assert_eq!(
        attempt["status_code"],
        status.map_or(Value::Null, |s| json!(s)),
        "attempt status_code: {attempt}"
    );
    if failed {
        assert!(
            attempt["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failed attempt names its error: {attempt}"
        );
    } else {
        assert_eq!(
            attempt["error"],
            Value::Null,
            "a successful attempt has no error: {attempt}"
        );
    }
}

/// Owner + one subscriber, one registration (default event_data), one subscription.
struct Pair {
    node: TestNode,
    ep: EndpointServer,
    owner: Account,
    sub: Account,
    reg: String,
    subscription: String,
}

impl Pair {
    async fn new(extra_toml: &str, event: &str) -> Self {
        Self::with_subscriber_at(extra_toml, event, |ep| ep.endpoint_url("subscriber")).await
    }

    /// A pair whose subscriber's endpoint is `endpoint(&server)`.
    async fn with_subscriber_at(
        extra_toml: &str,
        event: &str,
        endpoint: impl Fn(&EndpointServer) -> String,
    ) -> Self {
        let ep = EndpointServer::start().await;
        let node = TestNode::spawn_with(extra_toml).await;
        let owner = node
            .create_account("owner", &ep.endpoint_url("owner"))
            .await;
        let sub = node.create_account("subscriber", &endpoint(&ep)).await;
        let reg = id_of(&node.register(&owner, event).await);
        let subscription = id_of(&node.subscribe(&sub, &reg).await);
        Self {
            node,
            ep,
            owner,
            sub,
            reg,
            subscription,
        }
    }

    async fn trigger(&self) -> String {
        id_of(&self.node.trigger(&self.owner, &self.reg).await)
    }
}
