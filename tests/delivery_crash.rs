//! At-least-once delivery across a crash (DESIGN.md §5): SIGKILL the node between retries and
//! in the middle of a large fan-out, restart it on the same data, and check that no delivery
//! is lost.

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
retry_delays_secs = [1.0, 1.0, 1.0]
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

    node.kill().await;
    let posts_at_kill = ep.posts_to(&sub.endpoint).len();
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
    eprintln!(
        "POSTs before the kill: {posts_at_kill}, in all: {}; attempts recorded: {}",
        posts.len(),
        attempts.len()
    );
    assert!(
        attempts.len() >= 3,
        "the attempt log should hold both failed attempts and the success (the first was \
         recorded before the SIGKILL): {row}"
    );
    let (last, earlier) = attempts.split_last().unwrap();
    assert_eq!(last["status_code"], 200, "{row}");
    assert_eq!(last["error"], Value::Null, "{row}");
    for a in earlier {
        assert_eq!(a["status_code"], 500, "{row}");
    }
    assert_eq!(row["next_attempt"], Value::Null, "{row}");

    // The receiver: at least the three POSTs, exactly one answered 200 (the last), and the
    // same webhook-id throughout, across the restart.
    assert!(posts.len() >= 3, "{posts:?}");
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
async fn sigkill_during_a_2000_subscriber_fanout_serves_everyone() {
    const N: usize = 2000;
    const IN_FLIGHT: usize = 32;
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn_with(
        r#"
[security]
pbkdf2_iterations = 1
[delivery]
max_in_flight = 64
retry_delays_secs = [0.2, 0.2, 0.2]
[http_client]
timeout_secs = 2.0
"#,
    )
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
    eventually("the first delivery POSTs", LONG_DEADLINE, || async {
        (ep.post_count() > 0).then_some(())
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

    let mut per_path: HashMap<&str, usize> = HashMap::new();
    for p in &posts {
        *per_path.entry(p.path.as_str()).or_default() += 1;
    }
    let twice = per_path.values().filter(|n| **n > 1).count();
    eprintln!(
        "fan-out of {N}: accounts created in {created:?}, subscribed at {subscribed:?}, \
         SIGKILL at {killed:?} after {posts_at_kill} POSTs, all served at {done:?}; \
         {} POSTs in all, {twice} subscribers served more than once; status {status}",
        posts.len()
    );
}
