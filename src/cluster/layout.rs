//! The cluster layout peers compare before they talk: the settings every node must share.
//!
//! Shard owners and the shard groups' voters are pure functions of the configuration and
//! the member list, so two nodes that disagree on the shard count, the replication factor
//! or the group count (or, without replication, the member list) would route and replicate
//! records differently without noticing. Each heartbeat therefore carries the sender's
//! layout, and a node refuses a peer whose layout differs. The layout is plain numbers (the
//! member list as a digest), and a refusal names each setting that differs with both
//! values, so the log says what to fix. With replication the member list is replicated
//! state, not configuration (it changes as members are admitted), so it is not compared;
//! the configured factor is, since the cluster may grow past the seed list.

use serde::{Deserialize, Serialize};

use super::shard::ShardMap;
use crate::config::ClusterConfig;

/// What must be the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// `cluster.shards`.
    pub shards: u16,
    /// The digest of (shards, member list), as `/v1/cluster` shows it; 0 with
    /// replication, where the member list is replicated state.
    pub map_digest: u64,
    /// `cluster.replication_factor`: as configured with replication, else the effective
    /// one (capped at the member count, so 1 means no replication).
    pub replication_factor: u16,
    /// `cluster.groups`.
    pub groups: u16,
}

impl Layout {
    /// The layout of `config`, whose shard map is `map`.
    pub fn new(config: &ClusterConfig, map: &ShardMap) -> Self {
        let (map_digest, replication_factor) = match config.is_replicated() {
            true => (0, config.replication_factor),
            false => (map.digest(), 1),
        };
        Self {
            shards: map.shards(),
            map_digest,
            replication_factor,
            groups: config.groups,
        }
    }

    /// Why a peer whose layout is `peer` must be refused, or `None` when it matches.
    ///
    /// Names every setting that differs, the peer's values first, e.g. "cluster
    /// configuration differs: peer has cluster.replication_factor 1, this node 3". The
    /// member list travels as a digest: when only it differs, both digests are named.
    pub fn mismatch(&self, peer: &Layout) -> Option<String> {
        // (setting, the peer's value, this node's value) of each setting that differs.
        let mut differing: Vec<(&str, String, String)> = Vec::new();
        let mut differs = |key, peer: String, this: String| {
            if peer != this {
                differing.push((key, peer, this));
            }
        };
        differs(
            "cluster.shards",
            peer.shards.to_string(),
            self.shards.to_string(),
        );
        // Replicated, both digests are 0; with different factors the factor says it.
        if peer.shards == self.shards && peer.replication_factor == self.replication_factor {
            differs(
                "cluster.members digest",
                format!("{:016x}", peer.map_digest),
                format!("{:016x}", self.map_digest),
            );
        }
        differs(
            "cluster.replication_factor",
            peer.replication_factor.to_string(),
            self.replication_factor.to_string(),
        );
        differs(
            "cluster.groups",
            peer.groups.to_string(),
            self.groups.to_string(),
        );
        if differing.is_empty() {
            return None;
        }
        let peer_has: Vec<String> = differing
            .iter()
            .map(|(key, theirs, _)| format!("{key} {theirs}"))
            .collect();
        let ours: Vec<&str> = differing.iter().map(|(_, _, ours)| ours.as_str()).collect();
        Some(format!(
            "cluster configuration differs: peer has {}, this node {} (cluster.shards, \
             cluster.members, cluster.replication_factor and cluster.groups must be the same \
             on every node)",
            peer_has.join(" and "),
            ours.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Member;

    fn config(members: &[&str], replication_factor: u16, groups: u16) -> ClusterConfig {
        ClusterConfig {
            node_id: members[0].into(),
            members: members
                .iter()
                .map(|id| Member {
                    id: (*id).into(),
                    cluster_addr: format!("{id}:7081"),
                    http_addr: format!("{id}:8081"),
                })
                .collect(),
            replication_factor,
            groups,
            ..ClusterConfig::default()
        }
    }

    fn layout(config: &ClusterConfig) -> Layout {
        Layout::new(config, &ShardMap::new(config.shards, config.member_ids()))
    }

    #[test]
    fn same_settings_match_whatever_the_node() {
        let a = layout(&config(&["a", "b", "c"], 3, 12));
        let c = layout(&config(&["c", "a", "b"], 3, 12));
        assert_eq!(a.mismatch(&c), None);
    }

    #[test]
    fn replicated_the_configured_factor_is_compared_and_the_member_list_is_not() {
        // The cluster may grow past three members, where 5 and 3 voters differ.
        let five = layout(&config(&["a", "b", "c"], 5, 12));
        let three = layout(&config(&["a", "b", "c"], 3, 12));
        assert!(five.mismatch(&three).is_some());
        // Members are admitted at run time: a joining node lists only itself.
        let joining = layout(&config(&["d"], 3, 12));
        assert_eq!(three.mismatch(&layout(&config(&["d", "a"], 3, 12))), None);
        let mut join = config(&["d"], 3, 12);
        join.join = true;
        assert_eq!(three.mismatch(&layout(&join)), None);
        assert!(
            three.mismatch(&joining).is_some(),
            "one member runs no Raft"
        );
    }

    #[test]
    fn a_mismatch_names_each_differing_setting_with_both_values() {
        let ours = layout(&config(&["a", "b", "c"], 3, 12));
        let why = ours
            .mismatch(&layout(&config(&["a", "b", "c"], 1, 12)))
            .unwrap();
        assert!(
            why.starts_with(
                "cluster configuration differs: peer has cluster.replication_factor 1, \
                 this node 3 ("
            ),
            "{why}"
        );
        let why = ours
            .mismatch(&layout(&config(&["a", "b", "c"], 1, 6)))
            .unwrap();
        assert!(
            why.contains(
                "peer has cluster.replication_factor 1 and cluster.groups 6, this node 3 and 12"
            ),
            "{why}"
        );
        let unreplicated = layout(&config(&["a", "b", "c"], 1, 12));
        let why = unreplicated
            .mismatch(&layout(&config(&["a", "c"], 1, 12)))
            .unwrap();
        assert!(why.contains("peer has cluster.members digest "), "{why}");
        let mut other_shards = config(&["a", "b", "c"], 3, 12);
        other_shards.shards = 64;
        let why = ours.mismatch(&layout(&other_shards)).unwrap();
        assert!(
            why.contains("peer has cluster.shards 64, this node 256 ("),
            "{why}"
        );
    }
}
