//! A small client of the `/v1` API for the benchmark's setup calls and triggers, over
//! hyper-util's pooled client (keep-alive, TCP_NODELAY). Requests are spread round-robin
//! over every target node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::error::{BenchError, BenchResult};

/// The pooled HTTP/1 client type used everywhere in the harness.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled hyper-util client with TCP_NODELAY and an unbounded idle pool.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sends `request` with a deadline and reads the whole answer.
pub async fn send(
    http: &HttpClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> BenchResult<(StatusCode, Bytes)> {
    let what = format!("{} {}", request.method(), request.uri().path());
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|e| http_error(&what, &e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| http_error(&what, &e))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(BenchError::Timeout {
            what,
            after: timeout,
        }),
    }
}

fn http_error(what: &str, e: &dyn std::error::Error) -> BenchError {
    // hyper-util's errors keep the cause (connection refused, ...) in their source chain.
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    BenchError::Http {
        what: what.to_string(),
        reason,
    }
}

/// An account created by the bench, with the credentials to act as it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account id.
    pub id: String,
    /// Its username.
    pub username: String,
    /// Its plaintext API key (only known from the create answer).
    pub api_key: String,
}

/// Client of one or more nodes' `/v1` API.
pub struct ApiClient {
    http: HttpClient,
    targets: Vec<String>,
    next: AtomicUsize,
    timeout: Duration,
}

