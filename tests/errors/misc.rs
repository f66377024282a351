//! Cross-route behaviour: unknown paths (404), wrong methods (405), the guard order around
//! them, trailing slashes, the body size limit (413), odd ids, and the operations endpoints.

use crate::common::*;
use serde_json::json;

const METHOD_NOT_ALLOWED: &str = "The method is not allowed for the requested URL.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_json() {
    let node = TestNode::spawn().await;
    let id = unknown_id();
    let paths = [
        "/v1".to_string(),
        "/v1/".to_string(),
        "/v1/nope".to_string(),
        "/v1/accountz".to_string(),
        format!("/v1/account/{id}/extra"),
        "/v1/accounts/extra".to_string(),
        "/v1/account/reset/other".to_string(),
        "/v1/webhook".to_string(),
        "/v1/webhook/nope".to_string(),
        format!("/v1/webhook/registration/{id}/extra"),
        format!("/v1/webhook/subscription/{id}/extra"),
        "/v1/webhook/registrations/extra".to_string(),
        "/v2/account".to_string(),
    ];
    for path in &paths {
        for method in ["GET", "POST", "DELETE"] {
            // with and without credentials: the route match comes first
            let r = node.req(method, path).send().await;
            assert_eq!(r.status, 404, "{r}");
            r.expect_error(404, "Not found");
            node.req(method, path)
                .auth(&node.admin())
                .send()
                .await
                .expect_error(404, "Not found");
        }
    }
    // under /v1 the Content-Type gate comes before the 404
    for path in ["/v1/nope", "/v1/webhook/nope"] {
        node.get(path)
            .no_content_type()
            .send()
            .await
            .expect_unsupported_media_type();
        node.post(path)
            .content_type("text/plain")
            .send()
            .await
            .expect_unsupported_media_type();
    }
}

