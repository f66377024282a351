//! Starting a `serve` process: spawn it on a config and read its stdout until it listens.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::config::TestConfig;
use crate::common::cli::webhookd_command;

/// How long a node may take to print `listening on ...`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// What a `serve` process printed until it was ready.
pub struct Startup {
    pub lines: Vec<String>,
    pub addr: SocketAddr,
}

/// Spawns `webhookd serve --config <file>` and reads stdout until `listening on http://...`.
pub async fn launch(config: &TestConfig) -> (Child, Startup, Arc<Mutex<Vec<String>>>) {
    try_launch(config).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A started `serve` process, what it printed until ready, and its later stdout lines.
pub type Launched = (Child, Startup, Arc<Mutex<Vec<String>>>);

/// Like [`launch`], but a process that exits (or stays silent) before `listening on` is an
/// `Err` describing it (the process is reaped or killed), so a caller can retry.
pub async fn try_launch(config: &TestConfig) -> Result<Launched, String> {
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
