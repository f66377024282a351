//! A cluster of `webhookd serve` processes on loopback, for the cluster suite.
//!
//! * [`ClusterSpec`] ([`spec`]): node ids, free loopback ports (HTTP and cluster listeners,
//!   found by binding `127.0.0.1:0`), the cookie and the shard count; it writes one config
//!   per node.
//! * [`TestCluster`]: the running nodes (each a [`TestNode`] with its own temp dir and
//!   stderr log, printed when a test fails), which node bootstrapped the admin, the shard
//!   map, and helpers to place usernames on a node, read `/ready`, and signal a node.
//! * [`assert_same_listings`] ([`listings`]): a paged listing gives identical pages from
//!   every node.
//! * [`shards`]: the shard of a key, and a seeded PRNG.

pub mod listings;
pub mod shards;
pub mod spec;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use listings::*;
pub use shards::*;
pub use spec::*;

use crate::common::cli::prints_admin_keys;
use crate::common::http::{send_all, Resp};
use crate::common::node::TestNode;
use crate::common::poll::eventually_quiet;
use crate::common::records::{is_hex40, Account, Creds};

/// Shards of the test clusters (fewer than the default 256; any count works).
pub const SHARDS: u16 = 64;
/// `cluster.heartbeat_interval_ms` of the test clusters.
pub const HEARTBEAT_MS: u64 = 200;
/// `cluster.down_after_ms` of the test clusters.
pub const DOWN_AFTER_MS: u64 = 1500;
/// `cluster.rpc_timeout_ms` of the test clusters.
pub const RPC_TIMEOUT_MS: u64 = 5000;
/// The shared cookie of the test clusters.
pub const COOKIE: &str = "cluster-test-cookie";
/// How long a fresh cluster may take until every node's `/ready` is 200.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Every member running, all `/ready`, the admin known to every [`TestNode`].
pub struct TestCluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<TestNode>,
    /// The node that printed the admin keys on its first start.
    pub admin_index: usize,
    /// Shard → owning node id, as `GET /v1/cluster` reports it.
    pub shard_map: Vec<String>,
}

impl TestCluster {
    /// Starts an `n`-node cluster and waits until every node's `/ready` is 200.
    pub async fn start(n: usize) -> Self {
        let started = Instant::now();
        let (spec, mut nodes) = ClusterSpec::launch_fresh(n, |_| NodeOptions::default()).await;
        let printed: Vec<usize> = (0..n)
            .filter(|i| prints_admin_keys(&nodes[*i].startup_stdout))
            .collect();
        assert_eq!(
            printed.len(),
            1,
            "exactly one node (the owner of the admin's shard) prints the admin keys; \
             these did: {printed:?}"
        );
        let admin_index = printed[0];
        let (key, secret) = (
            nodes[admin_index].admin_key.clone(),
            nodes[admin_index].admin_secret.clone(),
        );
        assert!(is_hex40(&key), "admin api_key {key:?}");
        for node in &mut nodes {
            node.admin_key = key.clone();
            node.admin_secret = secret.clone();
        }
        let mut cluster = Self {
            spec,
            nodes,
            admin_index,
            shard_map: Vec::new(),
        };
        cluster.wait_all_ready(READY_DEADLINE).await;
        cluster.shard_map = cluster.read_shard_map().await;
        let admin_owner = cluster.owner_of("admin");
        assert_eq!(
            admin_owner, admin_index,
            "the admin keys were printed by {} but the admin's shard belongs to {}",
            cluster.spec.ids[admin_index], cluster.spec.ids[admin_owner]
        );
        println!(
            "cluster of {n} ready in {:?}: {:?}, admin on {}",
            started.elapsed(),
            cluster
                .spec
                .ids
                .iter()
                .zip(&cluster.spec.http)
                .map(|(id, a)| format!("{id}=http://{a}"))
                .collect::<Vec<_>>(),
            cluster.spec.ids[admin_index]
        );
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    pub fn all(&self) -> Vec<&TestNode> {
        self.nodes.iter().collect()
    }

    pub fn id(&self, i: usize) -> &str {
        &self.spec.ids[i]
    }

    pub fn admin(&self) -> Creds {
        self.nodes[self.admin_index].admin()
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.spec
            .ids
            .iter()
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("no member {id:?}"))
    }

