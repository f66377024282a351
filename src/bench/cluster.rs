//! A local cluster for the benchmark: `webhookd serve` processes on loopback, member `i`
//! (`node<i+1>`) on `127.0.0.<i+1>`, each with its own directory (`<dir>/node<i+1>`:
//! config, stderr log, data) under the caller's directory.
//!
//! [`LocalCluster::start`] picks free ports (HTTP and cluster listener of every member, all
//! bound at once on their address, then released), writes one config per node (the
//! caller's settings, `[http]`, `[storage]` and a `[cluster]` section listing every
//! member, with a random cookie), starts the nodes one after another, then polls every
//! node's `GET /ready` until it answers 200. A start that failed because a port was taken
//! meanwhile is retried once on other ports. With `replication_factor` above 1 the
//! `[cluster]` section also sets it (and `groups`), and a member can be killed and
//! restarted on its directory ([`LocalCluster::kill`], [`LocalCluster::restart`]) to
//! measure failovers; a node can be started as a joining node
//! ([`LocalCluster::start_joining`]) to measure a rebalance; what `GET /v1/cluster` says of
//! the groups is in [`super::groups`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use uuid::Uuid;

use super::client::{http_client, send, HttpClient};
use super::error::{BenchError, BenchResult};
use super::node::NodeProcess;
use crate::cluster::ShardMap;

/// Virtual shards of the bench cluster (the default of `cluster.shards`).
pub const SHARDS: u16 = 256;
/// `cluster.heartbeat_interval_ms`: short, so peers see each other (and `/ready` turns
/// 200) soon after they start.
pub const HEARTBEAT_MS: u64 = 200;
/// `cluster.down_after_ms`: the default, so a node starved of CPU by the load on a small
/// machine is not taken for down in the middle of a run.
pub const DOWN_AFTER_MS: u64 = 3000;
/// `cluster.rpc_timeout_ms`: the default.
pub const RPC_TIMEOUT_MS: u64 = 10_000;
/// `cluster.groups` of a replicated bench cluster: the default.
pub const GROUPS: u16 = 12;
/// Most members a cluster can have here (one loopback address each, `127.0.0.1..`).
pub const MAX_NODES: usize = 250;
/// Pause between two rounds of `GET /ready`.
const READY_POLL: Duration = Duration::from_millis(50);
/// Timeout of one `GET /ready`.
const READY_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Starts tried before giving up (a port may be taken between its pick and its bind).
const START_ATTEMPTS: usize = 2;

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `webhookd` binary.
    pub binary: PathBuf,
    /// Where the nodes' directories go (the caller creates it, and removes it after).
    pub dir: PathBuf,
    /// Number of members.
    pub nodes: usize,
    /// `cluster.replication_factor` (1: no Raft, each shard on one node).
    pub replication_factor: usize,
    /// TOML appended to every node's config, e.g. `[security]` and `[delivery]` tables
    /// (not `[http]`, `[storage]` or `[cluster]`, which the cluster writes).
    pub settings: String,
    /// How long one node may take to print `listening on`.
    pub start_deadline: Duration,
    /// How long the cluster may take, once every node listens, until every `/ready` is 200.
    pub ready_deadline: Duration,
}

/// One member: its id and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id, `node1`, `node2`, ...
    pub id: String,
    /// Its `/v1` API (`http.listen`).
    pub http_addr: SocketAddr,
    /// Its cluster listener (`cluster.listen`).
    pub cluster_addr: SocketAddr,
}

/// The running cluster; its nodes are killed when it is dropped or stopped.
pub struct LocalCluster {
    dir: PathBuf,
    spec: ClusterSpec,
    cookie: String,
    binary: PathBuf,
    start_deadline: Duration,
    members: Vec<Member>,
    /// In member order; `None` while a member is killed.
    nodes: Vec<Option<NodeProcess>>,
    map: ShardMap,
    ready_in: Duration,
}

impl LocalCluster {
    /// Starts `spec.nodes` members and waits until every node's `/ready` answers 200.
    pub async fn start(spec: &ClusterSpec) -> BenchResult<Self> {
        if spec.nodes == 0 || spec.nodes > MAX_NODES {
            return Err(BenchError::Invalid(format!(
                "a local cluster has 1 to {MAX_NODES} nodes, not {}",
                spec.nodes
            )));
        }
        let mut attempt = 1;
        loop {
            match Self::try_start(spec).await {
                Ok(cluster) => return Ok(cluster),
                Err(failed) if failed.port_taken && attempt < START_ATTEMPTS => {
                    eprintln!(
                        "cluster start: a port was taken meanwhile ({}); retrying on other ports",
                        failed.error
                    );
                    attempt += 1;
                }
                Err(failed) => {
                    return Err(BenchError::Node(format!(
                        "the cluster did not start: {} (configs and logs in {})",
                        failed.error,
                        spec.dir.display()
                    )))
                }
            }
        }
    }

