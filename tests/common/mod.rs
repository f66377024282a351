//! Shared helpers for the black-box integration tests.
//!
//! * [`TestConfig`] / [`TestNode`]: write a config into a fresh temp dir and run the real
//!   `webhookd serve` binary as a child process (its stderr goes to `webhookd.log` in the temp
//!   dir and is printed when a test fails).
//! * [`Req`] / [`Resp`]: a small HTTP client; every request sends
//!   `content-type: application/json` unless told otherwise, and no response may be a 5xx.
//! * [`EndpointServer`]: a real hyper server in the test process standing in for the account
//!   endpoints (echo challenge, key resets, deliveries).
//! * guard checkers (`assert_*`) shared by the per-route error tests, and [`eventually`] to
//!   poll with a deadline instead of sleeping.
//! * [`cluster`]: several nodes on loopback joined into one cluster (`tests/cluster.rs`);
//!   [`scenario`]: the §13.2 functional scenario, shared by `tests/functional.rs` (one node)
//!   and `tests/cluster.rs` (each request to a random node).
#![allow(dead_code)]

pub mod cluster;
pub mod scenario;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::AbortHandle;

/// How long a node may take to print `listening on ...`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// Upper bound for one API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI invocation (or a failing `serve`) may take to exit.
pub const CLI_DEADLINE: Duration = Duration::from_secs(20);
/// `http.shutdown_grace_secs` in the generated config.
pub const SHUTDOWN_GRACE_SECS: u64 = 5;
/// Default deadline for [`eventually`].
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);

pub const INVALID_PAGING: &str = "Invalid limit or start parameter";
pub const MISSING_API_KEY: &str = "Missing API key header value";
pub const MISSING_USERNAME: &str = "Missing username header value";
pub const UNKNOWN_USERNAME: &str = "Invalid API key or Username";
pub const INVALID_API_KEY: &str = "Invalid API key";
pub const NOT_AN_ADMIN: &str = "Not an Admin";
pub const NOT_AUTHORIZED: &str = "Not authorized";
pub const NO_TRIGGER_ACCESS: &str =
    "You don't have access to this registration record or it no longer exists";
