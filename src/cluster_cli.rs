//! `webhookd cluster status|add`: what a running node knows of its cluster, asked over
//! its `/v1/cluster` API with the admin's keys, as a table; with `--wait`, also a check
//! for scripts (the rolling restart of `docs/cluster.md` waits for it between two nodes,
//! `cluster add --wait` until the new node holds its share).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variable read when `--api-key` is not given.
pub const API_KEY_ENV: &str = "WEBHOOKD_API_KEY";
/// Pause between two looks while waiting.
const POLL: Duration = Duration::from_millis(250);
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `webhookd cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the members and, per shard group, its leader and each follower's lag.
    Status(StatusArgs),
    /// Admit a node started with `cluster.join = true`; its share of the groups then
    /// moves to it.
    Add(AddArgs),
    /// Remove a node: the groups move their replicas off it, then it is removed and can
    /// be stopped.
    Remove(RemoveArgs),
}

/// Options of `webhookd cluster remove`.
#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The `cluster.node_id` of the node to remove.
    #[arg(long)]
    pub id: String,
    /// Then wait up to SECS until it is removed and the cluster settled, as `cluster
    /// status --wait` does; exit 1 if not.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
}

/// Options of `webhookd cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Wait up to SECS until every member is up, every group has a leader and its
    /// replicas where placement wants them, and every follower holds the entries its
    /// group had when the wait began; exit 1 if not.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
}

/// Options of `webhookd cluster add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The new node's `cluster.node_id`.
    #[arg(long)]
    pub id: String,
    /// The new node's cluster listener (`host:port`).
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster_addr: String,
    /// The new node's `/v1` API (`host:port`).
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: String,
    /// Then wait up to SECS as `cluster status --wait` does (the new node holding its
    /// share); exit 1 if not.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
}

/// Which node to ask, and the admin's keys.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Base URL of a running node.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8081")]
    pub target: String,
    /// The admin's username.
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// The admin's API key (default: the WEBHOOKD_API_KEY environment variable).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
}

/// Runs `webhookd cluster <command>`.
pub async fn run(command: ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Status(args) => status(&Admin::new(&args.node)?, args.wait).await,
        ClusterCommand::Add(args) => add(args).await,
        ClusterCommand::Remove(args) => remove(args).await,
    }
}

/// A node's admin API.
struct Admin {
    client: reqwest::Client,
    base: String,
    username: String,
    key: String,
}

impl Admin {
    fn new(node: &NodeArgs) -> Result<Self, String> {
        let key = match node.api_key.clone() {
            Some(key) => key,
            None => std::env::var(API_KEY_ENV)
                .map_err(|_| format!("give the admin's API key with --api-key or {API_KEY_ENV}"))?,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            base: node.target.trim_end_matches('/').to_string(),
            username: node.username.clone(),
            key,
        })
    }

    /// `method path` with `body`; the answer's JSON when its status is a success.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .header("content-type", "application/json")
            .header("username", &self.username)
            .header("api-key", &self.key);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let answer = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = answer.status();
        let body: Value = answer
            .json()
            .await
            .map_err(|e| format!("{method} {url}: {status}, not JSON: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status} {body}"));
        }
        Ok(body)
    }
}

async fn add(args: AddArgs) -> Result<(), String> {
    let admin = Admin::new(&args.node)?;
    let member = serde_json::json!({
        "id": args.id,
        "cluster_addr": args.cluster_addr,
        "http_addr": args.http_addr,
    });
    admin
        .call(reqwest::Method::POST, "/v1/cluster/members", Some(member))
        .await?;
    println!("{} admitted", args.id);
    match args.wait {
        Some(wait) => status(&admin, Some(wait)).await,
        None => Ok(()),
    }
}

async fn remove(args: RemoveArgs) -> Result<(), String> {
    let admin = Admin::new(&args.node)?;
    let path = format!("/v1/cluster/members/{}", args.id);
    admin.call(reqwest::Method::DELETE, &path, None).await?;
    println!(
        "{} is draining: its replicas move to the other members",
        args.id
    );
    match args.wait {
        Some(wait) => status(&admin, Some(wait)).await,
        None => Ok(()),
    }
}

