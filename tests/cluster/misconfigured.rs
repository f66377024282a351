//! A node with another cookie, another member list or another replication factor is
//! refused, and the logs of both sides say why.

use super::*;

const COOKIE_REFUSAL: &str = "cluster peer refused: the session closed before authenticating \
                              (is cluster.cookie the same on both nodes?)";
const LAYOUT_REFUSAL: &str = "cluster configuration differs: ";

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

/// Replaces the last node with a fresh one started with `opts`.
async fn relaunch(spec: &ClusterSpec, nodes: &mut [TestNode], opts: NodeOptions) {
    let last = nodes.len() - 1;
    nodes[last].kill().await;
    nodes[last] = spec
        .launch(last, &opts)
        .await
        .unwrap_or_else(|e| panic!("misconfigured node did not start: {e}"));
}

/// True when `node` shows each of `peers` as refused with a reason containing `expected`;
/// asserts that it shows none of them up.
async fn all_refused(node: &TestNode, peers: &[String], expected: &str) -> bool {
    let mut refused = 0;
    for peer in peers {
        let (state, reason) = peer_state_of(node, peer).await;
        assert_ne!(state, "up", "{} took {peer} up", node.base_url);
        let reason = reason.as_str().unwrap_or_default();
        refused += usize::from(
            state == "refused" && reason.contains(LAYOUT_REFUSAL) && reason.contains(expected),
        );
    }
    refused == peers.len()
}

/// Waits until the good nodes (all but the last) show the last one as refused, the last
/// one shows its peers `bad_peers` as refused, and both sides' logs and reasons say why:
/// each good node's with `why.0`, the last node's with `why.1`. Every node logs `peer
/// refused` for the peers it pings; the last node, and the good nodes it pings, log
/// `refusing peer` too. Asserts on every look that no node takes the other side up, and
/// that the good nodes stay up with each other.
async fn refused_everywhere(
    nodes: &[TestNode],
    ids: &[String],
    bad_peers: &[usize],
    why: (&str, &str),
    at_least: Duration,
) {
    let (bad, good) = nodes.split_last().expect("nodes");
    let bad_id = &ids[good.len()];
    // Both sides of a pair log it, each with the values as it sees them: the pinging node
    // ("peer refused") and the pinged one ("refusing peer").
    let logged = |node: &TestNode, expected: &str, pinged: bool| {
        let log = node.config.log();
        let events: &[&str] = if pinged {
            &["peer refused", "refusing peer"]
        } else {
            &["peer refused"]
        };
        events.iter().all(|event| {
            log.lines()
                .any(|l| l.contains(event) && l.contains(expected))
        })
    };
    let started = Instant::now();
    loop {
        let mut done = true;
        for (i, node) in good.iter().enumerate() {
            done &= all_refused(node, std::slice::from_ref(bad_id), why.0).await
                && logged(node, why.0, bad_peers.contains(&i));
        }
        let peers: Vec<String> = bad_peers.iter().map(|p| ids[*p].clone()).collect();
        done &= all_refused(bad, &peers, why.1).await && logged(bad, why.1, true);
        if done && started.elapsed() >= at_least {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the misconfigured {bad_id} was not refused with {why:?} in time; logs:\n{}",
            nodes
                .iter()
                .map(|n| n.config.log())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, observer) in good.iter().enumerate() {
        for (j, peer) in ids[..good.len()].iter().enumerate() {
            if i != j {
                assert_eq!(peer_state_of(observer, peer).await.0, "up");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_another_cookie_member_list_or_replication_factor_is_refused_and_says_why() {
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
    relaunch(
        &spec,
        &mut nodes,
        NodeOptions {
            members: Some(vec![0, 2]),
            ..NodeOptions::default()
        },
    )
    .await;
    refused_everywhere(
        &nodes,
        &spec.ids,
        &[0],
        ("cluster.members digest ", "cluster.members digest "),
        heartbeats,
    )
    .await;

    // node3 again, with every member but another replication factor: it would place the
    // shard groups elsewhere.
    relaunch(
        &spec,
        &mut nodes,
        NodeOptions {
            cluster_toml: Some("replication_factor = 3".into()),
            ..NodeOptions::default()
        },
    )
    .await;
    refused_everywhere(
        &nodes,
        &spec.ids,
        &[0, 1],
        (
            "peer has cluster.replication_factor 3, this node 1",
            "peer has cluster.replication_factor 1, this node 3",
        ),
        heartbeats,
    )
    .await;
    println!("misconfigured nodes refused: {:?}", started.elapsed());
}