pub const RESET_FAILED: &str = "Failed to contact the endpoint or wrong HTTP status code returned";

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// A temp dir holding `webhookd.toml`, the storage dir and the node's stderr log.
pub struct TestConfig {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl TestConfig {
    /// Writes the base test config merged with `extra_toml` (see [`merge_toml`]).
    pub fn new(extra_toml: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("webhookd-test-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("webhookd.toml");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("webhookd.log");
        let config = Self {
            dir,
            config_path,
            data_dir,
            log_path,
        };
        config.write(extra_toml);
        config
    }

    /// (Re)writes the config file: base settings, then `extra_toml` on top.
    pub fn write(&self, extra_toml: &str) {
        let data = serde_json::to_string(&self.data_dir.display().to_string()).unwrap();
        let base = format!(
            r#"
[http]
listen = "127.0.0.1:0"
shutdown_grace_secs = {SHUTDOWN_GRACE_SECS}
[storage]
path = {data}
[security]
pbkdf2_iterations = 1000
[http_client]
timeout_secs = 2.0
[delivery]
retry_delays_secs = [0.2, 0.2, 0.2]
"#
        );
        std::fs::write(&self.config_path, merge_toml(&base, extra_toml)).expect("write config");
    }

    /// The node's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Merges two simple TOML documents (`[section]` headers and one-line `key = value` pairs;
/// `section.key = value` is accepted outside a section). Keys of `extra` replace the base's.
/// Plain concatenation would not do: TOML forbids defining a table twice.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for doc in [base, extra] {
        let mut current = String::new();
        for line in doc.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = name.trim().to_string();
                sections.entry(current.clone()).or_default();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("merge_toml: not a `key = value` line: {line}"));
            let (mut section, mut key) = (current.clone(), key.trim().to_string());
            if section.is_empty() {
                if let Some((s, k)) = key.clone().split_once('.') {
                    section = s.to_string();
                    key = k.to_string();
                }
            }
            let entries = sections.entry(section).or_default();
            let value = value.trim().to_string();
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
    }
    let mut out = String::new();
    if let Some(top) = sections.remove("") {
        for (k, v) in top {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (name, entries) in sections {
        out.push_str(&format!("[{name}]\n"));
        for (k, v) in entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}

/// A `webhookd` command with a clean environment: no `WEBHOOKD_*` or proxy variables leak in
/// from the developer's shell, no colours, no `RUST_LOG` (it would override `log.level`).
pub fn webhookd_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhookd"));
    for (name, _) in std::env::vars_os() {
        let upper = name.to_string_lossy().to_uppercase();
        if upper.starts_with("WEBHOOKD_")
            || upper.ends_with("_PROXY")
            || upper == "RUST_LOG"
            || upper == "RUST_BACKTRACE"
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.stdin(Stdio::null());
    cmd.kill_on_drop(true);
    cmd
}

/// Result of a finished CLI invocation.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The single stderr line starting with `error: ` (contract: one line naming the cause).
    pub fn error_line(&self) -> String {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one stderr line starting with `error: `; {self}"
        );
        errors[0].to_string()
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `webhookd <args>` to completion (bounded by [`CLI_DEADLINE`]).
pub async fn run_webhookd(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = webhookd_command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn webhookd");
    match tokio::time::timeout(CLI_DEADLINE, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("wait for webhookd");
            CliOutput {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => panic!(
            "`webhookd {}` did not exit within {CLI_DEADLINE:?}",
            args.join(" ")
        ),
    }
}

/// Extracts `<prefix><value>` from stdout lines, e.g. `admin api_key: `.
pub fn find_line_value(lines: &[String], prefix: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
}

pub fn is_hex40(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn prints_admin_keys(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| l.contains("admin api_key:") || l.contains("admin secret_key:"))
}

// ---------------------------------------------------------------------------------------------
// The node under test
// ---------------------------------------------------------------------------------------------

/// What a `serve` process printed until it was ready.
struct Startup {
    lines: Vec<String>,
    addr: SocketAddr,
}

/// A running `webhookd serve` child process on its own temp dir.
pub struct TestNode {
    pub config: TestConfig,
    pub base_url: String,
    pub addr: SocketAddr,
    /// The admin's plaintext API key (from the first start's stdout).
    pub admin_key: String,
    pub admin_secret: String,
    /// Stdout lines of the latest start, up to and including `listening on ...`.
    pub startup_stdout: Vec<String>,
    /// Stdout lines printed after `listening on ...` (drained in the background).
    pub later_stdout: Arc<Mutex<Vec<String>>>,
    child: Option<Child>,
    client: reqwest::Client,
}

impl TestNode {
    pub async fn spawn() -> Self {
        Self::spawn_with("").await
    }

    /// Starts a fresh node whose config is the base test config plus `extra_toml`.
    pub async fn spawn_with(extra_toml: &str) -> Self {
        Self::start(TestConfig::new(extra_toml)).await
    }

    /// Starts a node on a config whose storage has no admin yet: it must print the keys.
    pub async fn start(config: TestConfig) -> Self {
        let (child, startup, later) = launch(&config).await;
        let admin_key = find_line_value(&startup.lines, "admin api_key:");
        let admin_secret = find_line_value(&startup.lines, "admin secret_key:");
        let (Some(admin_key), Some(admin_secret)) = (admin_key, admin_secret) else {
            panic!(
                "first start did not print `admin api_key:` / `admin secret_key:`; stdout: {:?}\n{}",
                startup.lines,
                config.log()
            );
        };
        Self::assemble(config, child, startup, later, admin_key, admin_secret)
    }

    /// Starts a node on storage that already has an admin (e.g. after `init --reset --yes`).
    pub async fn start_existing(config: TestConfig, admin_key: &str) -> Self {
        let (child, startup, later) = launch(&config).await;
        assert!(
            !prints_admin_keys(&startup.lines),
            "a start on existing storage printed admin keys: {:?}",
            startup.lines
        );
        Self::assemble(
            config,
            child,
            startup,
            later,
            admin_key.into(),
            String::new(),
        )
    }

    fn assemble(
        config: TestConfig,
        child: Child,
        startup: Startup,
        later: Arc<Mutex<Vec<String>>>,
        admin_key: String,
        admin_secret: String,
    ) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build reqwest client");
        Self {
            base_url: format!("http://{}", startup.addr),
            addr: startup.addr,
            admin_key,
            admin_secret,
            startup_stdout: startup.lines,
            later_stdout: later,
            child: Some(child),
            client,
            config,
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config.config_path
    }

    pub fn config_path_str(&self) -> String {
        self.config.config_path.display().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("node is not running")
    }

    /// SIGKILL (no clean shutdown) and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill webhookd");
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        let pid = child.id().expect("child pid") as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid; it has not been reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let deadline = Duration::from_secs(SHUTDOWN_GRACE_SECS + 10);
        match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => status.expect("wait for webhookd"),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "webhookd did not exit within {deadline:?} after SIGTERM\n{}",
                    self.config.log()
                );
            }
        }
    }

