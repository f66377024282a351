//! A cluster of `webhookd serve` processes on loopback, for `tests/cluster.rs`.
//!
//! * [`ClusterSpec`]: node ids, free loopback ports (HTTP and cluster listeners, found by
//!   binding `127.0.0.1:0`), the cookie and the shard count; it writes one config per node.
//! * [`TestCluster`]: the running nodes (each a [`TestNode`] with its own temp dir and
//!   stderr log, printed when a test fails), which node bootstrapped the admin, the shard
//!   map, and helpers to place usernames on a node, read `/ready`, and signal a node.
//! * [`assert_same_listings`]: a paged listing gives identical pages from every node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

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

// ---------------------------------------------------------------------------------------------
// Shards (the daemon's definition, recomputed here independently)
// ---------------------------------------------------------------------------------------------

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of a key (a username, or an id's hyphenated lowercase text).
pub fn shard_of(key: &str, shards: u16) -> usize {
    (mix(fnv1a64(key.as_bytes())) % u64::from(shards)) as usize
}

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG (no `rand` in the dev-dependencies)
// ---------------------------------------------------------------------------------------------

/// SplitMix64: deterministic for a seed, good enough to pick nodes.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seed of a randomised test: `CLUSTER_TEST_SEED` when set, else the clock. Printed, so
/// a failing run can be repeated.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("CLUSTER_TEST_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER_TEST_SEED is not a u64: {v:?}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    };
    println!("{test}: PRNG seed {seed} (repeat with CLUSTER_TEST_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------------------------
// Cluster configuration
// ---------------------------------------------------------------------------------------------

/// `count` distinct free loopback ports: all bound at once (so distinct), then released.
/// Another process may take one before the node binds it; [`TestCluster::start`] retries.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A fresh [`TestConfig`] dir (not yet written). On `/dev/shm` when there is one: sled's
/// flushes there cost no disk sync, which keeps the 3,000 one-at-a-time subscription
/// writes of the fan-out test (each flushed before it is answered) fast.
fn node_dir() -> TestConfig {
    let mut builder = tempfile::Builder::new();
    builder.prefix("webhookd-cluster-test-");
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        builder.tempdir_in(shm).or_else(|_| builder.tempdir())
    } else {
        builder.tempdir()
    }
    .expect("create temp dir");
    let config_path = dir.path().join("webhookd.toml");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("webhookd.log");
    TestConfig {
        dir,
        config_path,
        data_dir,
        log_path,
    }
}

/// What one node's config may change from the cluster's (to build a misconfigured node).
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Another cookie.
    pub cookie: Option<String>,
    /// Another shard count.
    pub shards: Option<u16>,
    /// Another member list (indexes into the spec's members).
    pub members: Option<Vec<usize>>,
}

/// The members of a cluster: ids and addresses, cookie, shards.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub ids: Vec<String>,
    pub http: Vec<SocketAddr>,
    pub cluster: Vec<SocketAddr>,
    pub cookie: String,
    pub shards: u16,
}

