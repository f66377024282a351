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

/// Fast retries (1 attempt + 3 retries 50 ms apart: no jitter, so the tests may check the
/// gaps) and a short outbound timeout.
const FAST: &str = r#"
[delivery]
retry_delays_secs = [0.05, 0.05, 0.05]
retry_jitter = 0.0
max_failed_count = 250
max_in_flight = 64
[http_client]
timeout_secs = 1.0
"#;

/// A node config with an outbound timeout of `timeout_secs` and the `[delivery]`
/// `settings` (`key = value` lines).
fn delivery_config(timeout_secs: f64, settings: &[&str]) -> String {
    format!(
        "[delivery]\n{}\n[http_client]\ntimeout_secs = {timeout_secs:?}\n",
        settings.join("\n")
    )
}

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

    /// Another subscriber to the registration, with its own endpoint `name` on the same
    /// server; returns the account and the subscription id.
    async fn add_subscriber(&self, name: &str) -> (Account, String) {
        let account = self
            .node
            .create_account(name, &self.ep.endpoint_url(name))
            .await;
        let subscription = id_of(&self.node.subscribe(&account, &self.reg).await);
        (account, subscription)
    }

    /// Waits (up to [`DELIVERY_DEADLINE`]) until trigger `tid`'s fan-out is complete and
    /// its delivery counts are exactly `counts` (see [`delivery_counts`]).
    async fn wait_counts(&self, tid: &str, counts: &[(&str, u64)]) {
        self.node
            .wait_trigger_counts(
                &self.owner,
                tid,
                &delivery_counts(counts),
                DELIVERY_DEADLINE,
            )
            .await;
    }

    /// Waits (up to [`DELIVERY_DEADLINE`]) until trigger `tid` has exactly one delivery
    /// row and it is in `state`; returns that row. `what` names the wait in a timeout.
    async fn wait_single_row(&self, tid: &str, state: &str, what: &str) -> Value {
        let rows = self
            .node
            .wait_deliveries(&self.owner, tid, what, DELIVERY_DEADLINE, |rows| {
                single_row_in_state(rows, state)
            })
            .await;
        rows[0].clone()
    }

    /// Waits until trigger `tid`'s one delivery failed after a single attempt, and checks
    /// that attempt's shape and `status` (see [`assert_attempt`]); returns the attempt.
    async fn wait_failed_once(&self, tid: &str, status: Option<u16>, what: &str) -> Value {
        let row = self.wait_single_row(tid, "failed", what).await;
        let attempts = attempts_of(&row);
        assert_eq!(attempts.len(), 1, "one attempt only: {row}");
        assert_attempt(&attempts[0], status, true);
        attempts[0].clone()
    }

    /// The subscriber re-verifies its (unchanged) endpoint with `PATCH /v1/account`, which
    /// resets `failed_count` and lifts a `410 Gone` stop.
    async fn reverify(&self) {
        self.node
            .patch("/v1/account")
            .auth(&self.sub)
            .json(&json!({ "endpoint": self.sub.endpoint }))
            .send()
            .await
            .expect(200);
    }
}

/// The current Unix time in seconds, as the API writes times.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