/// Known paths with a method they do not have.
fn wrong_method_pairs() -> Vec<(&'static str, String)> {
    let id = unknown_id();
    vec![
        ("POST", format!("/v1/account/{id}")),
        ("PATCH", format!("/v1/account/{id}")),
        ("PUT", format!("/v1/account/{id}")),
        ("PUT", "/v1/account".into()),
        ("POST", "/v1/accounts".into()),
        ("PATCH", "/v1/accounts".into()),
        ("PUT", "/v1/accounts".into()),
        ("GET", "/v1/account/reset/apikey".into()),
        ("DELETE", "/v1/account/reset/apikey".into()),
        ("GET", "/v1/account/reset/secretkey".into()),
        ("PATCH", "/v1/account/reset/secretkey".into()),
        ("POST", format!("/v1/webhook/registration/{id}")),
        ("GET", format!("/v1/webhook/registration/{id}")),
        ("PUT", format!("/v1/webhook/registration/{id}")),
        ("PUT", "/v1/webhook/registration".into()),
        ("POST", "/v1/webhook/registrations".into()),
        ("PATCH", "/v1/webhook/registrations".into()),
        ("PUT", "/v1/webhook/registrations".into()),
        ("GET", format!("/v1/webhook/subscription/{id}")),
        ("PATCH", format!("/v1/webhook/subscription/{id}")),
        ("PUT", format!("/v1/webhook/subscription/{id}")),
        ("PATCH", "/v1/webhook/subscription".into()),
        ("POST", "/v1/webhook/subscriptions".into()),
        ("PUT", "/v1/webhook/subscriptions".into()),
        ("DELETE", "/v1/webhook/triggered".into()),
        ("PUT", "/v1/webhook/triggered".into()),
        ("PATCH", "/v1/webhook/triggered".into()),
        ("DELETE", format!("/v1/webhook/triggered/{id}")),
        ("PATCH", format!("/v1/webhook/triggered/{id}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_json() {
    let node = TestNode::spawn().await;
    for (method, path) in wrong_method_pairs() {
        for req in [
            node.req(method, &path),
            node.req(method, &path).auth(&node.admin()),
            node.req(method, &path)
                .auth(&node.admin())
                .json(&json!({"description": "x", "endpoint": "http://127.0.0.1:1/"})),
        ] {
            let r = req.send().await;
            assert_eq!(r.status, 405, "{r}");
            assert_eq!(
                r.json(),
                &json!({"message": METHOD_NOT_ALLOWED}),
                "unexpected body: {r}"
            );
        }
        // trailing slash: same answer
        let r = node.req(method, &format!("{path}/")).send().await;
        assert_eq!(r.status, 405, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_gate_comes_before_405() {
    let node = TestNode::spawn().await;
    for (method, path) in wrong_method_pairs() {
        node.req(method, &path)
            .no_content_type()
            .send()
            .await
            .expect_unsupported_media_type();
        node.req(method, &path)
            .content_type("text/plain; application/json")
            .send()
            .await
            .expect_unsupported_media_type();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_path_id_comes_before_everything() {
    // Guard order: the missing-id 400 precedes the Content-Type gate and auth.
    let node = TestNode::spawn().await;
    let cases = [
        ("GET", "/v1/account", "Missing account_id"),
        ("DELETE", "/v1/account", "Missing account_id"),
        (
            "PATCH",
            "/v1/webhook/registration",
            "Missing registration_id",
        ),
        (
            "DELETE",
            "/v1/webhook/registration",
            "Missing registration_id",
        ),
        (
            "POST",
            "/v1/webhook/subscription",
            "Missing subscription_id",
        ),
        (
            "DELETE",
            "/v1/webhook/subscription",
            "Missing subscription_id",
        ),
        ("POST", "/v1/webhook/triggered", "Missing registration_id"),
    ];
    for (method, path, message) in cases {
        for path in [path.to_string(), format!("{path}/")] {
            node.req(method, &path)
                .no_content_type()
                .send()
                .await
                .expect_error(400, message);
            node.req(method, &path)
                .content_type("text/plain")
                .send()
                .await
                .expect_error(400, message);
            node.req(method, &path)
                .send()
                .await
                .expect_error(400, message);
            node.req(method, &path)
                .auth(&node.admin())
                .send()
                .await
                .expect_error(400, message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_work_on_every_route() {
    let w = World::new().await;
    let (node, admin) = (&w.node, w.admin());

    // 1. create account
    let r = node
        .post("/v1/account/")
        .json(&json!({"username": "trail", "endpoint": w.ep.endpoint_url("trail")}))
        .send()
        .await
        .expect(201);
    let trail = Account::from_record(r.json().clone());
    // 2. read own account
    node.get(&format!("/v1/account/{}/", w.john.id))
        .auth(&w.john)
        .send()
        .await
        .expect(200);
    // 3. patch own account
    node.patch("/v1/account/")
        .auth(&w.john)
        .json(&json!({"endpoint": w.ep.endpoint_url("john/other")}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    // 5. list accounts
    let r = node
        .get("/v1/accounts/?start=0&limit=10")
        .auth(&admin)
        .send()
        .await;
    assert_eq!(r.items("accounts").len(), 4);
    // 7./8. key resets
    node.post("/v1/account/reset/apikey/")
        .username(&trail.username)
        .send()
        .await
        .expect(200);
    node.post("/v1/account/reset/secretkey/")
        .auth(&w.john)
        .send()
        .await
        .expect(200);
    // 9. create registrations
    let body = json!({"event": "e", "description": "d", "event_data": {}});
    let reg = node
        .post("/v1/webhook/registration/")
        .auth(&w.john)
        .json(&body)
        .send()
        .await
        .expect(201);
    let reg = id_of(reg.json());
    let reg2 = id_of(&node.register(&w.john, "second").await);
    // 10. own registrations
    let r = node
        .get("/v1/webhook/registration/?start=0&limit=10")
        .auth(&w.john)
        .send()
        .await;
    assert_eq!(r.items("registrations").len(), 2);
    // 11. patch registration
    node.patch(&format!("/v1/webhook/registration/{reg}/"))
        .auth(&w.john)
        .json(&json!({"description": "new"}))
        .send()
        .await
        .expect_write(&[("replaced", 1)]);
    // 13. all registrations
    let r = node
        .get("/v1/webhook/registrations/?start=0&limit=10")
        .auth(&w.jane)
        .send()
        .await;
    assert_eq!(r.items("registrations").len(), 2);
    // 15. subscribe
    let sub = node
        .post(&format!("/v1/webhook/subscription/{reg}/"))
        .auth(&w.jane)
        .send()
        .await
        .expect(201);
    let sub = id_of(sub.json());
    node.subscribe(&w.jane, &reg2).await;
    // 16. own subscriptions
    let r = node
        .get("/v1/webhook/subscription/?start=0&limit=10")
        .auth(&w.jane)
        .send()
        .await;
    assert_eq!(r.items("subscriptions").len(), 2);
    // 18. all subscriptions
    let r = node
        .get("/v1/webhook/subscriptions/?start=0&limit=10")
        .auth(&w.john)
        .send()
        .await;
    assert_eq!(r.items("subscriptions").len(), 2);
    // 17. unsubscribe
    node.delete(&format!("/v1/webhook/subscription/{sub}/"))
        .auth(&w.jane)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    // 20. trigger
    node.post(&format!("/v1/webhook/triggered/{reg}/"))
        .auth(&w.john)
        .send()
        .await
        .expect(201);
    // 21. triggered listing
    let r = node
        .get("/v1/webhook/triggered/?start=0&limit=10")
        .auth(&w.jane)
        .send()
        .await;
    assert_eq!(r.items("triggered_webhooks").len(), 1);
    // 12. delete registration
    node.delete(&format!("/v1/webhook/registration/{reg}/"))
        .auth(&w.john)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    // 4. delete account (admin, since trail's key was just rotated)
    node.delete(&format!("/v1/account/{}/", trail.id))
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    // 19. / 14. / 6. bulk deletes
    node.delete("/v1/webhook/subscriptions/")
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    node.delete("/v1/webhook/registrations/")
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    node.delete("/v1/accounts/")
        .auth(&admin)
        .send()
        .await
        .expect_write(&[("deleted", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let w = World::with_config("[http]\nmax_body_bytes = 1024").await;
    let big = "x".repeat(4096);
    w.node
        .post("/v1/account")
        .json(&json!({"username": "big", "endpoint": w.ep.endpoint_url("big"), "pad": big}))
        .send()
        .await
        .expect_error(413, "Request body too large");
    w.node
        .post("/v1/webhook/registration")
        .auth(&w.john)
        .json(&json!({"event": "e", "description": "d", "event_data": {"pad": big}}))
        .send()
        .await
        .expect_error(413, "Request body too large");
    w.node
        .patch("/v1/account")
        .auth(&w.john)
        .json(&json!({"endpoint": w.ep.endpoint_url("x"), "pad": big}))
        .send()
        .await
        .expect_error(413, "Request body too large");
    // not JSON at all, still too large
    w.node
        .post("/v1/webhook/registration")
        .auth(&w.john)
        .body(big.clone())
        .send()
        .await
        .expect_error(413, "Request body too large");
    assert!(w.ep.echo_requests("big").is_empty());
    assert!(w.node.all_registrations().await.is_empty());
    // a body under the limit is fine
    let pad = "y".repeat(600);
    w.node
        .post("/v1/webhook/registration")
        .auth(&w.john)
        .json(&json!({"event": "e", "description": pad, "event_data": null}))
        .send()
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_never_cause_server_errors() {
    // Req::send asserts that no answer is a 5xx; here every id route gets strange ids.
    let w = World::new().await;
    let odd = [
        "%00",
        "%20",
        "..",
        "%2E%2E",
        "%C3%BC",
        "%FF%FE",
        "a%2Fb",
        "' OR '1'='1",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF",
    ];
    let long = "a".repeat(5000);
    for id in odd.iter().copied().chain([long.as_str()]) {
        let id = id.replace(' ', "%20").replace('\'', "%27");
        let routes = [
            ("GET", format!("/v1/account/{id}")),
            ("DELETE", format!("/v1/account/{id}")),
            ("PATCH", format!("/v1/webhook/registration/{id}")),
            ("DELETE", format!("/v1/webhook/registration/{id}")),
            ("POST", format!("/v1/webhook/subscription/{id}")),
            ("DELETE", format!("/v1/webhook/subscription/{id}")),
            ("POST", format!("/v1/webhook/triggered/{id}")),
        ];
        for (method, path) in routes {
            for who in [w.john.creds(), w.admin()] {
                let r = w
                    .node
                    .req(method, &path)
                    .auth(&who)
                    .json(&json!({"description": "x"}))
                    .send()
                    .await;
                assert!(
                    (200..500).contains(&r.status),
                    "unexpected status for odd id: {r}"
                );
            }
        }
    }
    // nothing was changed by any of that
    assert_eq!(w.node.all_accounts().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_need_no_content_type_or_auth() {
    let node = TestNode::spawn().await;
    let r = node
        .get("/health")
        .no_content_type()
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"status": "ok", "storage": "ok"}));
    let r = node
        .get("/ready")
        .no_content_type()
        .send()
        .await
        .expect(200);
    assert_eq!(r.json()["status"], "ready", "{r}");
    // make one counted API request, then look for it in the metrics
    node.get("/v1/accounts?start=0&limit=10")
        .auth(&node.admin())
        .send()
        .await
        .expect(200);
    let metrics = node
        .get("/metrics")
        .no_content_type()
        .send()
        .await
        .expect(200)
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("webhookd_http_requests_total{") && l.contains("status=\"200\""))
        .unwrap_or_else(|| panic!("no webhookd_http_requests_total with status 200:\n{metrics}"));
    assert!(line.contains("route=\""), "{line}");
}
