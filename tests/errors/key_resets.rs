//! The key resets (routes 7–8): the API key reset needs only the username, the secret key
//! reset full authentication; both deliver the new key to the account's endpoint.

use crate::common::*;
use serde_json::{json, Value};

use super::account_path;

const RESET_API: &str = "/v1/account/reset/apikey";
const RESET_SECRET: &str = "/v1/account/reset/secretkey";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_does_not_need_or_check_an_api_key() {
    // Q7 kept for compatibility: anyone who knows the username can rotate the key.
    let w = World::new().await;
    w.node
        .post(RESET_API)
        .key(&w.john.username, "wrong-key")
        .send()
        .await
        .expect(200);
    assert_eq!(w.ep.keys(&w.john.endpoint, "api_key").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_success_rotates_the_key() {
    let w = World::new().await;
    let r = w
        .node
        .post(RESET_API)
        .username(&w.john.username)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"Message": "New key sent to endpoint"}));
    assert!(!r
        .text()
        .contains(&w.ep.last_key(&w.john.endpoint, "api_key").unwrap()));
    let new_key = w.ep.last_key(&w.john.endpoint, "api_key").unwrap();
    assert!(is_hex40(&new_key));
    let path = account_path(&w.john.id);
    w.node
        .get(&path)
        .key(&w.john.username, &new_key)
        .send()
        .await
        .expect(200);
    w.node
        .get(&path)
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_accepts_any_2xx() {
    // Success = any 2xx, body ignored (the endpoint answers 201 with a non-JSON body).
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let endpoint = ep.reset_status_url(201, "odd");
    let john = node.create_account("johndoe", &endpoint).await;
    node.post(RESET_API)
        .username("johndoe")
        .send()
        .await
        .expect(200);
    let new_key = ep.last_key(&endpoint, "api_key").unwrap();
    node.get(&account_path(&john.id))
        .key("johndoe", &new_key)
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_endpoint_failure_keeps_the_old_key() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let failing = ep.reset_status_url(500, "failing");
    let john = node.create_account("johndoe", &failing).await;
    let dead = EndpointServer::start().await;
    let jane = node
        .create_account("janedoe", &dead.endpoint_url("jane"))
        .await;
    dead.shutdown(); // jane's endpoint is now unreachable

    for who in [&john, &jane] {
        node.post(RESET_API)
            .username(&who.username)
            .send()
            .await
            .expect_error(400, RESET_FAILED);
        // the old key stays valid
        node.get(&account_path(&who.id))
            .auth(who)
            .send()
            .await
            .expect(200);
    }
    let sent = ep
        .last_key(&failing, "api_key")
        .expect("the reset GET was sent");
    node.get(&account_path(&john.id))
        .key("johndoe", &sent)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_admin_has_no_endpoint() {
    let w = World::new().await;
    w.node
        .post(RESET_API)
        .username("admin")
        .send()
        .await
        .expect_error(404, "Endpoint not found");
    w.node
        .get("/v1/accounts?start=0&limit=1")
        .auth(&w.admin())
        .send()
        .await
        .expect(200);
}

// ---------------------------------------------------------------------------------------------
// 8. POST /v1/account/reset/secretkey
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_success_stores_the_delivered_secret() {
    let w = World::new().await;
    let r = w
        .node
        .post(RESET_SECRET)
        .auth(&w.john)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"Message": "New key sent to endpoint"}));
    let secret = w.ep.last_key(&w.john.endpoint, "secret_key").unwrap();
    assert!(is_hex40(&secret));
    assert_ne!(secret, w.john.secret_key);
    let rec = w.node.read_account(&w.john).await;
    assert_eq!(rec["secret_key"], secret.as_str());
    assert_eq!(
        rec["standard_webhooks_secret"],
        format!("whsec_{}", base64(secret.as_bytes())).as_str()
    );
    // the API key is untouched
    w.node
        .get(&account_path(&w.john.id))
        .auth(&w.john)
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_endpoint_failure_keeps_the_old_secret() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    for (i, code) in [500u16, 404, 302].into_iter().enumerate() {
        let endpoint = ep.reset_status_url(code, &format!("e{i}"));
        let who = node.create_account(&format!("user{i}"), &endpoint).await;
        node.post(RESET_SECRET)
            .auth(&who)
            .send()
            .await
            .expect_error(400, RESET_FAILED);
        let rec = node.read_account(&who).await;
        assert_eq!(rec["secret_key"], who.secret_key.as_str(), "status {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_admin_has_no_endpoint() {
    let w = World::new().await;
    let before: Value = w.node.admin_record().await;
    w.node
        .post(RESET_SECRET)
        .auth(&w.admin())
        .send()
        .await
        .expect_error(404, "Endpoint not found");
    assert_eq!(
        w.node.admin_record().await["secret_key"],
        before["secret_key"]
    );
}
