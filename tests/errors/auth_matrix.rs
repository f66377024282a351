//! The gates of every route, as one table: for each route, which gates it passes
//! (Content-Type, authentication, admin), and one test that walks the table and checks every
//! guard's status and message on every row.
//!
//! The guard order is: path id → Content-Type → authentication (`api-key` before
//! `username`) → admin → paging → body → records. So on every authenticated row, a request
//! that would also fail a later guard (bad paging, a broken body, an unknown id) still gets
//! the authentication answer, and no refused request changes anything (the [`Snapshot`] of
//! the node and of the endpoint is the same before and after them). The accepted request is
//! sent last, and its [`Route::effect`] is checked.
//!
//! Each row runs on its own node, so the accepted request of one row (e.g. deleting every
//! account) cannot change what another row sees.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::common::*;
use serde_json::{json, Value};

use super::guards::*;

use Auth::{Key, Username};
use Caller::{Admin, Jane, John};
use Count::*;

/// How a route authenticates its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// No authentication (the headers are ignored).
    None,
    /// The `username` header alone (the API key reset: whoever knows the username).
    Username,
    /// `api-key` and `username`.
    Key,
}

/// The account a row's requests are sent as.
#[derive(Clone, Copy, Debug)]
enum Caller {
    John,
    Jane,
    Admin,
}

/// The JSON body a row's requests carry.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// A new account whose endpoint passes the echo.
    NewAccount,
    /// A new endpoint for the caller's account (it passes the echo).
    NewEndpoint,
    /// A valid registration.
    Registration,
    /// A new description for a registration.
    Description,
    /// A bulk-recovery time window.
    Window,
}

/// What [`Snapshot`] counts.
#[derive(Clone, Copy, Debug)]
enum Count {
    Accounts,
    Registrations,
    Subscriptions,
    Triggered,
    /// GETs the endpoint server received (echo challenges and key deliveries).
    EndpointGets,
}

/// One route and its gates.
struct Route {
    method: &'static str,
    /// The path; `{account}` (john's), `{registration}` (john's) and `{subscription}`
    /// (jane's, to john's registration) name the fixture's records. A listing carries its
    /// paging query.
    path: &'static str,
    /// Whether the Content-Type gate applies (every `/v1` route; not the operations
    /// endpoints).
    content_type: bool,
    auth: Auth,
    /// Whether only the admin may call it.
    admin: bool,
    caller: Caller,
    body: Body,
    /// The status of the accepted request.
    ok: u16,
    /// How the accepted request changes the counts (those not listed are not checked).
    effect: &'static [(Count, i64)],
}

/// A shorthand for the rows.
const fn route(
    method: &'static str,
    path: &'static str,
    auth: Auth,
    caller: Caller,
    ok: u16,
) -> Route {
    Route {
        method,
        path,
        content_type: true,
        auth,
        admin: matches!(caller, Caller::Admin),
        caller,
        body: Body::None,
        ok,
        effect: &[],
    }
}

impl Route {
    const fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    const fn effect(mut self, effect: &'static [(Count, i64)]) -> Self {
        self.effect = effect;
        self
    }

    /// An operations endpoint: no Content-Type gate, no authentication.
    const fn operations(path: &'static str) -> Self {
        let mut r = route("GET", path, Auth::None, Caller::John, 200);
        r.content_type = false;
        r
    }
}

