//! The replicated groups of a bench cluster, as `GET /v1/cluster` (admin) shows them: who
//! leads each group and how far behind its followers are. The bench waits on them, so
//! that a measurement starts on a settled cluster (every group led, every follower caught
//! up) and a failover is timed from a known leader.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::client::{send, Account, HttpClient};
use super::cluster::LocalCluster;
use super::error::{BenchError, BenchResult};
use crate::cluster::ShardMap;

/// Pause between two status polls.
const POLL: Duration = Duration::from_millis(50);
/// Timeout of one `GET /v1/cluster`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// The metadata group's name in the status.
pub const META: &str = "meta";

/// One group, as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// `meta` or the group number.
    pub group: String,
    /// The current leader, when there is one.
    pub leader: Option<String>,
    /// Last log index of the reporting voter.
    pub last_log_index: u64,
    /// Each follower's lag in entries (only a leader's report has them).
    pub followers: Vec<(String, u64)>,
}

impl GroupView {
    /// Led by one of `alive`, with every follower among `alive` caught up.
    fn settled(&self, alive: &[String]) -> bool {
        self.leader.as_ref().is_some_and(|l| alive.contains(l))
            && self
                .followers
                .iter()
                .filter(|(node, _)| alive.contains(node))
                .all(|(_, lag)| *lag == 0)
    }
}

/// The group number of record `id` (its shard modulo `groups`).
pub fn group_of(map: &ShardMap, groups: u16, id: &str) -> BenchResult<String> {
    let uuid = Uuid::parse_str(id)
        .map_err(|e| BenchError::Invalid(format!("{id:?} is not an id: {e}")))?;
    Ok((map.shard_of_id(&uuid) % groups.max(1)).to_string())
}

/// The admin account (only its credentials are known: the id stays empty).
pub fn admin_account(api_key: String) -> Account {
    Account {
        id: String::new(),
        username: "admin".into(),
        api_key,
    }
}

/// Waits until one node printed the admin key (the cluster creates the admin once, when
/// its metadata group has a majority).
pub async fn wait_admin(cluster: &LocalCluster, within: Duration) -> BenchResult<Account> {
    let until = Instant::now() + within;
    loop {
        if let Some(key) = cluster.admin_key() {
            return Ok(admin_account(key));
        }
        if Instant::now() >= until {
            return Err(BenchError::Timeout {
                what: "the admin key printed by a node".into(),
                after: within,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The groups `base` reports in `GET /v1/cluster`.
pub async fn groups(http: &HttpClient, base: &str, admin: &Account) -> BenchResult<Vec<GroupView>> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("{base}/v1/cluster"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("username", admin.username.as_str())
        .header("api-key", admin.api_key.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| BenchError::Invalid(format!("bad /v1/cluster request to {base}: {e}")))?;
    let (status, body) = send(http, request, STATUS_TIMEOUT).await?;
    if status != StatusCode::OK {
        return Err(BenchError::Status {
            what: "GET /v1/cluster".into(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| BenchError::Invalid(format!("GET /v1/cluster: not JSON: {e}")))?;
    parse_groups(&doc)
}

/// The `replication.groups` of a `GET /v1/cluster` answer.
pub fn parse_groups(doc: &Value) -> BenchResult<Vec<GroupView>> {
    let groups = doc["replication"]["groups"]
        .as_array()
        .ok_or_else(|| BenchError::Invalid("GET /v1/cluster: no replication.groups".into()))?;
    Ok(groups
        .iter()
        .map(|g| GroupView {
            group: g["group"].as_str().unwrap_or_default().to_string(),
            leader: g["leader"].as_str().map(str::to_string),
            last_log_index: g["last_log_index"].as_u64().unwrap_or(0),
            followers: g["followers"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .map(|x| {
                            let node = x["node"].as_str().unwrap_or_default().to_string();
                            (node, x["lag"].as_u64().unwrap_or(u64::MAX))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// How many shard groups (not `meta`) each node leads.
pub fn leads(groups: &[GroupView]) -> HashMap<String, usize> {
    let mut leads = HashMap::new();
    for g in groups.iter().filter(|g| g.group != META) {
        if let Some(l) = &g.leader {
            *leads.entry(l.clone()).or_default() += 1;
        }
    }
    leads
}

/// Polls `base` until it reports all `expected` groups (the shard groups and `meta`)
/// settled among `alive` and, with `balanced`, every alive node leading its share of the
/// shard groups (within one). Returns the groups.
pub async fn wait_settled(
    http: &HttpClient,
    base: &str,
    admin: &Account,
    alive: &[String],
    (expected, balanced): (usize, bool),
    within: Duration,
) -> BenchResult<Vec<GroupView>> {
    let until = Instant::now() + within;
    loop {
        let last = match groups(http, base, admin).await {
            Ok(gs) => {
                let fair = expected.saturating_sub(1) / alive.len().max(1);
                let leads = leads(&gs);
                let even = alive
                    .iter()
                    .all(|a| leads.get(a).copied().unwrap_or(0) >= fair.saturating_sub(1).max(1));
                if gs.len() == expected
                    && gs.iter().all(|g| g.settled(alive))
                    && (!balanced || even)
                {
                    return Ok(gs);
                }
                format!("{gs:?}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= until {
            return Err(BenchError::Timeout {
                what: format!("every group settled among {alive:?} (last: {last})"),
                after: within,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_leaders_and_lags() {
        let doc = json!({"replication": {"factor": 3, "groups": [
            {"group": "meta", "leader": "node1", "last_log_index": 7,
             "followers": [{"node": "node2", "lag": 0}, {"node": "node3", "lag": 0}]},
            {"group": "0", "leader": "node2", "last_log_index": 9,
             "followers": [{"node": "node1", "lag": 2}, {"node": "node3", "lag": 0}]},
            {"group": "1", "leader": null, "followers": []},
        ]}});
        let gs = parse_groups(&doc).unwrap();
        let alive: Vec<String> = ["node1", "node2", "node3"].map(String::from).to_vec();
        assert!(gs[0].settled(&alive));
        assert!(!gs[1].settled(&alive), "node1 lags");
        assert!(
            gs[1].settled(&alive[1..]),
            "a dead follower's lag does not count"
        );
        assert!(!gs[2].settled(&alive), "no leader");
        assert_eq!(gs[1].last_log_index, 9);
        assert_eq!(leads(&gs).get("node2"), Some(&1));
        assert_eq!(leads(&gs).get("node1"), None, "meta is not a shard group");
        assert!(parse_groups(&json!({})).is_err());
    }

    #[test]
    fn records_fall_in_their_shard_modulo_groups() {
        let map = ShardMap::new(256, vec!["node1".into()]);
        let id = Uuid::new_v4();
        let expected = (map.shard_of_id(&id) % 12).to_string();
        assert_eq!(group_of(&map, 12, &id.to_string()).unwrap(), expected);
        assert!(group_of(&map, 12, "x").is_err());
    }
}
