//! A full disk: writes are answered (2xx or 507), never 500 and never left hanging; the node
//! exits with code 74 so that its supervisor restarts it, and after space is freed a restart
//! on the same data has every write acknowledged before. SIGTERM stops a node whose disk is
//! full within its deadline.
//!
//! The storage path is a small tmpfs, so these tests need root (to mount it); they say so
//! and pass without running otherwise.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

/// Size of the storage's filesystem.
const TMPFS_MIB: u64 = 24;
/// `storage.flush_stall_secs` of the first test: a stuck flush fails the storage quickly.
const STALL_SECS: u64 = 2;
/// How long a node whose storage failed keeps answering before it exits (the daemon's
/// constant), plus scheduling slack on a loaded machine.
const FAILED_EXIT_DELAY: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_secs(3);
/// Exit code of a node whose storage failed.
const EXIT_STORAGE: i32 = 74;
/// After a signal: the HTTP drain, 5 s to stop the engine and flush, 1 s to log and exit.
const STOP_DEADLINE: Duration = Duration::from_secs(SHUTDOWN_GRACE_SECS + 5 + 1);
/// Writes tried after the disk is full, at most; the storage fails long before.
const MAX_WRITES: usize = 400;

/// A tmpfs mounted on a fresh directory; unmounted (lazily, the node may still hold files)
/// when dropped, also when a test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why not and returns `None` (not root).
    fn mount() -> Option<Self> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED: mounting a tmpfs for the storage needs root; run as root to test a \
                 full disk"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("webhookd-tmpfs-")
            .tempdir()
            .expect("create the mount point");
        let status = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MIB}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with one file; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "filling: {full}");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A node whose storage is on `tmpfs`, with `storage.flush_stall_secs = stall`.
async fn node_on(tmpfs: &Tmpfs, stall: u64) -> TestNode {
    let path = serde_json::to_string(&tmpfs.path().display().to_string()).unwrap();
    TestNode::start(TestConfig::new(&format!(
        "[storage]\npath = {path}\nflush_stall_secs = {stall}\ncache_capacity_bytes = 4194304"
    )))
    .await
}

/// What became of one write.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 201: acknowledged, with the new record's id.
    Stored(String),
    /// 507 `{"Error": "Insufficient storage"}`.
    Refused,
    /// No answer: the connection failed or closed (the node exited).
    Gone,
}

/// A client whose timeout is longer than any wait the node may impose on a write: a
/// request that times out was left hanging.
fn client(stall: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(stall) + FAILED_EXIT_DELAY + SLACK + SLACK)
        .build()
        .expect("client")
}