impl ClusterSpec {
    /// `n` members `node1..node<n>` on fresh loopback ports.
    pub fn new(n: usize) -> Self {
        let ports = free_ports(2 * n);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Self {
            ids: (1..=n).map(|i| format!("node{i}")).collect(),
            http: ports[..n].iter().map(|p| addr(*p)).collect(),
            cluster: ports[n..].iter().map(|p| addr(*p)).collect(),
            cookie: COOKIE.into(),
            shards: SHARDS,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// A fresh temp dir with the config of member `i` (base test settings, see
    /// [`TestConfig::write`], plus `[cluster]` and the member list), changed by `opts`.
    pub fn config(&self, i: usize, opts: &NodeOptions) -> TestConfig {
        let extra = format!(
            r#"
[http]
listen = "{http}"
[cluster]
node_id = "{id}"
listen = "{cluster}"
cookie = "{cookie}"
shards = {shards}
heartbeat_interval_ms = {HEARTBEAT_MS}
down_after_ms = {DOWN_AFTER_MS}
rpc_timeout_ms = {RPC_TIMEOUT_MS}
"#,
            http = self.http[i],
            id = self.ids[i],
            cluster = self.cluster[i],
            cookie = opts.cookie.as_deref().unwrap_or(&self.cookie),
            shards = opts.shards.unwrap_or(self.shards),
        );
        let config = node_dir();
        config.write(&extra);
        // `[[cluster.members]]` (an array of tables) is beyond `merge_toml`: appended after
        // the `[cluster]` table it belongs to, which TOML allows.
        let mut text = std::fs::read_to_string(&config.config_path).expect("read config");
        let members: Vec<usize> = opts
            .members
            .clone()
            .unwrap_or_else(|| (0..self.len()).collect());
        for m in members {
            text.push_str(&format!(
                "\n[[cluster.members]]\nid = \"{}\"\ncluster_addr = \"{}\"\nhttp_addr = \"{}\"\n",
                self.ids[m], self.cluster[m], self.http[m]
            ));
        }
        std::fs::write(&config.config_path, text).expect("write config");
        config
    }

    /// Starts member `i` (with `opts`) and waits for `listening on`; `Err` when the process
    /// exits first (e.g. a port was taken meanwhile). The node's admin keys are those it
    /// printed, if any.
    pub async fn launch(&self, i: usize, opts: &NodeOptions) -> Result<TestNode, String> {
        let config = self.config(i, opts);
        let (child, startup, later) = try_launch(&config).await?;
        assert_eq!(
            startup.addr, self.http[i],
            "node {} listens elsewhere than configured",
            self.ids[i]
        );
        let key = find_line_value(&startup.lines, "admin api_key:").unwrap_or_default();
        let secret = find_line_value(&startup.lines, "admin secret_key:").unwrap_or_default();
        Ok(TestNode::assemble(
            config, child, startup, later, key, secret,
        ))
    }

    /// Starts every member in order (with `opts(i)`), without waiting for the peers.
    /// A start failure caused by a port in use gives `Err` (the started nodes are killed);
    /// any other failure panics.
    pub async fn launch_all(
        &self,
        opts: impl Fn(usize) -> NodeOptions,
    ) -> Result<Vec<TestNode>, String> {
        let mut nodes = Vec::new();
        for i in 0..self.len() {
            match self.launch(i, &opts(i)).await {
                Ok(node) => nodes.push(node),
                Err(e) if e.contains("in use") || e.contains("os error 98") => return Err(e),
                Err(e) => panic!("node {} did not start: {e}", self.ids[i]),
            }
        }
        Ok(nodes)
    }

    /// [`Self::launch_all`] on fresh ports, once more on other ports if a port was taken.
    pub async fn launch_fresh(
        n: usize,
        opts: impl Fn(usize) -> NodeOptions,
    ) -> (ClusterSpec, Vec<TestNode>) {
        let spec = ClusterSpec::new(n);
        match spec.launch_all(&opts).await {
            Ok(nodes) => (spec, nodes),
            Err(e) => {
                eprintln!("a port was taken, retrying on other ports: {e}");
                let spec = ClusterSpec::new(n);
                let nodes = spec
                    .launch_all(&opts)
                    .await
                    .unwrap_or_else(|e| panic!("cluster start failed twice: {e}"));
                (spec, nodes)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The running cluster
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Listings compared across nodes
// ---------------------------------------------------------------------------------------------

/// A paged listing: path, who reads it, and the key of its rows.
#[derive(Clone, Debug)]
pub struct Listing {
    pub path: String,
    pub who: Creds,
    pub key: String,
}

impl Listing {
    pub fn new(path: &str, who: &impl AsCreds, key: &str) -> Self {
        Self {
            path: path.into(),
            who: Creds::new(who.username(), who.api_key()),
            key: key.into(),
        }
    }
}

/// One page as seen: the query, the status and the JSON body (`Null` for a 204).
#[derive(Debug, PartialEq)]
struct Seen {
    start: u64,
    limit: u64,
    status: u16,
    body: Value,
}

/// Every page of `l` on `node` with `limit`, following `next_start` from 0 until a 204 or a
/// page without `next_start`, then the pages at `start = rows` and `rows + 3` (past the end).
async fn walk(node: &TestNode, l: &Listing, limit: u64) -> (Vec<Seen>, Vec<Value>) {
    let mut seen = Vec::new();
    let mut rows = Vec::new();
    let mut start = 0;
    for _ in 0..1000 {
        let r = node.page(&l.path, &l.who, start, limit).await;
        let body = r.json.clone().unwrap_or(Value::Null);
        let status = r.status;
        let next = match status {
            204 => {
                r.expect_no_content();
                None
            }
            200 => {
                let items = r.items(&l.key);
                assert!(
                    !items.is_empty() && items.len() as u64 <= limit,
                    "a 200 page holds 1..=limit rows: {r}"
                );
                rows.extend(items);
                body.get("next_start").and_then(Value::as_u64)
            }
            other => panic!(
                "listing {} on {}: status {other}; {r}",
                l.path, node.base_url
            ),
        };
        seen.push(Seen {
            start,
            limit,
            status,
            body,
        });
        match next {
            Some(n) => {
                assert!(n > start, "next_start {n} does not advance from {start}");
                start = n;
            }
            None => break,
        }
    }
    let total = rows.len() as u64;
    for start in [total, total + 3] {
        let r = node.page(&l.path, &l.who, start, limit).await;
        seen.push(Seen {
            start,
            limit,
            status: r.status,
            body: r.json.clone().unwrap_or(Value::Null),
        });
    }
    (seen, rows)
}

/// Asserts that every node gives exactly the same pages of every listing, for each limit
/// (statuses, rows, `next_start`, 204s past the end), and that the pages of each limit
/// concatenate to the same rows, each once.
pub async fn assert_same_listings(
    step: &str,
    nodes: &[&TestNode],
    listings: &[Listing],
    limits: &[u64],
) {
    for l in listings {
        let mut reference_rows: Option<Vec<Value>> = None;
        for &limit in limits {
            let mut first: Option<Vec<Seen>> = None;
            for node in nodes {
                let (seen, rows) = walk(node, l, limit).await;
                let ids: std::collections::HashSet<String> =
                    rows.iter().map(|r| r["id"].to_string()).collect();
                assert_eq!(
                    ids.len(),
                    rows.len(),
                    "[{step}] {} (limit {limit}) on {} lists a row twice: {rows:?}",
                    l.path,
                    node.base_url
                );
                match &reference_rows {
                    None => reference_rows = Some(rows),
                    Some(reference) => assert_eq!(
                        reference, &rows,
                        "[{step}] {} as {}: the rows paged with limit {limit} on {} differ from \
                         the first node's first walk",
                        l.path, l.who.username, node.base_url
                    ),
                }
                match &first {
                    None => first = Some(seen),
                    Some(f) => {
                        if f != &seen {
                            let diff: Vec<String> = f
                                .iter()
                                .zip(&seen)
                                .filter(|(a, b)| a != b)
                                .map(|(a, b)| {
                                    format!(
                                        "start={} limit={}:\n  first node: {} {}\n  {}: {} {}",
                                        a.start,
                                        a.limit,
                                        a.status,
                                        a.body,
                                        node.base_url,
                                        b.status,
                                        b.body
                                    )
                                })
                                .collect();
                            panic!(
                                "[{step}] {} as {}: pages differ between nodes ({} vs {} pages):\n{}",
                                l.path,
                                l.who.username,
                                f.len(),
                                seen.len(),
                                diff.join("\n")
                            );
                        }
                    }
                }
            }
        }
    }
}
