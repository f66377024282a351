//! Fan-out, bytes and signatures: every subscriber gets one signed POST of the registration's
//! `event_data` (duplicates included), the owner none, and a redirect is followed.

use super::*;

#[tokio::test]
async fn three_subscribers_each_get_one_signed_post_and_the_owner_none() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let mut subs = Vec::new();
    for name in ["alice", "bob", "carol"] {
        subs.push(
            node.create_account(name, &ep.endpoint_url(&format!("sub/{name}")))
                .await,
        );
    }
    // Distinct secrets, so a signature made with the wrong subscriber's key cannot pass.
    let secrets: HashSet<&str> = subs.iter().map(|s| s.secret_key.as_str()).collect();
    assert_eq!(secrets.len(), 3);

    let reg = id_of(&node.register_raw(&owner, "order.created", EVENT_DATA).await);
    let mut subscription_of = Vec::new();
    for s in &subs {
        subscription_of.push(id_of(&node.subscribe(s, &reg).await));
    }
    let triggered = node.trigger(&owner, &reg).await;
    let tid = id_of(&triggered);

    let status = node
        .wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", 3)]),
            DELIVERY_DEADLINE,
        )
        .await;
    assert_eq!(status["id"], tid.as_str(), "{status}");
    assert_eq!(status["registration_id"], reg.as_str(), "{status}");
    assert_eq!(status["event"], "order.created", "{status}");
    assert_eq!(status["epoch"], triggered["epoch"], "{status}");
    // The admin may read it too.
    let by_admin = node.trigger_status(&node.admin(), &tid).await;
    assert_eq!(by_admin["deliveries"], status["deliveries"]);

    let mut webhook_ids = HashSet::new();
    let mut id_by_account = std::collections::HashMap::new();
    for s in &subs {
        let posts = ep.wait_for_posts(&s.endpoint, 1, DELIVERY_DEADLINE).await;
        assert_eq!(posts.len(), 1, "{} got {} POSTs", s.username, posts.len());
        let post = &posts[0];
        assert_eq!(
            std::str::from_utf8(&post.body).expect("ASCII body"),
            EVENT_DATA_PYTHON,
            "body sent to {} is not Python's json.dumps of the registered event_data",
            s.username
        );
        let id = assert_signed_delivery(post, &s.secret_key, "order.created");
        // Sanity: the signature is the subscriber's own, not another's.
        for other in subs.iter().filter(|o| o.id != s.id) {
            assert_ne!(
                post.header("pywebhooks-signature").unwrap(),
                expected_pywebhooks_signature(&other.secret_key, &post.body)
            );
        }
        webhook_ids.insert(id.clone());
        id_by_account.insert(s.id.clone(), id);
    }
    assert_eq!(webhook_ids.len(), 3, "webhook-id must differ per delivery");
    assert!(
        ep.posts_to(&owner.endpoint).is_empty(),
        "the owner is not subscribed but got a delivery: {:?}",
        ep.posts_to(&owner.endpoint)
    );
    assert_eq!(ep.posts().len(), 3, "exactly three POSTs in all");

    // The deliveries listing: one row per subscription, in subscription order.
    let rows = node.deliveries(&owner, &tid).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["subscription_id"], subscription_of[i].as_str(), "{row}");
        assert_eq!(row["account_id"], subs[i].id.as_str(), "{row}");
        assert_eq!(row["state"], "succeeded", "{row}");
        assert_eq!(row["next_attempt"], Value::Null, "{row}");
        assert_eq!(
            str_of(row, "id"),
            id_by_account[&subs[i].id],
            "row id = webhook-id"
        );
        let attempts = attempts_of(row);
        assert_eq!(attempts.len(), 1, "{row}");
        assert_attempt(&attempts[0], Some(200), false);
    }

    // Metrics: three deliveries succeeded on this fresh node.
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_duplicate_subscription_gets_its_own_delivery() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let dana = node.create_account("dana", &ep.endpoint_url("dana")).await;
    let reg = id_of(&node.register(&owner, "dup.event").await);
    let first = id_of(&node.subscribe(&dana, &reg).await);
    let second = id_of(&node.subscribe(&dana, &reg).await);
    assert_ne!(first, second);
    let tid = id_of(&node.trigger(&owner, &reg).await);

    node.wait_trigger_counts(
        &owner,
        &tid,
        &delivery_counts(&[("succeeded", 2)]),
        DELIVERY_DEADLINE,
    )
    .await;
    let posts = ep
        .wait_for_posts(&dana.endpoint, 2, DELIVERY_DEADLINE)
        .await;
    assert_eq!(posts.len(), 2, "one POST per subscription: {posts:?}");
    let mut ids = HashSet::new();
    for post in &posts {
        assert_eq!(post.body, DEFAULT_EVENT_DATA_PYTHON.as_bytes());
        ids.insert(assert_signed_delivery(post, &dana.secret_key, "dup.event"));
    }
    assert_eq!(ids.len(), 2, "each subscription has its own webhook-id");

    let rows = node.deliveries(&owner, &tid).await;
    let row_subs: HashSet<&str> = rows.iter().map(|r| str_of(r, "subscription_id")).collect();
    assert_eq!(row_subs, HashSet::from([first.as_str(), second.as_str()]));
    let row_ids: HashSet<String> = rows.iter().map(|r| str_of(r, "id").to_string()).collect();
    assert_eq!(row_ids, ids);
    assert!(rows.iter().all(|r| r["account_id"] == dana.id.as_str()));
    assert!(ep.posts_to(&owner.endpoint).is_empty());
}

#[tokio::test]
async fn a_redirecting_endpoint_gets_the_delivery_at_the_redirect_target() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn_with(FAST).await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let dana = node
        .create_account("dana", &ep.redirect_url(307, "dana-moved"))
        .await;
    let reg = id_of(&node.register(&owner, "moved.event").await);
    node.subscribe(&dana, &reg).await;
    let tid = id_of(&node.trigger(&owner, &reg).await);

    node.wait_trigger_counts(
        &owner,
        &tid,
        &delivery_counts(&[("succeeded", 1)]),
        DELIVERY_DEADLINE,
    )
    .await;
    let moved = ep
        .wait_for_posts(&ep.endpoint_url("dana-moved"), 1, DELIVERY_DEADLINE)
        .await;
    assert_eq!(moved.len(), 1, "307 keeps the POST: {moved:?}");
    assert_eq!(moved[0].body, DEFAULT_EVENT_DATA_PYTHON.as_bytes());
    assert_signed_delivery(&moved[0], &dana.secret_key, "moved.event");
    assert_eq!(node.read_account(&dana).await["failed_count"], 0);
}
