//! The delivery engine, black-box: a real `webhookd serve` process delivering to a real
//! receiver ([`EndpointServer`]) on loopback.
//!
//! Covers api.md A.6 (duplicate subscriptions), A.7 (delivery bytes and the legacy signature),
//! A.9 (`max_failed_count`), B.6/B.7 (success = 2xx, retries, `failed_count`, deletions end
//! retries), C.1 (Standard Webhooks headers), C.2 (dynamic payloads, idempotency) and C.3
//! (delivery visibility, redeliver), plus the delivery metrics.

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

/// A registered `event_data` exercising the `json.dumps` rules (A.7): non-ASCII (BMP and
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
        ["at", "duration_ms", "error", "status_code"],
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

// ---------------------------------------------------------------------------------------------
// 1. Fan-out, bytes and signatures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn three_subscribers_each_get_one_signed_post_and_the_owner_none() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let mut subs = Vec::new();
    for name in ["alice", "bob", "carol"] {
        subs.push(
            node.create_account(name, &ep.endpoint_url(&format!("sub/{name}")))
                .await,
        );
    }
    // Distinct secrets, so a signature made with the wrong subscriber's key cannot pass.
    let secrets: HashSet<&str> = subs.iter().map(|s| s.secret_key.as_str()).collect();
    assert_eq!(secrets.len(), 3);

    let reg = id_of(&node.register_raw(&owner, "order.created", EVENT_DATA).await);
    let mut subscription_of = Vec::new();
    for s in &subs {
        subscription_of.push(id_of(&node.subscribe(s, &reg).await));
    }
    let triggered = node.trigger(&owner, &reg).await;
    let tid = id_of(&triggered);

    let status = node
        .wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", 3)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(status["id"], tid.as_str(), "{status}");
    assert_eq!(status["registration_id"], reg.as_str(), "{status}");
    assert_eq!(status["event"], "order.created", "{status}");
    assert_eq!(status["epoch"], triggered["epoch"], "{status}");
    // The admin may read it too.
    let by_admin = node.trigger_status(&node.admin(), &tid).await;
    assert_eq!(by_admin["deliveries"], status["deliveries"]);

    let mut webhook_ids = HashSet::new();
    let mut id_by_account = std::collections::HashMap::new();
    for s in &subs {
        let posts = ep.wait_for_posts(&s.endpoint, 1, DELIVERY_DEADLINE).await;
        assert_eq!(posts.len(), 1, "{} got {} POSTs", s.username, posts.len());
        let post = &posts[0];
        assert_eq!(
            std::str::from_utf8(&post.body).expect("ASCII body"),
            EVENT_DATA_PYTHON,
            "body sent to {} is not Python's json.dumps of the registered event_data",
            s.username
        );
        let id = assert_signed_delivery(post, &s.secret_key, "order.created");
        // Sanity: the signature is the subscriber's own, not another's.
        for other in subs.iter().filter(|o| o.id != s.id) {
            assert_ne!(
                post.header("pywebhooks-signature").unwrap(),
                expected_pywebhooks_signature(&other.secret_key, &post.body)
            );
        }
        webhook_ids.insert(id.clone());
        id_by_account.insert(s.id.clone(), id);
    }
    assert_eq!(webhook_ids.len(), 3, "webhook-id must differ per delivery");
    assert!(
        ep.posts_to(&owner.endpoint).is_empty(),
        "the owner is not subscribed but got a delivery: {:?}",
        ep.posts_to(&owner.endpoint)
    );
    assert_eq!(ep.posts().len(), 3, "exactly three POSTs in all");

    // The deliveries listing: one row per subscription, in subscription order.
    let rows = node.deliveries(&owner, &tid).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["subscription_id"], subscription_of[i].as_str(), "{row}");
        assert_eq!(row["account_id"], subs[i].id.as_str(), "{row}");
        assert_eq!(row["state"], "succeeded", "{row}");
        assert_eq!(row["next_attempt"], Value::Null, "{row}");
        assert_eq!(
            str_of(row, "id"),
            id_by_account[&subs[i].id],
            "row id = webhook-id"
        );
        let attempts = attempts_of(row);
        assert_eq!(attempts.len(), 1, "{row}");
        assert_attempt(&attempts[0], Some(200), false);
    }

    // Metrics: three deliveries succeeded on this fresh node.
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_duplicate_subscription_gets_its_own_delivery() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let dana = node.create_account("dana", &ep.endpoint_url("dana")).await;
    let reg = id_of(&node.register(&owner, "dup.event").await);
    let first = id_of(&node.subscribe(&dana, &reg).await);
    let second = id_of(&node.subscribe(&dana, &reg).await);
    assert_ne!(first, second);
    let tid = id_of(&node.trigger(&owner, &reg).await);

    node.wait_trigger_counts(
        &owner,
        &tid,
        &delivery_counts(&[("succeeded", 2)]),
        DELIVERY_DEADLINE,
    )
    .await;
    let posts = ep
        .wait_for_posts(&dana.endpoint, 2, DELIVERY_DEADLINE)
        .await;
    assert_eq!(posts.len(), 2, "one POST per subscription: {posts:?}");
    let mut ids = HashSet::new();
    for post in &posts {
        assert_eq!(post.body, DEFAULT_EVENT_DATA_PYTHON.as_bytes());
        ids.insert(assert_signed_delivery(post, &dana.secret_key, "dup.event"));
    }
    assert_eq!(ids.len(), 2, "each subscription has its own webhook-id");

    let rows = node.deliveries(&owner, &tid).await;
    let row_subs: HashSet<&str> = rows.iter().map(|r| str_of(r, "subscription_id")).collect();
    assert_eq!(row_subs, HashSet::from([first.as_str(), second.as_str()]));
    let row_ids: HashSet<String> = rows.iter().map(|r| str_of(r, "id").to_string()).collect();
    assert_eq!(row_ids, ids);
    assert!(rows.iter().all(|r| r["account_id"] == dana.id.as_str()));
    assert!(ep.posts_to(&owner.endpoint).is_empty());
}

