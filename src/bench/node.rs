//! A webhookd node run as a child process for the benchmark, and what `/proc` says about
//! it (peak RSS, CPU time).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::error::{BenchError, BenchResult};

/// What `serve` prints once it accepts requests.
const LISTENING: &str = "listening on http://";
/// What `serve` prints before the admin's API key, when it creates the admin account (with
/// replicated groups, only the one node that created it for the cluster, and only once
/// the metadata group has a majority: maybe after `listening on`).
const ADMIN_KEY: &str = "admin api_key:";

/// A running `webhookd serve`; killed when dropped.
pub struct NodeProcess {
    child: Child,
    pid: u32,
    url: String,
    admin_key: Arc<Mutex<Option<String>>>,
}

impl NodeProcess {
    /// Runs `<binary> serve --config <config>` with stderr appended to `log` (a restarted
    /// node's log follows its earlier run's), and waits until it prints
    /// `listening on http://...` (or `deadline` passes). The admin key it prints, before or
    /// after, is kept ([`NodeProcess::admin_key`]).
    pub async fn start(
        binary: &Path,
        config: &Path,
        log: &Path,
        deadline: Duration,
    ) -> BenchResult<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| BenchError::io(format!("cannot open {}", log.display()), e))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("cannot run {}", binary.display()), e))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Node("exited at once".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Node("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let admin_key = Arc::new(Mutex::new(None));
        let started = Instant::now();
        let url = loop {
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    keep_admin_key(&admin_key, &line);
                    if let Some(at) = line.find(LISTENING) {
                        break format!("http://{}", line[at + LISTENING.len()..].trim());
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.ok();
                    return Err(BenchError::Node(format!(
                        "exited before `listening on` ({status:?}); see {}",
                        log.display()
                    )));
                }
                Err(_) => {
                    return Err(BenchError::Timeout {
                        what: format!("{} serve: `listening on`", binary.display()),
                        after: deadline,
                    })
                }
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        let later = admin_key.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep_admin_key(&later, &line);
            }
        });
        Ok(Self {
            child,
            pid,
            url,
            admin_key,
        })
    }

    /// The admin API key the node printed, if it printed one so far.
    pub fn admin_key(&self) -> Option<String> {
        self.admin_key.lock().ok().and_then(|k| k.clone())
    }

    /// The node's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, when the process has exited already (it is not waited for).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the node and waits for it (bounded).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Keeps the key of an `admin api_key: <key>` line.
fn keep_admin_key(slot: &Mutex<Option<String>>, line: &str) {
    if let Some(at) = line.find(ADMIN_KEY) {
        let key = line[at + ADMIN_KEY.len()..].trim();
        if let (false, Ok(mut slot)) = (key.is_empty(), slot.lock()) {
            *slot = Some(key.to_string());
        }
    }
}

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> BenchResult<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(path, e))?;
    parse_memory(&text).ok_or_else(|| BenchError::Invalid(format!("no VmRSS/VmHWM for {pid}")))
}

/// The `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Resets the peak RSS of `pid` to its current RSS (`echo 5 > /proc/<pid>/clear_refs`);
/// false when the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts them), logs
/// (`*.log`) left out: what a node's storage holds.
pub fn disk_usage(dir: &Path) -> BenchResult<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let entries =
        std::fs::read_dir(dir).map_err(|e| BenchError::io(dir.display().to_string(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BenchError::io(dir.display().to_string(), e))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| BenchError::io(path.display().to_string(), e))?;
        if meta.is_dir() {
            total += disk_usage(&path)?;
        } else if path.extension().is_none_or(|x| x != "log") {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// User + system CPU time consumed by `pid` so far (10 ms resolution).
pub fn cpu_time(pid: u32) -> BenchResult<Duration> {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// User + system CPU time in a `/proc` `stat` file: a process's, or one thread's
/// (`/proc/self/task/<tid>/stat`).
pub fn stat_cpu_time(path: &str) -> BenchResult<Duration> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    parse_cpu_ticks(&text)
        .map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
        .ok_or_else(|| BenchError::Invalid(format!("cannot parse {path}")))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is parenthesised and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_lines() {
        let status = "Name:\twebhookd\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kib: 65432,
                hwm_kib: 123_456
            })
        );
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn keeps_the_printed_admin_key() {
        let slot = Mutex::new(None);
        keep_admin_key(&slot, "listening on http://127.0.0.1:1");
        assert_eq!(*slot.lock().unwrap(), None);
        keep_admin_key(&slot, "admin api_key: abc123");
        assert_eq!(slot.lock().unwrap().as_deref(), Some("abc123"));
    }

    #[test]
    fn reads_cpu_ticks_past_a_spaced_name() {
        let stat = "4242 (web hookd) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn this_process_has_memory_and_cpu_figures() {
        let me = std::process::id();
        assert!(memory(me).unwrap().hwm_kib > 0);
        assert!(cpu_time(me).is_ok());
    }
}