    /// `GET /v1/cluster` on every node: the same digest and shard map everywhere; returns it.
    async fn read_shard_map(&self) -> Vec<String> {
        let mut first: Option<Value> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let r = node
                .get("/v1/cluster")
                .auth(&self.admin())
                .send()
                .await
                .expect(200);
            let body = r.json();
            assert_eq!(body["node"], self.id(i), "{r}");
            assert_eq!(body["shards"], self.spec.shards, "{r}");
            let members = body["members"].as_array().expect("members array");
            assert_eq!(members.len(), self.len(), "{r}");
            for m in members {
                let expected = if m["id"] == self.id(i) { "self" } else { "up" };
                assert_eq!(m["state"], expected, "member state on {}: {r}", self.id(i));
            }
            let view =
                serde_json::json!({"digest": body["digest"], "shard_map": body["shard_map"]});
            match &first {
                None => first = Some(view),
                Some(f) => assert_eq!(
                    f,
                    &view,
                    "{} reports another digest or shard map than {}",
                    self.id(i),
                    self.id(0)
                ),
            }
        }
        let map: Vec<String> = first.expect("a node")["shard_map"]
            .as_array()
            .expect("shard_map array")
            .iter()
            .map(|v| v.as_str().expect("node id").to_string())
            .collect();
        assert_eq!(map.len(), usize::from(self.spec.shards));
        for i in 0..self.len() {
            assert!(
                map.iter().any(|o| o == self.id(i)),
                "{} owns no shard",
                self.id(i)
            );
        }
        map
    }

    /// Index of the node owning the shard of `key` (a username or an id).
    pub fn owner_of(&self, key: &str) -> usize {
        self.index_of(&self.shard_map[shard_of(key, self.spec.shards)])
    }

    /// The first `<prefix><k>` (k = 0, 1, ...) whose account lands on node `i`.
    pub fn username_on(&self, i: usize, prefix: &str) -> String {
        (0..100_000)
            .map(|k| format!("{prefix}{k}"))
            .find(|u| self.owner_of(u) == i)
            .unwrap_or_else(|| panic!("no username {prefix}<k> lands on {}", self.id(i)))
    }

    /// A node other than those in `not` (the lowest index).
    pub fn other_than(&self, not: &[usize]) -> usize {
        (0..self.len())
            .find(|i| !not.contains(i))
            .expect("a node outside the excluded ones")
    }

    // --- readiness and peer states -------------------------------------------------------

    /// `GET /ready` on node `i` (5xx allowed): status and body.
    pub async fn ready(&self, i: usize) -> (u16, Value) {
        ready_of(&self.nodes[i]).await
    }

    /// The state node `observer` reports for `peer` in `/ready`.
    pub async fn peer_state(&self, observer: usize, peer: usize) -> String {
        peer_state_of(&self.nodes[observer], self.id(peer)).await.0
    }

    /// Polls until every running node's `/ready` is 200.
    pub async fn wait_all_ready(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let last = Mutex::new((0, Value::Null));
            let ready =
                eventually_quiet(until.saturating_duration_since(Instant::now()), || async {
                    let seen = ready_of(node).await;
                    let done = seen.0 == 200;
                    *last.lock().unwrap() = seen;
                    done.then_some(())
                })
                .await;
            let last = last.into_inner().unwrap();
            assert!(
                ready.is_some(),
                "{} not ready within {deadline:?}; last /ready: {} {}",
                self.id(i),
                last.0,
                last.1
            );
        }
    }

    /// Polls node `observer`'s `/ready` until its state for `peer` is `state`; returns how
    /// long that took.
    pub async fn wait_peer_state(
        &self,
        observer: usize,
        peer: usize,
        state: &str,
        deadline: Duration,
    ) -> Duration {
        let started = Instant::now();
        let last = Mutex::new(String::new());
        let found = eventually_quiet(deadline, || async {
            let (s, _) = peer_state_of(&self.nodes[observer], self.id(peer)).await;
            let done = s == state;
            *last.lock().unwrap() = s;
            done.then_some(())
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(
            found.is_some(),
            "{} did not report {} as {state:?} within {deadline:?}; last state {last:?}",
            self.id(observer),
            self.id(peer)
        );
        started.elapsed()
    }

    // --- process control -----------------------------------------------------------------

    /// SIGKILL node `i`.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Starts node `i` again on its config and data (it must not print admin keys).
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].restart().await;
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to node `i`.
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = self.nodes[i].pid() as libc::pid_t;
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A stopped node must not outlive the test (SIGKILL, from TestNode's drop, works on a
        // stopped process too; SIGCONT first keeps its last log lines flowing).
        let panicking = std::thread::panicking();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(status)) if panicking => {
                    eprintln!("--- {} had exited by itself: {status}", self.spec.ids[i])
                }
                Ok(None) => {
                    if let Some(pid) = child.id() {
                        // SAFETY: kill(2) on our own, not yet reaped, child.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
                    }
                }
                _ => {}
            }
        }
    }
}

/// Subscribes every `(node, account)` of `who` `times` times to registration `reg`,
/// each request sent to that node, 32 in flight; every answer must be 201. Prints how many
/// and how long; returns how many.
pub async fn subscribe_many(
    c: &TestCluster,
    reg: &str,
    who: &[(usize, &Account)],
    times: usize,
) -> usize {
    let started = Instant::now();
    let mut subs = Vec::new();
    for (node, account) in who {
        for _ in 0..times {
            subs.push(
                c.node(*node)
                    .post(&format!("/v1/webhook/subscription/{reg}"))
                    .auth(*account),
            );
        }
    }
    let total = subs.len();
    for r in send_all(subs, 32).await {
        r.expect(201);
    }
    println!("{total} subscriptions created in {:?}", started.elapsed());
    total
}

/// `GET /ready` on `node` (5xx allowed): status and body.
pub async fn ready_of(node: &TestNode) -> (u16, Value) {
    let r = node.get("/ready").send_unchecked().await;
    let body = r.json.clone().unwrap_or(Value::Null);
    (r.status, body)
}

/// The state and reason `node`'s `/ready` reports for the peer `peer_id` (`"absent"` when
/// it lists no such peer).
pub async fn peer_state_of(node: &TestNode, peer_id: &str) -> (String, Value) {
    let (_, body) = ready_of(node).await;
    body["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["id"] == peer_id))
        .map(|p| {
            (
                p["state"].as_str().unwrap_or("?").to_string(),
                p["reason"].clone(),
            )
        })
        .unwrap_or_else(|| ("absent".into(), Value::Null))
}

/// Asserts a 503 `{"Error": "..."}` with a `Retry-After` of whole seconds.
#[track_caller]
pub fn assert_unavailable(r: &Resp) {
    assert_eq!(r.status, 503, "expected 503 for a down node's shard: {r}");
    let body = r.json();
    let obj = body.as_object().expect("error body is an object");
    assert!(
        obj.len() == 1 && obj.get("Error").is_some_and(Value::is_string),
        "expected {{\"Error\": \"...\"}}: {r}"
    );
    let retry = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {r}"));
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After is not a positive number of seconds: {retry:?}; {r}"
    );
}