#[tokio::test]
async fn a_redirecting_endpoint_gets_the_delivery_at_the_redirect_target() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let dana = node
        .create_account("dana", &ep.redirect_url(307, "dana-moved"))
        .await;
    let reg = id_of(&node.register(&owner, "moved.event").await);
    node.subscribe(&dana, &reg).await;
    let tid = id_of(&node.trigger(&owner, &reg).await);

    node.wait_trigger_counts(
        &owner,
        &tid,
        &delivery_counts(&[("succeeded", 1)]),
        DELIVERY_DEADLINE,
    )
    .await;
    let moved = ep
        .wait_for_posts(&ep.endpoint_url("dana-moved"), 1, DELIVERY_DEADLINE)
        .await;
    assert_eq!(moved.len(), 1, "307 keeps the POST: {moved:?}");
    assert_eq!(moved[0].body, DEFAULT_EVENT_DATA_PYTHON.as_bytes());
    assert_signed_delivery(&moved[0], &dana.secret_key, "moved.event");
    assert_eq!(node.read_account(&dana).await["failed_count"], 0);
}

// ---------------------------------------------------------------------------------------------
// 1b. Connections to endpoints
// ---------------------------------------------------------------------------------------------

/// Triggers once and waits until the one delivery succeeded; returns its attempts.
async fn deliver_once(p: &Pair, what: &str) -> Vec<Value> {
    let tid = p.trigger().await;
    let rows = p
        .node
        .wait_deliveries(&p.owner, &tid, what, DELIVERY_DEADLINE, |rows| {
            single_row_in_state(rows, "succeeded")
        })
        .await;
    attempts_of(&rows[0])
}

#[tokio::test]
async fn deliveries_reuse_a_connection_and_reconnect_once_the_endpoint_closed_it() {
    let p = Pair::new(FAST, "conn.event").await;
    let before = p.ep.connections_accepted();
    for i in 0..10 {
        let attempts = deliver_once(&p, &format!("delivery {i} to succeed")).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    let opened = p.ep.connections_accepted() - before;
    assert_eq!(
        opened, 1,
        "10 deliveries one after the other should share a keep-alive connection"
    );

    // The endpoint closes its idle connections (a restart, an idle timeout): the next
    // delivery notices before sending and goes out on a new connection, first time.
    p.ep.close_connections().await;
    let attempts = deliver_once(&p, "the delivery after the close to succeed").await;
    assert_eq!(
        attempts.len(),
        1,
        "no attempt lost to the closed connection: {attempts:?}"
    );
    assert_attempt(&attempts[0], Some(200), false);
    assert!(p.ep.connections_accepted() > before + opened);
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 11);
    assert_eq!(posts[10].header("host"), Some(p.ep.addr.to_string()));
    assert_eq!(posts[10].path, "/subscriber");
}

