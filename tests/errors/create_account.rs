//! Error paths of account creation (route 1, `POST /v1/account`): the body's fields, the
//! username rules and the endpoint's echo challenge.

use crate::common::*;
use serde_json::json;

use super::guards::*;

// ---------------------------------------------------------------------------------------------
// 1. POST /v1/account
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_returns_the_full_record_with_plaintext_key() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let endpoint = ep.endpoint_url("sarah/endpoint");
    let r = node
        .try_create_account("sarahfranks", &endpoint)
        .await
        .expect(201);
    let rec = r.json();
    let mut keys: Vec<&str> = rec
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_key",
            "deliveries_stopped",
            "endpoint",
            "epoch",
            "failed_count",
            "id",
            "is_admin",
            "secret_key",
            "standard_webhooks_secret",
            "username"
        ],
        "{r}"
    );
    assert_eq!(rec["username"], "sarahfranks");
    assert_eq!(rec["endpoint"], endpoint.as_str());
    assert_eq!(rec["is_admin"], false);
    assert_eq!(rec["failed_count"], 0);
    assert!(rec["epoch"].is_f64(), "epoch is float Unix seconds: {r}");
    let id = rec["id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).expect("id is a UUID");
    assert_eq!(uuid.get_version_num(), 4, "id is a UUIDv4");
    let api_key = rec["api_key"].as_str().unwrap();
    let secret = rec["secret_key"].as_str().unwrap();
    assert!(is_hex40(api_key), "plaintext api_key in the 201: {api_key}");
    assert!(is_hex40(secret), "{secret}");
    assert_eq!(
        rec["standard_webhooks_secret"],
        format!("whsec_{}", base64(secret.as_bytes())).as_str()
    );
    // the echo challenge reached the endpoint with a 40-hex value
    let echoes = ep.echo_requests(&endpoint);
    assert_eq!(echoes.len(), 1);
    assert!(is_hex40(echoes[0].param("echo").unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_needs_no_auth_and_ignores_auth_headers() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    node.post("/v1/account")
        .key("nobody", "wrong")
        .json(&json!({"username": "a1", "endpoint": ep.endpoint_url("a1")}))
        .send()
        .await
        .expect(201);
    node.create_account("a2", &ep.endpoint_url("a2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_invalid_json() {
    let node = TestNode::spawn().await;
    assert_bad_json_bodies(|| node.post("/v1/account")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_missing_fields() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let endpoint = ep.endpoint_url("x");
    for (body, message) in [
        (json!({"endpoint": endpoint}), "Missing username field"),
        (json!({"username": "someone"}), "Missing endpoint field"),
    ] {
        node.post("/v1/account")
            .json(&body)
            .send()
            .await
            .expect_error(400, message);
    }
    assert!(
        ep.gets().is_empty(),
        "body validation comes before the echo"
    );
    assert_eq!(node.all_accounts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_wrongly_typed_fields() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let endpoint = ep.endpoint_url("x");
    let bad_usernames = [
        json!(5),
        json!(null),
        json!(true),
        json!(["a"]),
        json!({"a": 1}),
        json!(""),
        json!("a".repeat(257)),
        json!("line\nbreak"),
        json!("tab\there"),
        json!("nul\u{0}char"),
    ];
    for username in bad_usernames {
        let r = node
            .post("/v1/account")
            .json(&json!({"username": username, "endpoint": endpoint}))
            .send()
            .await;
        assert_eq!(r.status, 400, "username {username} should be refused: {r}");
        r.expect_error(400, "Invalid username field");
    }
    let bad_endpoints = [
        json!(5),
        json!(null),
        json!(false),
        json!(["http://127.0.0.1/"]),
        json!(""),
        json!("not a url"),
        json!("ftp://127.0.0.1/x"),
        json!("/relative/path"),
        json!("http://"),
        json!("127.0.0.1:9090/account/endpoint"),
    ];
    for bad in bad_endpoints {
        let r = node
            .post("/v1/account")
            .json(&json!({"username": "someone", "endpoint": bad}))
            .send()
            .await;
        assert_eq!(r.status, 400, "endpoint {bad} should be refused: {r}");
        r.expect_error(400, "Invalid endpoint field");
    }
    assert!(ep.gets().is_empty(), "no echo for an invalid body");
    assert_eq!(node.all_accounts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_username_limits_and_extra_fields() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    // 256 chars is the maximum; non-ASCII is fine.
    let long = "u".repeat(256);
    node.create_account(&long, &ep.endpoint_url("long")).await;
    node.create_account("jöhn-ドウ", &ep.endpoint_url("utf8"))
        .await;
    // is_admin / failed_count / id cannot be injected
    let r = node
        .post("/v1/account")
        .json(&json!({
            "username": "sneaky",
            "endpoint": ep.endpoint_url("sneaky"),
            "is_admin": true,
            "failed_count": 99,
            "id": "00000000-0000-4000-8000-000000000000",
        }))
        .send()
        .await
        .expect(201);
    assert_eq!(r.json()["is_admin"], false);
    assert_eq!(r.json()["failed_count"], 0);
    assert_ne!(r.json()["id"], "00000000-0000-4000-8000-000000000000");
    let sneaky = Account::from_record(r.json().clone());
    node.get("/v1/accounts?start=0&limit=10")
        .auth(&sneaky)
        .send()
        .await
        .expect_error(401, NOT_AN_ADMIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_duplicate_username_is_409_before_the_echo() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    node.create_account("johndoe", &ep.endpoint_url("first"))
        .await;
    // Uniqueness is checked before the endpoint is contacted, even a broken one
    for endpoint in [ep.endpoint_url("second"), ep.bad_echo_url("second")] {
        node.try_create_account("johndoe", &endpoint)
            .await
            .expect_error(409, "Username already exists");
    }
    assert!(ep.echo_requests("second").is_empty());
    assert!(ep.echo_requests(&ep.bad_echo_url("second")).is_empty());
    // usernames are case-sensitive
    node.create_account("JohnDoe", &ep.endpoint_url("third"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_admin_username_is_reserved() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    node.try_create_account("admin", &ep.endpoint_url("admin"))
        .await
        .expect_error(409, "Username already exists");
    assert!(ep.gets().is_empty(), "409 comes before the echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_account_echo_failures_create_nothing() {
    let ep = EndpointServer::start().await;
    let dead = EndpointServer::start().await;
    let dead_url = dead.endpoint_url("gone");
    dead.shutdown();
    let node = TestNode::spawn().await;
    for endpoint in [
        ep.bad_echo_url("x"),
        ep.status_url(500, "x"),
        ep.status_url(201, "x"),
        ep.status_url(404, "x"),
        dead_url,
    ] {
        node.try_create_account("johndoe", &endpoint)
            .await
            .expect_error(400, "Echo response failed");
    }
    assert_eq!(node.all_accounts().await.len(), 1, "nothing was created");
    // the username is still free
    node.create_account("johndoe", &ep.endpoint_url("x")).await;
}
