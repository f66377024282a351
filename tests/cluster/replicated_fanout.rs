//! Fan-out with replicated groups (`replication_factor = 3`, three real node processes):
//! a registration's subscribers spread over every group each receive one signed delivery,
//! whichever node the calls go through. With a node SIGKILLed, a new trigger still reaches
//! every subscriber: its registration's group and the subscribers' groups are led by the
//! survivors, an earlier trigger is never reported missing, and repeating it with its
//! `Idempotency-Key` answers it again instead of triggering twice.

use super::replicated::{admin_creds, replicated, wait_settled};
use super::*;

/// Subscribers of the test registration: enough to fall in every group.
const SUBSCRIBERS: usize = 12;
/// The first trigger's `Idempotency-Key`.
const KEY: &str = "replicated-fanout-first";

/// Polls until every subscriber's path received `per_path` deliveries of `event`.
async fn wait_delivered(ep: &EndpointServer, paths: &[String], event: &str, per_path: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let by_path = posts_by_path(ep, event);
        let done = paths
            .iter()
            .all(|p| by_path.get(&ep.path_of(p)).map_or(0, Vec::len) >= per_path);
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every subscriber received {per_path} deliveries of {event}: {:?}",
            by_path
                .iter()
                .map(|(p, v)| (p.clone(), v.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_fan_out_reaches_every_subscriber_once_and_survives_a_node() {
    let _serial = SERIAL.lock().await;
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |_| replicated()).await;
    let ids: Vec<&str> = spec.ids.iter().map(String::as_str).collect();
    let admin = admin_creds(&nodes).await;
    wait_settled(&nodes[0], &admin, &ids, true, Duration::from_secs(30)).await;

    let ep = EndpointServer::start().await;
    let owner = nodes[1]
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let registration = id_of(&nodes[2].register(&owner, "replicated.fanout").await);
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let path = format!("sub{i}");
        let a = nodes[i % 3]
            .create_account(&format!("sub{i}"), &ep.endpoint_url(&path))
            .await;
        nodes[(i + 1) % 3].subscribe(&a, &registration).await;
        subscribers.push((a, path));
    }
    let paths: Vec<String> = subscribers.iter().map(|(_, p)| p.clone()).collect();

    let first = nodes[0]
        .trigger_with(&owner, &registration, None, Some(KEY))
        .await;
    assert_eq!(first.status, 201, "{first}");
    let triggered = id_of(first.json());
    nodes[1]
        .wait_trigger_counts(
            &owner,
            &triggered,
            &delivery_counts(&[("succeeded", SUBSCRIBERS as u64)]),
            Duration::from_secs(20),
        )
        .await;
    wait_delivered(&ep, &paths, "replicated.fanout", 1).await;
    let by_path = posts_by_path(&ep, "replicated.fanout");
    let mut webhook_ids = HashSet::new();
    for (a, path) in &subscribers {
        let posts = by_path.get(&ep.path_of(path)).cloned().unwrap_or_default();
        assert_eq!(
            posts.len(),
            1,
            "{} must receive one delivery: {posts:?}",
            a.username
        );
        let id = assert_signed_delivery(&posts[0], &a.secret_key, "replicated.fanout");
        assert!(
            webhook_ids.insert(id),
            "webhook-id reused across subscribers"
        );
    }

    // Each node down in turn: a trigger through a survivor reaches every subscriber.
    for victim in 0..3 {
        nodes[victim].kill().await;
        let via = &nodes[(victim + 1) % 3];
        // Its Idempotency-Key is remembered by every voter: repeated through a survivor,
        // whoever leads now, it answers the first trigger and delivers nothing.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = via
                .trigger_with(&owner, &registration, None, Some(KEY))
                .await;
            if r.status == 200 {
                assert_eq!(
                    id_of(r.json()),
                    triggered,
                    "a replay answers the first trigger"
                );
                break;
            }
            assert!(
                r.status == 503 && Instant::now() < deadline,
                "repeating the first trigger without node {victim}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first trigger is a record of its registration's group, whoever leads it now;
        // its status and deliveries sum up every node's deliveries, so with a node down
        // they are unavailable, never "not found".
        for path in [
            format!("/v1/webhook/triggered/{triggered}"),
            format!("/v1/webhook/triggered/{triggered}/deliveries?start=0&limit=100"),
        ] {
            let r = via.get(&path).auth(&owner).send_unchecked().await;
            assert!(
                r.status == 503 || r.status == 200,
                "{path} without node {victim}: {r}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let again = loop {
            let r = via
                .post(&format!("/v1/webhook/triggered/{registration}"))
                .auth(&owner)
                .send_unchecked()
                .await;
            if r.status == 201 {
                break id_of(r.json());
            }
            assert!(
                Instant::now() < deadline,
                "no trigger without node {victim}: {r}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        wait_delivered(&ep, &paths, "replicated.fanout", victim + 2).await;
        nodes[victim].restart().await;
        wait_settled(
            &nodes[(victim + 1) % 3],
            &admin,
            &ids,
            false,
            Duration::from_secs(20),
        )
        .await;
        // Delivery is at least once: a delivery made but not yet recorded when its leader
        // dies is made again. Wait until every outcome is committed before the next kill,
        // so that any duplicate counted below is one the cluster should not have made.
        nodes[(victim + 1) % 3]
            .wait_trigger_counts(
                &owner,
                &again,
                &delivery_counts(&[("succeeded", SUBSCRIBERS as u64)]),
                Duration::from_secs(20),
            )
            .await;
    }
    let by_path = posts_by_path(&ep, "replicated.fanout");
    let mut duplicates = Vec::new();
    for path in &paths {
        let posts = by_path.get(&ep.path_of(path)).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        for post in &posts {
            let id = post.header("webhook-id").unwrap_or_default();
            if !seen.insert(id.clone()) {
                duplicates.push(format!("{path}: {id}"));
            }
        }
        // Four triggers, each one delivery with its own webhook-id.
        assert_eq!(
            seen.len(),
            4,
            "{path} must receive four deliveries: {posts:?}"
        );
    }
    println!(
        "four triggers, {SUBSCRIBERS} subscribers: {} duplicate deliveries",
        duplicates.len()
    );
    assert!(
        duplicates.is_empty(),
        "a delivery was made twice: {duplicates:?}"
    );
}