#[tokio::test]
async fn deliveries_to_many_endpoints_reuse_their_connections_from_trigger_to_trigger() {
    let node = TestNode::spawn_with(FAST).await;
    let owner_ep = EndpointServer::start().await;
    let owner = node
        .create_account("owner", &owner_ep.endpoint_url("owner"))
        .await;
    let reg = id_of(&node.register(&owner, "many.event").await);
    // More endpoints (each its own server: its own host and port) than a worker would
    // keep connections to, were they kept per worker.
    let mut eps = Vec::new();
    for i in 0..6 {
        let ep = EndpointServer::start().await;
        let sub = node
            .create_account(&format!("sub{i}"), &ep.endpoint_url("sub"))
            .await;
        node.subscribe(&sub, &reg).await;
        eps.push(ep);
    }
    let before: Vec<usize> = eps.iter().map(|e| e.connections_accepted()).collect();
    for _ in 0..5 {
        let tid = id_of(&node.trigger(&owner, &reg).await);
        node.wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", 6)]),
            DELIVERY_DEADLINE,
        )
        .await;
    }
    let opened: Vec<usize> = eps
        .iter()
        .zip(&before)
        .map(|(ep, b)| ep.connections_accepted() - b)
        .collect();
    for ep in &eps {
        assert_eq!(ep.posts_to(&ep.endpoint_url("sub")).len(), 5);
    }
    assert!(
        opened.iter().all(|n| *n == 1),
        "each endpoint's 5 deliveries, one trigger after another, should share one connection; opened: {opened:?}"
    );
}

#[tokio::test]
async fn an_endpoint_answering_connection_close_gets_every_delivery_first_time() {
    let p =
        Pair::with_subscriber_at(FAST, "close.event", |ep| ep.conn_close_url("subscriber")).await;
    let before = p.ep.connections_accepted();
    for i in 0..3 {
        let attempts = deliver_once(&p, &format!("delivery {i} to succeed")).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    assert!(
        p.ep.connections_accepted() - before >= 3,
        "a connection the endpoint closed is never reused"
    );
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 3);
    assert_signed_delivery(&posts[2], &p.sub.secret_key, "close.event");
}

