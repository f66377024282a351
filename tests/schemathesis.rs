//! The OpenAPI contract (`openapi/openapi.json`), checked by schemathesis against a live node.
//!
//! Starts the real `webhookd serve` on loopback with its storage in a temp dir, plus an echo
//! server in this process standing in for account endpoints; creates a non-admin account
//! through the API; then runs `schemathesis run <node>/v1/openapi.json` authenticated as that
//! account, with a bounded budget. The test fails when schemathesis reports a failure, and
//! when schemathesis is missing: `.ci/run` installs the pinned version.
//!
//! Every outbound call of the node stays on loopback: `tests/schemathesis_hooks.py` rewrites
//! any http(s) `endpoint` that schemathesis draws to the echo server, and the node's endpoint
//! policy allows loopback only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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

/// The schemathesis release whose CLI this test uses (flags changed between v3 and v4);
/// `.ci/run` installs exactly this one.
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

/// The installed schemathesis command (`schemathesis`, else `st`), or a failure that says
/// how to install it.
async fn schemathesis_command() -> &'static str {
    let mut seen = Vec::new();
    for program in ["schemathesis", "st"] {
        let probe = Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = match timeout(PROBE_DEADLINE, probe).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                seen.push(format!("`{program}`: {e}"));
                continue;
            }
            Err(_) => panic!("`{program} --version` did not answer within {PROBE_DEADLINE:?}"),
        };
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        // `st` may be an unrelated program.
        let Some(version) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("schemathesis, version "))
        else {
            seen.push(format!("`{program} --version` printed {text:?}"));
            continue;
        };
        assert_eq!(
            version.trim(),
            SCHEMATHESIS_VERSION,
            "`{program}` is schemathesis {version}, this test needs {SCHEMATHESIS_VERSION}: \
             run .ci/run (it installs schemathesis=={SCHEMATHESIS_VERSION}) or \
             `python3 -m pip install 'schemathesis=={SCHEMATHESIS_VERSION}'`"
        );
        return program;
    }
    panic!(
        "schemathesis is not installed (tried {}): run .ci/run, which installs \
         schemathesis=={SCHEMATHESIS_VERSION} with pip and puts it on PATH",
        seen.join("; ")
    );
}

/// The account endpoint stand-in: `GET ?echo=V` answers `{"echo": "V"}`; an API-key reset
/// (`?api_key=`) is refused with 503 so that the key schemathesis authenticates with stays
/// valid for the whole run (a refused reset keeps the old key, api.md B.10); anything else
/// (secret-key resets) answers 200 `{}`.
async fn answer_endpoint(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let (status, body) = if let Some((_, value)) = pairs.iter().find(|(k, _)| k == "echo") {
        (StatusCode::OK, json!({ "echo": value }))
    } else if pairs.iter().any(|(k, _)| k == "api_key") {
        (StatusCode::SERVICE_UNAVAILABLE, json!({}))
    } else {
        (StatusCode::OK, json!({}))
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Starts the endpoint stand-in on a loopback port; it lives as long as the test's runtime.
async fn start_endpoint_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the endpoint server");
    let addr = listener.local_addr().expect("endpoint server address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer_endpoint))
                    .await;
            });
        }
    });
    addr
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
        admin_key.len() == 40 && admin_key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document() {
    let program = schemathesis_command().await;
    let dir = tempfile::Builder::new()
        .prefix("webhookd-schemathesis-")
        .tempdir()
        .expect("create a temp dir");
    let endpoint_addr = start_endpoint_server().await;
    let echo_endpoint = format!("http://{endpoint_addr}/endpoint");
    let (mut node, admin_key) = start_node(dir.path()).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build the HTTP client");

    // The document is served as is, without auth and without a JSON Content-Type.
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

    // The admin key works (so the node is the one we configured), then a real non-admin
    // account for schemathesis.
    let admin_check = client
        .get(format!("{}/v1/accounts?start=0&limit=1", node.base_url))
        .header("content-type", "application/json")
        .header("username", "admin")
        .header("api-key", &admin_key)
        .send()
        .await
        .expect("GET /v1/accounts as admin");
    assert_eq!(admin_check.status(), 200);
    let created = client
        .post(format!("{}/v1/account", node.base_url))
        .json(&json!({ "username": USERNAME, "endpoint": echo_endpoint }))
        .send()
        .await
        .expect("POST /v1/account");
    let status = created.status();
    let created: Value = created.json().await.expect("account JSON");
    assert_eq!(status, 201, "create account: {created}");
    let api_key = created["api_key"].as_str().expect("api_key").to_string();

    let report_dir = dir.path().join("schemathesis-report");
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis_hooks.py");
    let mut cmd = Command::new(program);
    clean_env(&mut cmd);
    cmd.arg("run")
        .arg(format!("{}/v1/openapi.json", node.base_url))
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .args(["--header", &format!("username: {USERNAME}")])
        .args(["--header", &format!("api-key: {api_key}")])
        // Every `/v1` request must carry it, GET and DELETE included (the 415 gate).
        .args(["--header", "Content-Type: application/json"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&report_dir)
        .arg("--no-color")
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("WEBHOOKD_TEST_ECHO_ENDPOINT", &echo_endpoint)
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