    /// Starts the node again on the same config and data (SIGKILLs it first if still running).
    /// The admin exists already, so the new process must not print admin keys.
    pub async fn restart(&mut self) {
        self.kill().await;
        let (child, startup, later) = launch(&self.config).await;
        assert!(
            !prints_admin_keys(&startup.lines),
            "restart printed admin keys again: {:?}",
            startup.lines
        );
        self.base_url = format!("http://{}", startup.addr);
        self.addr = startup.addr;
        self.startup_stdout = startup.lines;
        self.later_stdout = later;
        self.child = Some(child);
    }

    /// Waits (bounded) for the process to exit by itself.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => status.expect("wait for webhookd"),
            Err(_) => {
                let _ = child.kill().await;
                panic!("webhookd did not exit within {deadline:?}");
            }
        }
    }

    /// Runs a CLI subcommand against this node's config: `webhookd <args> --config <file>`.
    pub async fn run_cli(&self, args: &[&str]) -> CliOutput {
        let config = self.config_path_str();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.as_str()]);
        run_webhookd(&all, &[]).await
    }

    // --- requests ------------------------------------------------------------------------

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn req(&self, method: &str, path: &str) -> Req {
        Req {
            client: self.client.clone(),
            method: reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            path: path.to_string(),
            url: self.url(path),
            headers: Vec::new(),
            content_type: Some("application/json".into()),
            body: None,
        }
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
    pub fn put(&self, path: &str) -> Req {
        self.req("PUT", path)
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

    pub async fn count(&self, path: &str, who: &impl AsCreds, key: &str) -> usize {
        self.list_all(path, who, key).await.len()
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
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let log = self.config.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- webhookd at {} (config {}) ---\nstartup stdout: {:?}\n--- stderr (last 200 lines) ---\n{}",
                self.base_url,
                self.config.config_path.display(),
                self.startup_stdout,
                tail.join("\n")
            );
        }
    }
}

/// Spawns `webhookd serve --config <file>` and reads stdout until `listening on http://...`.
async fn launch(config: &TestConfig) -> (Child, Startup, Arc<Mutex<Vec<String>>>) {
    try_launch(config).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A started `serve` process, what it printed until ready, and its later stdout lines.
type Launched = (Child, Startup, Arc<Mutex<Vec<String>>>);

/// Like [`launch`], but a process that exits (or stays silent) before `listening on` is an
/// `Err` describing it (the process is reaped or killed), so a caller can retry.
async fn try_launch(config: &TestConfig) -> Result<Launched, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)
        .expect("open log file");
    let mut cmd = webhookd_command();
    cmd.arg("serve")
        .arg("--config")
        .arg(&config.config_path)
        .current_dir(config.dir.path())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().expect("spawn webhookd serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
    let addr = loop {
        match tokio::time::timeout_at(deadline, reader.next_line()).await {
            Ok(Ok(Some(line))) => {
                lines.push(line.clone());
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let hostport = rest.split_whitespace().next().unwrap_or("");
                    let hostport = hostport.trim_end_matches('/');
                    break hostport.parse::<SocketAddr>().unwrap_or_else(|e| {
                        panic!("cannot parse the listen address in {line:?}: {e}")
                    });
                }
            }
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(format!(
                    "webhookd exited before `listening on` ({status:?}); stdout: {lines:?}\n--- stderr ---\n{}",
                    config.log()
                ));
            }
            Ok(Err(e)) => panic!("reading webhookd stdout: {e}"),
            Err(_) => {
                let _ = child.kill().await;
                return Err(format!(
                    "webhookd did not print `listening on` within {STARTUP_DEADLINE:?}; stdout: {lines:?}\n--- stderr ---\n{}",
                    config.log()
                ));
            }
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    let later = Arc::new(Mutex::new(Vec::new()));
    let sink = later.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    Ok((child, Startup { lines, addr }, later))
}

// ---------------------------------------------------------------------------------------------
// Credentials and records
// ---------------------------------------------------------------------------------------------

/// `username` + plaintext `api-key` header values.
#[derive(Clone, Debug)]
pub struct Creds {
    pub username: String,
    pub api_key: String,
}

