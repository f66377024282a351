//! `[cluster]`: this node's identity, its peers, the shard space and its replication.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The largest `cluster.snapshot_chunk_bytes`: half the transport's 16 MiB frame limit,
/// leaving room for a chunk's envelope.
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 8 << 20;

/// One member of the cluster, as every node's configuration lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's node id.
    pub id: String,
    /// Where its cluster listener is (`host:port`).
    pub cluster_addr: String,
    /// Where its `/v1` API is (`host:port`), shown by `/v1/cluster`.
    pub http_addr: String,
}

/// `[cluster]`: this node's identity, its peers and the shard space.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id (unique within the cluster).
    pub node_id: String,
    /// Number of virtual shards; fixed when the cluster's data is created.
    pub shards: u16,
    /// Address of this node's cluster listener (used when `members` lists other nodes).
    pub listen: SocketAddr,
    /// Shared secret of the cluster (ractor_cluster's magic cookie).
    pub cookie: String,
    /// Every member, this node included; empty means a cluster of one. With replication
    /// it only seeds a new cluster: members admitted later are replicated state.
    pub members: Vec<Member>,
    /// This node joins a running replicated cluster: it initialises nothing, and waits
    /// to be admitted (`POST /v1/cluster/members` on a member).
    pub join: bool,
    /// Group replicas a node moves at once, as the leader of the groups it moves, when
    /// members are admitted or removed.
    pub max_concurrent_moves: u16,
    /// How often each peer is pinged.
    pub heartbeat_interval_ms: u64,
    /// A peer that has not answered a ping for this long is marked down.
    pub down_after_ms: u64,
    /// Timeout of one call to a peer.
    pub rpc_timeout_ms: u64,
    /// Voters of each shard group (3 by default); 1 keeps every shard on one node without
    /// Raft. Capped at the member count, so a single node never runs Raft.
    pub replication_factor: u16,
    /// Number of shard groups (Raft groups) the virtual shards are partitioned into.
    pub groups: u16,
    /// A group whose leader has been silent for this long elects a new one.
    pub election_timeout_ms: u64,
    /// How long a request waits for its group to have a leader before it answers 503.
    pub failover_wait_ms: u64,
    /// A group snapshots its state once this many entries were applied since the last
    /// snapshot, and then drops its log up to it.
    pub snapshot_entries: u64,
    /// A snapshot is sent to a lagging voter in messages of at most this many bytes, so
    /// that it neither holds the peer connection for long nor exceeds the transport's
    /// frame limit.
    pub snapshot_chunk_bytes: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: "node1".into(),
            shards: 256,
            listen: SocketAddr::from(([127, 0, 0, 1], 7081)),
            cookie: String::new(),
            members: Vec::new(),
            join: false,
            max_concurrent_moves: 2,
            heartbeat_interval_ms: 500,
            down_after_ms: 3000,
            rpc_timeout_ms: 10_000,
            replication_factor: 3,
            groups: 12,
            election_timeout_ms: 1000,
            failover_wait_ms: 3000,
            snapshot_entries: 1000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

impl ClusterConfig {
    /// Voters per shard group: the configured factor, capped at the member count.
    pub fn effective_replication_factor(&self) -> usize {
        usize::from(self.replication_factor.max(1)).min(self.member_ids().len())
    }

    /// True when shard groups are replicated with Raft (always, for a joining node).
    pub fn is_replicated(&self) -> bool {
        self.join || self.effective_replication_factor() > 1
    }

    /// True when other nodes are configured.
    pub fn is_multi_node(&self) -> bool {
        self.members.iter().any(|m| m.id != self.node_id)
    }

    /// The member ids (this node's alone for a cluster of one).
    pub fn member_ids(&self) -> Vec<String> {
        if self.members.is_empty() {
            vec![self.node_id.clone()]
        } else {
            self.members.iter().map(|m| m.id.clone()).collect()
        }
    }
}

impl ClusterConfig {
    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if c.heartbeat_interval_ms == 0 || c.down_after_ms <= c.heartbeat_interval_ms {
            return invalid(
                "cluster.down_after_ms",
                "must be larger than cluster.heartbeat_interval_ms (both > 0)".into(),
            );
        }
        if c.rpc_timeout_ms == 0 {
            return invalid("cluster.rpc_timeout_ms", "must be at least 1".into());
        }
        if c.replication_factor == 0 {
            return invalid("cluster.replication_factor", "must be at least 1".into());
        }
        if c.groups == 0 || c.groups > c.shards.min(256) {
            return invalid(
                "cluster.groups",
                "must be between 1 and the smaller of cluster.shards and 256".into(),
            );
        }
        if c.election_timeout_ms < 60 {
            return invalid(
                "cluster.election_timeout_ms",
                "must be at least 60 (Raft heartbeats are a sixth of it)".into(),
            );
        }
        if c.failover_wait_ms == 0 {
            return invalid("cluster.failover_wait_ms", "must be at least 1".into());
        }
        if c.max_concurrent_moves == 0 {
            return invalid("cluster.max_concurrent_moves", "must be at least 1".into());
        }
        if c.join && c.replication_factor < 2 {
            return invalid(
                "cluster.join",
                "needs cluster.replication_factor of 2 or more: only a replicated cluster \
                 admits members"
                    .into(),
            );
        }
        if c.join && c.cookie.trim().is_empty() {
            return invalid(
                "cluster.cookie",
                "must be set on a joining node (config or WEBHOOKD_CLUSTER__COOKIE)".into(),
            );
        }
        if c.snapshot_entries == 0 {
            return invalid("cluster.snapshot_entries", "must be at least 1".into());
        }
        if c.snapshot_chunk_bytes == 0 || c.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return invalid(
                "cluster.snapshot_chunk_bytes",
                format!(
                    "must be between 1 and {MAX_SNAPSHOT_CHUNK_BYTES} \
                     (the cluster transport refuses frames over 16 MiB)"
                ),
            );
        }
        if c.members.is_empty() {
            return Ok(());
        }
        if !c.members.iter().any(|m| m.id == c.node_id) {
            return invalid(
                "cluster.members",
                format!(
                    "does not list this node (cluster.node_id = {:?})",
                    c.node_id
                ),
            );
        }
        let mut ids: Vec<&str> = c.members.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("cluster.members", "member ids must be unique".into());
        }
        if c.is_multi_node() && c.cookie.trim().is_empty() {
            return invalid(
                "cluster.cookie",
                "must be set when the cluster has more than one member \
                 (config or WEBHOOKD_CLUSTER__COOKIE)"
                    .into(),
            );
        }
        Ok(())
    }
}
