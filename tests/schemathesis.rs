//! The OpenAPI contract (`openapi/openapi.json`), checked by schemathesis against a live node.
//!
//! Starts the real `webhookd serve` on loopback with its storage in a temp dir, plus a server
//! in this process standing in for account endpoints; creates a non-admin account (with one
//! registration, a subscription and a trigger) through the API; then runs
//! `schemathesis run openapi/openapi.json --url <node>` authenticated as that account, with a
//! bounded budget and every check. The test fails when schemathesis reports a failure. It
//! brings its own pinned schemathesis (see [`schemathesis_command`]), so it needs only
//! `python3` with its `venv` module, and network access on its first run.
//!
//! Every outbound call of the node stays on loopback: `tests/schemathesis_hooks.py` rewrites
//! any http(s) `endpoint` that schemathesis draws to the stand-in, and the node's endpoint
//! policy allows loopback only. The hooks file also keeps the test's records alive and the
//! credentials current (an API-key reset really replaces the key).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::{timeout, timeout_at, Instant};

use crate::common::python::venv_with;

/// The schemathesis release whose CLI this test uses (flags changed between v3 and v4).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Test cases per operation and phase (`--max-examples`), sized for a run well under 90 s on
/// two cores.
const MAX_EXAMPLES: &str = "15";
/// Fixed seed: the same cases on every run, so a failure reproduces.
const SEED: &str = "20240601";
/// How long the node may take to print `listening on ...`.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Hard bound on the whole schemathesis run (it is killed after that).
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// Bound on `schemathesis --version`.
const PROBE_DEADLINE: Duration = Duration::from_secs(60);
/// The account schemathesis authenticates as.
const USERNAME: &str = "schemathesis";

/// The schemathesis version `program --version` reports, `None` when it is another program
/// or cannot run.
async fn version_of(program: &Path) -> Option<String> {
    let probe = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = match timeout(PROBE_DEADLINE, probe).await {
        Ok(Ok(output)) => output,
        Ok(Err(_)) => return None,
        Err(_) => panic!(
            "`{} --version` did not answer within {PROBE_DEADLINE:?}",
            program.display()
        ),
    };
    // `st` may be an unrelated program.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis, version "))
        .map(|v| v.trim().to_string())
}

/// The pinned schemathesis: the one on the PATH when it is that version, else the test's
/// own, installed on first use into a virtual environment under `target/` (cargo's scratch
/// directory for integration tests), so a plain `cargo test` needs only `python3`.
async fn schemathesis_command() -> PathBuf {
    for program in ["schemathesis", "st"] {
        if version_of(Path::new(program)).await.as_deref() == Some(SCHEMATHESIS_VERSION) {
            return PathBuf::from(program);
        }
    }
    let pin = format!("schemathesis=={SCHEMATHESIS_VERSION}");
    let otherwise = format!("or install {pin} yourself so that `schemathesis` is on the PATH");
    let venv = venv_with("schemathesis", SCHEMATHESIS_VERSION, Some(&otherwise)).await;
    let program = venv.join("bin").join("schemathesis");
    let version = version_of(&program).await;
    assert_eq!(
        version.as_deref(),
        Some(SCHEMATHESIS_VERSION),
        "{} is not schemathesis {SCHEMATHESIS_VERSION}: remove {} to reinstall it",
        program.display(),
        venv.display()
    );
    program
}

/// The account endpoints' stand-in, shared by every account of the run.
///
/// * `GET ...?echo=V` answers 200 `{"echo": "V"}` (the echo challenge);
/// * `GET /current-api-key` answers the test account's current API key (read by the auth
///   provider in `tests/schemathesis_hooks.py`);
/// * `GET ...?api_key=K` (an API-key reset) records `K` as that key and answers 200 `{}`;
/// * anything else (secret-key resets) answers 200 `{}`.
#[derive(Clone)]
struct EndpointServer {
    addr: SocketAddr,
    api_key: Arc<Mutex<String>>,
}

impl EndpointServer {
    /// Starts it on a loopback port; it lives as long as the test's runtime.
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the endpoint server");
        let server = Self {
            addr: listener.local_addr().expect("endpoint server address"),
            api_key: Arc::new(Mutex::new(String::new())),
        };
        let shared = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.answer(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    /// The URL accounts register as their endpoint.
    fn endpoint(&self) -> String {
        format!("http://{}/endpoint", self.addr)
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/current-api-key" {
            let key = self.api_key.lock().unwrap().clone();
            return respond("text/plain", key);
        }
        let query = req.uri().query().unwrap_or("");
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let body = if let Some((_, value)) = pairs.iter().find(|(k, _)| k == "echo") {
            json!({ "echo": value })
        } else {
            if let Some((_, key)) = pairs.iter().find(|(k, _)| k == "api_key") {
                *self.api_key.lock().unwrap() = key.clone();
            }
            json!({})
        };
        respond("application/json", body.to_string())
    }
}