    /// One start on fresh ports, in fresh node directories.
    async fn try_start(spec: &ClusterSpec) -> Result<Self, FailedStart> {
        let dir = spec.dir.clone();
        let members = pick_members(spec.nodes).map_err(|e| FailedStart::new(e, false))?;
        let cookie = Uuid::new_v4().simple().to_string();
        let mut nodes: Vec<NodeProcess> = Vec::with_capacity(members.len());
        for member in &members {
            let node_dir = dir.join(&member.id);
            let started = async {
                // What an earlier attempt left there (its nodes are stopped).
                if node_dir.exists() {
                    std::fs::remove_dir_all(&node_dir).map_err(|e| {
                        BenchError::io(format!("cannot empty {}", node_dir.display()), e)
                    })?;
                }
                std::fs::create_dir_all(&node_dir).map_err(|e| {
                    BenchError::io(format!("cannot create {}", node_dir.display()), e)
                })?;
                let config = node_dir.join("webhookd.toml");
                let text = node_config(member, &members, &cookie, &node_dir, spec);
                super::report::write_file(&config, &text)?;
                NodeProcess::start(
                    &spec.binary,
                    &config,
                    &node_dir.join("webhookd.log"),
                    spec.start_deadline,
                )
                .await
            };
            match started.await {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    stop_all(nodes).await;
                    let taken = logs_say_port_taken(&dir, &members);
                    let error = BenchError::Node(format!("{} did not start: {e}", member.id));
                    return Err(FailedStart::new(error, taken));
                }
            }
        }
        let since = Instant::now();
        if let Err(e) = wait_ready(&mut nodes, &members, spec.ready_deadline).await {
            stop_all(nodes).await;
            let taken = logs_say_port_taken(&dir, &members);
            return Err(FailedStart::new(e, taken));
        }
        let map = ShardMap::new(SHARDS, members.iter().map(|m| m.id.clone()).collect());
        Ok(Self {
            dir,
            spec: spec.clone(),
            cookie,
            binary: spec.binary.clone(),
            start_deadline: spec.start_deadline,
            members,
            nodes: nodes.into_iter().map(Some).collect(),
            map,
            ready_in: since.elapsed(),
        })
    }

    /// The running nodes, in member order.
    fn running(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.iter().flatten()
    }

    /// SIGKILLs member `i` (and waits for it, bounded); its directory stays.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.stop().await;
        }
    }

    /// Starts member `i` again on its config and data (after [`LocalCluster::kill`]).
    pub async fn restart(&mut self, i: usize) -> BenchResult<()> {
        let member = self
            .members
            .get(i)
            .ok_or_else(|| BenchError::Invalid(format!("no member {i}")))?;
        let node_dir = self.dir.join(&member.id);
        let node = NodeProcess::start(
            &self.binary,
            &node_dir.join("webhookd.toml"),
            &node_dir.join("webhookd.log"),
            self.start_deadline,
        )
        .await?;
        if let Some(slot) = self.nodes.get_mut(i) {
            if let Some(old) = slot.replace(node) {
                old.stop().await;
            }
        }
        Ok(())
    }

    /// Starts one more node, `node<N+1>` on `127.0.0.<N+1>`, with `cluster.join = true`
    /// and only itself as member: it waits until it is admitted. Answers the member.
    pub async fn start_joining(&mut self) -> BenchResult<Member> {
        let i = self.members.len();
        let member = pick_member(i)?;
        let node_dir = self.dir.join(&member.id);
        std::fs::create_dir_all(&node_dir)
            .map_err(|e| BenchError::io(format!("cannot create {}", node_dir.display()), e))?;
        let config = node_dir.join("webhookd.toml");
        let mut text = node_config(
            &member,
            std::slice::from_ref(&member),
            &self.cookie,
            &node_dir,
            &self.spec,
        );
        text = text.replacen(
            "\n[[cluster.members]]",
            "join = true\n\n[[cluster.members]]",
            1,
        );
        super::report::write_file(&config, &text)?;
        let node = NodeProcess::start(
            &self.binary,
            &config,
            &node_dir.join("webhookd.log"),
            self.start_deadline,
        )
        .await?;
        self.members.push(member.clone());
        self.nodes.push(Some(node));
        Ok(member)
    }

    /// The admin API key, as the one node that created the admin printed it.
    pub fn admin_key(&self) -> Option<String> {
        self.running().find_map(NodeProcess::admin_key)
    }

    /// The members, in order (`node1` first).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every node's base URL, e.g. `http://127.0.0.2:40123`, in member order (the
    /// configured address, so also a killed member's).
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.http_addr))
            .collect()
    }

    /// Every running node's process id, in member order.
    pub fn pids(&self) -> Vec<u32> {
        self.running().map(NodeProcess::pid).collect()
    }

    /// The shard → node map every node computes from the same configuration.
    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// The directory holding `node<N>/` (config, log, data) of every node.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From the last node listening until every node's `/ready` answered 200.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// Stops every node (their directories stay).
    pub async fn stop(self) {
        stop_all(self.nodes.into_iter().flatten().collect()).await;
    }
}

