//! The functional scenario with each request sent to a random node gives the single-node
//! results, and every listing gives identical pages from every node.

use super::*;

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
