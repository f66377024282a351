//! Running the `webhookd` binary: a clean command for it, and CLI invocations run to
//! completion with their output.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// How long a CLI invocation (or a failing `serve`) may take to exit.
pub const CLI_DEADLINE: Duration = Duration::from_secs(20);

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

pub fn prints_admin_keys(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| l.contains("admin api_key:") || l.contains("admin secret_key:"))
}