impl ApiClient {
    /// A client of `targets` (base URLs such as `http://127.0.0.1:8081`); every request
    /// must be answered within `timeout`.
    pub fn new(targets: &[String], timeout: Duration) -> BenchResult<Self> {
        if targets.is_empty() {
            return Err(BenchError::Invalid(
                "at least one --target is needed".into(),
            ));
        }
        let mut bases = Vec::with_capacity(targets.len());
        for target in targets {
            let base = target.trim_end_matches('/').to_string();
            let uri: hyper::Uri = base
                .parse()
                .map_err(|e| BenchError::Invalid(format!("invalid target {target:?}: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(BenchError::Invalid(format!(
                    "invalid target {target:?}: expected http://host:port"
                )));
            }
            bases.push(base);
        }
        Ok(Self {
            http: http_client(),
            targets: bases,
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The target base URLs.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// Checks that every target answers `GET /health` with 200.
    pub async fn check_targets(&self) -> BenchResult<()> {
        for base in &self.targets {
            let request = Request::builder()
                .method(Method::GET)
                .uri(format!("{base}/health"))
                .body(Full::new(Bytes::new()))
                .map_err(|e| BenchError::Invalid(format!("invalid target {base:?}: {e}")))?;
            let (status, _) = send(&self.http, request, self.timeout)
                .await
                .map_err(|e| BenchError::Invalid(format!("target {base} is not reachable: {e}")))?;
            if status != StatusCode::OK {
                return Err(BenchError::Invalid(format!(
                    "target {base}: GET /health answered {status}"
                )));
            }
        }
        Ok(())
    }

    /// The next target, round-robin.
    fn pick(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        &self.targets[i]
    }

    /// Sends one `/v1` request (JSON Content-Type, optional credentials and body) to the
    /// next target and returns the status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&Account>,
        body: Option<Bytes>,
    ) -> BenchResult<(StatusCode, Bytes)> {
        let url = format!("{}{path}", self.pick());
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(account) = auth {
            builder = builder
                .header("username", account.username.as_str())
                .header("api-key", account.api_key.as_str());
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| BenchError::Invalid(format!("cannot build a request to {path}: {e}")))?;
        send(&self.http, request, self.timeout).await
    }

    /// Like [`ApiClient::call`], but any status other than `expected` is an error; the
    /// body is parsed as JSON (`Null` when empty).
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        auth: Option<&Account>,
        body: Option<Value>,
        expected: StatusCode,
    ) -> BenchResult<Value> {
        let what = format!("{method} {path}");
        let body = body.map(|v| Bytes::from(v.to_string()));
        let (status, bytes) = self.call(method, path, auth, body).await?;
        if status != expected {
            let text = String::from_utf8_lossy(&bytes);
            return Err(BenchError::Status {
                what,
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| BenchError::Invalid(format!("{what}: answer is not JSON: {e}")))
    }

    /// `POST /v1/account` (the node runs the echo challenge against `endpoint`).
    pub async fn create_account(&self, username: &str, endpoint: &str) -> BenchResult<Account> {
        let body = json!({ "username": username, "endpoint": endpoint });
        let v = self
            .call_json(
                Method::POST,
                "/v1/account",
                None,
                Some(body),
                StatusCode::CREATED,
            )
            .await?;
        Ok(Account {
            id: string_of(&v, "id", "POST /v1/account")?,
            username: string_of(&v, "username", "POST /v1/account")?,
            api_key: string_of(&v, "api_key", "POST /v1/account")?,
        })
    }

    /// `GET /v1/account/<id>` as that account; true on 200.
    pub async fn read_own_account(&self, who: &Account) -> BenchResult<bool> {
        let path = format!("/v1/account/{}", who.id);
        let (status, _) = self.call(Method::GET, &path, Some(who), None).await?;
        Ok(status == StatusCode::OK)
    }

    /// `POST /v1/webhook/registration`; returns the registration id.
    pub async fn create_registration(
        &self,
        owner: &Account,
        event: &str,
        event_data: &Value,
    ) -> BenchResult<String> {
        let body = json!({
            "event": event,
            "description": "webhookd bench",
            "event_data": event_data,
        });
        let v = self
            .call_json(
                Method::POST,
                "/v1/webhook/registration",
                Some(owner),
                Some(body),
                StatusCode::CREATED,
            )
            .await?;
        string_of(&v, "id", "POST /v1/webhook/registration")
    }

    /// `POST /v1/webhook/subscription/<registration>`; returns the subscription id.
    pub async fn subscribe(&self, who: &Account, registration: &str) -> BenchResult<String> {
        let path = format!("/v1/webhook/subscription/{registration}");
        let v = self
            .call_json(Method::POST, &path, Some(who), None, StatusCode::CREATED)
            .await?;
        string_of(&v, "id", "POST /v1/webhook/subscription")
    }

    /// `POST /v1/webhook/triggered/<registration>` with `{"event_data": ...}` replacing
    /// the payload; returns the triggered id.
    pub async fn trigger(
        &self,
        owner: &Account,
        registration: &str,
        event_data: &Value,
    ) -> BenchResult<String> {
        let path = format!("/v1/webhook/triggered/{registration}");
        let body = json!({ "event_data": event_data });
        let v = self
            .call_json(
                Method::POST,
                &path,
                Some(owner),
                Some(body),
                StatusCode::CREATED,
            )
            .await?;
        string_of(&v, "id", "POST /v1/webhook/triggered")
    }

    /// `GET /v1/webhook/triggered/<id>`: the delivery counts of a trigger
    /// (`{"pending", "succeeded", "failed", "skipped", "cancelled"}`).
    pub async fn trigger_counts(&self, owner: &Account, triggered: &str) -> BenchResult<Value> {
        let path = format!("/v1/webhook/triggered/{triggered}");
        let v = self
            .call_json(Method::GET, &path, Some(owner), None, StatusCode::OK)
            .await?;
        Ok(v.get("deliveries").cloned().unwrap_or(Value::Null))
    }

    /// `DELETE /v1/account/<id>` as that account (cascades to its registrations and
    /// subscriptions).
    pub async fn delete_own_account(&self, who: &Account) -> BenchResult<()> {
        let path = format!("/v1/account/{}", who.id);
        self.call_json(Method::DELETE, &path, Some(who), None, StatusCode::OK)
            .await
            .map(|_| ())
    }
}

fn string_of(v: &Value, field: &str, what: &str) -> BenchResult<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| BenchError::Invalid(format!("{what}: answer has no string {field:?}")))
}