/// Every route of the API, in the order of the original's route list.
static ROUTES: &[Route] = &[
    route("POST", "/v1/account", Auth::None, John, 201)
        .body(Body::NewAccount)
        .effect(&[(Accounts, 1), (EndpointGets, 1)]),
    route("GET", "/v1/account/{account}", Key, John, 200),
    route("PATCH", "/v1/account", Key, John, 200).body(Body::NewEndpoint),
    route("DELETE", "/v1/account/{account}", Key, John, 200).effect(&[(Accounts, -1)]),
    route("GET", "/v1/accounts?start=0&limit=10", Key, Admin, 200),
    route("DELETE", "/v1/accounts", Key, Admin, 200).effect(&[(Accounts, -2)]),
    route("POST", "/v1/account/reset/apikey", Username, John, 200).effect(&[(EndpointGets, 1)]),
    route("POST", "/v1/account/reset/secretkey", Key, John, 200),
    route("POST", "/v1/webhook/registration", Key, John, 201)
        .body(Body::Registration)
        .effect(&[(Registrations, 1)]),
    route(
        "GET",
        "/v1/webhook/registration?start=0&limit=10",
        Key,
        John,
        200,
    ),
    route(
        "PATCH",
        "/v1/webhook/registration/{registration}",
        Key,
        John,
        200,
    )
    .body(Body::Description),
    route(
        "DELETE",
        "/v1/webhook/registration/{registration}",
        Key,
        John,
        200,
    )
    .effect(&[(Registrations, -1)]),
    route(
        "GET",
        "/v1/webhook/registrations?start=0&limit=10",
        Key,
        Jane,
        200,
    ),
    route("DELETE", "/v1/webhook/registrations", Key, Admin, 200).effect(&[(Registrations, -1)]),
    route(
        "POST",
        "/v1/webhook/subscription/{registration}",
        Key,
        Jane,
        201,
    )
    .effect(&[(Subscriptions, 1)]),
    route(
        "GET",
        "/v1/webhook/subscription?start=0&limit=10",
        Key,
        Jane,
        200,
    ),
    route(
        "DELETE",
        "/v1/webhook/subscription/{subscription}",
        Key,
        Jane,
        200,
    )
    .effect(&[(Subscriptions, -1)]),
    route(
        "GET",
        "/v1/webhook/subscriptions?start=0&limit=10",
        Key,
        John,
        200,
    ),
    route("DELETE", "/v1/webhook/subscriptions", Key, Admin, 200).effect(&[(Subscriptions, -1)]),
    route(
        "POST",
        "/v1/webhook/triggered/{registration}",
        Key,
        John,
        201,
    )
    .effect(&[(Triggered, 1)]),
    route(
        "GET",
        "/v1/webhook/triggered?start=0&limit=10",
        Key,
        Jane,
        200,
    ),
    route("POST", "/v1/webhook/deliveries/recover", Key, Jane, 200).body(Body::Window),
    Route::operations("/health"),
    Route::operations("/ready"),
    Route::operations("/metrics"),
    Route::operations("/v1/openapi.json"),
];

/// Paging queries that would be refused with 400, had the request passed authentication.
const BAD_QUERIES: &[&str] = &[
    "start=-1",
    "limit=0",
    "start=x&limit=y",
    "start=-1&limit=101",
];

/// How many rows run at once (each starts a node).
const CONCURRENT_ROWS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_passes_its_gates_in_order() {
    let permits = Arc::new(Semaphore::new(CONCURRENT_ROWS));
    let mut rows = JoinSet::new();
    for route in ROUTES {
        let permits = permits.clone();
        rows.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore closed");
            check_route(route).await;
        });
    }
    while let Some(joined) = rows.join_next().await {
        match joined {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("row task failed: {e}"),
        }
    }
}

/// A node with john, jane, john's registration, jane's subscription to it and one trigger
/// of it (so every listing has a row to show).
struct Fixture {
    w: World,
    registration: String,
    subscription: String,
}

impl Fixture {
    async fn new() -> Self {
        let w = World::new().await;
        let registration = id_of(&w.node.register(&w.john, "matrix.event").await);
        let subscription = id_of(&w.node.subscribe(&w.jane, &registration).await);
        w.node.trigger(&w.john, &registration).await;
        Self {
            w,
            registration,
            subscription,
        }
    }

    fn creds(&self, caller: Caller) -> Creds {
        match caller {
            John => self.w.john.creds(),
            Jane => self.w.jane.creds(),
            Admin => self.w.admin(),
        }
    }

    /// Another account's valid key: it must not authenticate the caller.
    fn other_key(&self, caller: Caller) -> String {
        match caller {
            John => self.w.jane.api_key.clone(),
            Jane | Admin => self.w.john.api_key.clone(),
        }
    }

    fn path(&self, route: &Route) -> String {
        self.path_with_ids(
            route,
            &self.w.john.id,
            &self.registration,
            &self.subscription,
        )
    }

    /// The row's path with every record id replaced by one that names nothing.
    fn path_with_unknown_ids(&self, route: &Route) -> String {
        let unknown = unknown_id();
        self.path_with_ids(route, &unknown, &unknown, &unknown)
    }

    fn path_with_ids(&self, route: &Route, account: &str, reg: &str, sub: &str) -> String {
        route
            .path
            .replace("{account}", account)
            .replace("{registration}", reg)
            .replace("{subscription}", sub)
    }

    fn body(&self, body: Body) -> Option<Value> {
        let ep = &self.w.ep;
        match body {
            Body::None => None,
            Body::NewAccount => Some(json!({"username": "ct", "endpoint": ep.endpoint_url("ct")})),
            Body::NewEndpoint => Some(json!({"endpoint": ep.endpoint_url("new")})),
            Body::Registration => Some(
                json!({"event": "my.event", "description": "desc", "event_data": {"k": [1, 2.5]}}),
            ),
            Body::Description => Some(json!({"description": "new"})),
            Body::Window => Some(json!({"since": 0})),
        }
    }

    /// The row's request without authentication headers.
    fn bare(&self, route: &Route, path: &str) -> Req {
        let req = self.w.node.req(route.method, path);
        match self.body(route.body) {
            Some(body) => req.json(&body),
            None => req,
        }
    }

