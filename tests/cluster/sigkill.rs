//! SIGKILL of a node during a 3,000-subscription fan-out: its shards answer 503 while it is
//! down, the rest works, and after its restart every subscription has been served.

use super::*;

const BULK_ACCOUNTS_PER_NODE: usize = 10;
const BULK_SUBSCRIPTIONS_PER_ACCOUNT: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_3000_subscription_fanout_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut c = TestCluster::start(3).await;
    let ep = EndpointServer::start().await;
    let seed = test_seed("sigkill_during_a_3000_subscription_fanout_loses_nothing");
    let mut rng = SeededRng::new(seed);
    // A owns the registration (and the admin); C is killed; B is the third node.
    let a = c.admin_index;
    let victim = c.other_than(&[a]);
    let b = c.other_than(&[a, victim]);

    let owner = account_on(&c, b, &c.username_on(a, "bulkowner"), &ep, "owner").await;
    let reg = register(c.node(b), &owner, "bulk.event").await;
    let late_reg = register(c.node(victim), &owner, "late.event").await;
    assert_eq!(c.owner_of(&reg), a);

    // 30 subscribers, 10 per node, each with its own endpoint path.
    let mut subscribers: Vec<(usize, Account, String)> = Vec::new();
    let mut creates = Vec::new();
    let mut planned = Vec::new();
    for node in 0..c.len() {
        for j in 0..BULK_ACCOUNTS_PER_NODE {
            let name = c.username_on(node, &format!("bulk{node}s{j}x"));
            let path = format!("bulk/{name}");
            creates.push(
                c.node(rng.below(c.len()))
                    .post("/v1/account")
                    .json(&json!({"username": name, "endpoint": ep.endpoint_url(&path)})),
            );
            planned.push((node, path));
        }
    }
    for (resp, (node, path)) in send_all(creates, 16).await.into_iter().zip(planned) {
        let acct = Account::from_record(resp.expect(201).json().clone());
        assert_eq!(c.owner_of(&acct.id), node);
        subscribers.push((node, acct, path));
    }
    // Sent to the registration's node: one forwarding hop (auth) at most, as the setup is
    // not under test here.
    let who: Vec<(usize, &Account)> = subscribers.iter().map(|(_, acct, _)| (a, acct)).collect();
    let total = subscribe_many(&c, &reg, &who, BULK_SUBSCRIPTIONS_PER_ACCOUNT).await;

    // The late registration: two subscribers on C, one on A, one on B. It is triggered while
    // C is down, so C's part waits in A's handoff queue.
    let late_subscribers: Vec<&(usize, Account, String)> = [victim, victim, a, b]
        .iter()
        .enumerate()
        .map(|(k, node)| {
            subscribers
                .iter()
                .filter(|s| s.0 == *node)
                .nth(k)
                .expect("subscriber")
        })
        .collect();
    for (_, acct, _) in &late_subscribers {
        c.node(a).subscribe(acct, &late_reg).await;
    }

    // C's subscribers answer slowly, so C is busy with its part when it is killed.
    for (node, _, path) in &subscribers {
        if *node == victim {
            ep.hold_posts(path, Duration::from_millis(300));
        }
    }
    let victim_paths: HashSet<String> = subscribers
        .iter()
        .filter(|s| s.0 == victim)
        .map(|s| ep.path_of(&s.2))
        .collect();
    let victim_posts = || {
        ep.posts()
            .iter()
            .filter(|p| victim_paths.contains(&p.path))
            .count()
    };

    let fanout = Instant::now();
    let triggered = c.node(b).trigger(&owner, &reg).await;
    let tid = id_of(&triggered);
    eventually(
        "C's first deliveries to arrive",
        Duration::from_secs(60),
        || async { (victim_posts() >= 20).then_some(()) },
    )
    .await;
    c.kill(victim).await;
    let killed_at = Instant::now();
    let at_kill = posts_by_path(&ep, "bulk.event");
    let received_at_kill: usize = at_kill.values().map(Vec::len).sum();
    println!(
        "SIGKILL {} {:?} after the trigger: {received_at_kill} deliveries received, {} of them \
         to its subscribers",
        c.id(victim),
        fanout.elapsed(),
        victim_posts()
    );
    assert!(
        received_at_kill < total,
        "the fan-out had already finished when C was killed"
    );

    // While C is down: A and B see it down, and its shards answer 503 at once.
    for observer in [a, b] {
        c.wait_peer_state(observer, victim, "down", Duration::from_secs(10))
            .await;
        let (status, body) = c.ready(observer).await;
        assert_eq!(status, 503, "/ready with a member down: {body}");
    }
    let on = |node: usize| {
        subscribers
            .iter()
            .find(|s| s.0 == node)
            .map(|s| s.1.clone())
            .expect("subscriber")
    };
    let (on_victim, on_a, on_b) = (on(victim), on(a), on(b));
    let assert_victim_unavailable = |via: usize| {
        let node = c.node(via);
        let (on_victim, ep) = (&on_victim, &ep);
        let newcomer = c.username_on(victim, "newcomer");
        async move {
            let r = node
                .get(&format!("/v1/account/{}", on_victim.id))
                .auth(on_victim)
                .send_unchecked()
                .await;
            assert_unavailable(&r);
            let r = node
                .post("/v1/account")
                .json(&json!({"username": newcomer, "endpoint": ep.endpoint_url("x")}))
                .send_unchecked()
                .await;
            assert_unavailable(&r);
        }
    };
    for via in [a, b] {
        assert_victim_unavailable(via).await;
    }

    // The rest keeps working: A's and B's subscribers all get their deliveries, ...
    let live_paths: Vec<String> = subscribers
        .iter()
        .filter(|s| s.0 != victim)
        .map(|s| ep.path_of(&s.2))
        .collect();
    eventually(
        "every delivery of A's and B's subscribers while C is down",
        Duration::from_secs(60),
        || async {
            let got = posts_by_path(&ep, "bulk.event");
            live_paths
                .iter()
                .all(|p| {
                    got.get(p).is_some_and(|v| {
                        v.iter()
                            .filter_map(|p| p.header("webhook-id"))
                            .collect::<HashSet<_>>()
                            .len()
                            == BULK_SUBSCRIPTIONS_PER_ACCOUNT
                    })
                })
                .then_some(())
        },
    )
    .await;
    // ... and, once A and B see each other up again (a node starved of CPU by the fan-out
    // may miss heartbeats), calls for their shards succeed from both.
    for (observer, peer) in [(a, b), (b, a)] {
        c.wait_peer_state(observer, peer, "up", Duration::from_secs(10))
            .await;
    }
    for via in [a, b] {
        let node = c.node(via);
        for other in [&on_a, &on_b] {
            let me = node.read_account(other).await;
            assert_eq!(me["id"], other.id.as_str());
        }
        node.post(&format!("/v1/webhook/subscription/{late_reg}"))
            .auth(&on_b)
            .send()
            .await
            .expect(201);
    }
    // A trigger while C is down: A's and B's subscribers are served now, C's wait in A's
    // handoff queue.
    let late = c.node(b).trigger(&owner, &late_reg).await;
    let late_tid = id_of(&late);
    let late_paths_up: Vec<String> = late_subscribers
        .iter()
        .filter(|s| s.0 != victim)
        .map(|s| ep.path_of(&s.2))
        .chain([ep.path_of(&subscribers.iter().find(|s| s.0 == b).expect("b").2)])
        .collect();
    eventually(
        "the late trigger's deliveries on the live nodes",
        Duration::from_secs(20),
        || async {
            let got = posts_by_path(&ep, "late.event");
            late_paths_up
                .iter()
                .all(|p| got.get(p).is_some_and(|v| !v.is_empty()))
                .then_some(())
        },
    )
    .await;
    for via in [a, b] {
        assert_victim_unavailable(via).await;
    }

    // C comes back: everything it owed is delivered.
    c.restart(victim).await;
    c.wait_all_ready(Duration::from_secs(20)).await;
    println!(
        "{} restarted, the cluster ready again {:?} after the SIGKILL",
        c.id(victim),
        killed_at.elapsed()
    );
    let distinct = || -> usize {
        posts_by_path(&ep, "bulk.event")
            .values()
            .flatten()
            .filter_map(|p| p.header("webhook-id"))
            .collect::<HashSet<_>>()
            .len()
    };
    let last = Mutex::new(0);
    let all_served = eventually_quiet(Duration::from_secs(90), || async {
        let n = distinct();
        *last.lock().unwrap() = n;
        (n >= total).then_some(())
    })
    .await;
    assert!(
        all_served.is_some(),
        "only {} of {total} subscriptions were served (distinct webhook-ids)",
        last.lock().unwrap()
    );
    c.node(a)
        .wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", total as u64)]),
            Duration::from_secs(30),
        )
        .await;
    c.node(victim)
        .wait_trigger_counts(
            &owner,
            &late_tid,
            &delivery_counts(&[("succeeded", late_subscribers.len() as u64 + 2)]),
            Duration::from_secs(30),
        )
        .await;

    // Per subscriber: 100 distinct webhook-ids, each POST signed with its secret.
    let by_path = posts_by_path(&ep, "bulk.event");
    let mut posts_total = 0;
    let mut twice: HashMap<String, usize> = HashMap::new();
    for (node, acct, path) in &subscribers {
        let posts = by_path.get(&ep.path_of(path)).cloned().unwrap_or_default();
        let mut ids = HashSet::new();
        for post in &posts {
            let id = assert_signed_delivery(post, &acct.secret_key, "bulk.event");
            if !ids.insert(id.clone()) {
                *twice.entry(id).or_default() += 1;
            }
        }
        assert_eq!(
            ids.len(),
            BULK_SUBSCRIPTIONS_PER_ACCOUNT,
            "{} (on {}) was served {} distinct deliveries",
            acct.username,
            c.id(*node),
            ids.len()
        );
        posts_total += posts.len();
    }
    assert_eq!(
        by_path.values().map(Vec::len).sum::<usize>(),
        posts_total,
        "bulk deliveries to unexpected paths"
    );
    let late_by_path = posts_by_path(&ep, "late.event");
    for (_, acct, path) in &late_subscribers {
        let posts = late_by_path
            .get(&ep.path_of(path))
            .cloned()
            .unwrap_or_default();
        assert!(!posts.is_empty(), "{} got no late delivery", acct.username);
        for post in &posts {
            assert_signed_delivery(post, &acct.secret_key, "late.event");
        }
    }
    println!(
        "{total} subscriptions served: {posts_total} POSTs, {} deliveries received twice or more \
         ({} extra POSTs); whole test {:?}",
        twice.len(),
        twice.values().sum::<usize>(),
        started.elapsed()
    );
}
