//! Admin rules (the last admin cannot be deleted, admins see every record) and the key-reset
//! rate limit.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admin_record() {
    let node = TestNode::spawn().await;
    assert!(is_hex40(&node.admin_key), "{}", node.admin_key);
    assert!(is_hex40(&node.admin_secret), "{}", node.admin_secret);
    let admin = node.admin_record().await;
    assert_eq!(admin["username"], "admin");
    assert_eq!(admin["is_admin"], true);
    assert_eq!(admin["endpoint"], "");
    assert_eq!(admin["failed_count"], 0, "the admin has failed_count 0");
    assert_eq!(admin["secret_key"], node.admin_secret.as_str());
    assert!(admin["api_key"]
        .as_str()
        .unwrap()
        .starts_with("pbkdf2:sha256:1000$"));
    // the admin reads its own record like anyone else
    node.get(&format!("/v1/account/{}", id_of(&admin)))
        .auth(&node.admin())
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bypasses_ownership_on_deletes_and_patch() {
    let w = World::new().await;
    let admin = w.admin();
    let reg = id_of(&w.node.register(&w.john, "john.event").await);
    let reg2 = id_of(&w.node.register(&w.john, "john.other").await);
    let sub = id_of(&w.node.subscribe(&w.jane, &reg2).await);

    w.node
        .patch(&format!("/v1/webhook/registration/{reg}"))
        .auth(&admin)
        .json(&json!({"description": "by admin"}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    let regs = w.node.all_registrations().await;
    assert_eq!(regs[0]["description"], "by admin");
    assert_eq!(regs[0]["account_id"], w.john.id.as_str(), "owner unchanged");

    w.node
        .delete(&format!("/v1/webhook/subscription/{sub}"))
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    w.node
        .delete(&format!("/v1/webhook/registration/{reg}"))
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    w.node
        .delete(&format!("/v1/account/{}", w.jane.id))
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    let names: Vec<_> = w
        .node
        .all_accounts()
        .await
        .iter()
        .map(|a| a["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin", "johndoe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_has_no_bypass_on_get_account_and_trigger() {
    let w = World::new().await;
    let admin = w.admin();
    w.node
        .get(&format!("/v1/account/{}", w.john.id))
        .auth(&admin)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    let reg = id_of(&w.node.register(&w.john, "john.event").await);
    w.node
        .post(&format!("/v1/webhook/triggered/{reg}"))
        .auth(&admin)
        .send()
        .await
        .expect_error(401, NO_TRIGGER_ACCESS);
    assert!(w.node.all_triggered().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_cannot_be_deleted() {
    let w = World::new().await;
    let admin_id = id_of(&w.node.admin_record().await);
    w.node
        .delete(&format!("/v1/account/{admin_id}"))
        .auth(&w.admin())
        .send()
        .await
        .expect_error(400, "Cannot delete the last admin account");
    // a non-admin trying it is simply not authorized
    w.node
        .delete(&format!("/v1/account/{admin_id}"))
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    // the admin is still there and still works
    let accounts = w.node.all_accounts().await;
    assert_eq!(accounts.len(), 3);
    assert_eq!(accounts[0]["username"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_username_is_reserved() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    node.try_create_account("admin", &ep.endpoint_url("a"))
        .await
        .expect_error(409, "Username already exists");
    assert!(ep.gets().is_empty(), "the 409 comes before the echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_get_not_an_admin_on_admin_routes() {
    let w = World::new().await;
    let routes = [
        ("GET", "/v1/accounts?start=0&limit=10"),
        ("DELETE", "/v1/accounts"),
        ("DELETE", "/v1/webhook/registrations"),
        ("DELETE", "/v1/webhook/subscriptions"),
    ];
    for (method, path) in routes {
        w.node
            .req(method, path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(401, NOT_AN_ADMIN);
    }
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cannot_reset_keys_without_an_endpoint() {
    let node = TestNode::spawn().await;
    node.post("/v1/account/reset/apikey")
        .username("admin")
        .send()
        .await
        .expect_error(404, "Endpoint not found");
    node.post("/v1/account/reset/secretkey")
        .auth(&node.admin())
        .send()
        .await
        .expect_error(404, "Endpoint not found");
}

// ---------------------------------------------------------------------------------------------
// Key reset rate limit, with security.key_resets_per_hour = 2
// ---------------------------------------------------------------------------------------------

const LIMITED: &str = "[security]\nkey_resets_per_hour = 2";

#[track_caller]
fn assert_too_many(r: &Resp) {
    r.expect_error(429, "Too many key resets");
    let retry_after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r}"));
    let secs: u64 = retry_after
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not delta-seconds: {retry_after:?}"));
    assert!((1..=3600).contains(&secs), "Retry-After {secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_resets_are_rate_limited() {
    let w = World::with_config(LIMITED).await;
    for _ in 0..2 {
        w.node
            .post("/v1/account/reset/apikey")
            .username(&w.john.username)
            .send()
            .await
            .expect(200);
    }
    let r = w
        .node
        .post("/v1/account/reset/apikey")
        .username(&w.john.username)
        .send()
        .await;
    assert_too_many(&r);
    // the refused reset never reached the endpoint, and the last delivered key still works
    let keys = w.ep.keys(&w.john.endpoint, "api_key");
    assert_eq!(keys.len(), 2);
    w.node
        .get(&format!("/v1/account/{}", w.john.id))
        .key(&w.john.username, &keys[1])
        .send()
        .await
        .expect(200);
    // the limit is per account: jane is unaffected
    w.node
        .post("/v1/account/reset/apikey")
        .username(&w.jane.username)
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_key_resets_are_rate_limited() {
    let w = World::with_config(LIMITED).await;
    for _ in 0..2 {
        w.node
            .post("/v1/account/reset/secretkey")
            .auth(&w.john)
            .send()
            .await
            .expect(200);
    }
    let last = w.ep.last_key(&w.john.endpoint, "secret_key").unwrap();
    let r = w
        .node
        .post("/v1/account/reset/secretkey")
        .auth(&w.john)
        .send()
        .await;
    assert_too_many(&r);
    assert_eq!(w.ep.keys(&w.john.endpoint, "secret_key").len(), 2);
    assert_eq!(
        w.node.read_account(&w.john).await["secret_key"],
        last.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_both_kinds_of_reset() {
    // Assumption: "per account" (config doc "Key resets (API or secret)") means API-key
    // and secret-key resets share one budget.
    let w = World::with_config(LIMITED).await;
    w.node
        .post("/v1/account/reset/secretkey")
        .auth(&w.john)
        .send()
        .await
        .expect(200);
    w.node
        .post("/v1/account/reset/apikey")
        .username(&w.john.username)
        .send()
        .await
        .expect(200);
    let r = w
        .node
        .post("/v1/account/reset/apikey")
        .username(&w.john.username)
        .send()
        .await;
    assert_too_many(&r);
}