/// A 200 response.
fn respond(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Removes variables that would change a child's behaviour: `WEBHOOKD_*` overrides, log
/// filters and proxies (requests honours `HTTP_PROXY`; everything here is loopback).
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let upper = name.to_string_lossy().to_uppercase();
        if upper.starts_with("WEBHOOKD_")
            || upper.ends_with("_PROXY")
            || upper == "RUST_LOG"
            || upper == "SCHEMATHESIS_HOOKS"
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1");
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `webhookd serve`.
struct Node {
    child: Child,
    base_url: String,
    log: PathBuf,
}

/// Starts the node on `dir` and waits (with a deadline) for `listening on http://IP:PORT`.
async fn start_node(dir: &Path) -> (Node, String) {
    let data = dir.join("data");
    let config = dir.join("webhookd.toml");
    let log = dir.join("webhookd.log");
    let data_toml = serde_json::to_string(&data.display().to_string()).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"[http]
listen = "127.0.0.1:0"
[storage]
path = {data_toml}
[security]
pbkdf2_iterations = 1000
endpoint_allow_cidrs = ["127.0.0.0/8"]
[http_client]
timeout_secs = 1.0
"#
        ),
    )
    .expect("write the config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhookd"));
    clean_env(&mut cmd);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("create the node log"))
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn webhookd serve");
    let stdout = child.stdout.take().expect("node stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let mut seen = Vec::new();
    let mut admin_key = None;
    let base_url = loop {
        let line = match timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => panic!(
                "webhookd exited before listening; stdout: {seen:?}\nstderr:\n{}",
                tail(&log, 40)
            ),
            Err(_) => panic!(
                "webhookd did not print `listening on` within {STARTUP_DEADLINE:?}; stdout: \
                 {seen:?}\nstderr:\n{}",
                tail(&log, 40)
            ),
        };
        if let Some(key) = line.trim().strip_prefix("admin api_key:") {
            admin_key = Some(key.trim().to_string());
        }
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            break url.trim().to_string();
        }
        seen.push(line);
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let admin_key = admin_key.expect("a first start prints `admin api_key: <hex>`");
    assert!(
        admin_key.len() == 40
            && admin_key
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "admin api_key is not 40 lowercase hex: {admin_key:?}"
    );
    assert!(
        base_url.starts_with("http://127.0.0.1:"),
        "not a loopback address: {base_url}"
    );
    (
        Node {
            child,
            base_url,
            log,
        },
        admin_key,
    )
}

/// A JSON request to the node; returns the status and the JSON body (`null` when empty).
async fn call(
    client: &reqwest::Client,
    node: &Node,
    method: reqwest::Method,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method.clone(), format!("{}{path}", node.base_url))
        .header("content-type", "application/json");
    if let Some((username, api_key)) = auth {
        req = req.header("username", username).header("api-key", api_key);
    }
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    let response = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("read the response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    (status, body)
}

