//! [`Api`]: one node's HTTP API as the tests use it: request builders bound to the node's
//! address, and the higher-level calls shared by the suites (create an account, register,
//! subscribe, trigger, list every page, poll a trigger's deliveries). A [`TestNode`] derefs
//! to its `Api`, so a test writes `node.get(..)` whether it holds a node or only its API.
//!
//! [`TestNode`]: crate::common::node::TestNode

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::http::{Req, Resp};
use crate::common::poll::eventually_quiet;
use crate::common::records::{Account, AsCreds, Creds};

/// Upper bound for one API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP API of one node, with the bootstrap admin's key.
pub struct Api {
    /// `http://<addr>` of the node's current process.
    pub base_url: String,
    /// The admin's plaintext API key (from the first start's stdout).
    pub admin_key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base_url: String, admin_key: String) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build reqwest client");
        Self {
            base_url,
            admin_key,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn req(&self, method: &str, path: &str) -> Req {
        Req::new(self.client.clone(), method, path, self.url(path))
    }

    pub fn get(&self, path: &str) -> Req {
        self.req("GET", path)
    }
    pub fn post(&self, path: &str) -> Req {
        self.req("POST", path)
    }
    pub fn patch(&self, path: &str) -> Req {
        self.req("PATCH", path)
    }
    pub fn delete(&self, path: &str) -> Req {
        self.req("DELETE", path)
    }

    /// The bootstrap admin's credentials.
    pub fn admin(&self) -> Creds {
        Creds::new("admin", &self.admin_key)
    }

    // --- higher-level helpers (each asserts success) --------------------------------------

    pub async fn try_create_account(&self, username: &str, endpoint: &str) -> Resp {
        self.post("/v1/account")
            .json(&json!({"username": username, "endpoint": endpoint}))
            .send()
            .await
    }

    /// POST /v1/account → 201; returns the account with its plaintext keys.
    pub async fn create_account(&self, username: &str, endpoint: &str) -> Account {
        let r = self
            .try_create_account(username, endpoint)
            .await
            .expect(201);
        Account::from_record(r.json().clone())
    }

    /// POST /v1/webhook/registration → 201; returns the record.
    pub async fn register(&self, who: &impl AsCreds, event: &str) -> Value {
        let body = json!({
            "event": event,
            "description": format!("{event} description"),
            "event_data": {"message": "hello world", "items": [{"item1": 1}, {"item2": 2}]},
        });
        let r = self
            .post("/v1/webhook/registration")
            .auth(who)
            .json(&body)
            .send()
            .await
            .expect(201);
        r.json().clone()
    }

    /// POST /v1/webhook/subscription/<registration_id> → 201; returns the record.
    pub async fn subscribe(&self, who: &impl AsCreds, registration_id: &str) -> Value {
        let r = self
            .post(&format!("/v1/webhook/subscription/{registration_id}"))
            .auth(who)
            .send()
            .await
            .expect(201);
        r.json().clone()
    }

    /// POST /v1/webhook/triggered/<registration_id> → 201; returns the triggered record.
    pub async fn trigger(&self, who: &impl AsCreds, registration_id: &str) -> Value {
        let r = self
            .post(&format!("/v1/webhook/triggered/{registration_id}"))
            .auth(who)
            .send()
            .await
            .expect(201);
        r.json().clone()
    }

    /// One page: GET `<path>?start=<start>&limit=<limit>`.
    pub async fn page(&self, path: &str, who: &impl AsCreds, start: u64, limit: u64) -> Resp {
        self.get(&format!("{path}?start={start}&limit={limit}"))
            .auth(who)
            .send()
            .await
    }

    /// Every row of a paged listing, following `next_start` until a 204 or a short page.
    pub async fn list_all(&self, path: &str, who: &impl AsCreds, key: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut start = 0;
        for _ in 0..1000 {
            let r = self.page(path, who, start, 100).await;
            match r.status {
                204 => return rows,
                200 => {
                    rows.extend(r.items(key));
                    match r.json().get("next_start").and_then(Value::as_u64) {
                        Some(next) => start = next,
                        None => return rows,
                    }
                }
                other => panic!("listing {path}: unexpected status {other}; {r}"),
            }
        }
        panic!("listing {path}: more than 1000 pages");
    }

    pub async fn all_accounts(&self) -> Vec<Value> {
        self.list_all("/v1/accounts", &self.admin(), "accounts")
            .await
    }
    pub async fn all_registrations(&self) -> Vec<Value> {
        self.list_all("/v1/webhook/registrations", &self.admin(), "registrations")
            .await
    }
    pub async fn all_subscriptions(&self) -> Vec<Value> {
        self.list_all("/v1/webhook/subscriptions", &self.admin(), "subscriptions")
            .await
    }
    pub async fn all_triggered(&self) -> Vec<Value> {
        self.list_all("/v1/webhook/triggered", &self.admin(), "triggered_webhooks")
            .await
    }

    /// The admin's account record (found through the admin listing).
    pub async fn admin_record(&self) -> Value {
        self.all_accounts()
            .await
            .into_iter()
            .find(|a| a["username"] == "admin")
            .expect("admin account in listing")
    }

    /// GET /v1/account/<id> as the account itself → 200; returns the stored record.
    pub async fn read_account(&self, who: &Account) -> Value {
        let r = self
            .get(&format!("/v1/account/{}", who.id))
            .auth(who)
            .send()
            .await
            .expect(200);
        r.json().clone()
    }

    // --- delivery -------------------------------------------------------------------------

    /// POST /v1/webhook/registration with `event_data_json` inserted verbatim (so number
    /// spellings and key order reach the daemon exactly as written) → 201; returns the record.
    pub async fn register_raw(
        &self,
        who: &impl AsCreds,
        event: &str,
        event_data_json: &str,
    ) -> Value {
        let event_json = serde_json::to_string(event).unwrap();
        let body = format!(
            r#"{{"event": {event_json}, "description": "delivery test", "event_data": {event_data_json}}}"#
        );
        let r = self
            .post("/v1/webhook/registration")
            .auth(who)
            .body(body)
            .send()
            .await
            .expect(201);
        r.json().clone()
    }

    /// POST /v1/webhook/triggered/<registration_id> with an optional raw body and
    /// `Idempotency-Key`; no status asserted.
    pub async fn trigger_with(
        &self,
        who: &impl AsCreds,
        registration_id: &str,
        body: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Resp {
        let mut req = self
            .post(&format!("/v1/webhook/triggered/{registration_id}"))
            .auth(who);
        if let Some(body) = body {
            req = req.body(body);
        }
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        req.send().await
    }

    /// GET /v1/webhook/triggered/<id> → 200; the status record.
    pub async fn trigger_status(&self, who: &impl AsCreds, triggered_id: &str) -> Value {
        self.get(&format!("/v1/webhook/triggered/{triggered_id}"))
            .auth(who)
            .send()
            .await
            .expect(200)
            .json()
            .clone()
    }

    /// Every delivery row of a trigger (all pages).
    pub async fn deliveries(&self, who: &impl AsCreds, triggered_id: &str) -> Vec<Value> {
        self.list_all(
            &format!("/v1/webhook/triggered/{triggered_id}/deliveries"),
            who,
            "deliveries",
        )
        .await
    }

    /// Polls the trigger status until its fan-out is complete and its counts are exactly
    /// `expected` (see [`delivery_counts`]); returns the status.
    pub async fn wait_trigger_counts(
        &self,
        who: &impl AsCreds,
        triggered_id: &str,
        expected: &Value,
        deadline: Duration,
    ) -> Value {
        let last = Mutex::new(Value::Null);
        let what = format!("trigger {triggered_id} to reach deliveries {expected}");
        let found = eventually_quiet(deadline, || async {
            let status = self.trigger_status(who, triggered_id).await;
            let done =
                status["fanout_complete"] == json!(true) && status["deliveries"] == *expected;
            *last.lock().unwrap() = status.clone();
            done.then_some(status)
        })
        .await;
        match found {
            Some(status) => status,
            None => panic!(
                "timed out after {deadline:?} waiting for {what}; last status: {}",
                last.lock().unwrap()
            ),
        }
    }

    /// Polls a trigger's delivery rows until `done(rows)`; returns them.
    pub async fn wait_deliveries(
        &self,
        who: &impl AsCreds,
        triggered_id: &str,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let last = Mutex::new(Vec::new());
        let found = eventually_quiet(deadline, || async {
            let rows = self.deliveries(who, triggered_id).await;
            let ok = done(&rows);
            *last.lock().unwrap() = rows.clone();
            ok.then_some(rows)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {deadline:?} waiting for {what} (trigger {triggered_id}); last rows: {}",
                Value::Array(last.lock().unwrap().clone())
            )
        })
    }

    /// The account's `failed_count`, read by the account itself.
    pub async fn failed_count(&self, who: &Account) -> u64 {
        let record = self.read_account(who).await;
        record["failed_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("account record without integer failed_count: {record}"))
    }

    /// Polls the account's `failed_count` until it equals `expected`.
    pub async fn wait_failed_count(&self, who: &Account, expected: u64, deadline: Duration) {
        let last = Mutex::new(None);
        let found = eventually_quiet(deadline, || async {
            let n = self.failed_count(who).await;
            *last.lock().unwrap() = Some(n);
            (n == expected).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "timed out after {deadline:?} waiting for {}'s failed_count to be {expected}; last: {:?}",
            who.username,
            last.lock().unwrap()
        );
    }

    /// GET /metrics → 200; the Prometheus text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").send().await.expect(200).text()
    }
}
