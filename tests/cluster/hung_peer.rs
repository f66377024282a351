//! A hung peer (SIGSTOP) is marked down within `down_after_ms`, and up again after SIGCONT.

use super::*;

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
