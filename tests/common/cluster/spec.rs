//! The members of a test cluster ([`ClusterSpec`]): ids, free loopback ports, cookie and
//! shard count; it writes one config per member and starts the members.

use std::net::SocketAddr;

use super::{COOKIE, DOWN_AFTER_MS, HEARTBEAT_MS, RPC_TIMEOUT_MS, SHARDS};
use crate::common::cli::find_line_value;
use crate::common::node::config::TestConfig;
use crate::common::node::launch::try_launch;
use crate::common::node::TestNode;

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
    /// More `[cluster]` keys (e.g. `replication_factor = 3`; the tests' clusters are
    /// unreplicated unless they say so), one per line.
    pub cluster_toml: Option<String>,
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
replication_factor = 1
{more}
"#,
            http = self.http[i],
            id = self.ids[i],
            cluster = self.cluster[i],
            cookie = opts.cookie.as_deref().unwrap_or(&self.cookie),
            shards = opts.shards.unwrap_or(self.shards),
            more = opts.cluster_toml.as_deref().unwrap_or(""),
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
