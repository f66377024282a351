//! Connections to endpoints: deliveries reuse keep-alive connections, reconnect once the
//! endpoint closed one, and a fan-out bigger than the worker pool still makes every attempt.

use super::*;

/// Triggers once and waits until the one delivery succeeded; returns its attempts.
async fn deliver_once(p: &Pair, what: &str) -> Vec<Value> {
    let tid = p.trigger().await;
    attempts_of(&p.wait_single_row(&tid, "succeeded", what).await)
}

#[tokio::test]
async fn deliveries_reuse_a_connection_and_reconnect_once_the_endpoint_closed_it() {
    let p = Pair::new(FAST, "conn.event").await;
    let before = p.ep.connections_accepted();
    for i in 0..10 {
        let attempts = deliver_once(&p, &format!("delivery {i} to succeed")).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    let opened = p.ep.connections_accepted() - before;
    assert_eq!(
        opened, 1,
        "10 deliveries one after the other should share a keep-alive connection"
    );

    // The endpoint closes its idle connections (a restart, an idle timeout): the next
    // delivery notices before sending and goes out on a new connection, first time.
    p.ep.close_connections().await;
    let attempts = deliver_once(&p, "the delivery after the close to succeed").await;
    assert_eq!(
        attempts.len(),
        1,
        "no attempt lost to the closed connection: {attempts:?}"
    );
    assert_attempt(&attempts[0], Some(200), false);
    assert!(p.ep.connections_accepted() > before + opened);
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 11);
    assert_eq!(posts[10].header("host"), Some(p.ep.addr.to_string()));
    assert_eq!(posts[10].path, "/subscriber");
}

#[tokio::test]
async fn deliveries_to_many_endpoints_reuse_their_connections_from_trigger_to_trigger() {
    let node = TestNode::spawn_with(FAST).await;
    let owner_ep = EndpointServer::start().await;
    let owner = node
        .create_account("owner", &owner_ep.endpoint_url("owner"))
        .await;
    let reg = id_of(&node.register(&owner, "many.event").await);
    // More endpoints (each its own server: its own host and port) than a worker would
    // keep connections to, were they kept per worker.
    let mut eps = Vec::new();
    for i in 0..6 {
        let ep = EndpointServer::start().await;
        let sub = node
            .create_account(&format!("sub{i}"), &ep.endpoint_url("sub"))
            .await;
        node.subscribe(&sub, &reg).await;
        eps.push(ep);
    }
    let before: Vec<usize> = eps.iter().map(|e| e.connections_accepted()).collect();
    for _ in 0..5 {
        let tid = id_of(&node.trigger(&owner, &reg).await);
        node.wait_trigger_counts(
            &owner,
            &tid,
            &delivery_counts(&[("succeeded", 6)]),
            DELIVERY_DEADLINE,
        )
        .await;
    }
    let opened: Vec<usize> = eps
        .iter()
        .zip(&before)
        .map(|(ep, b)| ep.connections_accepted() - b)
        .collect();
    for ep in &eps {
        assert_eq!(ep.posts_to(&ep.endpoint_url("sub")).len(), 5);
    }
    assert!(
        opened.iter().all(|n| *n == 1),
        "each endpoint's 5 deliveries, one trigger after another, should share one connection; opened: {opened:?}"
    );
}

#[tokio::test]
async fn an_endpoint_answering_connection_close_gets_every_delivery_first_time() {
    let p =
        Pair::with_subscriber_at(FAST, "close.event", |ep| ep.conn_close_url("subscriber")).await;
    let before = p.ep.connections_accepted();
    for i in 0..3 {
        let attempts = deliver_once(&p, &format!("delivery {i} to succeed")).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
    assert!(
        p.ep.connections_accepted() - before >= 3,
        "a connection the endpoint closed is never reused"
    );
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 3);
    assert_signed_delivery(&posts[2], &p.sub.secret_key, "close.event");
}

#[tokio::test]
async fn two_workers_make_every_attempt_of_fan_outs_bigger_than_themselves() {
    // Workers take attempts from a shared queue until it is empty: two of them serve two
    // triggers of ten subscribers each, one of which fails and is retried meanwhile.
    let node = TestNode::spawn_with(&FAST.replace("max_in_flight = 64", "max_in_flight = 2")).await;
    let ep = EndpointServer::start().await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let reg = id_of(&node.register(&owner, "queue.event").await);
    let mut subs = Vec::new();
    for i in 0..10 {
        let sub = node
            .create_account(&format!("sub{i}"), &ep.endpoint_url(&format!("sub{i}")))
            .await;
        node.subscribe(&sub, &reg).await;
        subs.push(sub);
    }
    ep.set_post_status(&subs[0].endpoint, 500);
    let triggers = [
        id_of(&node.trigger(&owner, &reg).await),
        id_of(&node.trigger(&owner, &reg).await),
    ];
    for tid in &triggers {
        node.wait_trigger_counts(
            &owner,
            tid,
            &delivery_counts(&[("succeeded", 9), ("failed", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;
    }
    assert_eq!(
        ep.posts_to(&subs[0].endpoint).len(),
        8,
        "4 attempts per trigger"
    );
    for sub in &subs[1..] {
        let posts = ep.posts_to(&sub.endpoint);
        assert_eq!(
            posts.len(),
            2,
            "one delivery per trigger to {}",
            sub.endpoint
        );
        assert_signed_delivery(&posts[1], &sub.secret_key, "queue.event");
    }
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "webhookd_delivery_in_flight"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(18.0),
        "{metrics}"
    );
}