/// Creates a registration with a 16 KiB `event_data`; panics on any answer but 201 and 507
/// (so on every 500) and on a timeout.
async fn write(client: &reqwest::Client, base_url: &str, who: &Account, n: usize) -> Outcome {
    let body = json!({
        "event": format!("disk.{n}"),
        "description": "filling the disk",
        "event_data": {"blob": "x".repeat(16 * 1024)},
    });
    let sent = client
        .post(format!("{base_url}/v1/webhook/registration"))
        .header("content-type", "application/json")
        .header("username", who.username.as_str())
        .header("api-key", who.api_key.as_str())
        .json(&body)
        .send()
        .await;
    let answer = match sent {
        Ok(r) => (r.status().as_u16(), r.bytes().await),
        Err(e) if e.is_timeout() => panic!("write {n} hung: {e}"),
        Err(_) => return Outcome::Gone,
    };
    match answer {
        (201, Ok(body)) => {
            let record: Value = serde_json::from_slice(&body).expect("201 body is JSON");
            Outcome::Stored(id_of(&record))
        }
        (507, Ok(body)) => {
            let error: Value = serde_json::from_slice(&body).expect("507 body is JSON");
            assert_eq!(error, json!({"Error": "Insufficient storage"}), "write {n}");
            Outcome::Refused
        }
        (_, Err(e)) if e.is_timeout() => panic!("write {n}: the body hung: {e}"),
        (_, Err(_)) => Outcome::Gone,
        (status, Ok(body)) => panic!(
            "write {n}: {status} {} (only 201 or 507 are allowed)",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// GET `path` (as `who`, when given) without panicking on a transport error (`None`: the
/// node is gone).
async fn try_get(
    client: &reqwest::Client,
    base_url: &str,
    path: &str,
    who: Option<&Account>,
) -> Option<(u16, Value)> {
    let mut request = client
        .get(format!("{base_url}{path}"))
        .header("content-type", "application/json");
    if let Some(who) = who {
        request = request
            .header("username", who.username.as_str())
            .header("api-key", who.api_key.as_str());
    }
    let r = request.send().await.ok()?;
    let status = r.status().as_u16();
    let body = r.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Every registration id the admin can list.
async fn registration_ids(node: &TestNode) -> Vec<String> {
    node.all_registrations().await.iter().map(id_of).collect()
}

/// Registrations made before the disk fills, all acknowledged.
async fn populate(node: &TestNode, who: &Account, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(id_of(&node.register(who, &format!("before.{i}")).await));
    }
    ids
}

/// After the node exited and space was freed: a restart on the same data has every
/// acknowledged write, and takes new ones.
async fn restart_keeps(node: &mut TestNode, who: &Account, acknowledged: &[String]) {
    node.restart().await;
    let stored = registration_ids(node).await;
    for id in acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged registration {id} was lost"
        );
    }
    node.register(who, "after.restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_then_the_node_exits_for_a_restart_and_loses_nothing() {
    let Some(tmpfs) = Tmpfs::mount() else { return };
    let ep = EndpointServer::start().await;
    let mut node = node_on(&tmpfs, STALL_SECS).await;
    let who = node.create_account("filler", &ep.endpoint_url("f")).await;
    let mut acknowledged = populate(&node, &who, 5).await;
    let client = client(STALL_SECS);

    let filler = tmpfs.fill();
    // Writes until the storage fails: each is stored or refused with 507, none hangs.
    let mut refused = false;
    for n in 0..MAX_WRITES {
        match write(&client, &node.base_url, &who, n).await {
            Outcome::Stored(id) => acknowledged.push(id),
            Outcome::Refused => {
                refused = true;
                break;
            }
            Outcome::Gone => break,
        }
    }
    assert!(
        refused,
        "no write was refused with 507 before the node exited"
    );
    // A write refused by the disk fails the storage at once, or within the flush thread's
    // next probe (a second) when no flush saw the error.
    {
        let (client, url) = (&client, node.base_url.as_str());
        eventually(
            "/health to report the failed storage",
            Duration::from_secs(1) + SLACK,
            move || async move {
                let Some((_, health)) = try_get(client, url, "/health", None).await else {
                    panic!("the node exited before /health reported the failed storage");
                };
                match health["storage"].as_str() {
                    Some("failed") => Some(()),
                    Some("ok") => None,
                    _ => panic!("/health: {health}"),
                }
            },
        )
        .await;
    }
    let failed_at = Instant::now();

    // Until it exits, the node answers: writes 507, reads, /health and /ready tell why.
    let mut answered = 0;
    loop {
        let url = node.base_url.as_str();
        let write = write(&client, url, &who, MAX_WRITES).await;
        let health = try_get(&client, url, "/health", None).await;
        let ready = try_get(&client, url, "/ready", None).await;
        let read = try_get(&client, url, &format!("/v1/account/{}", who.id), Some(&who)).await;
        if write == Outcome::Gone || health.is_none() || ready.is_none() || read.is_none() {
            break;
        }
        assert_eq!(write, Outcome::Refused);
        assert_eq!(
            health,
            Some((200, json!({"status": "ok", "storage": "failed"})))
        );
        let (status, ready) = ready.unwrap_or_default();
        assert_eq!(
            (status, &ready["storage"]),
            (503, &json!("failed")),
            "{ready}"
        );
        let (status, account) = read.unwrap_or_default();
        assert_eq!((status, &account["username"]), (200, &json!("filler")));
        answered += 1;
        assert!(
            failed_at.elapsed() < FAILED_EXIT_DELAY + SLACK,
            "the node still runs {:?} after its storage failed",
            failed_at.elapsed()
        );
    }
    eprintln!("answered {answered} rounds between the failure and the exit");

    let status = node.wait_exit(FAILED_EXIT_DELAY + SLACK).await;
    assert_eq!(status.code(), Some(EXIT_STORAGE), "{status:?}");
    let log = node.config.log();
    assert!(log.contains("storage failed"), "the log says why:\n{log}");

    std::fs::remove_file(filler).expect("free the space");
    restart_keeps(&mut node, &who, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_whose_disk_is_full_within_its_deadline() {
    let Some(tmpfs) = Tmpfs::mount() else { return };
    let ep = EndpointServer::start().await;
    // No stall detection in this test's time: the signal must stop the node by itself.
    let mut node = node_on(&tmpfs, 600).await;
    let who = node.create_account("filler", &ep.endpoint_url("f")).await;
    let acknowledged = Arc::new(Mutex::new(populate(&node, &who, 5).await));
    let filler = tmpfs.fill();

    // Writes go on in the background; the signal comes once one is refused or stuck.
    let in_flight_since = Arc::new(Mutex::new(None::<Instant>));
    let last = Arc::new(Mutex::new(None::<Outcome>));
    let writer = {
        let (url, acknowledged) = (node.base_url.clone(), acknowledged.clone());
        let (in_flight_since, last) = (in_flight_since.clone(), last.clone());
        let (who, client) = (who.clone(), client(600));
        tokio::spawn(async move {
            for n in 0..MAX_WRITES {
                *in_flight_since.lock().unwrap() = Some(Instant::now());
                let outcome = write(&client, &url, &who, n).await;
                *in_flight_since.lock().unwrap() = None;
                *last.lock().unwrap() = Some(outcome.clone());
                match outcome {
                    Outcome::Stored(id) => acknowledged.lock().unwrap().push(id),
                    Outcome::Refused | Outcome::Gone => return outcome,
                }
            }
            Outcome::Gone
        })
    };
    eventually(
        "a write refused, stuck or unanswered",
        POLL_DEADLINE * 3,
        || async {
            let stuck = in_flight_since
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() > Duration::from_millis(500));
            let ended = matches!(
                *last.lock().unwrap(),
                Some(Outcome::Refused | Outcome::Gone)
            );
            (stuck || ended).then_some(())
        },
    )
    .await;

    let signalled = Instant::now();
    let status = node.terminate().await;
    let took = signalled.elapsed();
    assert!(
        took <= STOP_DEADLINE + SLACK,
        "took {took:?} to stop (deadline {STOP_DEADLINE:?})"
    );
    let writer_saw = writer.await.expect("writer task");
    match status.code() {
        Some(EXIT_STORAGE) => {}
        Some(0) => assert_ne!(writer_saw, Outcome::Refused, "a refused write, yet exit 0"),
        other => panic!("exit {other:?} ({status:?}): neither 0 nor {EXIT_STORAGE}"),
    }
    eprintln!("stopped in {took:?} with {status:?}; the last write: {writer_saw:?}");

    std::fs::remove_file(filler).expect("free the space");
    let acknowledged = acknowledged.lock().unwrap().clone();
    restart_keeps(&mut node, &who, &acknowledged).await;
}
