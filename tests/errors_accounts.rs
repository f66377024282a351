//! Error paths of the account routes (§4.1, §4.2; routes 1–8), with the decisions of
//! contract.md: guard order path id → Content-Type → auth → paging → body.

use crate::common::*;
use serde_json::{json, Value};

fn account_path(id: &str) -> String {
    format!("/v1/account/{id}")
}

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
async fn create_account_content_type_gate() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    let body = json!({"username": "ct", "endpoint": ep.endpoint_url("ct")});
    assert_content_type_gate(|| node.post("/v1/account").json(&body), 201).await;
    assert_eq!(
        ep.echo_requests("ct").len(),
        1,
        "only the accepted request reached the echo"
    );
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
    // B.2: uniqueness is checked before the endpoint is contacted, even a broken one
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
async fn get_account_missing_auth_headers() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_missing_auth_headers(|| w.node.get(&path), &w.john).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_wrong_key() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_wrong_key(|| w.node.get(&path), &w.john.username).await;
    // another account's valid key does not work for john
    w.node
        .get(&path)
        .key(&w.john.username, &w.jane.api_key)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_unknown_username() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_unknown_username(|| w.node.get(&path), &w.john).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_account_content_type_gate() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_content_type_before_auth(|| w.node.get(&path)).await;
    assert_content_type_gate(|| w.node.get(&path).auth(&w.john), 200).await;
}

// ---------------------------------------------------------------------------------------------
// 3. PATCH /v1/account
// ---------------------------------------------------------------------------------------------