/// A start that failed, and whether a port taken meanwhile may be the cause.
struct FailedStart {
    error: BenchError,
    port_taken: bool,
}

impl FailedStart {
    fn new(error: BenchError, port_taken: bool) -> Self {
        Self { error, port_taken }
    }
}

/// Kills `nodes` (each waited for, bounded).
async fn stop_all(nodes: Vec<NodeProcess>) {
    for node in nodes {
        node.stop().await;
    }
}

/// The loopback address of member `i`: `127.0.0.<i+1>`.
pub fn member_ip(i: usize) -> IpAddr {
    let last = u8::try_from(i + 1).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Members `node1..node<n>` with a free HTTP and cluster port each on their own address.
/// All ports are bound at once (so they are distinct), then released for the nodes.
pub fn pick_members(n: usize) -> BenchResult<Vec<Member>> {
    let mut held = Vec::with_capacity(2 * n);
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        members.push(hold_member(i, &mut held)?);
    }
    drop(held);
    Ok(members)
}

/// Member `i` alone, with a free HTTP and cluster port on its address.
fn pick_member(i: usize) -> BenchResult<Member> {
    hold_member(i, &mut Vec::new())
}

/// Member `i` with two free ports on its address, whose listeners are kept in `held`.
fn hold_member(i: usize, held: &mut Vec<std::net::TcpListener>) -> BenchResult<Member> {
    let ip = member_ip(i);
    let mut free = || -> BenchResult<SocketAddr> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .map_err(|e| BenchError::io(format!("cannot bind {ip}:0"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::io(format!("local address on {ip}"), e))?;
        held.push(listener);
        Ok(addr)
    };
    let (http_addr, cluster_addr) = (free()?, free()?);
    Ok(Member {
        id: format!("node{}", i + 1),
        http_addr,
        cluster_addr,
    })
}

/// The config of `member`: `[http]`, `[storage]` (in `dir`), the spec's `settings`, then
/// `[cluster]` (with its replication factor and groups when above 1) and its
/// `[[cluster.members]]`.
pub fn node_config(
    member: &Member,
    members: &[Member],
    cookie: &str,
    dir: &Path,
    spec: &ClusterSpec,
) -> String {
    let mut text = format!(
        "[http]\nlisten = \"{}\"\n\n[storage]\npath = {:?}\n\n{}\n",
        member.http_addr,
        dir.join("data").display().to_string(),
        spec.settings.trim_end(),
    );
    text.push_str(&format!(
        "\n[cluster]\nnode_id = \"{}\"\nlisten = \"{}\"\ncookie = \"{cookie}\"\nshards = {SHARDS}\n\
         heartbeat_interval_ms = {HEARTBEAT_MS}\ndown_after_ms = {DOWN_AFTER_MS}\n\
         rpc_timeout_ms = {RPC_TIMEOUT_MS}\n",
        member.id, member.cluster_addr
    ));
    text.push_str(&format!(
        "replication_factor = {}\n",
        spec.replication_factor
    ));
    if spec.replication_factor > 1 {
        text.push_str(&format!("groups = {GROUPS}\n"));
    }
    for m in members {
        text.push_str(&format!(
            "\n[[cluster.members]]\nid = \"{}\"\ncluster_addr = \"{}\"\nhttp_addr = \"{}\"\n",
            m.id, m.cluster_addr, m.http_addr
        ));
    }
    text
}

/// Whether any node's log says a listener could not bind because its address was in use.
fn logs_say_port_taken(dir: &Path, members: &[Member]) -> bool {
    members.iter().any(|m| {
        std::fs::read_to_string(dir.join(&m.id).join("webhookd.log"))
            .is_ok_and(|log| log.contains("Address already in use") || log.contains("os error 98"))
    })
}

/// Polls every node's `GET /ready` until each answered 200 (or `deadline` passes, or a
/// node exits).
async fn wait_ready(
    nodes: &mut [NodeProcess],
    members: &[Member],
    deadline: Duration,
) -> BenchResult<()> {
    let http = http_client();
    let until = Instant::now() + deadline;
    let mut ready = vec![false; nodes.len()];
    let mut last: Vec<String> = vec!["no answer yet".into(); nodes.len()];
    loop {
        for (i, node) in nodes.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Some(status) = node.exited() {
                return Err(BenchError::Node(format!(
                    "{} exited while waiting for /ready ({status})",
                    members[i].id
                )));
            }
            match ready_status(&http, node.url()).await {
                Ok((StatusCode::OK, _)) => ready[i] = true,
                Ok((status, body)) => last[i] = format!("{status} {body}"),
                Err(e) => last[i] = e.to_string(),
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if Instant::now() >= until {
            let waiting: Vec<String> = members
                .iter()
                .zip(&ready)
                .zip(&last)
                .filter(|((_, r), _)| !**r)
                .map(|((m, _), l)| format!("{}: {l}", m.id))
                .collect();
            return Err(BenchError::Timeout {
                what: format!(
                    "GET /ready of every node (last answers: {})",
                    waiting.join("; ")
                ),
                after: deadline,
            });
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// One `GET /ready`: status and body (as text).
async fn ready_status(http: &HttpClient, base: &str) -> BenchResult<(StatusCode, String)> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("{base}/ready"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| BenchError::Invalid(format!("bad /ready request to {base}: {e}")))?;
    let (status, body) = send(http, request, READY_REQUEST_TIMEOUT).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The node owning `id` (an account, registration or subscription id).
pub fn owner_of_id<'a>(map: &'a ShardMap, id: &str) -> BenchResult<&'a str> {
    let uuid = Uuid::parse_str(id)
        .map_err(|e| BenchError::Invalid(format!("{id:?} is not an id: {e}")))?;
    map.owner(map.shard_of_id(&uuid))
        .ok_or_else(|| BenchError::Invalid(format!("no owner for the shard of {id}")))
}

/// How many of `subscribers` (one subscription each, account ids) live on another node
/// than `registration`: the deliveries of one trigger its fan-out hands off to a peer.
pub fn handed_off(map: &ShardMap, registration: &str, subscribers: &[&str]) -> BenchResult<u64> {
    let home = owner_of_id(map, registration)?;
    let mut remote = 0;
    for s in subscribers {
        if owner_of_id(map, s)? != home {
            remote += 1;
        }
    }
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_their_own_address_and_distinct_ports() {
        let members = pick_members(3).unwrap();
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["node1", "node2", "node3"]);
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.http_addr.ip(), member_ip(i));
            assert_eq!(m.cluster_addr.ip(), member_ip(i));
            assert_ne!(m.http_addr.port(), m.cluster_addr.port());
        }
        assert_eq!(member_ip(2), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn configs_parse_and_list_every_member() {
        let members = pick_members(3).unwrap();
        let spec = ClusterSpec {
            binary: PathBuf::from("webhookd"),
            dir: PathBuf::from("x"),
            nodes: 3,
            replication_factor: 3,
            settings: "[security]\npbkdf2_iterations = 1000\n\n[delivery]\nmax_in_flight = 256\n"
                .into(),
            start_deadline: Duration::from_secs(1),
            ready_deadline: Duration::from_secs(1),
        };
        let text = node_config(&members[1], &members, "cookie", Path::new("/tmp/x"), &spec);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhookd.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::Config::load(Some(&path)).unwrap().config;
        assert_eq!(config.http.listen, members[1].http_addr);
        assert_eq!(config.cluster.node_id, "node2");
        assert_eq!(config.cluster.listen, members[1].cluster_addr);
        assert_eq!(config.cluster.shards, SHARDS);
        assert_eq!(config.cluster.replication_factor, 3);
        assert_eq!(config.cluster.groups, GROUPS);
        assert_eq!(config.cluster.members.len(), 3);
        assert_eq!(
            config.cluster.members[2].http_addr,
            members[2].http_addr.to_string()
        );
        assert_eq!(config.security.pbkdf2_iterations, 1000);
        assert_eq!(config.delivery.max_in_flight, 256);
    }

    #[test]
    fn hand_offs_count_subscribers_owned_elsewhere() {
        let map = ShardMap::new(SHARDS, vec!["node1".into(), "node2".into()]);
        let on = |node: &str| {
            (0..)
                .map(|_| Uuid::new_v4().to_string())
                .find(|id| owner_of_id(&map, id).unwrap() == node)
                .unwrap()
        };
        let registration = on("node1");
        let (local, remote) = (on("node1"), on("node2"));
        let subscribers = [local.as_str(), remote.as_str(), remote.as_str()];
        assert_eq!(handed_off(&map, &registration, &subscribers).unwrap(), 2);
        assert!(owner_of_id(&map, "not-an-id").is_err());
    }
}
