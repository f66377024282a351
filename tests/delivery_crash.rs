//! At-least-once delivery across a crash: SIGKILL the node between retries and in the middle
//! of a large fan-out, restart it on the same data, and check that no delivery is lost and
//! that few are sent twice.
//!
//! The rules checked: an attempt leaves its pending batch or the due queue only together
//! with its recorded outcome, so a delivery whose outcome was not on disk at the crash is
//! sent again after the restart, with the same `webhook-id`; and at most
//! `delivery.max_in_flight + delivery.commit_window` deliveries are ever attempted without
//! their outcome on disk, so a crash re-sends no more than that.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

/// `json.dumps` of the event_data `TestNode::register` uses (python3).
const DEFAULT_BODY: &[u8] = br#"{"message": "hello world", "items": [{"item1": 1}, {"item2": 2}]}"#;

/// Generous bound for work after a restart (it should take a few seconds).
const LONG_DEADLINE: Duration = Duration::from_secs(120);

fn attempts_of(row: &Value) -> Vec<Value> {
    row["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("delivery row without `attempts` array: {row}"))
        .clone()
}

#[tokio::test]
async fn sigkill_between_retries_loses_no_delivery() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn_with(
        r#"
[delivery]
retry_delays_secs = [2.0, 1.0, 1.0]
[http_client]
timeout_secs = 1.0
"#,
    )
    .await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let sub = node
        .create_account("subscriber", &ep.endpoint_url("subscriber"))
        .await;
    let reg = id_of(&node.register(&owner, "crash.event").await);
    node.subscribe(&sub, &reg).await;
    // The first two POSTs fail, every later one succeeds.
    ep.script_posts(&sub.endpoint, &[500, 500], 200);
    let tid = id_of(&node.trigger(&owner, &reg).await);

    let rows = node
        .wait_deliveries(
            &owner,
            &tid,
            "the first failed attempt to be recorded",
            Duration::from_secs(20),
            |rows| rows.len() == 1 && !attempts_of(&rows[0]).is_empty(),
        )
        .await;
    assert_eq!(rows[0]["state"], "pending", "{}", rows[0]);
    assert_eq!(attempts_of(&rows[0])[0]["status_code"], 500, "{}", rows[0]);
    // The attempt is readable as soon as it is written, before the group commit that puts
    // it on disk: a SIGKILL now could lose it (and the restart would rightly send it
    // again). An acknowledged write is answered only after a commit that covers every
    // earlier write, so once one is answered the attempt is durable.
    node.create_account("barrier", &ep.endpoint_url("barrier"))
        .await;

    node.kill().await;
    let posts_at_kill = ep.posts_to(&sub.endpoint).len();
    assert_eq!(
        posts_at_kill, 1,
        "the kill should come between the first attempt and its retry, 2 s later"
    );
    node.restart().await;

    let rows = node
        .wait_deliveries(
            &owner,
            &tid,
            "the delivery to succeed after the restart",
            Duration::from_secs(30),
            |rows| rows.len() == 1 && rows[0]["state"] == "succeeded",
        )
        .await;
    let row = &rows[0];
    let attempts = attempts_of(row);
    let posts = ep.posts_to(&sub.endpoint);
    println!(
        "POSTs before the kill: {posts_at_kill}, in all: {}; attempts recorded: {}",
        posts.len(),
        attempts.len()
    );
    assert_eq!(
        attempts.len(),
        3,
        "the attempt log should hold both failed attempts and the success (the first was \
         on disk before the SIGKILL): {row}"
    );
    assert_eq!(
        posts.len(),
        attempts.len(),
        "no attempt was in flight or uncommitted at the kill: nothing is sent twice"
    );
    let (last, earlier) = attempts.split_last().unwrap();
    assert_eq!(last["status_code"], 200, "{row}");
    assert_eq!(last["error"], Value::Null, "{row}");
    for a in earlier {
        assert_eq!(a["status_code"], 500, "{row}");
    }
    assert_eq!(row["next_attempt"], Value::Null, "{row}");

    // The receiver: exactly one POST answered 200 (the last), and the same webhook-id
    // throughout, across the restart.
    assert_eq!(posts.last().unwrap().answered, 200);
    assert_eq!(posts.iter().filter(|p| p.answered == 200).count(), 1);
    let ids: HashSet<String> = posts
        .iter()
        .map(|p| assert_signed_delivery(p, &sub.secret_key, "crash.event"))
        .collect();
    assert_eq!(ids.len(), 1, "webhook-id must not change across retries");
    assert_eq!(row["id"], ids.iter().next().unwrap().as_str());

    assert_eq!(node.failed_count(&sub).await, 0);
    node.wait_trigger_counts(
        &owner,
        &tid,
        &delivery_counts(&[("succeeded", 1)]),
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn sigkill_during_a_2000_subscriber_fanout_serves_everyone_with_bounded_duplicates() {
    const N: usize = 2000;
    const IN_FLIGHT: usize = 32;
    const MAX_IN_FLIGHT: usize = 64;
    const COMMIT_WINDOW: usize = 64;
    // The most deliveries a crash may send again: those in flight and those whose
    // outcome awaited its commit.
    const RESEND_BOUND: usize = MAX_IN_FLIGHT + COMMIT_WINDOW;
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn_with(&format!(
        r#"
[security]
pbkdf2_iterations = 1
[delivery]
max_in_flight = {MAX_IN_FLIGHT}
commit_window = {COMMIT_WINDOW}
retry_delays_secs = [0.2, 0.2, 0.2]
[http_client]
timeout_secs = 2.0
"#
    ))
    .await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let reg = id_of(&node.register(&owner, "fan.event").await);

    let started = Instant::now();
    let reqs = (0..N)
        .map(|i| {
            node.post("/v1/account").json(&json!({
                "username": format!("fan{i:04}"),
                "endpoint": ep.endpoint_url(&format!("fan/{i}")),
            }))
        })
        .collect();
    let accounts: Vec<Account> = send_all(reqs, IN_FLIGHT)
        .await
        .into_iter()
        .map(|r| Account::from_record(r.expect(201).json().clone()))
        .collect();
    let created = started.elapsed();
    let path = format!("/v1/webhook/subscription/{reg}");
    let reqs = accounts.iter().map(|a| node.post(&path).auth(a)).collect();
    let subscriptions: HashSet<String> = send_all(reqs, IN_FLIGHT)
        .await
        .into_iter()
        .map(|r| id_of(r.expect(201).json()))
        .collect();
    assert_eq!(subscriptions.len(), N);
    let subscribed = started.elapsed();

    let tid = id_of(&node.trigger(&owner, &reg).await);
    // In full swing: every worker busy and outcomes streaming to disk.
    eventually("a quarter of the delivery POSTs", LONG_DEADLINE, || async {
        (ep.post_count() >= N / 4).then_some(())
    })
    .await;
    node.kill().await;
    let posts_at_kill = ep.post_count();
    let killed = started.elapsed();
    node.restart().await;

    let distinct_ids = |posts: &[RecordedPost]| -> usize {
        posts
            .iter()
            .filter_map(|p| p.header("webhook-id"))
            .collect::<HashSet<_>>()
            .len()
    };
    let served = eventually_quiet(LONG_DEADLINE, || async {
        (distinct_ids(&ep.posts()) >= N).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "after {LONG_DEADLINE:?} only {} of {N} subscriptions were served ({} POSTs, {posts_at_kill} before the kill)",
        distinct_ids(&ep.posts()),
        ep.post_count()
    );
    let status = node
        .wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", N as u64)]),
            LONG_DEADLINE,
        )
        .await;
    let done = started.elapsed();

    // Every subscriber got its own delivery, signed with its own key, and only the
    // deliveries of this trigger were made.
    let posts = ep.posts();
    let secret_by_path: HashMap<String, &Account> = accounts
        .iter()
        .map(|a| (ep.path_of(&a.endpoint), a))
        .collect();
    let mut id_by_path: HashMap<&str, String> = HashMap::new();
    for p in &posts {
        let account = secret_by_path
            .get(&p.path)
            .unwrap_or_else(|| panic!("POST to an unexpected path {}", p.path));
        assert_eq!(p.body.as_ref(), DEFAULT_BODY);
        let id = assert_signed_delivery(p, &account.secret_key, "fan.event");
        let first = id_by_path.entry(p.path.as_str()).or_insert(id.clone());
        assert_eq!(
            *first, id,
            "{}: the webhook-id changed between two POSTs of one delivery",
            p.path
        );
    }
    assert_eq!(id_by_path.len(), N, "every subscriber's path got a POST");
    let ids: HashSet<&String> = id_by_path.values().collect();
    assert_eq!(ids.len(), N, "distinct webhook-ids");

    let rows = node.deliveries(&owner, &tid).await;
    assert_eq!(rows.len(), N);
    assert!(
        rows.iter().all(|r| r["state"] == "succeeded"),
        "every delivery succeeded"
    );
    let row_subs: HashSet<String> = rows
        .iter()
        .map(|r| r["subscription_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(row_subs, subscriptions, "one delivery per subscription");
    let row_ids: HashSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let post_ids: HashSet<String> = ids.into_iter().cloned().collect();
    assert_eq!(row_ids, post_ids);

    // Duplicates, by webhook-id: a delivery received more than once was either retried
    // (each attempt recorded) or sent again after the crash (a POST with no recorded
    // attempt: its outcome was not on disk).
    let mut posts_by_id: HashMap<String, usize> = HashMap::new();
    for p in &posts {
        let id = p.header("webhook-id").expect("webhook-id checked above");
        *posts_by_id.entry(id).or_default() += 1;
    }
    let attempts_by_id: HashMap<String, usize> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), attempts_of(r).len()))
        .collect();
    let twice = posts_by_id.values().filter(|n| **n > 1).count();
    let retried = attempts_by_id.values().filter(|n| **n > 1).count();
    let resent: usize = posts_by_id
        .iter()
        .map(|(id, n)| n.saturating_sub(attempts_by_id[id]))
        .sum();
    println!(
        "fan-out of {N}: accounts created in {created:?}, subscribed at {subscribed:?}, \
         SIGKILL at {killed:?} after {posts_at_kill} POSTs, all served at {done:?}; \
         {} POSTs in all; duplicates: {twice} deliveries received more than once, \
         {resent} POSTs re-sent after the crash, {retried} deliveries retried; \
         bound {RESEND_BOUND} (max_in_flight {MAX_IN_FLIGHT} + commit_window \
         {COMMIT_WINDOW}); status {status}",
        posts.len()
    );
    assert!(
        resent <= RESEND_BOUND,
        "{resent} deliveries were sent again after the crash, over the bound of \
         {RESEND_BOUND}"
    );
    assert!(
        twice <= RESEND_BOUND + retried,
        "{twice} deliveries were received more than once: over the bound of {RESEND_BOUND} \
         re-sent after the crash plus the {retried} retried"
    );
}
