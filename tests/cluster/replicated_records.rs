//! Replicated records (`replication_factor = 3`, three real node processes): SIGKILL any
//! one node and, within 5 s, every account is read and every registration written through
//! the two survivors; new accounts are created meanwhile. A node restarted on an empty data
//! dir catches up, and then serves everything while a *different* node is down: it held
//! full copies (sent as snapshots of several chunks each). Every write answered 2xx is there
//! at the end, read through every node. The admin's bulk delete works with a node down.
//! With two of three down, writes answer 503 and nothing acknowledged is lost.

use super::replicated::{admin_creds, wait_settled, GROUPS};
use super::*;

/// How long the survivors may take to serve a killed node's records.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);

/// RF 3, with snapshots every few entries: the wiped node is sent one, in chunks of a few
/// hundred bytes (a group with one account is several chunks).
fn replicated() -> NodeOptions {
    NodeOptions {
        cluster_toml: Some(format!(
            "replication_factor = 3\ngroups = {GROUPS}\nelection_timeout_ms = 600\nfailover_wait_ms = 2000\nsnapshot_entries = 5\nsnapshot_chunk_bytes = 256"
        )),
        ..NodeOptions::default()
    }
}

/// Sends `send` until it answers `want`, by `deadline`; the answer.
async fn until_status<F, Fut>(want: u16, deadline: Instant, what: &str, mut send: F) -> Resp
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    loop {
        let r = send().await;
        if r.status == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {} at the deadline: {r}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The description of `registration`, read as its owner through `node`.
async fn description(node: &TestNode, owner: &Account, registration: &str) -> Option<String> {
    let r = node
        .get("/v1/webhook/registration?start=0&limit=100")
        .auth(owner)
        .send()
        .await
        .expect(200);
    r.json()["registrations"]
        .as_array()?
        .iter()
        .find(|x| x["id"] == registration)
        .and_then(|x| x["description"].as_str().map(str::to_owned))
}

/// The chunk counts of the snapshots a node's log says it installed.
fn installed_snapshot_chunks(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("installing a snapshot received from the leader"))
        .filter_map(|l| {
            l.split_once(" chunks=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

struct Data {
    accounts: Vec<Account>,
    /// Per account, its registration and that registration's last acknowledged description.
    registrations: Vec<(String, String)>,
}

/// Reads every account and writes every registration through `alive`, within the
/// failover budget from `since`; answers how long the last one took.
async fn serve_everything(
    nodes: &[TestNode],
    alive: &[usize],
    data: &mut Data,
    round: &str,
    since: Instant,
) -> Duration {
    let deadline = since + FAILOVER_BUDGET;
    for (i, a) in data.accounts.iter().enumerate() {
        let via = &nodes[alive[i % alive.len()]];
        until_status(200, deadline, &format!("read {}", a.username), || {
            via.get(&format!("/v1/account/{}", a.id))
                .auth(a)
                .send_unchecked()
        })
        .await;
        let (registration, last) = &mut data.registrations[i];
        let value = format!("{round}-{i}");
        let via = &nodes[alive[(i + 1) % alive.len()]];
        until_status(200, deadline, &format!("patch {registration}"), || {
            via.patch(&format!("/v1/webhook/registration/{registration}"))
                .auth(a)
                .json(&json!({"description": value}))
                .send_unchecked()
        })
        .await;
        *last = value;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_served_through_any_two_nodes() {
    let _serial = SERIAL.lock().await;
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |_| replicated()).await;
    let ids: Vec<&str> = spec.ids.iter().map(String::as_str).collect();
    let admin = admin_creds(&nodes).await;
    wait_settled(&nodes[0], &admin, &ids, true, Duration::from_secs(30)).await;

    let ep = EndpointServer::start().await;
    let mut data = Data {
        accounts: Vec::new(),
        registrations: Vec::new(),
    };
    for i in 0..9 {
        let node = &nodes[i % 3];
        let a = node
            .create_account(&format!("user{i}"), &ep.endpoint_url(&format!("u{i}")))
            .await;
        let r = id_of(&node.register(&a, &format!("event{i}")).await);
        data.registrations
            .push((r, format!("event{i} description")));
        data.accounts.push(a);
    }
    // Each account subscribes to the next one's registration.
    let mut subscriptions = Vec::new();
    for i in 0..9 {
        let (registration, _) = &data.registrations[(i + 1) % 9];
        let s = nodes[(i + 2) % 3]
            .subscribe(&data.accounts[i], registration)
            .await;
        subscriptions.push((i, id_of(&s)));
    }

    for victim in 0..3 {
        let alive: Vec<usize> = (0..3).filter(|n| *n != victim).collect();
        let killed_at = Instant::now();
        nodes[victim].kill().await;
        let took = serve_everything(
            &nodes,
            &alive,
            &mut data,
            &format!("without-{victim}"),
            killed_at,
        )
        .await;
        println!("node {victim} killed: every record served by the survivors after {took:?}");
        let deadline = Instant::now() + FAILOVER_BUDGET;
        let (name, url) = (
            format!("late{victim}"),
            ep.endpoint_url(&format!("late{victim}")),
        );
        let r = until_status(201, deadline, "create an account", || {
            nodes[alive[0]].try_create_account(&name, &url)
        })
        .await;
        data.accounts.push(Account::from_record(r.json().clone()));
        let r = id_of(
            &nodes[alive[1]]
                .register(data.accounts.last().unwrap(), "late")
                .await,
        );
        data.registrations.push((r, "late description".into()));
        nodes[victim].restart().await;
        wait_settled(
            &nodes[alive[0]],
            &admin,
            &ids,
            false,
            Duration::from_secs(20),
        )
        .await;
    }

    // An unsubscribe is replicated like the rest.
    let (unsubscriber, dropped) = subscriptions.remove(0);
    nodes[1]
        .delete(&format!("/v1/webhook/subscription/{dropped}"))
        .auth(&data.accounts[unsubscriber])
        .send()
        .await
        .expect(200);

    // Node 0 loses its disk and catches up; then node 1 dies: node 0 and node 2 still
    // serve everything, so node 0 held full copies.
    nodes[0].kill().await;
    std::fs::remove_dir_all(nodes[0].data_dir()).expect("wipe the data dir");
    let logged_before = nodes[0].config.log().len();
    nodes[0].restart().await;
    wait_settled(&nodes[2], &admin, &ids, false, Duration::from_secs(30)).await;
    let log = nodes[0].config.log();
    let chunks = installed_snapshot_chunks(log.get(logged_before..).unwrap_or_default());
    assert!(
        chunks.iter().any(|n| *n > 1),
        "the wiped node installed no snapshot sent in several chunks: {chunks:?}"
    );
    let killed_at = Instant::now();
    nodes[1].kill().await;
    let took = serve_everything(&nodes, &[0, 2], &mut data, "after-wipe", killed_at).await;
    println!("after the wipe, node 1 killed: every record served after {took:?}");

    // Every acknowledged write, through each live node.
    for via in [0, 2] {
        for (i, a) in data.accounts.iter().enumerate() {
            let (registration, last) = &data.registrations[i];
            let read = description(&nodes[via], a, registration).await;
            assert_eq!(
                read.as_deref(),
                Some(last.as_str()),
                "{} via node {via}",
                a.username
            );
        }
        for (i, s) in &subscriptions {
            let r = nodes[via]
                .get("/v1/webhook/subscription?start=0&limit=100")
                .auth(&data.accounts[*i])
                .send()
                .await
                .expect(200);
            let listed = r.json()["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                listed.iter().any(|x| x["id"] == s.as_str()),
                "subscription {s} of user{i} lost (via node {via}): {r}"
            );
        }
        let r = nodes[via]
            .get("/v1/webhook/subscription?start=0&limit=100")
            .auth(&data.accounts[unsubscriber])
            .send_unchecked()
            .await;
        assert!(
            matches!(r.status, 200 | 204) && !r.text().contains(&dropped),
            "deleted subscription {dropped} still listed via node {via}: {r}"
        );
    }

    // The admin's bulk delete works with a node down: each group's leader deletes its rows.
    // A group whose lead is moving at that moment (the restarted node taking its share
    // back) refuses its part: the answer is then a 503 with `Retry-After`, and the client's
    // retry deletes the rest. The counts of the answers that succeeded add up to at most
    // every subscription (a refused answer's partial count is not reported).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut deleted = 0;
    loop {
        let r = nodes[2]
            .delete("/v1/webhook/subscriptions")
            .auth(&admin)
            .send_unchecked()
            .await;
        if r.status == 200 {
            deleted += r.json()["deleted"].as_u64().unwrap_or(0);
            break;
        }
        assert!(
            r.status == 503 && r.header("retry-after").is_some() && Instant::now() < deadline,
            "the bulk delete: {r}"
        );
        println!("the bulk delete answered {r}; trying again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(deleted as usize <= subscriptions.len(), "deleted {deleted}");
    for via in [0, 2] {
        let r = nodes[via]
            .get("/v1/webhook/subscriptions?start=0&limit=100")
            .auth(&admin)
            .send_unchecked()
            .await;
        assert_eq!(
            r.status, 204,
            "subscriptions left after the bulk delete: {r}"
        );
    }

    // Two of three down: no group has a majority, so writes answer 503 (with Retry-After)
    // once `failover_wait_ms` has passed, and nothing of before is lost when they return.
    nodes[2].kill().await;
    let (a, (registration, _)) = (&data.accounts[0], &data.registrations[0]);
    let r = nodes[0]
        .patch(&format!("/v1/webhook/registration/{registration}"))
        .auth(a)
        .json(&json!({"description": "no quorum"}))
        .send_unchecked()
        .await;
    assert_eq!(r.status, 503, "a write without a majority: {r}");
    assert!(
        r.header("retry-after").is_some(),
        "503 without Retry-After: {r}"
    );
    nodes[1].restart().await;
    nodes[2].restart().await;
    wait_settled(&nodes[0], &admin, &ids, false, Duration::from_secs(30)).await;
    for (i, a) in data.accounts.iter().enumerate() {
        let (registration, last) = &data.registrations[i];
        let read = description(&nodes[i % 3], a, registration).await;
        // The refused write was never acknowledged: it may have been applied later or not.
        let expected = [last.as_str(), "no quorum"];
        assert!(
            read.as_deref()
                .is_some_and(|d| expected[..1 + usize::from(i == 0)].contains(&d)),
            "{} after the quorum loss: {read:?}, expected {last}",
            a.username
        );
    }
}