#[tokio::test]
async fn two_workers_make_every_attempt_of_fan_outs_bigger_than_themselves() {
    // Workers take attempts from a shared queue until it is empty: two of them serve two
    // triggers of ten subscribers each, one of which fails and is retried meanwhile.
    let node = TestNode::spawn_with(&FAST.replace("max_in_flight = 64", "max_in_flight = 2")).await;
    let ep = EndpointServer::start().await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let reg = id_of(&node.register(&owner, "queue.event").await);
    let mut subs = Vec::new();
    for i in 0..10 {
        let sub = node
            .create_account(&format!("sub{i}"), &ep.endpoint_url(&format!("sub{i}")))
            .await;
        node.subscribe(&sub, &reg).await;
        subs.push(sub);
    }
    ep.set_post_status(&subs[0].endpoint, 500);
    let triggers = [
        id_of(&node.trigger(&owner, &reg).await),
        id_of(&node.trigger(&owner, &reg).await),
    ];
    for tid in &triggers {
        node.wait_trigger_counts(
            &owner,
            tid,
            &delivery_counts(&[("succeeded", 9), ("failed", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    }
    assert_eq!(
        ep.posts_to(&subs[0].endpoint).len(),
        8,
        "4 attempts per trigger"
    );
    for sub in &subs[1..] {
        let posts = ep.posts_to(&sub.endpoint);
        assert_eq!(
            posts.len(),
            2,
            "one delivery per trigger to {}",
            sub.endpoint
        );
        assert_signed_delivery(&posts[1], &sub.secret_key, "queue.event");
    }
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "webhookd_delivery_in_flight"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(18.0),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Retries and failed_count
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_endpoint_gets_four_attempts_then_a_success_resets_failed_count() {
    let p = Pair::new(FAST, "retry.event").await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;

    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the delivery to fail",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "failed"),
        )
        .await;
    let row = &rows[0];
    assert_eq!(row["subscription_id"], p.subscription.as_str());
    assert_eq!(row["account_id"], p.sub.id.as_str());
    assert_eq!(row["next_attempt"], Value::Null, "{row}");
    let attempts = attempts_of(row);
    assert_eq!(attempts.len(), 4, "1 attempt + 3 retries: {row}");
    for a in &attempts {
        assert_attempt(a, Some(500), true);
    }
    for w in attempts.windows(2) {
        let gap = w[1]["at"].as_f64().unwrap() - w[0]["at"].as_f64().unwrap();
        assert!(
            (0.049..2.0).contains(&gap),
            "attempts should be ~50 ms apart, got {gap} s: {row}"
        );
    }

    // The receiver saw exactly those four, ~50 ms apart, same webhook-id, all signed.
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 4, "{posts:?}");
    let ids: HashSet<String> = posts
        .iter()
        .map(|post| assert_signed_delivery(post, &p.sub.secret_key, "retry.event"))
        .collect();
    assert_eq!(
        ids,
        HashSet::from([str_of(row, "id").to_string()]),
        "webhook-id is the delivery id, the same on every retry"
    );
    for w in posts.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(45) && gap < Duration::from_secs(2),
            "retry delay should be ~50 ms, got {gap:?}"
        );
    }
    assert!(posts.iter().all(|post| post.answered == 500));
    assert_eq!(p.node.failed_count(&p.sub).await, 4);
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("failed", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;

    // The endpoint recovers: the next delivery succeeds and failed_count goes back to 0.
    p.ep.set_post_status(&p.sub.endpoint, 200);
    let second = p.trigger().await;
    p.node
        .wait_trigger_counts(
            &p.owner,
            &second,
            &delivery_counts(&[("succeeded", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 5, "{posts:?}");
    assert_eq!(posts[4].answered, 200);
    assert_signed_delivery(&posts[4], &p.sub.secret_key, "retry.event");
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"webhookd_deliveries_total{outcome="failed"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_count_249_is_still_delivered_and_250_is_skipped() {
    // One attempt per trigger, so each trigger adds exactly 1 to failed_count.
    let p = Pair::new(
        r#"
[delivery]
retry_delays_secs = []
max_failed_count = 250
max_in_flight = 64
[http_client]
timeout_secs = 1.0
"#,
        "limit.event",
    )
    .await;
    // A healthy control subscriber shows when each fan-out has run.
    let control = p
        .node
        .create_account("control", &p.ep.endpoint_url("control"))
        .await;
    p.node.subscribe(&control, &p.reg).await;
    p.ep.set_post_status(&p.sub.endpoint, 500);

    let path = format!("/v1/webhook/triggered/{}", p.reg);
    let reqs = (0..249)
        .map(|_| p.node.post(&path).auth(&p.owner))
        .collect();
    for r in send_all(reqs, 32).await {
        r.expect(201);
    }
    p.node
        .wait_failed_count(&p.sub, 249, Duration::from_secs(120))
        .await;
    p.ep.wait_for_posts(&control.endpoint, 249, Duration::from_secs(120))
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 249);

    // failed_count 249 < 250: still delivered (and fails once more).
    let t250 = p.trigger().await;
    p.node
        .wait_trigger_counts(
            &p.owner,
            &t250,
            &delivery_counts(&[("succeeded", 1), ("failed", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 250);
    assert_eq!(p.node.failed_count(&p.sub).await, 250);

    // failed_count 250: skipped, no POST; the control still gets its delivery.
    let t251 = p.trigger().await;
    p.node
        .wait_trigger_counts(
            &p.owner,
            &t251,
            &delivery_counts(&[("succeeded", 1), ("skipped", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(p.ep.posts_to(&control.endpoint).len(), 251);
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        250,
        "a subscriber at failed_count 250 must not be called"
    );
    let rows = p.node.deliveries(&p.owner, &t251).await;
    let skipped: Vec<&Value> = rows.iter().filter(|r| r["state"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{rows:?}");
    assert_eq!(skipped[0]["account_id"], p.sub.id.as_str());
    assert_eq!(skipped[0]["attempts"], json!([]));
    assert_eq!(skipped[0]["next_attempt"], Value::Null);
    assert_eq!(p.node.failed_count(&p.sub).await, 250);
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"webhookd_deliveries_total{outcome="skipped"}"#),
        Some(1.0),
        "{metrics}"
    );

    // PATCH /v1/account with an endpoint resets failed_count (A.9), and delivery resumes.
    p.node
        .patch("/v1/account")
        .auth(&p.sub)
        .json(&json!({ "endpoint": p.sub.endpoint }))
        .send()
        .await
        .expect(200);
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    p.ep.set_post_status(&p.sub.endpoint, 200);
    let t252 = p.trigger().await;
    p.node
        .wait_trigger_counts(
            &p.owner,
            &t252,
            &delivery_counts(&[("succeeded", 2)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 251);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_counts_as_a_failure() {
    let p = Pair::new(
        r#"
[delivery]
retry_delays_secs = []
[http_client]
timeout_secs = 1.0
"#,
        "slow.event",
    )
    .await;
    // Held far longer than the 1 s client timeout (bounded: the server drops at test end).
    p.ep.hold_posts(&p.sub.endpoint, Duration::from_secs(30));
    let tid = p.trigger().await;
    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the held delivery to fail",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "failed"),
        )
        .await;
    let attempts = attempts_of(&rows[0]);
    assert_eq!(attempts.len(), 1, "{}", rows[0]);
    let attempt = &attempts[0];
    assert_attempt(attempt, None, true);
    eprintln!("timed-out attempt: {attempt}");
    let ms = attempt["duration_ms"].as_f64().unwrap();
    assert!(
        (900.0..5000.0).contains(&ms),
        "the attempt should end at the 1 s timeout, took {ms} ms: {attempt}"
    );
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 1);
    assert_eq!(p.node.failed_count(&p.sub).await, 1);
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("failed", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Dynamic payload and idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_trigger_body_replaces_event_data_and_an_idempotency_key_delivers_once() {
    let p = Pair::new(FAST, "dyn.event").await;
    let body = r#"{"event_data": {"x": [1, 2.5]}}"#;
    let first = p
        .node
        .trigger_with(&p.owner, &p.reg, Some(body), Some("order-42"))
        .await
        .expect(201);
    let tid = id_of(first.json());
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("succeeded", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;

    // The repeat answers 200 with the first record and starts nothing.
    let again = p
        .node
        .trigger_with(&p.owner, &p.reg, Some(body), Some("order-42"))
        .await
        .expect(200);
    assert_eq!(
        again.json(),
        first.json(),
        "the repeat returns the first record"
    );

    // A later trigger without a body (and without a key) is a barrier: once it is
    // delivered, a delivery caused by the repeat would have been made as well.
    let plain = p.trigger().await;
    assert_ne!(plain, tid);
    p.node
        .wait_trigger_counts(
            &p.owner,
            &plain,
            &delivery_counts(&[("succeeded", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;

    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(
        posts.len(),
        2,
        "one delivery per distinct trigger: {posts:?}"
    );
    let dynamic: Vec<&RecordedPost> = posts
        .iter()
        .filter(|post| post.body.as_ref() == br#"{"x": [1, 2.5]}"#)
        .collect();
    assert_eq!(dynamic.len(), 1, "the dynamic payload once: {posts:?}");
    assert_signed_delivery(dynamic[0], &p.sub.secret_key, "dyn.event");
    let registered: Vec<&RecordedPost> = posts
        .iter()
        .filter(|post| post.body.as_ref() == DEFAULT_EVENT_DATA_PYTHON.as_bytes())
        .collect();
    assert_eq!(
        registered.len(),
        1,
        "the registered event_data is unchanged: {posts:?}"
    );

    let triggers: Vec<Value> = p
        .node
        .all_triggered()
        .await
        .into_iter()
        .filter(|t| t["registration_id"] == p.reg.as_str())
        .collect();
    assert_eq!(
        triggers.len(),
        2,
        "the repeat recorded no trigger: {triggers:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Redeliver
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redeliver_requeues_a_failed_delivery_until_it_succeeds() {
    let p = Pair::new(
        r#"
[delivery]
retry_delays_secs = [0.05]
[http_client]
timeout_secs = 1.0
"#,
        "redo.event",
    )
    .await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;
    p.node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the delivery to fail",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "failed"),
        )
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 2);
    assert_eq!(p.node.failed_count(&p.sub).await, 2);

    p.ep.set_post_status(&p.sub.endpoint, 200);
    let r = p
        .node
        .post(&format!("/v1/webhook/triggered/{tid}/redeliver"))
        .auth(&p.owner)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 1}));

    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the redelivery to succeed",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "succeeded"),
        )
        .await;
    let row = &rows[0];
    let attempts = attempts_of(row);
    assert_eq!(
        attempts.len(),
        3,
        "two failed attempts, then the redelivery: {row}"
    );
    assert_attempt(&attempts[0], Some(500), true);
    assert_attempt(&attempts[1], Some(500), true);
    assert_attempt(&attempts[2], Some(200), false);
    assert_eq!(row["next_attempt"], Value::Null);

    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 3, "{posts:?}");
    assert_eq!(posts[2].answered, 200);
    let ids: HashSet<String> = posts
        .iter()
        .map(|post| assert_signed_delivery(post, &p.sub.secret_key, "redo.event"))
        .collect();
    assert_eq!(ids, HashSet::from([str_of(row, "id").to_string()]));
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("succeeded", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;

    // Nothing failed any more: nothing to requeue.
    let r = p
        .node
        .post(&format!("/v1/webhook/triggered/{tid}/redeliver"))
        .auth(&p.owner)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 0}));
}

// ---------------------------------------------------------------------------------------------
// 7. Deletions end pending retries
// ---------------------------------------------------------------------------------------------

/// Slow retries, so there is time to delete between the first attempt and the retry.
const SLOW_RETRIES: &str = r#"
[delivery]
retry_delays_secs = [2.0, 2.0]
[http_client]
timeout_secs = 1.0
"#;

/// Triggers against a failing endpoint and waits until the first attempt is recorded and
/// a retry is pending; returns the trigger id and the retry's due time (epoch seconds).
async fn first_attempt_failed(p: &Pair) -> (String, f64) {
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;
    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the first attempt to be recorded",
            DELIVERY_DEADLINE,
            |rows| rows.len() == 1 && attempts_of(&rows[0]).len() == 1,
        )
        .await;
    assert_eq!(rows[0]["state"], "pending", "{}", rows[0]);
    let next = rows[0]["next_attempt"]
        .as_f64()
        .unwrap_or_else(|| panic!("a retry should be scheduled: {}", rows[0]));
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 1);
    (tid, next)
}

/// After a deletion: the delivery ends `cancelled` without another attempt or POST.
async fn assert_cancelled(p: &Pair, tid: &str, retry_due: f64) {
    let deleted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        deleted_at < retry_due,
        "the deletion came after the retry was due ({deleted_at} >= {retry_due}); the machine is too slow for this test"
    );
    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            tid,
            "the delivery to be cancelled",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "cancelled"),
        )
        .await;
    let row = &rows[0];
    assert_eq!(
        attempts_of(row).len(),
        1,
        "no attempt after the deletion: {row}"
    );
    assert_eq!(row["next_attempt"], Value::Null, "{row}");
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        1,
        "no POST after the deletion"
    );
    p.node
        .wait_trigger_counts(
            &p.owner,
            tid,
            &delivery_counts(&[("cancelled", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
}

#[tokio::test]
async fn deleting_the_subscription_cancels_pending_retries() {
    let p = Pair::new(SLOW_RETRIES, "gone.event").await;
    let (tid, retry_due) = first_attempt_failed(&p).await;
    p.node
        .delete(&format!("/v1/webhook/subscription/{}", p.subscription))
        .auth(&p.sub)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    assert_cancelled(&p, &tid, retry_due).await;
}

#[tokio::test]
async fn deleting_a_subscription_before_its_first_attempt_cancels_it() {
    // One attempt at a time: the later subscription's first attempt waits behind a held one.
    let p = Pair::new(
        r#"
[delivery]
max_in_flight = 1
retry_delays_secs = []
[http_client]
timeout_secs = 2.0
"#,
        "late.event",
    )
    .await;
    let late = p
        .node
        .create_account("late", &p.ep.endpoint_url("late"))
        .await;
    let late_subscription = id_of(&p.node.subscribe(&late, &p.reg).await);
    p.ep.hold_posts(&p.sub.endpoint, Duration::from_secs(30));
    let tid = p.trigger().await;
    p.ep.wait_for_posts(&p.sub.endpoint, 1, DELIVERY_DEADLINE)
        .await;
    // Fanned out already; deleted before its attempt comes up.
    p.node
        .delete(&format!("/v1/webhook/subscription/{late_subscription}"))
        .auth(&late)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("failed", 1), ("cancelled", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert!(p.ep.posts_to(&late.endpoint).is_empty());
}

#[tokio::test]
async fn deleting_the_subscriber_account_cancels_pending_retries() {
    let p = Pair::new(SLOW_RETRIES, "gone.event").await;
    let (tid, retry_due) = first_attempt_failed(&p).await;
    p.node
        .delete(&format!("/v1/account/{}", p.sub.id))
        .auth(&p.node.admin())
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    assert_cancelled(&p, &tid, retry_due).await;
}