impl Creds {
    pub fn new(username: &str, api_key: &str) -> Self {
        Self {
            username: username.into(),
            api_key: api_key.into(),
        }
    }
}

pub trait AsCreds {
    fn username(&self) -> &str;
    fn api_key(&self) -> &str;
}

impl AsCreds for Creds {
    fn username(&self) -> &str {
        &self.username
    }
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

/// An account as returned by the create call (plaintext keys).
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub api_key: String,
    pub secret_key: String,
    pub endpoint: String,
    /// The full 201 body.
    pub record: Value,
}

impl Account {
    pub fn from_record(record: Value) -> Self {
        let s = |k: &str| {
            record[k]
                .as_str()
                .unwrap_or_else(|| panic!("account record lacks string `{k}`: {record}"))
                .to_string()
        };
        Self {
            id: s("id"),
            username: s("username"),
            api_key: s("api_key"),
            secret_key: s("secret_key"),
            endpoint: s("endpoint"),
            record: record.clone(),
        }
    }

    pub fn creds(&self) -> Creds {
        Creds::new(&self.username, &self.api_key)
    }
}

impl AsCreds for Account {
    fn username(&self) -> &str {
        &self.username
    }
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

pub fn id_of(record: &Value) -> String {
    record["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without string id: {record}"))
        .to_string()
}

/// A fresh random UUIDv4 that names nothing.
pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 40 random lowercase hex chars (looks like a key, matches none).
pub fn random_hex40() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")[..40].to_string()
}

/// Ids that are not UUIDs at all (B.9: they behave like unknown ids).
pub const MALFORMED_IDS: &[&str] = &[
    "not-a-uuid",
    "12345",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
];

/// Standard base64 (with padding), for `standard_webhooks_secret`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

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
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading body failed: {e:?}"));
        let json = serde_json::from_slice(&body).ok();
        Resp {
            what,
            status,
            headers,
            body,
            json,
        }
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

    /// Asserts 200 and the six-counter write result (§3.8): the listed counters have the
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

// ---------------------------------------------------------------------------------------------
// Guard checkers shared by the per-route tests. Each takes a closure building the request
// *without* the part under test, so the same check runs against every route.
// ---------------------------------------------------------------------------------------------

/// §3.2 steps 1–2: `api-key` is checked before `username`, so no headers at all, or only
/// `username`, both give `Missing API key header value`.
pub async fn assert_missing_auth_headers(make: impl Fn() -> Req, who: &impl AsCreds) {
    make().send().await.expect_error(401, MISSING_API_KEY);
    make()
        .username(who.username())
        .send()
        .await
        .expect_error(401, MISSING_API_KEY);
    make()
        .api_key(who.api_key())
        .send()
        .await
        .expect_error(401, MISSING_USERNAME);
}

/// §3.2 step 4: known username, key that does not verify (an empty key is present but invalid).
pub async fn assert_wrong_key(make: impl Fn() -> Req, username: &str) {
    make()
        .key(username, &random_hex40())
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    make()
        .key(username, "")
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
}

/// §3.2 step 3: no account with that username (the lookup is case-sensitive).
pub async fn assert_unknown_username(make: impl Fn() -> Req, who: &impl AsCreds) {
    make()
        .key(&format!("nobody-{}", unknown_id()), who.api_key())
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
    make()
        .key(&who.username().to_uppercase(), who.api_key())
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
}

/// §3.1: anything but `application/json...` (case-insensitive, at position 0) is a plain-text
/// 415, before auth. `make` builds a request that would otherwise succeed with `ok_status`;
/// that accepted variant is sent last, so it may change state.
pub async fn assert_content_type_gate(make: impl Fn() -> Req, ok_status: u16) {
    make()
        .no_content_type()
        .send()
        .await
        .expect_unsupported_media_type();
    for ct in [
        "",
        "text/plain",
        "text/plain; application/json",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        make()
            .content_type(ct)
            .send()
            .await
            .expect_unsupported_media_type();
    }
    make()
        .content_type("APPLICATION/JSON; charset=utf-8")
        .send()
        .await
        .expect(ok_status);
}

/// The gate also comes before auth: no auth headers and a bad content type → 415, not 401.
pub async fn assert_content_type_before_auth(make: impl Fn() -> Req) {
    make()
        .content_type("text/plain")
        .send()
        .await
        .expect_unsupported_media_type();
    make()
        .no_content_type()
        .send()
        .await
        .expect_unsupported_media_type();
}

