//! Durability across process restarts: SIGKILL (no clean stop) and SIGTERM (graceful).

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Every listing, whole and in pages of 2, as the admin sees it.
async fn snapshot(node: &TestNode) -> Vec<(String, u16, Option<Value>)> {
    let admin = node.admin();
    let mut out = Vec::new();
    for path in [
        "/v1/accounts",
        "/v1/webhook/registrations",
        "/v1/webhook/subscriptions",
        "/v1/webhook/triggered",
    ] {
        for (start, limit) in [(0, 100), (0, 2), (2, 2), (4, 2), (6, 2)] {
            let r = node.page(path, &admin, start, limit).await;
            out.push((
                format!("{path} ({start},{limit})"),
                r.status,
                r.json.clone(),
            ));
        }
    }
    out
}

struct Data {
    john: Account,
    jane: Account,
    sam: Account,
}

/// Three accounts, three registrations, four subscriptions, two triggers, one patched
/// description, one rotated secret.
async fn populate(node: &TestNode, ep: &EndpointServer) -> Data {
    let john = node
        .create_account("johndoe", &ep.endpoint_url("john"))
        .await;
    let jane = node
        .create_account("janedoe", &ep.endpoint_url("jane"))
        .await;
    let sam = node
        .create_account("samjones", &ep.endpoint_url("sam"))
        .await;
    let r1 = id_of(&node.register(&john, "john.one").await);
    let r2 = id_of(&node.register(&john, "john.two").await);
    let r3 = id_of(&node.register(&jane, "jane.one").await);
    node.subscribe(&jane, &r1).await;
    node.subscribe(&sam, &r1).await;
    node.subscribe(&sam, &r2).await;
    node.subscribe(&john, &r3).await;
    node.trigger(&john, &r1).await;
    node.trigger(&jane, &r3).await;
    node.patch(&format!("/v1/webhook/registration/{r2}"))
        .auth(&john)
        .json(&serde_json::json!({"description": "patched"}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    node.post("/v1/account/reset/secretkey")
        .auth(&sam)
        .send()
        .await
        .expect(200);
    Data { john, jane, sam }
}

async fn assert_keys_still_work(node: &TestNode, data: &Data) {
    for who in [&data.john, &data.jane, &data.sam] {
        node.read_account(who).await;
    }
    node.get("/v1/accounts?start=0&limit=1")
        .auth(&node.admin())
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keeps_everything() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let data = populate(&node, &ep).await;
    let before = snapshot(&node).await;
    let admin_key = node.admin_key.clone();

    // No clean stop: whatever was acknowledged must already be durable.
    node.kill().await;
    node.restart().await;

    assert!(
        !prints_admin_keys(&node.startup_stdout),
        "the admin must not be re-created: {:?}",
        node.startup_stdout
    );
    assert_eq!(node.admin_key, admin_key);
    assert_eq!(
        snapshot(&node).await,
        before,
        "listings identical after restart"
    );
    assert_keys_still_work(&node, &data).await;
    let admins: Vec<Value> = node
        .all_accounts()
        .await
        .into_iter()
        .filter(|a| a["is_admin"] == true)
        .collect();
    assert_eq!(admins.len(), 1, "exactly one admin");

    // the node keeps working: a new account lands after the old ones
    let newer = node
        .create_account("leahrichards", &ep.endpoint_url("leah"))
        .await;
    let accounts = node.all_accounts().await;
    assert_eq!(accounts.last().unwrap()["id"], newer.id.as_str());
    // and a second kill/restart still has it
    node.kill().await;
    node.restart().await;
    assert_eq!(node.all_accounts().await, accounts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_deletes_keeps_them_deleted() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let data = populate(&node, &ep).await;
    node.delete(&format!("/v1/account/{}", data.jane.id))
        .auth(&data.jane)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    node.delete("/v1/webhook/subscriptions")
        .auth(&node.admin())
        .send()
        .await
        // jane's own subscription and john's to her registration went with her: 2 are left
        .expect_write(&[("deleted", 2)]);
    let before = snapshot(&node).await;
    node.kill().await;
    node.restart().await;
    assert_eq!(snapshot(&node).await, before);
    node.get(&format!("/v1/account/{}", data.jane.id))
        .auth(&data.jane)
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_within_the_grace_period_and_keeps_data() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let data = populate(&node, &ep).await;
    let before = snapshot(&node).await;

    let started = Instant::now();
    let status = node.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit after SIGTERM: {status:?}"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(SHUTDOWN_GRACE_SECS + 1),
        "took {:?} to stop (grace {SHUTDOWN_GRACE_SECS}s)",
        started.elapsed()
    );

    node.restart().await;
    assert_eq!(snapshot(&node).await, before);
    assert_keys_still_work(&node, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_an_in_flight_request() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    // The echo endpoint answers after 1.5 s, so the create is in flight when SIGTERM arrives.
    let slow = ep.slow_url(1500, "slow");
    let request = node
        .post("/v1/account")
        .json(&serde_json::json!({"username": "slowpoke", "endpoint": slow}));
    let in_flight = tokio::spawn(request.send());
    eventually(
        "the echo to reach the slow endpoint",
        POLL_DEADLINE,
        || async { (!ep.echo_requests(&slow).is_empty()).then_some(()) },
    )
    .await;

    let status = node.terminate().await;
    let r = in_flight.await.expect("request task");
    assert_eq!(r.status, 201, "the in-flight request completed: {r}");
    assert_eq!(status.code(), Some(0), "{status:?}");

    node.restart().await;
    let names: Vec<Value> = node
        .all_accounts()
        .await
        .iter()
        .map(|a| a["username"].clone())
        .collect();
    assert_eq!(names, ["admin", "slowpoke"]);
}