    /// The row's request as its caller.
    fn authed(&self, route: &Route) -> Req {
        let who = self.creds(route.caller);
        let req = self.bare(route, &self.path(route));
        match route.auth {
            Auth::None => req,
            Username => req.username(&who.username),
            Key => req.auth(&who),
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let node = &self.w.node;
        Snapshot {
            accounts: node.all_accounts().await.len(),
            registrations: node.all_registrations().await.len(),
            subscriptions: node.all_subscriptions().await.len(),
            triggered: node.all_triggered().await.len(),
            endpoint_gets: self.w.ep.gets().len(),
        }
    }
}

/// The node's record counts and the endpoint's received GETs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    accounts: usize,
    registrations: usize,
    subscriptions: usize,
    triggered: usize,
    endpoint_gets: usize,
}

impl Snapshot {
    fn get(&self, count: Count) -> i64 {
        let n = match count {
            Accounts => self.accounts,
            Registrations => self.registrations,
            Subscriptions => self.subscriptions,
            Triggered => self.triggered,
            EndpointGets => self.endpoint_gets,
        };
        i64::try_from(n).expect("count fits i64")
    }
}

/// Every guard of one row, then its accepted request.
async fn check_route(route: &'static Route) {
    let f = Fixture::new().await;
    let path = f.path(route);
    let what = format!("{} {}", route.method, route.path);
    let before = f.snapshot().await;

    if route.content_type {
        assert_content_type_before_auth(|| f.bare(route, &path)).await;
    }
    match route.auth {
        Auth::None => {}
        Username => check_username_gate(&f, route, &path).await,
        Key => check_key_gate(&f, route, &path).await,
    }
    assert_eq!(
        f.snapshot().await,
        before,
        "{what}: a refused request changed something"
    );

    if route.content_type {
        assert_content_type_gate(|| f.authed(route), route.ok).await;
    } else {
        f.authed(route)
            .no_content_type()
            .send()
            .await
            .expect(route.ok);
        f.authed(route)
            .content_type("text/plain")
            .send()
            .await
            .expect(route.ok);
    }
    let after = f.snapshot().await;
    for &(count, delta) in route.effect {
        assert_eq!(
            after.get(count),
            before.get(count) + delta,
            "{what}: {count:?} should change by {delta}; before {before:?}, after {after:?}"
        );
    }
}

/// The username-only gate: a missing username is a 400, an unknown one a 404.
async fn check_username_gate(f: &Fixture, route: &Route, path: &str) {
    let who = f.creds(route.caller);
    for req in [
        f.bare(route, path),
        f.bare(route, path).api_key(&who.api_key),
    ] {
        req.send()
            .await
            .expect_error(400, "Missing the username header value");
    }
    for name in [
        format!("nobody-{}", unknown_id()),
        who.username.to_uppercase(),
    ] {
        f.bare(route, path)
            .username(&name)
            .send()
            .await
            .expect_error(404, "Username not found");
    }
}

/// The `api-key` + `username` gate, the admin gate behind it, and authentication before
/// paging, body and record checks.
async fn check_key_gate(f: &Fixture, route: &Route, path: &str) {
    let who = f.creds(route.caller);
    let bare = || f.bare(route, path);
    assert_missing_auth_headers(bare, &who).await;
    assert_wrong_key(bare, &who.username).await;
    bare()
        .key(&who.username, &f.other_key(route.caller))
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    assert_unknown_username(bare, &who).await;
    if route.admin {
        bare()
            .auth(&f.w.john)
            .send()
            .await
            .expect_error(401, NOT_AN_ADMIN);
    }

    if let Some((plain, _)) = path.split_once('?') {
        for query in BAD_QUERIES {
            let bad = format!("{plain}?{query}");
            let req = || f.bare(route, &bad);
            req().send().await.expect_error(401, MISSING_API_KEY);
            req()
                .key(&who.username, "bad")
                .send()
                .await
                .expect_error(401, INVALID_API_KEY);
            if route.admin {
                req()
                    .auth(&f.w.john)
                    .send()
                    .await
                    .expect_error(401, NOT_AN_ADMIN);
            }
        }
    }
    if !matches!(route.body, Body::None) {
        let broken = || f.w.node.req(route.method, path);
        broken()
            .body("{")
            .send()
            .await
            .expect_error(401, MISSING_API_KEY);
        broken()
            .username(&who.username)
            .body("{")
            .send()
            .await
            .expect_error(401, MISSING_API_KEY);
        broken()
            .key(&who.username, &random_hex40())
            .body("not json")
            .send()
            .await
            .expect_error(401, INVALID_API_KEY);
    }
    if route.path.contains('{') {
        f.bare(route, &f.path_with_unknown_ids(route))
            .send()
            .await
            .expect_error(401, MISSING_API_KEY);
    }
}