fn patch_account(w: &World) -> Req {
    w.node.patch("/v1/account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_missing_auth_headers() {
    let w = World::new().await;
    let body = json!({"endpoint": w.ep.endpoint_url("new")});
    assert_missing_auth_headers(|| patch_account(&w).json(&body), &w.john).await;
    // auth comes before the body: no key and a broken body is still 401
    patch_account(&w)
        .username(&w.john.username)
        .body("{")
        .send()
        .await
        .expect_error(401, MISSING_API_KEY);
    assert!(w.ep.echo_requests("new").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_wrong_key() {
    let w = World::new().await;
    let body = json!({"endpoint": w.ep.endpoint_url("new")});
    assert_wrong_key(|| patch_account(&w).json(&body), &w.john.username).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_account_unknown_username() {
    let w = World::new().await;
    let body = json!({"endpoint": w.ep.endpoint_url("new")});
    assert_unknown_username(|| patch_account(&w).json(&body), &w.john).await;
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
async fn patch_account_content_type_gate() {
    let w = World::new().await;
    let body = json!({"endpoint": w.ep.endpoint_url("new")});
    assert_content_type_before_auth(|| patch_account(&w).json(&body)).await;
    assert_content_type_gate(|| patch_account(&w).auth(&w.john).json(&body), 200).await;
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
        // the echo went to the NEW endpoint (B.3)
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
async fn delete_account_missing_auth_headers() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_missing_auth_headers(|| w.node.delete(&path), &w.john).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_wrong_key() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_wrong_key(|| w.node.delete(&path), &w.john.username).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_unknown_username() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_unknown_username(|| w.node.delete(&path), &w.john).await;
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
async fn delete_account_content_type_gate() {
    let w = World::new().await;
    let path = account_path(&w.john.id);
    assert_content_type_before_auth(|| w.node.delete(&path)).await;
    assert_content_type_gate(|| w.node.delete(&path).auth(&w.john), 200).await;
    assert_eq!(w.node.all_accounts().await.len(), 2);
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
async fn list_accounts_missing_auth_headers() {
    let w = World::new().await;
    assert_missing_auth_headers(|| w.node.get("/v1/accounts?start=0&limit=10"), &w.admin()).await;
    // auth comes before paging
    w.node
        .get("/v1/accounts?start=-1&limit=0")
        .send()
        .await
        .expect_error(401, MISSING_API_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_wrong_key() {
    let w = World::new().await;
    assert_wrong_key(|| w.node.get("/v1/accounts?start=0&limit=10"), "admin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_unknown_username() {
    let w = World::new().await;
    assert_unknown_username(|| w.node.get("/v1/accounts?start=0&limit=10"), &w.admin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_non_admin() {
    let w = World::new().await;
    w.node
        .get("/v1/accounts?start=0&limit=10")
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AN_ADMIN);
    // the admin check comes before paging (§4.1 route 5)
    w.node
        .get("/v1/accounts?start=-1&limit=1000")
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AN_ADMIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_bad_paging() {
    let w = World::new().await;
    let admin = w.admin();
    assert_bad_paging(|q| w.node.get(&format!("/v1/accounts?{q}")).auth(&admin)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_content_type_gate() {
    let w = World::new().await;
    let path = "/v1/accounts?start=0&limit=10";
    assert_content_type_before_auth(|| w.node.get(path)).await;
    assert_content_type_gate(|| w.node.get(path).auth(&w.admin()), 200).await;
}

// ---------------------------------------------------------------------------------------------
// 6. DELETE /v1/accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_missing_auth_headers() {
    let w = World::new().await;
    assert_missing_auth_headers(|| w.node.delete("/v1/accounts"), &w.admin()).await;
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_wrong_key() {
    let w = World::new().await;
    assert_wrong_key(|| w.node.delete("/v1/accounts"), "admin").await;
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_unknown_username() {
    let w = World::new().await;
    assert_unknown_username(|| w.node.delete("/v1/accounts"), &w.admin()).await;
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_non_admin() {
    let w = World::new().await;
    w.node
        .delete("/v1/accounts")
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AN_ADMIN);
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_accounts_content_type_gate() {
    let w = World::new().await;
    assert_content_type_before_auth(|| w.node.delete("/v1/accounts")).await;
    assert_content_type_gate(|| w.node.delete("/v1/accounts").auth(&w.admin()), 200).await;
    assert_eq!(w.node.all_accounts().await.len(), 1);
}

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
    // B.5: no orphans
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

// ---------------------------------------------------------------------------------------------
// 7. POST /v1/account/reset/apikey (username-only guard)
// ---------------------------------------------------------------------------------------------

const RESET_API: &str = "/v1/account/reset/apikey";
const RESET_SECRET: &str = "/v1/account/reset/secretkey";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_missing_username() {
    let w = World::new().await;
    for req in [
        w.node.post(RESET_API),
        w.node.post(RESET_API).api_key(&w.john.api_key),
    ] {
        req.send()
            .await
            .expect_error(400, "Missing the username header value");
    }
    assert!(w.ep.keys(&w.john.endpoint, "api_key").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_apikey_unknown_username() {
    let w = World::new().await;
    for name in [format!("nobody-{}", unknown_id()), "JOHNDOE".to_string()] {
        w.node
            .post(RESET_API)
            .username(&name)
            .send()
            .await
            .expect_error(404, "Username not found");
    }
}

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
async fn reset_apikey_content_type_gate() {
    let w = World::new().await;
    assert_content_type_before_auth(|| w.node.post(RESET_API)).await;
    assert_content_type_gate(|| w.node.post(RESET_API).username(&w.john.username), 200).await;
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
    // B.6: success = any 2xx, body ignored (the endpoint answers 201 with a non-JSON body).
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
        // B.10: the old key stays valid
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
async fn reset_secretkey_missing_auth_headers() {
    let w = World::new().await;
    assert_missing_auth_headers(|| w.node.post(RESET_SECRET), &w.john).await;
    assert!(w.ep.keys(&w.john.endpoint, "secret_key").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_wrong_key() {
    let w = World::new().await;
    assert_wrong_key(|| w.node.post(RESET_SECRET), &w.john.username).await;
    // valid credentials of another account cannot reset john's secret
    w.node
        .post(RESET_SECRET)
        .key(&w.john.username, &w.jane.api_key)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    assert!(w.ep.keys(&w.john.endpoint, "secret_key").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_unknown_username() {
    let w = World::new().await;
    assert_unknown_username(|| w.node.post(RESET_SECRET), &w.john).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_secretkey_content_type_gate() {
    let w = World::new().await;
    assert_content_type_before_auth(|| w.node.post(RESET_SECRET)).await;
    assert_content_type_gate(|| w.node.post(RESET_SECRET).auth(&w.john), 200).await;
}

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
