//! A replicated fan-out outlives the node that began it: the leader of a registration's
//! group is SIGKILLed right after answering a 2,500-subscription trigger, and the group's
//! next leader finishes the fan-out from the replicated cursor and handoff batches, so
//! every subscription is delivered while the killed node is still down. The subscribers'
//! own groups are led by the two other nodes, so no delivery waits on the killed node.

use super::replicated::{admin_creds, groups, replicated, wait_settled, GROUPS};
use super::*;

const SUBSCRIBERS: usize = 25;
const SUBSCRIPTIONS_EACH: usize = 100;
const EVENT: &str = "takeover.fanout";
/// What the node taking over a fan-out logs.
const RESUMED: &str = "resuming the fan-out of a group this node leads now";

/// The leader of each shard group, by group number, as `node` reports it.
async fn group_leaders(node: &TestNode, admin: &Creds) -> HashMap<usize, String> {
    groups(node, admin)
        .await
        .expect("GET /v1/cluster")
        .iter()
        .filter_map(|g| {
            let group = g["group"].as_str()?.parse().ok()?;
            Some((group, g["leader"].as_str()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_whose_leader_is_killed_is_finished_by_the_next_leader() {
    let _serial = SERIAL.lock().await;
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |_| replicated()).await;
    let ids: Vec<&str> = spec.ids.iter().map(String::as_str).collect();
    let admin = admin_creds(&nodes).await;
    wait_settled(&nodes[0], &admin, &ids, true, Duration::from_secs(30)).await;
    let shards = nodes[0].get("/v1/cluster").auth(&admin).send().await.json()["shards"]
        .as_u64()
        .expect("shard count") as u16;
    let group_of = |key: &str| shard_of(key, shards) % GROUPS;

    let ep = EndpointServer::start().await;
    let owner = nodes[0]
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let registration = id_of(&nodes[0].register(&owner, EVENT).await);
    let leaders = group_leaders(&nodes[0], &admin).await;
    let victim_id = leaders[&group_of(&registration)].clone();
    let victim = spec
        .ids
        .iter()
        .position(|i| *i == victim_id)
        .expect("member");
    let survivor = (victim + 1) % 3;

    // Subscribers whose groups the two other nodes lead (an account's shard is its
    // username's).
    let mut subscribers = Vec::new();
    for name in (0..).map(|i| format!("taker{i}")) {
        if subscribers.len() == SUBSCRIBERS {
            break;
        }
        if leaders[&group_of(&name)] == victim_id {
            continue;
        }
        let path = format!("takeover/{name}");
        let a = nodes[survivor]
            .create_account(&name, &ep.endpoint_url(&path))
            .await;
        subscribers.push((a, path));
    }
    // Under this load on two cores a group may hold an election: 503s are sent again.
    let mut pending: Vec<usize> = (0..SUBSCRIBERS * SUBSCRIPTIONS_EACH).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} subscribes not made",
            pending.len()
        );
        let reqs = pending
            .iter()
            .map(|i| {
                nodes[victim]
                    .post(&format!("/v1/webhook/subscription/{registration}"))
                    .auth(&subscribers[i % SUBSCRIBERS].0)
            })
            .collect();
        let answers = send_all_unchecked(reqs, 8).await;
        let mut retry = Vec::new();
        for (i, r) in pending.iter().zip(answers) {
            match r.status {
                201 => {}
                503 => retry.push(*i),
                _ => panic!("subscribing: {r}"),
            }
        }
        pending = retry;
    }
    let total = SUBSCRIBERS * SUBSCRIPTIONS_EACH;

    let started = Instant::now();
    let triggered = id_of(&nodes[victim].trigger(&owner, &registration).await);
    nodes[victim].kill().await;
    let received = || {
        let by_path = posts_by_path(&ep, EVENT);
        let mut distinct = HashSet::new();
        let mut posts = 0;
        for (_, path) in &subscribers {
            for post in by_path.get(&ep.path_of(path)).into_iter().flatten() {
                posts += 1;
                distinct.insert(post.header("webhook-id").unwrap_or_default());
            }
        }
        (distinct.len(), posts)
    };
    let at_kill = received().0;
    println!(
        "SIGKILL of {victim_id} {:?} after the trigger: {at_kill} of {total} delivered",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while received().0 < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} subscriptions delivered 30 s after {victim_id}, leading the \
             fan-out, was killed",
            received().0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (distinct, posts) = received();
    println!(
        "{distinct} subscriptions delivered without {victim_id} in {:?}: {} duplicates",
        started.elapsed(),
        posts - distinct
    );
    let took_over = nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| *i != victim && n.config.log().contains(RESUMED))
        .count();
    assert_eq!(
        took_over, 1,
        "one survivor resumed the fan-out ({at_kill} delivered at the kill)"
    );

    // Back, the killed node hands over nothing twice that was handed already, and the
    // trigger's record, replicated with it, reports its fan-out finished.
    nodes[victim].restart().await;
    wait_settled(
        &nodes[survivor],
        &admin,
        &ids,
        false,
        Duration::from_secs(20),
    )
    .await;
    let status = nodes[victim].trigger_status(&owner, &triggered).await;
    assert_eq!(status["id"], triggered.as_str(), "{status}");
    assert_eq!(received().0, total);
}