async fn status(admin: &Admin, wait: Option<f64>) -> Result<(), String> {
    let ask = || admin.call(reqwest::Method::GET, "/v1/cluster", None);
    let Some(wait) = wait else {
        print!("{}", render(&ask().await?));
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs_f64(wait.max(0.0));
    let mut targets = HashMap::new();
    loop {
        let seen = ask().await;
        let settled = match &seen {
            Ok(state) => unsettled(state, &mut targets),
            Err(e) => Some(e.clone()),
        };
        match settled {
            None => {
                if let Ok(state) = &seen {
                    print!("{}", render(state));
                }
                return Ok(());
            }
            Some(why) if Instant::now() >= deadline => {
                if let Ok(state) = &seen {
                    print!("{}", render(state));
                }
                return Err(format!("not settled after {wait} s: {why}"));
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Why the cluster `state` describes is not settled yet, or `None` when it is: every member
/// up, every group led, every follower holding the entries of its group's log when the
/// group was first seen led (`targets`; under load the newest entries are always on their
/// way, so "no lag" may never be seen).
fn unsettled(state: &Value, targets: &mut HashMap<String, u64>) -> Option<String> {
    let members = state["members"].as_array().cloned().unwrap_or_default();
    if let Some(m) = members
        .iter()
        .find(|m| !matches!(m["state"].as_str(), Some("self" | "up")))
    {
        return Some(format!(
            "member {} is {}",
            text(&m["id"]),
            text(&m["state"])
        ));
    }
    let replicated_members = state["replication"]["members"].as_array();
    if let Some(m) = replicated_members
        .into_iter()
        .flatten()
        .find(|m| matches!(m["state"].as_str(), Some("joining" | "draining")))
    {
        return Some(format!(
            "member {} is {}",
            text(&m["id"]),
            text(&m["state"])
        ));
    }
    if let Some(step) = state["replication"]["moves"]
        .as_array()
        .and_then(|m| m.first())
    {
        return Some(format!(
            "group {} still moves replicas to {}",
            text(&step["group"]),
            text(&step["target"])
        ));
    }
    for group in state["replication"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = text(&group["group"]);
        if !group["leader"].is_string() {
            return Some(format!("group {name} has no leader"));
        }
        let target = *targets
            .entry(name.clone())
            .or_insert_with(|| group["last_log_index"].as_u64().unwrap_or(0));
        for follower in group["followers"].as_array().into_iter().flatten() {
            if follower["matched_index"].as_u64().unwrap_or(0) < target {
                return Some(format!(
                    "group {name}: {} has not caught up",
                    text(&follower["node"])
                ));
            }
        }
    }
    None
}

/// A JSON value as plain text (`-` for null).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The table `webhookd cluster status` prints.
fn render(state: &Value) -> String {
    let mut out = format!("answered by {}\n\nmember  state\n", text(&state["node"]));
    for m in state["members"].as_array().into_iter().flatten() {
        let reason = match m["reason"].as_str() {
            Some(why) => format!("  ({why})"),
            None => String::new(),
        };
        out += &format!("{:<7} {}{reason}\n", text(&m["id"]), text(&m["state"]));
    }
    let groups = state["replication"]["groups"].as_array();
    let Some(groups) = groups.filter(|g| !g.is_empty()) else {
        out += "\nshard groups are not replicated (cluster.replication_factor = 1)\n";
        return out;
    };
    out += &format!(
        "\nreplication factor {}\ngroup  leader  term  last log  followers (lag)\n",
        text(&state["replication"]["factor"])
    );
    for g in groups {
        let followers: Vec<String> = g["followers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("{} {}", text(&f["node"]), text(&f["lag"])))
            .collect();
        out += &format!(
            "{:<6} {:<7} {:<5} {:<9} {}\n",
            text(&g["group"]),
            text(&g["leader"]),
            text(&g["term"]),
            text(&g["last_log_index"]),
            followers.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(leader: Value, matched: u64) -> Value {
        json!({
            "node": "n1",
            "members": [{"id": "n1", "state": "self"}, {"id": "n2", "state": "up", "reason": null}],
            "replication": {"factor": 2, "groups": [{
                "group": "0", "leader": leader, "term": 3, "last_log_index": 10,
                "followers": [{"node": "n2", "matched_index": matched, "lag": 10 - matched}]
            }]}
        })
    }

    #[test]
    fn settled_once_every_group_is_led_and_followers_hold_the_first_seen_log() {
        let mut targets = HashMap::new();
        let leaderless = unsettled(&state(Value::Null, 10), &mut targets);
        assert_eq!(leaderless.as_deref(), Some("group 0 has no leader"));
        let lagging = unsettled(&state(json!("n1"), 9), &mut targets);
        assert_eq!(lagging.as_deref(), Some("group 0: n2 has not caught up"));
        // The log grew meanwhile: holding what it had when first seen led is enough.
        let mut grown = state(json!("n1"), 10);
        grown["replication"]["groups"][0]["last_log_index"] = json!(12);
        assert_eq!(unsettled(&grown, &mut targets), None);
    }

    #[test]
    fn a_member_joining_or_draining_is_named() {
        let mut draining = state(json!("n1"), 10);
        draining["replication"]["members"] = json!([
            {"id": "n1", "state": "active"}, {"id": "n3", "state": "draining"}
        ]);
        assert_eq!(
            unsettled(&draining, &mut HashMap::new()).as_deref(),
            Some("member n3 is draining")
        );
        draining["replication"]["members"][1]["state"] = json!("removed");
        assert_eq!(unsettled(&draining, &mut HashMap::new()), None);
    }

    #[test]
    fn a_group_still_moving_is_named() {
        let mut moving = state(json!("n1"), 10);
        moving["replication"]["moves"] =
            json!([{"group": "0", "voters": ["n1", "n2"], "target": ["n1", "n3"]}]);
        assert_eq!(
            unsettled(&moving, &mut HashMap::new()).as_deref(),
            Some(r#"group 0 still moves replicas to ["n1","n3"]"#)
        );
    }

    #[test]
    fn a_member_not_up_is_named() {
        let mut down = state(json!("n1"), 10);
        down["members"][1]["state"] = json!("down");
        assert_eq!(
            unsettled(&down, &mut HashMap::new()).as_deref(),
            Some("member n2 is down")
        );
    }

    #[test]
    fn the_table_names_leaders_and_lags() {
        let table = render(&state(json!("n1"), 7));
        assert!(table.contains("n2      up\n"), "{table}");
        assert!(
            table.contains("0      n1      3     10        n2 3\n"),
            "{table}"
        );
        let single = render(&json!({"node": "n1", "members": [{"id": "n1", "state": "self"}]}));
        assert!(single.contains("not replicated"), "{single}");
    }
}
