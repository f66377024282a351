//! A small HTTP client for the API under test: [`Req`] builds a request (it sends
//! `content-type: application/json` unless told otherwise) and [`Resp`] holds the answer,
//! with the assertions the suites share. No answer may be a 5xx unless a test asks for one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::common::records::AsCreds;

/// A request being built. Sends `content-type: application/json` unless changed.
pub struct Req {
    client: reqwest::Client,
    method: reqwest::Method,
    path: String,
    url: String,
    headers: Vec<(String, String)>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

impl Req {
    /// A request to `url` (`path` names it in messages), with the JSON content type.
    pub fn new(client: reqwest::Client, method: &str, path: &str, url: String) -> Self {
        Self {
            client,
            method: reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            path: path.to_string(),
            url,
            headers: Vec::new(),
            content_type: Some("application/json".into()),
            body: None,
        }
    }

    /// Sets both auth headers.
    pub fn key(self, username: &str, api_key: &str) -> Self {
        self.username(username).api_key(api_key)
    }
    pub fn auth(self, who: &impl AsCreds) -> Self {
        let (u, k) = (who.username().to_string(), who.api_key().to_string());
        self.key(&u, &k)
    }
    pub fn username(self, username: &str) -> Self {
        self.header("username", username)
    }
    pub fn api_key(self, api_key: &str) -> Self {
        self.header("api-key", api_key)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn content_type(mut self, ct: &str) -> Self {
        self.content_type = Some(ct.into());
        self
    }
    pub fn no_content_type(mut self) -> Self {
        self.content_type = None;
        self
    }
    pub fn json(self, body: &Value) -> Self {
        self.body(serde_json::to_vec(body).unwrap())
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Sends the request. Panics on transport errors and on any 5xx answer.
    pub async fn send(self) -> Resp {
        let r = self.send_unchecked().await;
        assert!(r.status < 500, "server error (never allowed): {r}");
        r
    }

    /// Sends the request; panics on transport errors only (a 5xx is returned, for the
    /// tests where one is expected, e.g. a cluster node that is down).
    pub async fn send_unchecked(self) -> Resp {
        self.try_send().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends the request; a transport error (refused connection, timeout, reset) is an
    /// `Err` describing it, for the tests that record failures instead of stopping.
    pub async fn try_send(self) -> Result<Resp, String> {
        let what = self.describe();
        let mut rb = self.client.request(self.method, &self.url);
        if let Some(ct) = &self.content_type {
            rb = rb.header("content-type", ct.as_str());
        }
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(body) = self.body {
            rb = rb.body(body);
        }
        let resp = match rb.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(format!("{what}: request failed: {e:?}")),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(body) => body,
            Err(e) => return Err(format!("{what}: reading body failed: {e:?}")),
        };
        let json = serde_json::from_slice(&body).ok();
        Ok(Resp {
            what,
            status,
            headers,
            body,
            json,
        })
    }
}

/// A finished response.
pub struct Resp {
    /// `METHOD /path` for messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Resp {
    /// Asserts the status code; returns self for chaining.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// The parsed JSON body (panics when the body is not JSON).
    #[track_caller]
    pub fn json(&self) -> &Value {
        self.json
            .as_ref()
            .unwrap_or_else(|| panic!("body is not JSON: {self}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    }

    /// Asserts `status` and a body of exactly `{"Error": message}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "unexpected status: {self}");
        assert_eq!(
            self.json.as_ref(),
            Some(&json!({ "Error": message })),
            "unexpected body: {self}"
        );
    }

    /// Asserts 200 and the six-counter write result: the listed counters have the
    /// given values, every other counter is 0, and there are no other keys.
    #[track_caller]
    pub fn expect_write(&self, counters: &[(&str, u64)]) {
        assert_eq!(self.status, 200, "unexpected status: {self}");
        let mut expected = serde_json::Map::new();
        for k in [
            "deleted",
            "errors",
            "inserted",
            "replaced",
            "skipped",
            "unchanged",
        ] {
            let v = counters
                .iter()
                .find(|(name, _)| *name == k)
                .map_or(0, |(_, v)| *v);
            expected.insert(k.into(), json!(v));
        }
        for (name, _) in counters {
            assert!(expected.contains_key(*name), "not a write counter: {name}");
        }
        let got = self
            .json()
            .as_object()
            .unwrap_or_else(|| panic!("write result is not an object: {self}"));
        let got_sorted: BTreeMap<_, _> = got.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let want_sorted: BTreeMap<_, _> = expected.into_iter().collect();
        assert_eq!(got_sorted, want_sorted, "unexpected write result: {self}");
    }

    /// Asserts the plain-text 415 of the Content-Type gate.
    #[track_caller]
    pub fn expect_unsupported_media_type(&self) {
        assert_eq!(self.status, 415, "unexpected status: {self}");
        assert_eq!(self.text().trim(), "Unsupported Media Type", "{self}");
        if let Some(ct) = self.header("content-type") {
            assert!(
                ct.starts_with("text/plain"),
                "415 body should be plain text, got content-type {ct}: {self}"
            );
        }
    }

    /// Rows under `key` of a 200 listing.
    #[track_caller]
    pub fn items(&self, key: &str) -> Vec<Value> {
        assert_eq!(self.status, 200, "listing expected 200: {self}");
        self.json()[key]
            .as_array()
            .unwrap_or_else(|| panic!("listing without `{key}` array: {self}"))
            .clone()
    }

    #[track_caller]
    pub fn expect_no_content(&self) {
        assert_eq!(self.status, 204, "expected 204: {self}");
        assert!(self.body.is_empty(), "204 must have an empty body: {self}");
    }
}

/// Sends every request with at most `concurrency` in flight; the responses in request order.
/// (Each [`Req`] owns its client and strings, so it can run on its own task.)
pub async fn send_all(reqs: Vec<Req>, concurrency: usize) -> Vec<Resp> {
    run_all(reqs, concurrency, true).await
}

/// [`send_all`], allowing 5xx answers.
pub async fn send_all_unchecked(reqs: Vec<Req>, concurrency: usize) -> Vec<Resp> {
    run_all(reqs, concurrency, false).await
}

async fn run_all(reqs: Vec<Req>, concurrency: usize, checked: bool) -> Vec<Resp> {
    let n = reqs.len();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore closed");
            let resp = match checked {
                true => req.send().await,
                false => req.send_unchecked().await,
            };
            (i, resp)
        });
    }
    let mut out: Vec<Option<Resp>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, resp)) => out[i] = Some(resp),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("request task failed: {e}"),
        }
    }
    out.into_iter()
        .map(|r| r.expect("every request answered"))
        .collect()
}
