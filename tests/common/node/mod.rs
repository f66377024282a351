//! The node under test: a real `webhookd serve` child process on its own temp dir
//! ([`config`]), started and read until it listens ([`launch`]), stopped, killed or
//! restarted on the same data. Its stderr goes to `webhookd.log` in the temp dir and is
//! printed when a test fails.

pub mod config;
pub mod launch;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Child;

use crate::common::api::Api;
use crate::common::cli::{find_line_value, prints_admin_keys, run_webhookd, CliOutput};
use config::{TestConfig, SHUTDOWN_GRACE_SECS};
use launch::{launch, Startup};

/// A running `webhookd serve` child process on its own temp dir. It derefs to its [`Api`]
/// (base URL, admin key and the request helpers).
pub struct TestNode {
    pub config: TestConfig,
    pub addr: SocketAddr,
    /// The admin's plaintext secret key (from the first start's stdout; empty when the node
    /// started on existing storage).
    pub admin_secret: String,
    /// Stdout lines of the latest start, up to and including `listening on ...`.
    pub startup_stdout: Vec<String>,
    /// Stdout lines printed after `listening on ...` (drained in the background).
    pub later_stdout: Arc<Mutex<Vec<String>>>,
    pub(crate) child: Option<Child>,
    api: Api,
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

    /// A [`TestNode`] for a process [`launch`]ed on `config`.
    pub(crate) fn assemble(
        config: TestConfig,
        child: Child,
        startup: Startup,
        later: Arc<Mutex<Vec<String>>>,
        admin_key: String,
        admin_secret: String,
    ) -> Self {
        Self {
            api: Api::new(format!("http://{}", startup.addr), admin_key),
            addr: startup.addr,
            admin_secret,
            startup_stdout: startup.lines,
            later_stdout: later,
            child: Some(child),
            config,
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
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

    /// Waits (bounded) for the process to exit by itself.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => status.expect("wait for webhookd"),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "webhookd did not exit within {deadline:?}\n{}",
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
        self.api.base_url = format!("http://{}", startup.addr);
        self.addr = startup.addr;
        self.startup_stdout = startup.lines;
        self.later_stdout = later;
        self.child = Some(child);
    }

    /// Runs a CLI subcommand against this node's config: `webhookd <args> --config <file>`.
    pub async fn run_cli(&self, args: &[&str]) -> CliOutput {
        let config = self.config_path_str();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.as_str()]);
        run_webhookd(&all, &[]).await
    }
}

impl Deref for TestNode {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl DerefMut for TestNode {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let log = self.config.log();
            // The dump below keeps a tail; a directory named here gets every line.
            if let Some(dir) = std::env::var_os("WEBHOOKD_TEST_LOGS") {
                let port = self.api.base_url.rsplit(':').next().unwrap_or("node");
                let _ = std::fs::create_dir_all(&dir);
                let _ =
                    std::fs::write(std::path::Path::new(&dir).join(format!("{port}.log")), &log);
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            // A panic is reported once (where, then the message on the next line), and
            // repeated errors soon push it out of the tail: every one is kept.
            let panics: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked at"))
                .take(10)
                .flat_map(|(i, _)| lines[i..lines.len().min(i + 2)].iter().copied())
                .collect();
            eprintln!(
                "--- webhookd at {} (config {}) ---\nstartup stdout: {:?}\n--- panics in stderr ---\n{}\n--- stderr (last 200 lines) ---\n{}",
                self.api.base_url,
                self.config.config_path.display(),
                self.startup_stdout,
                panics.join("\n"),
                tail.join("\n")
            );
        }
    }
}