/// A string field of a JSON record.
fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record[name]
        .as_str()
        .unwrap_or_else(|| panic!("no `{name}` in {record}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document() {
    use reqwest::Method;

    let program = schemathesis_command().await;
    let dir = tempfile::Builder::new()
        .prefix("webhookd-schemathesis-")
        .tempdir()
        .expect("create a temp dir");
    let endpoints = EndpointServer::start().await;
    let (mut node, admin_key) = start_node(dir.path()).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build the HTTP client");

    // The document is served as shipped, without auth and without a JSON Content-Type.
    let served = client
        .get(format!("{}/v1/openapi.json", node.base_url))
        .send()
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = served.json().await.expect("the document is JSON");
    let shipped: Value = serde_json::from_str(include_str!("../openapi/openapi.json")).unwrap();
    assert_eq!(served, shipped);

    // The admin key printed on first start works: this is the node we configured.
    let (status, _) = call(
        &client,
        &node,
        Method::GET,
        "/v1/accounts?start=0&limit=1",
        Some(("admin", &admin_key)),
        None,
    )
    .await;
    assert_eq!(status, 200, "GET /v1/accounts as admin");

    // The non-admin account schemathesis runs as, with one registration, a subscription to it
    // and one trigger, so that the operations needing existing records also answer 2xx.
    let (status, account) = call(
        &client,
        &node,
        Method::POST,
        "/v1/account",
        None,
        Some(json!({ "username": USERNAME, "endpoint": endpoints.endpoint() })),
    )
    .await;
    assert_eq!(status, 201, "create account: {account}");
    let (api_key, account_id) = (field(&account, "api_key"), field(&account, "id"));
    *endpoints.api_key.lock().unwrap() = api_key.to_string();
    let auth = Some((USERNAME, api_key));
    let (status, registration) = call(
        &client,
        &node,
        Method::POST,
        "/v1/webhook/registration",
        auth,
        Some(json!({ "event": "contract.test", "description": "", "event_data": {"n": 1} })),
    )
    .await;
    assert_eq!(status, 201, "create registration: {registration}");
    let registration_id = field(&registration, "id");
    let (status, subscription) = call(
        &client,
        &node,
        Method::POST,
        &format!("/v1/webhook/subscription/{registration_id}"),
        auth,
        None,
    )
    .await;
    assert_eq!(status, 201, "subscribe: {subscription}");
    let (status, triggered) = call(
        &client,
        &node,
        Method::POST,
        &format!("/v1/webhook/triggered/{registration_id}"),
        auth,
        None,
    )
    .await;
    assert_eq!(status, 201, "trigger: {triggered}");
    let triggered_id = field(&triggered, "id");

    // Per-operation settings:
    // * operations whose drawn ids would never exist use the records made above;
    // * the API-key reset names the test account (a drawn username is almost always 404);
    // * the `missing-id` operations exist only to answer `400 Missing <param>`, so a
    //   schema-valid request to them is rightly refused with 400.
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[operations]]
include-name = "GET /v1/account/{{id}}"
parameters = {{ "path.id" = "{account_id}" }}

[[operations]]
include-name = ["POST /v1/webhook/subscription/{{id}}", "POST /v1/webhook/triggered/{{id}}"]
parameters = {{ "path.id" = "{registration_id}" }}

[[operations]]
include-name = ["GET /v1/webhook/triggered/{{id}}", "GET /v1/webhook/triggered/{{id}}/deliveries", "POST /v1/webhook/triggered/{{id}}/redeliver"]
parameters = {{ "path.id" = "{triggered_id}" }}

[[operations]]
include-name = "POST /v1/account/reset/apikey"
parameters = {{ "header.username" = "{USERNAME}" }}

[[operations]]
include-tag = "missing-id"
checks.positive_data_acceptance.expected-statuses = ["400"]
warnings = false
"#
        ),
    )
    .expect("write the schemathesis config");

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report_dir = dir.path().join("schemathesis-report");
    let mut cmd = Command::new(&program);
    clean_env(&mut cmd);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(manifest.join("openapi/openapi.json"))
        .args(["--url", &node.base_url])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        // Every `/v1` request must carry it, GET and DELETE included (the 415 gate). The
        // `username` / `api-key` headers come from the auth provider in the hooks file.
        .args(["--header", "Content-Type: application/json"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&report_dir)
        .arg("--no-color")
        .env(
            "SCHEMATHESIS_HOOKS",
            manifest.join("tests/schemathesis_hooks.py"),
        )
        .env("WEBHOOKD_TEST_ECHO_ENDPOINT", endpoints.endpoint())
        .env(
            "WEBHOOKD_TEST_KEY_URL",
            format!("http://{}/current-api-key", endpoints.addr),
        )
        .env("WEBHOOKD_TEST_USERNAME", USERNAME)
        .env("WEBHOOKD_TEST_ACCOUNT_ID", account_id)
        .env("WEBHOOKD_TEST_REGISTRATION_ID", registration_id)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = match timeout(RUN_DEADLINE, cmd.output()).await {
        Ok(output) => output.expect("run schemathesis"),
        // Dropping the future kills schemathesis (kill_on_drop).
        Err(_) => panic!(
            "schemathesis did not finish within {RUN_DEADLINE:?}; node log:\n{}",
            tail(&node.log, 40)
        ),
    };
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!("schemathesis took {took:?}");

    let node_alive = node.child.try_wait().expect("poll the node").is_none();
    assert!(
        node_alive,
        "webhookd died during the schemathesis run; its log:\n{}",
        tail(&node.log, 60)
    );
    assert!(
        output.status.success(),
        "schemathesis found contract violations (exit {}); see its report above.\n\
         stderr:\n{stderr}\nnode log (tail):\n{}",
        output.status,
        tail(&node.log, 20)
    );
}
