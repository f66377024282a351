//! Error paths of the trigger routes (routes 20–21 of the auth table). Deliveries are not asserted here.

use crate::common::*;
use serde_json::json;

use super::guards::*;

const TRIGGERED: &str = "/v1/webhook/triggered";

fn trigger_path(id: &str) -> String {
    format!("{TRIGGERED}/{id}")
}

/// World plus one registration by john that jane subscribed to.
async fn with_registration() -> (World, String) {
    let w = World::new().await;
    let reg = id_of(&w.node.register(&w.john, "john.event").await);
    w.node.subscribe(&w.jane, &reg).await;
    (w, reg)
}

// ---------------------------------------------------------------------------------------------
// 20. POST /v1/webhook/triggered/<registration_id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_returns_the_triggered_record() {
    let (w, reg) = with_registration().await;
    let t = w.node.trigger(&w.john, &reg).await;
    assert_eq!(t["registration_id"], reg.as_str());
    assert!(t["epoch"].is_f64(), "{t}");
    uuid::Uuid::parse_str(t["id"].as_str().unwrap()).expect("uuid id");
    let rows = w.node.all_triggered().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], t["id"]);
    assert_eq!(rows[0]["registration_id"], reg.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_missing_id() {
    let w = World::new().await;
    for path in [TRIGGERED, "/v1/webhook/triggered/"] {
        w.node
            .post(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing registration_id");
        w.node
            .post(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing registration_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_non_owner_and_admin_are_refused() {
    let (w, reg) = with_registration().await;
    // jane is a subscriber, not the owner; the admin has no bypass on this route
    for who in [w.jane.creds(), w.admin()] {
        w.node
            .post(&trigger_path(&reg))
            .auth(&who)
            .send()
            .await
            .expect_error(401, NO_TRIGGER_ACCESS);
    }
    assert!(w.node.all_triggered().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_bad_and_unknown_ids() {
    let (w, reg) = with_registration().await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .post(&trigger_path(id))
            .auth(&w.john)
            .send()
            .await
            .expect_error(404, "Registration id not found");
    }
    // a deleted registration is not found either
    w.node
        .delete(&format!("/v1/webhook/registration/{reg}"))
        .auth(&w.john)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    w.node
        .post(&trigger_path(&reg))
        .auth(&w.john)
        .send()
        .await
        .expect_error(404, "Registration id not found");
    assert!(w.node.all_triggered().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_body_is_optional_but_must_be_a_json_object_when_present() {
    // An optional `{"event_data": ...}` body; without a body the stored data is used.
    let (w, reg) = with_registration().await;
    let path = trigger_path(&reg);
    for raw in ["{", "not json", "{\"event_data\": }"] {
        let r = w.node.post(&path).auth(&w.john).body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?}: {r}");
        r.expect_error(400, "Invalid JSON body");
    }
    for raw in ["[]", "\"x\"", "5"] {
        let r = w.node.post(&path).auth(&w.john).body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?}: {r}");
        r.expect_error(400, "JSON body must be an object");
    }
    assert!(
        w.node.all_triggered().await.is_empty(),
        "nothing was triggered"
    );
    // no body, an empty object, and a dynamic payload are all fine
    w.node.post(&path).auth(&w.john).send().await.expect(201);
    w.node
        .post(&path)
        .auth(&w.john)
        .json(&json!({}))
        .send()
        .await
        .expect(201);
    w.node
        .post(&path)
        .auth(&w.john)
        .json(&json!({"event_data": {"dynamic": [1, 2, 3]}}))
        .send()
        .await
        .expect(201);
    assert_eq!(w.node.all_triggered().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_idempotency_key_returns_the_first_record() {
    // A repeat with the same Idempotency-Key returns the first triggered record (200).
    let (w, reg) = with_registration().await;
    let path = trigger_path(&reg);
    let first = w
        .node
        .post(&path)
        .auth(&w.john)
        .header("Idempotency-Key", "abc-123")
        .send()
        .await
        .expect(201);
    let again = w
        .node
        .post(&path)
        .auth(&w.john)
        .header("Idempotency-Key", "abc-123")
        .send()
        .await
        .expect(200);
    assert_eq!(again.json(), first.json());
    w.node
        .post(&path)
        .auth(&w.john)
        .header("Idempotency-Key", "other")
        .send()
        .await
        .expect(201);
    assert_eq!(w.node.all_triggered().await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 21. GET /v1/webhook/triggered (all)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_triggered_bad_paging() {
    let w = World::new().await;
    assert_bad_paging(|q| w.node.get(&format!("{TRIGGERED}?{q}")).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_triggered_shows_everyones_to_any_account() {
    let (w, reg) = with_registration().await;
    let jane_reg = id_of(&w.node.register(&w.jane, "jane.event").await);
    let a = w.node.trigger(&w.john, &reg).await;
    let b = w.node.trigger(&w.jane, &jane_reg).await;
    for who in [w.john.creds(), w.jane.creds(), w.admin()] {
        let rows = w
            .node
            .page(TRIGGERED, &who, 0, 10)
            .await
            .items("triggered_webhooks");
        assert_eq!(rows, vec![a.clone(), b.clone()]);
    }
    // empty listing → 204 on a fresh node
    let fresh = TestNode::spawn().await;
    fresh
        .page(TRIGGERED, &fresh.admin(), 0, 10)
        .await
        .expect_no_content();
}