/// Query strings that must all give 400 `Invalid limit or start parameter` (A.4: plain
/// digits only, 0 <= start <= 999999999999999, 1 <= limit <= 100).
pub const BAD_PAGING: &[&str] = &[
    "start=-1&limit=10",
    "start=1000000000000000&limit=10",
    "start=9999999999999991&limit=10",
    "start=99999999999999999999999999&limit=10",
    "start=0&limit=0",
    "start=0&limit=101",
    "start=0&limit=-1",
    "start=0&limit=abc",
    "start=abc&limit=10",
    "start=0&limit=1.0",
    "start=0&limit=",
    "start=&limit=10",
    "start=0&limit=%2B1",
    "start=0",
    "limit=10",
    "",
];

/// Every bad paging query → 400. `make(query)` builds the authenticated request.
pub async fn assert_bad_paging(make: impl Fn(&str) -> Req) {
    for query in BAD_PAGING {
        let r = make(query).send().await;
        assert_eq!(r.status, 400, "paging `{query}` should be refused: {r}");
        r.expect_error(400, INVALID_PAGING);
    }
}

/// Bodies that are not JSON, and JSON that is not an object.
pub async fn assert_bad_json_bodies(make: impl Fn() -> Req) {
    for raw in ["{", "not json", "{\"a\": }", "{\"a\": 1,}", ""] {
        let r = make().body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?} should be refused: {r}");
        r.expect_error(400, "Invalid JSON body");
    }
    for raw in ["[]", "[{\"a\": 1}]", "\"text\"", "1", "null", "true"] {
        let r = make().body(raw).send().await;
        assert_eq!(r.status, 400, "body {raw:?} should be refused: {r}");
        r.expect_error(400, "JSON body must be an object");
    }
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoint server (the account endpoints the daemon calls out to)
// ---------------------------------------------------------------------------------------------

/// A GET the endpoint server received.
#[derive(Clone, Debug)]
pub struct RecordedGet {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
}

impl RecordedGet {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A POST the endpoint server received.
#[derive(Clone, Debug)]
pub struct RecordedPost {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request (headers and body) had arrived.
    pub at: Instant,
    /// The status this server answered (or will answer, for a held POST).
    pub answered: u16,
}

impl RecordedPost {
    /// A header's value as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// How the endpoint server answers one POST to a scripted path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostAnswer {
    /// The status code.
    pub status: u16,
    /// How long to hold the request before answering (bounded; `ZERO` answers at once).
    pub hold: Duration,
}

impl PostAnswer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            hold: Duration::ZERO,
        }
    }
}

/// The answers programmed for the POSTs to one path: `queue` first, then `then` forever.
struct PostScript {
    queue: VecDeque<PostAnswer>,
    then: PostAnswer,
}

#[derive(Default)]
struct EndpointState {
    gets: Vec<RecordedGet>,
    posts: Vec<RecordedPost>,
    /// Per path (exactly as received), how POSTs are answered; GETs are never affected.
    scripts: HashMap<String, PostScript>,
}

