//! Error paths of the registration routes (routes 9–14 of the auth table).

use crate::common::*;
use serde_json::{json, Value};

use super::guards::*;

const REG: &str = "/v1/webhook/registration";
const REGS: &str = "/v1/webhook/registrations";

fn reg_path(id: &str) -> String {
    format!("{REG}/{id}")
}

fn valid_body() -> Value {
    json!({"event": "my.event", "description": "desc", "event_data": {"k": [1, 2.5, "x"]}})
}

// ---------------------------------------------------------------------------------------------
// 9. POST /v1/webhook/registration
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_registration_returns_the_record() {
    let w = World::new().await;
    let data = json!({"message": "hello", "items": [{"item1": 1}, {"item2": 2}], "n": null});
    let r = w
        .node
        .post(REG)
        .auth(&w.john)
        .json(&json!({"event": "mywebhook.event", "description": "d", "event_data": data}))
        .send()
        .await
        .expect(201);
    let rec = r.json();
    assert_eq!(rec["account_id"], w.john.id.as_str());
    assert_eq!(rec["event"], "mywebhook.event");
    assert_eq!(rec["description"], "d");
    assert_eq!(rec["event_data"], data);
    assert!(rec["epoch"].is_f64(), "{r}");
    uuid::Uuid::parse_str(rec["id"].as_str().unwrap()).expect("uuid id");
    // event_data may be any JSON, null included (it is required, though)
    for data in [
        json!(null),
        json!([1, 2]),
        json!("text"),
        json!(12.5),
        json!({}),
    ] {
        let r = w
            .node
            .post(REG)
            .auth(&w.john)
            .json(&json!({"event": "e", "description": "", "event_data": data}))
            .send()
            .await
            .expect(201);
        assert_eq!(r.json()["event_data"], data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_registration_invalid_json() {
    let w = World::new().await;
    assert_bad_json_bodies(|| w.node.post(REG).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_registration_missing_fields() {
    let w = World::new().await;
    for (field, message) in [
        ("event", "Missing event field"),
        ("description", "Missing description field"),
        ("event_data", "Missing event_data field"),
    ] {
        let mut body = valid_body();
        body.as_object_mut().unwrap().remove(field);
        w.node
            .post(REG)
            .auth(&w.john)
            .json(&body)
            .send()
            .await
            .expect_error(400, message);
    }
    assert!(w.node.all_registrations().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_registration_wrongly_typed_fields() {
    let w = World::new().await;
    let cases = [
        ("event", json!(5), "Invalid event field"),
        ("event", json!(null), "Invalid event field"),
        ("event", json!(""), "Invalid event field"),
        ("event", json!(["a"]), "Invalid event field"),
        ("event", json!({"a": 1}), "Invalid event field"),
        ("description", json!(5), "Invalid description field"),
        ("description", json!(null), "Invalid description field"),
        ("description", json!(true), "Invalid description field"),
        ("description", json!(["d"]), "Invalid description field"),
    ];
    for (field, value, message) in cases {
        let mut body = valid_body();
        body[field] = value.clone();
        let r = w.node.post(REG).auth(&w.john).json(&body).send().await;
        assert_eq!(r.status, 400, "{field} = {value} should be refused: {r}");
        r.expect_error(400, message);
    }
    assert!(w.node.all_registrations().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. GET /v1/webhook/registration (own)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_own_registrations_bad_paging() {
    let w = World::new().await;
    assert_bad_paging(|q| w.node.get(&format!("{REG}?{q}")).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_own_registrations_shows_only_the_callers() {
    let w = World::new().await;
    let john_reg = w.node.register(&w.john, "john.event").await;
    // jane has none: 204 with an empty body, not an empty list
    w.node.page(REG, &w.jane, 0, 10).await.expect_no_content();
    // the admin's own list is empty too (no bypass: it lists the caller's own)
    w.node
        .page(REG, &w.admin(), 0, 10)
        .await
        .expect_no_content();
    let r = w.node.page(REG, &w.john, 0, 10).await;
    assert_eq!(r.items("registrations"), vec![john_reg]);
    assert!(r.json().get("next_start").is_none(), "{r}");
}

// ---------------------------------------------------------------------------------------------
// 11. PATCH /v1/webhook/registration/<id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_missing_id() {
    let w = World::new().await;
    for path in [REG, "/v1/webhook/registration/"] {
        w.node
            .patch(path)
            .auth(&w.john)
            .json(&json!({"description": "x"}))
            .send()
            .await
            .expect_error(400, "Missing registration_id");
        w.node
            .patch(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing registration_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_non_owner() {
    let w = World::new().await;
    let path = reg_path(&id_of(&w.node.register(&w.john, "e").await));
    w.node
        .patch(&path)
        .auth(&w.jane)
        .json(&json!({"description": "jane was here"}))
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    // access is checked before the body
    w.node
        .patch(&path)
        .auth(&w.jane)
        .body("{")
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    assert_eq!(
        w.node.all_registrations().await[0]["description"],
        "e description"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_bad_and_unknown_ids() {
    let w = World::new().await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .patch(&reg_path(id))
            .auth(&w.john)
            .json(&json!({"description": "x"}))
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
        w.node
            .patch(&reg_path(id))
            .auth(&w.admin())
            .json(&json!({"description": "x"}))
            .send()
            .await
            .expect_write(&[("skipped", 1)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_invalid_json() {
    let w = World::new().await;
    let path = reg_path(&id_of(&w.node.register(&w.john, "e").await));
    assert_bad_json_bodies(|| w.node.patch(&path).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_missing_and_invalid_description() {
    let w = World::new().await;
    let path = reg_path(&id_of(&w.node.register(&w.john, "e").await));
    for body in [json!({}), json!({"event": "other"})] {
        w.node
            .patch(&path)
            .auth(&w.john)
            .json(&body)
            .send()
            .await
            .expect_error(400, "Description field missing");
    }
    for bad in [json!(5), json!(null), json!(["x"]), json!({"x": 1})] {
        w.node
            .patch(&path)
            .auth(&w.john)
            .json(&json!({"description": bad}))
            .send()
            .await
            .expect_error(400, "Invalid description field");
    }
    assert_eq!(
        w.node.all_registrations().await[0]["description"],
        "e description"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_registration_changes_only_the_description() {
    let w = World::new().await;
    let before = w.node.register(&w.john, "e").await;
    let path = reg_path(&id_of(&before));
    w.node
        .patch(&path)
        .auth(&w.john)
        .json(&json!({"description": "new", "event": "changed", "event_data": {"x": 1}}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    let after = w.node.all_registrations().await.remove(0);
    assert_eq!(after["description"], "new");
    assert_eq!(after["event"], before["event"]);
    assert_eq!(after["event_data"], before["event_data"]);
    assert_eq!(after["account_id"], before["account_id"]);
    // the same description again → unchanged
    w.node
        .patch(&path)
        .auth(&w.john)
        .json(&json!({"description": "new"}))
        .send()
        .await
        .expect_write(&[("unchanged", 1)]);
}

// ---------------------------------------------------------------------------------------------
// 12. DELETE /v1/webhook/registration/<id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_registration_missing_id() {
    let w = World::new().await;
    for path in [REG, "/v1/webhook/registration/"] {
        w.node
            .delete(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing registration_id");
        w.node
            .delete(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing registration_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_registration_non_owner() {
    let w = World::new().await;
    let path = reg_path(&id_of(&w.node.register(&w.john, "e").await));
    w.node
        .delete(&path)
        .auth(&w.jane)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    assert_eq!(w.node.all_registrations().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_registration_bad_and_unknown_ids() {
    let w = World::new().await;
    w.node.register(&w.john, "e").await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .delete(&reg_path(id))
            .auth(&w.john)
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
        // admin: a delete through a filter, so deleted 0 and NOT skipped
        w.node
            .delete(&reg_path(id))
            .auth(&w.admin())
            .send()
            .await
            .expect_write(&[]);
    }
    assert_eq!(w.node.all_registrations().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_registration_cascades_to_its_subscriptions() {
    let w = World::new().await;
    let reg = id_of(&w.node.register(&w.john, "e").await);
    let other = id_of(&w.node.register(&w.jane, "other").await);
    w.node.subscribe(&w.jane, &reg).await;
    w.node.subscribe(&w.john, &reg).await;
    w.node.subscribe(&w.john, &other).await;
    w.node
        .delete(&reg_path(&reg))
        .auth(&w.john)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    let subs = w.node.all_subscriptions().await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["registration_id"], other.as_str());
    // gone: the owner now gets 401 like any non-owner
    w.node
        .delete(&reg_path(&reg))
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// 13. GET /v1/webhook/registrations (all)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_registrations_bad_paging() {
    let w = World::new().await;
    assert_bad_paging(|q| w.node.get(&format!("{REGS}?{q}")).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_registrations_shows_everyones() {
    let w = World::new().await;
    let a = w.node.register(&w.john, "a").await;
    let b = w.node.register(&w.jane, "b").await;
    for who in [w.john.creds(), w.jane.creds(), w.admin()] {
        let r = w.node.page(REGS, &who, 0, 10).await;
        assert_eq!(r.items("registrations"), vec![a.clone(), b.clone()]);
    }
}

// ---------------------------------------------------------------------------------------------
// 14. DELETE /v1/webhook/registrations
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_registrations_cascades_to_subscriptions() {
    let w = World::new().await;
    let a = id_of(&w.node.register(&w.john, "a").await);
    let b = id_of(&w.node.register(&w.jane, "b").await);
    w.node.subscribe(&w.jane, &a).await;
    w.node.subscribe(&w.john, &b).await;
    w.node
        .delete(REGS)
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("deleted", 2)]);
    assert!(w.node.all_registrations().await.is_empty());
    // cascade: all subscriptions go too
    assert!(w.node.all_subscriptions().await.is_empty());
    // the accounts stay
    assert_eq!(w.node.all_accounts().await.len(), 3);
}
