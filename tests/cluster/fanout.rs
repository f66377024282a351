//! Cross-node fan-out: a registration on one node with subscribers on every node; each
//! receives its signed delivery exactly once.

use super::*;

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