/// Answers like the README's sample endpoint:
/// * `GET <path>?echo=V` → 200 `{"echo": V}`;
/// * `GET <path>?api_key=K` / `?secret_key=K` → 200 `{}` (K is recorded per path);
/// * `POST <path>` → recorded (path, headers, raw body), 200 `{}`.
///
/// Path prefixes select misbehaviour (they can be combined, outermost first):
/// * `/slow/<ms>/...` waits that long before answering (after recording the request);
/// * `/status/<code>/...` answers `<code>` to everything (so the echo fails too);
/// * `/bad-echo/...` answers the echo with a wrong value;
/// * `/redirect/<code>/<rest>` answers POSTs `<code>` with `Location: /<rest>`, and
///   everything else like `/<rest>`;
/// * `/reset-status/<code>/...` passes the echo but answers key-reset GETs with `<code>` and
///   a non-JSON body;
/// * `/conn-close/...` answers like `/...` with `Connection: close` (no keep-alive).
pub struct EndpointServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<EndpointState>>,
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EndpointServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind endpoint server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (st, conns) = (state.clone(), connections.clone());
        let (acc, opened) = (accepted.clone(), open.clone());
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let st = st.clone();
                acc.fetch_add(1, Ordering::SeqCst);
                opened.fetch_add(1, Ordering::SeqCst);
                let guard = OpenConnection(opened.clone());
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    let svc = service_fn(move |req| endpoint_handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            state,
            accept: accept.abort_handle(),
            connections,
            accepted,
            open,
        }
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection (as a server closing idle keep-alive connections
    /// does) and waits (bounded) until they are gone; new connections are still accepted.
    pub async fn close_connections(&self) {
        self.abort_connections();
        eventually(
            "the endpoint's connections to close",
            Duration::from_secs(5),
            || async { (self.open.load(Ordering::SeqCst) == 0).then_some(()) },
        )
        .await
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn endpoint_url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }
    /// An endpoint whose echo answer is wrong.
    pub fn bad_echo_url(&self, name: &str) -> String {
        self.endpoint_url(&format!("bad-echo/{}", name.trim_start_matches('/')))
    }
    /// An endpoint answering `code` to everything.
    pub fn status_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!("status/{code}/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that passes the echo but answers key resets with `code`.
    pub fn reset_status_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!(
            "reset-status/{code}/{}",
            name.trim_start_matches('/')
        ))
    }
    /// An endpoint that answers POSTs with `code` and `Location: /<name>` (a redirect to
    /// the endpoint `name` on this server) and everything else like `name`.
    pub fn redirect_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!("redirect/{code}/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that answers correctly, with `Connection: close`.
    pub fn conn_close_url(&self, name: &str) -> String {
        self.endpoint_url(&format!("conn-close/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that answers correctly after `ms` milliseconds.
    pub fn slow_url(&self, ms: u64, name: &str) -> String {
        self.endpoint_url(&format!("slow/{ms}/{}", name.trim_start_matches('/')))
    }

    /// Path on this server of an endpoint URL (or of a bare name).
    pub fn path_of(&self, url_or_name: &str) -> String {
        let base = format!("http://{}", self.addr);
        match url_or_name.strip_prefix(&base) {
            Some(path) => path.to_string(),
            None => format!("/{}", url_or_name.trim_start_matches('/')),
        }
    }

    pub fn gets(&self) -> Vec<RecordedGet> {
        self.state.lock().unwrap().gets.clone()
    }
    pub fn posts(&self) -> Vec<RecordedPost> {
        self.state.lock().unwrap().posts.clone()
    }

    /// GETs to this endpoint that carried `param`.
    pub fn gets_with(&self, url_or_name: &str, param: &str) -> Vec<RecordedGet> {
        let path = self.path_of(url_or_name);
        self.gets()
            .into_iter()
            .filter(|g| g.path == path && g.param(param).is_some())
            .collect()
    }

    /// Echo challenges received by this endpoint.
    pub fn echo_requests(&self, url_or_name: &str) -> Vec<RecordedGet> {
        self.gets_with(url_or_name, "echo")
    }

    /// Every key value delivered to this endpoint through `?<kind>=K`, oldest first
    /// (`kind` is `api_key` or `secret_key`).
    pub fn keys(&self, url_or_name: &str, kind: &str) -> Vec<String> {
        self.gets_with(url_or_name, kind)
            .iter()
            .filter_map(|g| g.param(kind).map(str::to_string))
            .collect()
    }

    pub fn last_key(&self, url_or_name: &str, kind: &str) -> Option<String> {
        self.keys(url_or_name, kind).pop()
    }

    pub fn posts_to(&self, url_or_name: &str) -> Vec<RecordedPost> {
        let path = self.path_of(url_or_name);
        self.posts()
            .into_iter()
            .filter(|p| p.path == path)
            .collect()
    }

    /// Waits (bounded) until at least `n` POSTs reached this endpoint.
    pub async fn wait_for_posts(
        &self,
        url_or_name: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<RecordedPost> {
        eventually(&format!("{n} POSTs to {url_or_name}"), deadline, || async {
            let posts = self.posts_to(url_or_name);
            (posts.len() >= n).then_some(posts)
        })
        .await
    }

    /// Programs the POSTs to this endpoint: the next ones get `first` (in order), every later
    /// one `then`. GETs (echo, key resets) keep their normal answers, so an account can be
    /// created on a path whose deliveries fail. Replaces any earlier program of the path.
    pub fn script_posts(&self, url_or_name: &str, first: &[u16], then: u16) {
        self.script_post_answers(
            url_or_name,
            first.iter().map(|s| PostAnswer::status(*s)).collect(),
            PostAnswer::status(then),
        );
    }

    /// Every later POST to this endpoint is answered `code` at once.
    pub fn set_post_status(&self, url_or_name: &str, code: u16) {
        self.script_posts(url_or_name, &[], code);
    }

    /// Every later POST to this endpoint is held for `hold` (the connection stays open,
    /// nothing is sent), then answered 200. Bounded: the hold ends, or the server stops.
    pub fn hold_posts(&self, url_or_name: &str, hold: Duration) {
        self.script_post_answers(
            url_or_name,
            VecDeque::new(),
            PostAnswer { status: 200, hold },
        );
    }

    /// The general form of [`Self::script_posts`].
    pub fn script_post_answers(
        &self,
        url_or_name: &str,
        first: VecDeque<PostAnswer>,
        then: PostAnswer,
    ) {
        let path = self.path_of(url_or_name);
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path, PostScript { queue: first, then });
    }

    /// Number of POSTs received so far (all paths).
    pub fn post_count(&self) -> usize {
        self.state.lock().unwrap().posts.len()
    }

    /// Stops accepting and drops every open connection (the endpoint becomes unreachable).
    pub fn shutdown(&self) {
        self.accept.abort();
        self.abort_connections();
    }

    /// Drops every open connection.
    fn abort_connections(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for EndpointServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Strips `<prefix><number>/` from `path`, returning the number and the rest.
fn strip_numbered<'a>(path: &'a str, prefix: &str) -> Option<(u64, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    let (num, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some((num.parse().ok()?, rest))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn endpoint_response(code: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Bytes::new()
    } else {
        body.into()
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

async fn endpoint_handle(
    state: Arc<Mutex<EndpointState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let close = path.starts_with("/conn-close/");
    let query = parse_query(req.uri().query().unwrap_or(""));
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut scripted: Option<PostAnswer> = None;
    {
        let mut st = state.lock().unwrap();
        if method == hyper::Method::POST {
            scripted = st.scripts.get_mut(&path).map(|script| {
                let then = script.then;
                script.queue.pop_front().unwrap_or(then)
            });
            st.posts.push(RecordedPost {
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
                at: Instant::now(),
                answered: scripted.map_or_else(|| unscripted_post_status(&path), |a| a.status),
            });
        } else if method == hyper::Method::GET {
            st.gets.push(RecordedGet {
                path: path.clone(),
                query: query.clone(),
                headers: headers.clone(),
            });
        }
    }
    if let Some(answer) = scripted {
        if !answer.hold.is_zero() {
            tokio::time::sleep(answer.hold).await;
        }
        return Ok(endpoint_response(answer.status, "{}"));
    }
    // `/slow/<ms>/rest`: wait, then behave like `/rest`.
    let path = match strip_numbered(&path, "/slow/") {
        Some((ms, rest)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("/{rest}")
        }
        None => path,
    };
    if close {
        let rest = path.trim_start_matches("/conn-close");
        let mut response = answer(rest, &method, &query);
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return Ok(response);
    }
    Ok(answer(&path, &method, &query))
}

/// What [`answer`] gives an unscripted POST to `path` (through `/slow/<ms>/`).
fn unscripted_post_status(path: &str) -> u16 {
    let path = match strip_numbered(path, "/slow/") {
        Some((_, rest)) => format!("/{rest}"),
        None => path.to_string(),
    };
    match strip_numbered(&path, "/status/").or_else(|| strip_numbered(&path, "/redirect/")) {
        Some((code, _)) => StatusCode::from_u16(code as u16).map_or(200, |s| s.as_u16()),
        None => 200,
    }
}

fn answer(path: &str, method: &hyper::Method, query: &[(String, String)]) -> Response<Full<Bytes>> {
    if let Some((code, _)) = strip_numbered(path, "/status/") {
        return endpoint_response(code as u16, "{}");
    }
    if let Some((code, rest)) = strip_numbered(path, "/redirect/") {
        if *method != hyper::Method::POST {
            return answer(&format!("/{rest}"), method, query);
        }
        let mut response = endpoint_response(code as u16, "{}");
        let location = hyper::header::HeaderValue::from_str(&format!("/{rest}")).unwrap();
        response.headers_mut().insert("location", location);
        return response;
    }
    if *method != hyper::Method::GET {
        return endpoint_response(200, "{}");
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(value) = param("echo") {
        let value = if path.starts_with("/bad-echo/") {
            format!("{value}-wrong")
        } else {
            value
        };
        return endpoint_response(200, json!({ "echo": value }).to_string());
    }
    if param("api_key").is_some() || param("secret_key").is_some() {
        if let Some((code, _)) = strip_numbered(path, "/reset-status/") {
            return endpoint_response(code as u16, "not json");
        }
        return endpoint_response(200, "{}");
    }
    endpoint_response(200, "{}")
}

// ---------------------------------------------------------------------------------------------
// A common starting point for the per-route tests
// ---------------------------------------------------------------------------------------------

/// A node, an endpoint server and two ordinary accounts (`john`, `jane`).
pub struct World {
    pub node: TestNode,
    pub ep: EndpointServer,
    pub john: Account,
    pub jane: Account,
}

impl World {
    pub async fn new() -> Self {
        Self::with_config("").await
    }

    pub async fn with_config(extra_toml: &str) -> Self {
        let ep = EndpointServer::start().await;
        let node = TestNode::spawn_with(extra_toml).await;
        let john = node
            .create_account("johndoe", &ep.endpoint_url("john/endpoint"))
            .await;
        let jane = node
            .create_account("janedoe", &ep.endpoint_url("jane/endpoint"))
            .await;
        Self {
            node,
            ep,
            john,
            jane,
        }
    }

    pub fn admin(&self) -> Creds {
        self.node.admin()
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery engine helpers
// ---------------------------------------------------------------------------------------------

/// Sends every request with at most `concurrency` in flight; the responses in request order.
/// (Each [`Req`] owns its client and strings, so it can run on its own task.)
pub async fn send_all(reqs: Vec<Req>, concurrency: usize) -> Vec<Resp> {
    let n = reqs.len();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore closed");
            (i, req.send().await)
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

/// Lowercase hex HMAC-SHA1(key = `secret_key` as UTF-8, message = `body`): the expected
/// `pywebhooks-signature` (computed here independently of the daemon's code).
pub fn expected_pywebhooks_signature(secret_key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `v1,` + base64(HMAC-SHA256(key = `secret_key` as UTF-8, "{id}.{timestamp}.{body}")): the
/// expected Standard Webhooks `webhook-signature`.
pub fn expected_standard_signature(
    secret_key: &str,
    webhook_id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64(&mac.finalize().into_bytes()))
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Asserts everything a delivery POST must carry (api.md A.7, C.1), verified with the
/// subscriber's own `secret_key` over the raw received body: both signatures, `content-type`
/// and `accept` `application/json`, the `event` header (absent when `event` is empty), a UUID
/// `webhook-id` and a current `webhook-timestamp`. Returns the `webhook-id`.
#[track_caller]
pub fn assert_signed_delivery(post: &RecordedPost, secret_key: &str, event: &str) -> String {
    let h = |name: &str| {
        post.header(name)
            .unwrap_or_else(|| panic!("delivery to {} lacks header `{name}`: {post:?}", post.path))
    };
    assert_eq!(h("content-type"), "application/json", "{post:?}");
    assert_eq!(h("accept"), "application/json", "{post:?}");
    if event.is_empty() {
        assert!(
            post.header("event").is_none(),
            "empty event must be left out: {post:?}"
        );
    } else {
        assert_eq!(h("event"), event, "{post:?}");
    }
    assert_eq!(
        h("pywebhooks-signature"),
        expected_pywebhooks_signature(secret_key, &post.body),
        "pywebhooks-signature does not verify with the subscriber's secret_key over the raw body; {post:?}"
    );
    let id = h("webhook-id");
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "webhook-id is not a UUID: {id}"
    );
    let ts = h("webhook-timestamp");
    let secs: i64 = ts
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp is not integer seconds: {ts:?}"));
    assert!(
        (secs - unix_now_secs()).abs() <= 300,
        "webhook-timestamp {secs} is not the current Unix time in seconds"
    );
    assert_eq!(
        h("webhook-signature"),
        expected_standard_signature(secret_key, &id, &ts, &post.body),
        "webhook-signature does not verify with the subscriber's secret_key; {post:?}"
    );
    id
}

/// The `deliveries` counts object of a trigger status with the given counts, every other
/// counter 0.
pub fn delivery_counts(counts: &[(&str, u64)]) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["pending", "succeeded", "failed", "skipped", "cancelled"] {
        let v = counts.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
        out.insert(k.into(), json!(v));
    }
    for (name, _) in counts {
        assert!(out.contains_key(*name), "not a delivery counter: {name}");
    }
    Value::Object(out)
}

/// The value of the Prometheus sample whose line starts with `series` (name and labels).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

impl TestNode {
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

/// Like [`eventually`], but returns `None` at the deadline instead of panicking (so the
/// caller can report what it last saw).
pub async fn eventually_quiet<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
