//! A node with another cookie, or another member list, is refused, and the logs say why.

use super::*;

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
