//! Replicated groups (`replication_factor = 3`) on three real node processes: every group
//! elects a leader, leaders spread over the nodes, a SIGKILLed node's groups elect new
//! leaders among the survivors within the election timeout, and a node restarted on an
//! empty data dir catches up and adopts the cluster's admin account instead of minting one;
//! a SIGSTOPped leader is replaced, and follows once resumed.
//!
//! That the records themselves survive is `replicated_records.rs`.

use super::*;

pub(super) const GROUPS: usize = 6;
const ELECTION_TIMEOUT_MS: u64 = 600;

pub(super) fn replicated() -> NodeOptions {
    NodeOptions {
        cluster_toml: Some(format!(
            "replication_factor = 3\ngroups = {GROUPS}\nelection_timeout_ms = {ELECTION_TIMEOUT_MS}\nfailover_wait_ms = 2000"
        )),
        ..NodeOptions::default()
    }
}

/// `GET /v1/cluster`'s groups as `node` reports them (admin credentials of `admin`).
pub(super) async fn groups(node: &TestNode, admin: &Creds) -> Option<Vec<Value>> {
    let r = node.get("/v1/cluster").auth(admin).send_unchecked().await;
    if r.status != 200 {
        return None;
    }
    r.json()["replication"]["groups"].as_array().cloned()
}

/// Polls until every group reported by `node` has a leader among `alive`, each follower
/// is caught up (it holds every entry the group's log had when the wait began: under
/// load the newest entries are always on their way) and, with `balanced`, each alive node
/// leads its share of the shard groups (within one). Returns the groups.
pub(super) async fn wait_settled(
    node: &TestNode,
    admin: &Creds,
    alive: &[&str],
    balanced: bool,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    // Each group's log length when the wait began, once it has a leader.
    let mut targets: HashMap<String, u64> = HashMap::new();
    while Instant::now() < deadline {
        if let Some(gs) = groups(node, admin).await {
            for g in gs.iter().filter(|g| g["leader"].is_string()) {
                let name = g["group"].as_str().unwrap_or_default().to_string();
                let length = g["last_log_index"].as_u64().unwrap_or(0);
                targets.entry(name).or_insert(length);
            }
            let led = |g: &Value| {
                let target = targets.get(g["group"].as_str().unwrap_or_default());
                g["leader"].as_str().is_some_and(|l| alive.contains(&l))
                    && g["followers"].as_array().is_some_and(|f| {
                        f.iter()
                            .filter(|x| alive.contains(&x["node"].as_str().unwrap_or("")))
                            .all(|x| {
                                target.is_some_and(|t| x["matched_index"].as_u64() >= Some(*t))
                            })
                    })
            };
            let mut leads: HashMap<String, usize> = HashMap::new();
            for g in gs.iter().filter(|g| g["group"] != "meta") {
                *leads
                    .entry(g["leader"].as_str().unwrap_or("").into())
                    .or_default() += 1;
            }
            let fair = GROUPS / alive.len();
            let even = alive
                .iter()
                .all(|a| leads.get(*a).copied().unwrap_or(0) >= fair.saturating_sub(1).max(1));
            if gs.len() == GROUPS + 1 && gs.iter().all(led) && (!balanced || even) {
                return gs;
            }
            last = gs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("groups did not settle within {within:?} (alive: {alive:?}): {last:#?}");
}

/// The admin keys a node printed, on start or later.
pub(super) fn printed_admin_key(node: &TestNode) -> Option<String> {
    let later = node
        .later_stdout
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let lines: Vec<String> = node.startup_stdout.iter().cloned().chain(later).collect();
    find_line_value(&lines, "admin api_key:")
}

/// The admin's credentials, once exactly one node has printed them.
pub(super) async fn admin_creds(nodes: &[TestNode]) -> Creds {
    let key = eventually(
        "one node to print the admin keys",
        READY_DEADLINE,
        || async {
            let printed: Vec<String> = nodes.iter().filter_map(printed_admin_key).collect();
            assert!(printed.len() <= 1, "several nodes minted an admin");
            printed.into_iter().next()
        },
    )
    .await;
    Creds::new("admin", &key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_groups_fail_over_and_a_wiped_node_adopts_the_cluster_admin() {
    let _serial = SERIAL.lock().await;
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |_| replicated()).await;
    let ids: Vec<&str> = spec.ids.iter().map(String::as_str).collect();

    // The admin is created once per cluster, through the metadata group.
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = loop {
        let printed: Vec<(usize, String)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| printed_admin_key(n).map(|k| (i, k)))
            .collect();
        if let [(_, key)] = printed.as_slice() {
            break key.clone();
        }
        assert!(
            printed.len() <= 1,
            "several nodes minted an admin: {printed:?}"
        );
        assert!(Instant::now() < deadline, "no node printed the admin keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let admin = Creds::new("admin", &key);
    let owner = nodes
        .iter()
        .position(|n| printed_admin_key(n).is_some())
        .expect("admin owner");

    let settled = wait_settled(&nodes[0], &admin, &ids, true, Duration::from_secs(30)).await;
    for g in &settled {
        assert_eq!(g["voters"].as_array().map(Vec::len), Some(3), "{g}");
    }
    println!(
        "leaders: {:?}",
        settled
            .iter()
            .map(|g| (g["group"].clone(), g["leader"].clone()))
            .collect::<Vec<_>>()
    );

    // SIGKILL a node that is not the admin's owner: its groups elect new leaders.
    let victim = (owner + 1) % 3;
    let survivors: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| *id != ids[victim])
        .collect();
    let killed_at = Instant::now();
    nodes[victim].kill().await;
    wait_settled(
        &nodes[owner],
        &admin,
        &survivors,
        false,
        Duration::from_secs(5),
    )
    .await;
    println!(
        "every group led by a survivor {:?} after the SIGKILL",
        killed_at.elapsed()
    );
    nodes[victim].restart().await;
    wait_settled(&nodes[owner], &admin, &ids, false, Duration::from_secs(20)).await;

    // The admin's owner loses its disk: restarted empty, it catches up from its peers and
    // serves the cluster's admin again, with no new keys.
    nodes[owner].kill().await;
    std::fs::remove_dir_all(nodes[owner].data_dir()).expect("wipe the data dir");
    nodes[owner].restart().await;
    let other = (owner + 2) % 3;
    wait_settled(&nodes[other], &admin, &ids, false, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = nodes[owner]
            .get("/v1/cluster")
            .auth(&admin)
            .send_unchecked()
            .await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wiped node does not serve the cluster's admin: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        printed_admin_key(&nodes[owner]).is_none(),
        "the wiped node minted an admin account of its own"
    );

    // A stopped leader (SIGSTOP: to its peers, a partition) is replaced; resumed, it
    // follows the new leader and the groups settle again.
    // The admin's owner observes: it authenticates the status calls.
    wait_settled(&nodes[other], &admin, &ids, true, Duration::from_secs(30)).await;
    let stopped = (owner + 1) % 3;
    let observer = owner;
    let rest: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| *id != ids[stopped])
        .collect();
    let stopped_at = Instant::now();
    let pid = nodes[stopped].pid() as libc::pid_t;
    // SAFETY: kill(2) on our own, not yet reaped, child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_settled(
        &nodes[observer],
        &admin,
        &rest,
        false,
        Duration::from_secs(5),
    )
    .await;
    println!(
        "every group led by a running node {:?} after the SIGSTOP",
        stopped_at.elapsed()
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_settled(
        &nodes[observer],
        &admin,
        &ids,
        false,
        Duration::from_secs(20),
    )
    .await;
}
