//! Cluster integration tests: real `webhookd serve` processes on
//! loopback, joined into one cluster (see `tests/common/cluster/`).
//!
//! 1. the functional scenario with each request sent to a random node gives the
//!    single-node results, and every listing gives identical pages from every node;
//! 2. a registration on node A with subscribers on every node: each receives its signed
//!    delivery exactly once;
//! 3. SIGKILL of node C during a 3,000-subscription fan-out: C's shards answer 503 while it
//!    is down, the rest works, and after its restart every subscription has been served;
//! 4. a node with another cookie, member list or replication factor is refused and the
//!    logs of both sides say why;
//! 5. a hung node (SIGSTOP) is marked down within `down_after_ms` and up after SIGCONT;
//! 6. a full-load fan-out, triggered several times, marks no healthy peer down;
//! 7. replicated groups elect leaders, fail over, and a wiped node catches up;
//! 8. with replicated groups, every record is read and written through any two nodes, and
//!    a fan-out reaches every subscriber once, also with a node down;
//! 9. concurrent clients reading and writing registrations while nodes are stopped, killed
//!    and restarted see a linearizable history;
//! 10. a replicated fan-out whose leader is SIGKILLed is finished by the group's next
//!     leader;
//! 11. with triggers and writes running, each node SIGKILLed in turn: every account is
//!     served through the survivors within 5 s, every acknowledged write is kept and every
//!     acknowledged trigger reaches every subscriber;
//! 12. the same load through a rolling restart (each node in turn stopped with SIGTERM,
//!     restarted and caught up): nothing acknowledged is lost, every acknowledged trigger is
//!     delivered, and the calls not answered with success are counted (at most 0.1%);
//! 13. the same load while the cluster grows from three nodes to five (one SIGKILLed in
//!     the middle of its moves) and shrinks back to three: the same guarantees.
//!
//! The cluster tests run one at a time ([`SERIAL`]): each starts several processes, and the
//! timing assertions must not compete with another cluster's fan-out for the CPU. Other
//! suites whose assertions are timings (`auth_flood`) take the same lock.

mod fanout;
mod fanout_takeover;
mod history;
mod hung_peer;
mod liveness;
mod misconfigured;
mod replicated;
mod replicated_fanout;
mod replicated_records;
mod scenario;
mod sigkill;
mod trigger_failover;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::cluster::*;
use crate::common::scenario::{functional_scenario, Scenario};
use crate::common::*;
use serde_json::{json, Value};

pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `event_data` of the test registrations (its Python `json.dumps` form is the body).
fn event_data() -> Value {
    json!({"message": "hello world", "items": [{"item1": 1}, {"item2": 2}]})
}

/// Creates `username` (endpoint `ep/<path>`) through `via`; checks the account lands on the
/// node its username hashes to (its id is drawn in the same shard).
async fn account_on(
    c: &TestCluster,
    via: usize,
    username: &str,
    ep: &EndpointServer,
    path: &str,
) -> Account {
    let a = c
        .node(via)
        .create_account(username, &ep.endpoint_url(path))
        .await;
    assert_eq!(
        c.owner_of(&a.id),
        c.owner_of(username),
        "account {username} ({}) is not in its username's shard",
        a.id
    );
    a
}

/// POST /v1/webhook/registration with [`event_data`] → 201; the registration id.
async fn register(node: &TestNode, who: &Account, event: &str) -> String {
    let r = node
        .post("/v1/webhook/registration")
        .auth(who)
        .json(&json!({"event": event, "description": "cluster test", "event_data": event_data()}))
        .send()
        .await
        .expect(201);
    assert_eq!(r.json()["account_id"], who.id.as_str(), "{r}");
    id_of(r.json())
}

/// Deliveries received per path, and their `webhook-id`s.
fn posts_by_path(ep: &EndpointServer, event: &str) -> HashMap<String, Vec<RecordedPost>> {
    let mut out: HashMap<String, Vec<RecordedPost>> = HashMap::new();
    for p in ep.posts() {
        if p.header("event").as_deref() == Some(event) {
            out.entry(p.path.clone()).or_default().push(p);
        }
    }
    out
}
