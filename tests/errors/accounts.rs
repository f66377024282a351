//! Error paths of the account routes 2–6: read, change and delete one account, and the
//! admin's listing and bulk delete.

use crate::common::*;
use serde_json::json;

use super::account_path;
use super::guards::*;

// ---------------------------------------------------------------------------------------------
// 2. GET /v1/account/<id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_ok_shows_hashed_key() {
    let w = World::new().await;
    let rec = w.node.read_account(&w.john).await;
    assert_eq!(rec["id"], w.john.id.as_str());
    assert_eq!(rec["username"], "johndoe");
    assert_eq!(rec["secret_key"], w.john.secret_key.as_str());
    assert_eq!(rec["failed_count"], 0);
    assert_eq!(rec["is_admin"], false);
    assert_eq!(
        rec["standard_webhooks_secret"],
        format!("whsec_{}", base64(w.john.secret_key.as_bytes())).as_str()
    );
    let hash = rec["api_key"].as_str().unwrap();
    assert_ne!(hash, w.john.api_key, "reads never show the plaintext key");
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 3, "{hash}");
    assert_eq!(
        parts[0], "pbkdf2:sha256:1000",
        "iterations come from the config"
    );
    assert!(!parts[1].is_empty());
    assert_eq!(parts[2].len(), 64);
    assert!(parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_missing_id_comes_before_content_type_and_auth() {
    let w = World::new().await;
    for path in ["/v1/account", "/v1/account/"] {
        w.node
            .get(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing account_id");
        // no auth, no content type: still the path-id answer (contract guard order)
        w.node
            .get(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing account_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_non_owner_and_admin_are_refused() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    w.node
        .get(&path)
        .auth(&w.jane)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    // no admin bypass on this route
    w.node
        .get(&path)
        .auth(&w.admin())
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_bad_and_unknown_ids() {
    let w = World::new().await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .get(&account_path(id))
            .auth(&w.john)
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
        w.node
            .get(&account_path(id))
            .auth(&w.admin())
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. PATCH /v1/account
// ---------------------------------------------------------------------------------------------

fn patch_account(w: &World) -> Req {
    w.node.patch("/v1/account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_only_changes_the_callers_own_account() {
    // The account is the one named by the (authenticated) username header: with valid
    // credentials jane can only ever change jane, and john's username with jane's key fails.
    let w = World::new().await;
    let new = w.ep.endpoint_url("jane/new");
    patch_account(&w)
        .key(&w.john.username, &w.jane.api_key)
        .json(&json!({"endpoint": new}))
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    patch_account(&w)
        .auth(&w.jane)
        .json(&json!({"endpoint": new}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    assert_eq!(w.node.read_account(&w.jane).await["endpoint"], new.as_str());
    assert_eq!(
        w.node.read_account(&w.john).await["endpoint"],
        w.john.endpoint.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_invalid_json() {
    let w = World::new().await;
    assert_bad_json_bodies(|| patch_account(&w).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_missing_and_invalid_endpoint() {
    let w = World::new().await;
    for body in [json!({}), json!({"endpoint_url": "http://127.0.0.1/"})] {
        patch_account(&w)
            .auth(&w.john)
            .json(&body)
            .send()
            .await
            .expect_error(400, "Missing endpoint field");
    }
    for bad in [
        json!(null),
        json!(5),
        json!(""),
        json!("nope"),
        json!("ftp://127.0.0.1/x"),
        json!({"url": "http://127.0.0.1/"}),
    ] {
        let r = patch_account(&w)
            .auth(&w.john)
            .json(&json!({"endpoint": bad}))
            .send()
            .await;
        assert_eq!(r.status, 400, "endpoint {bad} should be refused: {r}");
        r.expect_error(400, "Invalid endpoint field");
    }
    assert_eq!(
        w.node.read_account(&w.john).await["endpoint"],
        w.john.endpoint.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_echo_failure_changes_nothing() {
    let w = World::new().await;
    let before = w.node.read_account(&w.john).await;
    for endpoint in [
        w.ep.bad_echo_url("john/new"),
        w.ep.status_url(500, "john/new"),
    ] {
        patch_account(&w)
            .auth(&w.john)
            .json(&json!({"endpoint": endpoint}))
            .send()
            .await
            .expect_error(400, "Echo response failed");
        // the echo went to the NEW endpoint
        assert_eq!(w.ep.echo_requests(&endpoint).len(), 1);
    }
    assert_eq!(w.node.read_account(&w.john).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_result_counters_and_failed_count() {
    let w = World::new().await;
    let new = w.ep.endpoint_url("john/new");
    patch_account(&w)
        .auth(&w.john)
        .json(&json!({"endpoint": new}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    let rec = w.node.read_account(&w.john).await;
    assert_eq!(rec["endpoint"], new.as_str());
    // PATCH resets failed_count (it can only be 0 here; the field must be there)
    assert_eq!(rec["failed_count"], 0);
    // same endpoint and failed_count already 0 → unchanged (the echo still has to pass)
    patch_account(&w)
        .auth(&w.john)
        .json(&json!({"endpoint": new}))
        .send()
        .await
        .expect_write(&[("unchanged", 1)]);
    // other fields are ignored
    patch_account(&w)
        .auth(&w.john)
        .json(&json!({"endpoint": new, "username": "hacker", "is_admin": true}))
        .send()
        .await
        .expect_write(&[("unchanged", 1)]);
    let rec = w.node.read_account(&w.john).await;
    assert_eq!(rec["username"], "johndoe");
    assert_eq!(rec["is_admin"], false);
}

// ---------------------------------------------------------------------------------------------
// 4. DELETE /v1/account/<id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_missing_id() {
    let w = World::new().await;
    for path in ["/v1/account", "/v1/account/"] {
        w.node
            .delete(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing account_id");
        w.node
            .delete(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing account_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_non_owner() {
    let w = World::new().await;
    w.node
        .delete(&account_path(&w.john.id))
        .auth(&w.jane)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    w.node.read_account(&w.john).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_bad_and_unknown_ids() {
    let w = World::new().await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .delete(&account_path(id))
            .auth(&w.john)
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
        // the admin passes the ownership check and deletes nothing
        w.node
            .delete(&account_path(id))
            .auth(&w.admin())
            .send()
            .await
            .expect_write(&[("skipped", 1)]);
    }
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_own_account_cascades_and_revokes_the_key() {
    let w = World::new().await;
    let john_reg = id_of(&w.node.register(&w.john, "john.event").await);
    let jane_reg = id_of(&w.node.register(&w.jane, "jane.event").await);
    w.node.subscribe(&w.jane, &john_reg).await; // everyone's subs to john's registration go
    w.node.subscribe(&w.john, &jane_reg).await; // john's own subs go
    w.node.subscribe(&w.jane, &jane_reg).await; // this one stays

    w.node
        .delete(&account_path(&w.john.id))
        .auth(&w.john)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);

    w.node
        .get(&account_path(&w.john.id))
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
    let regs = w.node.all_registrations().await;
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["id"], jane_reg.as_str());
    let subs = w.node.all_subscriptions().await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["account_id"], w.jane.id.as_str());
    assert_eq!(subs[0]["registration_id"], jane_reg.as_str());
    // deleting again: john no longer exists
    w.node
        .delete(&account_path(&w.john.id))
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("skipped", 1)]);
}

// ---------------------------------------------------------------------------------------------
// 5. GET /v1/accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_bad_paging() {
    let w = World::new().await;
    let admin = w.admin();
    assert_bad_paging(|q| w.node.get(&format!("/v1/accounts?{q}")).auth(&admin)).await;
}

// ---------------------------------------------------------------------------------------------
// 6. DELETE /v1/accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_keeps_the_admin_and_cascades() {
    let w = World::new().await;
    let reg = id_of(&w.node.register(&w.john, "john.event").await);
    w.node.subscribe(&w.jane, &reg).await;
    w.node
        .delete("/v1/accounts")
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("deleted", 2)]);
    let accounts = w.node.all_accounts().await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["username"], "admin");
    // cascade: no orphans
    assert!(w.node.all_registrations().await.is_empty());
    assert!(w.node.all_subscriptions().await.is_empty());
    // nothing left to delete
    w.node
        .delete("/v1/accounts")
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("deleted", 0)]);
}
