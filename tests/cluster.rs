//! Cluster integration tests (issue 4, "Acceptance"): real `webhookd serve` processes on
//! loopback, joined into one cluster (see `tests/common/cluster.rs`).
//!
//! 1. the §13.2 functional scenario with each request sent to a random node gives the
//!    single-node results, and every listing gives identical pages from every node;
//! 2. a registration on node A with subscribers on every node: each receives its signed
//!    delivery exactly once;
//! 3. SIGKILL of node C during a 3,000-subscription fan-out: C's shards answer 503 while it
//!    is down, the rest works, and after its restart every subscription has been served;
//! 4. a node with another cookie, or another member list, is refused and the logs say why;
//! 5. a hung node (SIGSTOP) is marked down within `down_after_ms` and up after SIGCONT.
//!
//! The tests run one at a time ([`SERIAL`]): each starts its own processes, and the timing
//! assertions must not compete with another test's fan-out for the CPU.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::cluster::*;
use crate::common::scenario::{functional_scenario, Scenario};
use crate::common::*;
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

// ---------------------------------------------------------------------------------------------
// 1. The functional scenario on random nodes; identical listings everywhere
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functional_scenario_on_random_nodes_matches_single_node() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let c = TestCluster::start(3).await;
    let ep = EndpointServer::start().await;
    let seed = test_seed("functional_scenario_on_random_nodes_matches_single_node");
    let s = Scenario::random(c.all(), &ep, seed);
    // The same assertions as tests/functional.rs, plus identical listings from every node
    // after each step (Scenario::checkpoint).
    let p = functional_scenario(&s).await;

    // The last step triggered john's registration; jane, sam and leah are subscribed. Each
    // subscriber's node delivers, signed with that subscriber's secret.
    let john_reg = id_of(
        &s.node()
            .list_all("/v1/webhook/registration", &p.john, "registrations")
            .await[0],
    );
    let triggered: Vec<Value> = s
        .node()
        .all_triggered()
        .await
        .into_iter()
        .filter(|t| t["registration_id"] == john_reg.as_str())
        .collect();
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    let tid = id_of(&triggered[0]);
    let done = delivery_counts(&[("succeeded", 3)]);
    s.node()
        .wait_trigger_counts(&p.john, &tid, &done, Duration::from_secs(20))
        .await;
    let posts: Vec<RecordedPost> = ep
        .posts_to("account/endpoint")
        .into_iter()
        .filter(|p| p.header("event").as_deref() == Some("mywebhook.event"))
        .collect();
    assert_eq!(posts.len(), 3, "one delivery per subscriber: {posts:?}");
    let mut served = HashSet::new();
    for post in &posts {
        let who = [&p.jane, &p.sam, &p.leah]
            .into_iter()
            .find(|a| {
                post.header("pywebhooks-signature")
                    == Some(expected_pywebhooks_signature(&a.secret_key, &post.body))
            })
            .unwrap_or_else(|| panic!("a delivery signed with no subscriber's secret: {post:?}"));
        assert_signed_delivery(post, &who.secret_key, "mywebhook.event");
        served.insert(who.username.clone());
    }
    assert_eq!(served.len(), 3, "each subscriber once: {served:?}");

    // The trigger's status and delivery rows are the same from every node.
    let mut status: Option<Value> = None;
    for node in c.all() {
        let st = node.trigger_status(&p.john, &tid).await;
        match &status {
            None => status = Some(st),
            Some(first) => assert_eq!(first, &st, "trigger status differs on {}", node.base_url),
        }
    }
    let deliveries = format!("/v1/webhook/triggered/{tid}/deliveries");
    assert_same_listings(
        "deliveries",
        &c.all(),
        &[
            Listing::new(&deliveries, &p.john, "deliveries"),
            Listing::new(&deliveries, &c.admin(), "deliveries"),
        ],
        &[1, 2, 100],
    )
    .await;

    // More rows, spread over every node and created in an interleaved order, paged with
    // limits that cut pages in every place.
    let mut rng = SeededRng::new(seed ^ 0x5eed);
    let mut people = Vec::new();
    for round in 0..3 {
        for i in 0..c.len() {
            let name = c.username_on(i, &format!("pager{round}n{i}x"));
            let via = rng.below(c.len());
            people.push(account_on(&c, via, &name, &ep, "pager/endpoint").await);
        }
    }
    let mut regs = Vec::new();
    for (k, who) in people.iter().enumerate() {
        let node = c.node(rng.below(c.len()));
        regs.push(register(node, who, &format!("pager.event{k}")).await);
    }
    for (k, who) in people.iter().enumerate() {
        for reg in [&regs[(k + 1) % regs.len()], &regs[(k + 4) % regs.len()]] {
            c.node(rng.below(c.len())).subscribe(who, reg).await;
        }
    }
    for (k, who) in people.iter().enumerate().take(3) {
        c.node(rng.below(c.len())).trigger(who, &regs[k]).await;
    }
    let admin = c.admin();
    let mut listings = vec![
        Listing::new("/v1/accounts", &admin, "accounts"),
        Listing::new("/v1/webhook/registrations", &admin, "registrations"),
        Listing::new("/v1/webhook/subscriptions", &admin, "subscriptions"),
        Listing::new("/v1/webhook/triggered", &people[4], "triggered_webhooks"),
    ];
    for who in people.iter().take(3) {
        listings.push(Listing::new(
            "/v1/webhook/registration",
            who,
            "registrations",
        ));
        listings.push(Listing::new(
            "/v1/webhook/subscription",
            who,
            "subscriptions",
        ));
    }
    assert_same_listings("many rows", &c.all(), &listings, &[1, 3, 7, 100]).await;
    // Global sizes: the admin + the scenario's 4 + 9; 1 + 9 registrations; 3 + 18.
    let node = c.node(rng.below(c.len()));
    assert_eq!(node.all_accounts().await.len(), 14);
    assert_eq!(node.all_registrations().await.len(), 10);
    assert_eq!(node.all_subscriptions().await.len(), 21);
    assert_eq!(node.all_triggered().await.len(), 4);
    println!("functional scenario on a cluster: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 2. Cross-node fan-out: every subscriber's delivery exactly once, signed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_on_one_node_delivers_once_to_subscribers_on_every_node() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let c = TestCluster::start(3).await;
    let ep = EndpointServer::start().await;
    let (a, b, cc) = (0, 1, 2);

    let owner = account_on(&c, b, &c.username_on(a, "owner"), &ep, "owner").await;
    let mut subscribers = Vec::new();
    for (node, names) in [
        (a, &["suba"][..]),
        (b, &["subb1", "subb2"][..]),
        (cc, &["subc1", "subc2"][..]),
    ] {
        for prefix in names {
            let name = c.username_on(node, prefix);
            let via = (node + 1) % c.len();
            let path = format!("fanout/{name}");
            let acct = account_on(&c, via, &name, &ep, &path).await;
            assert_eq!(c.owner_of(&acct.id), node);
            subscribers.push((node, acct, path));
        }
    }
    let reg = register(c.node(cc), &owner, "cross.node").await;
    assert_eq!(
        c.owner_of(&reg),
        a,
        "the registration lives on its owner's node"
    );
    for (k, (_, acct, _)) in subscribers.iter().enumerate() {
        let sub = c.node(k % c.len()).subscribe(acct, &reg).await;
        assert_eq!(
            c.owner_of(id_of(&sub).as_str()),
            a,
            "a subscription lives with its registration"
        );
    }

    let triggered = c.node(b).trigger(&owner, &reg).await;
    let tid = id_of(&triggered);
    let n = subscribers.len() as u64;
    c.node(cc)
        .wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", n)]),
            Duration::from_secs(20),
        )
        .await;

    let by_path = posts_by_path(&ep, "cross.node");
    let mut ids = HashSet::new();
    for (node, acct, path) in &subscribers {
        let posts = by_path.get(&ep.path_of(path)).cloned().unwrap_or_default();
        assert_eq!(
            posts.len(),
            1,
            "{} (on {}) must receive exactly one delivery: {posts:?}",
            acct.username,
            c.id(*node)
        );
        let id = assert_signed_delivery(&posts[0], &acct.secret_key, "cross.node");
        let body: Value = serde_json::from_slice(&posts[0].body).expect("JSON body");
        assert_eq!(body, event_data());
        assert!(ids.insert(id), "webhook-id reused across subscribers");
    }
    assert_eq!(
        by_path.values().map(Vec::len).sum::<usize>(),
        subscribers.len(),
        "deliveries to unexpected paths: {:?}",
        by_path.keys().collect::<Vec<_>>()
    );
    println!("cross-node fan-out: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL during a 3,000-subscription fan-out
// ---------------------------------------------------------------------------------------------

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
    let setup = Instant::now();
    let mut subs = Vec::new();
    for (_, acct, _) in &subscribers {
        for _ in 0..BULK_SUBSCRIPTIONS_PER_ACCOUNT {
            // Sent to the registration's node: one forwarding hop (auth) at most, as the
            // setup is not under test here.
            subs.push(
                c.node(a)
                    .post(&format!("/v1/webhook/subscription/{reg}"))
                    .auth(acct),
            );
        }
    }
    let total = subs.len();
    for r in send_all(subs, 32).await {
        r.expect(201);
    }
    println!("{total} subscriptions created in {:?}", setup.elapsed());

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

// ---------------------------------------------------------------------------------------------
// 4. A misconfigured node is refused, and the logs say why
// ---------------------------------------------------------------------------------------------

const COOKIE_REFUSAL: &str = "cluster peer refused: the session closed before authenticating \
                              (is cluster.cookie the same on both nodes?)";
const DIGEST_REFUSAL: &str = "cluster configuration differs";

/// Watches the good nodes' `/ready` for `bad` until `done()` holds (and at least `at_least`
/// has passed), asserting on every look that no good node reports it "up".
async fn never_up_until(
    good: &[&TestNode],
    bad_id: &str,
    at_least: Duration,
    deadline: Duration,
    what: &str,
    done: impl Fn() -> bool,
) {
    let started = Instant::now();
    let mut looks = 0;
    loop {
        for node in good {
            let (state, reason) = peer_state_of(node, bad_id).await;
            assert!(
                state != "up" && state != "absent",
                "{} reports the misconfigured {bad_id} as {state:?} ({reason})",
                node.base_url
            );
            looks += 1;
        }
        if started.elapsed() >= at_least && done() {
            println!("{what}: {looks} looks over {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_another_cookie_or_member_list_is_refused_and_says_why() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // node1 and node2 agree on three members; node3 has the wrong cookie.
    let wrong_cookie = NodeOptions {
        cookie: Some("not-the-cluster-cookie".into()),
        ..NodeOptions::default()
    };
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |i| {
        if i == 2 {
            wrong_cookie.clone()
        } else {
            NodeOptions::default()
        }
    })
    .await;
    let bad_id = spec.ids[2].clone();
    // The good pair connects.
    for (observer, peer) in [(0, 1), (1, 0)] {
        let node = &nodes[observer];
        eventually(
            &format!("{} to see {} up", spec.ids[observer], spec.ids[peer]),
            READY_DEADLINE,
            || async { (peer_state_of(node, &spec.ids[peer]).await.0 == "up").then_some(()) },
        )
        .await;
    }
    let heartbeats = Duration::from_millis(10 * HEARTBEAT_MS);
    {
        let good = [&nodes[0], &nodes[1]];
        let logged = || {
            good.iter().all(|n| n.config.log().contains(COOKIE_REFUSAL))
                && nodes[2].config.log().contains(COOKIE_REFUSAL)
        };
        never_up_until(
            &good,
            &bad_id,
            heartbeats,
            Duration::from_secs(20),
            "the cookie refusal in every node's log",
            logged,
        )
        .await;
        for node in good {
            let (status, body) = ready_of(node).await;
            assert_eq!(status, 503, "{body}");
        }
        let (status, body) = ready_of(&nodes[2]).await;
        assert_eq!(status, 503, "the wrong-cookie node has no peer: {body}");
        for peer in body["peers"].as_array().expect("peers") {
            assert_ne!(peer["state"], "up", "{body}");
        }
    }

    // node3 again, with the right cookie but a member list without node2.
    nodes[2].kill().await;
    let bad = spec
        .launch(
            2,
            &NodeOptions {
                members: Some(vec![0, 2]),
                ..NodeOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("misconfigured node did not start: {e}"));
    nodes[2] = bad;
    {
        let good = [&nodes[0], &nodes[1]];
        let refused_with_reason = Mutex::new(Vec::new());
        let check = || {
            let logs_ok = good.iter().all(|n| {
                let log = n.config.log();
                log.contains("peer refused") && log.contains(DIGEST_REFUSAL)
            }) && {
                let log = nodes[2].config.log();
                log.contains("peer refused") && log.contains(DIGEST_REFUSAL)
            };
            logs_ok && refused_with_reason.lock().unwrap().len() == good.len()
        };
        let started_refusal = Instant::now();
        loop {
            let mut refused = Vec::new();
            for node in good {
                let (state, reason) = peer_state_of(node, &bad_id).await;
                assert_ne!(
                    state, "up",
                    "{} took the misconfigured node up",
                    node.base_url
                );
                if state == "refused" {
                    let why = reason.as_str().unwrap_or_default().to_string();
                    assert!(
                        why.contains(DIGEST_REFUSAL) && why.contains("cluster.members"),
                        "the refusal reason does not say why: {why:?}"
                    );
                    refused.push(node.base_url.clone());
                }
            }
            *refused_with_reason.lock().unwrap() = refused;
            if check() && started_refusal.elapsed() >= heartbeats {
                break;
            }
            assert!(
                started_refusal.elapsed() < Duration::from_secs(20),
                "the member-list mismatch was not refused in time: states {:?}; logs:\n{}\n{}\n{}",
                refused_with_reason.lock().unwrap(),
                nodes[0].config.log(),
                nodes[1].config.log(),
                nodes[2].config.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The misconfigured node refuses node1 in turn.
        let (state, reason) = peer_state_of(&nodes[2], &spec.ids[0]).await;
        assert_eq!(state, "refused", "{reason}");
        // The good pair still works together.
        for (observer, peer) in [(0, 1), (1, 0)] {
            assert_eq!(
                peer_state_of(&nodes[observer], &spec.ids[peer]).await.0,
                "up"
            );
        }
    }
    println!("misconfigured nodes refused: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 5. A hung peer (SIGSTOP) is marked down in time, and up again after SIGCONT
// ---------------------------------------------------------------------------------------------

/// Allowed lateness of down detection beyond `down_after_ms` (one heartbeat, the ping's
/// round trip and the test's polling, on a loaded machine).
const DOWN_DETECTION_MARGIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_peer_is_marked_down_in_time_and_up_after_sigcont() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let c = TestCluster::start(3).await;
    let ep = EndpointServer::start().await;
    let victim = c.other_than(&[c.admin_index]);
    let observers: Vec<usize> = (0..c.len()).filter(|i| *i != victim).collect();
    let frozen = account_on(&c, observers[0], &c.username_on(victim, "frozen"), &ep, "f").await;
    let alive = account_on(&c, victim, &c.username_on(observers[0], "alive"), &ep, "a").await;

    c.signal(victim, libc::SIGSTOP);
    let stopped = Instant::now();
    let limit = Duration::from_millis(DOWN_AFTER_MS) + DOWN_DETECTION_MARGIN;
    let mut seen_down: Vec<Option<Duration>> = vec![None; observers.len()];
    while seen_down.iter().any(Option::is_none) {
        for (k, o) in observers.iter().enumerate() {
            if seen_down[k].is_none() {
                let state = c.peer_state(*o, victim).await;
                if state == "down" {
                    seen_down[k] = Some(stopped.elapsed());
                } else {
                    assert_eq!(state, "up", "state of the stopped node on {}", c.id(*o));
                }
            }
        }
        assert!(
            stopped.elapsed() < limit + Duration::from_secs(5),
            "the stopped node was not marked down: {seen_down:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "SIGSTOP {}: marked down after {seen_down:?} (down_after_ms = {DOWN_AFTER_MS})",
        c.id(victim)
    );
    for (k, o) in observers.iter().enumerate() {
        let after = seen_down[k].expect("seen");
        assert!(
            after <= limit,
            "{} marked the hung peer down after {after:?}, beyond down_after_ms {DOWN_AFTER_MS} \
             + {DOWN_DETECTION_MARGIN:?}",
            c.id(*o)
        );
    }

    // Meanwhile: its shards answer 503 (at once, not after an RPC timeout), the rest works.
    for o in &observers {
        let node = c.node(*o);
        let asked = Instant::now();
        let r = node
            .get(&format!("/v1/account/{}", frozen.id))
            .auth(&frozen)
            .send_unchecked()
            .await;
        assert_unavailable(&r);
        assert!(
            asked.elapsed() < Duration::from_millis(RPC_TIMEOUT_MS),
            "a call for a down node's shard waited {:?}",
            asked.elapsed()
        );
        assert_eq!(node.read_account(&alive).await["id"], alive.id.as_str());
        let (status, body) = c.ready(*o).await;
        assert_eq!(status, 503, "{body}");
    }

    c.signal(victim, libc::SIGCONT);
    let resumed = Instant::now();
    for o in &observers {
        c.wait_peer_state(*o, victim, "up", Duration::from_secs(10))
            .await;
    }
    c.wait_all_ready(Duration::from_secs(10)).await;
    println!("SIGCONT: up again after {:?}", resumed.elapsed());
    for o in &observers {
        assert_eq!(
            c.node(*o).read_account(&frozen).await["id"],
            frozen.id.as_str()
        );
    }
    println!("hung peer test: {:?}", started.elapsed());
}
