//! Liveness under load: a three-node cluster busy with a 3,000-subscription fan-out,
//! triggered several times in a row, marks no healthy peer down.
//!
//! The cluster transport (listener, gateway, heartbeats) runs on a thread and runtime of its
//! own, and any answered cluster call counts as a sign of life, so a node whose HTTP and
//! delivery runtime is saturated by its own work still answers and sends pings on time.
//! The cluster uses the test clusters' heartbeat settings ([`HEARTBEAT_MS`] /
//! [`DOWN_AFTER_MS`]: a peer silent for 1.5 s is down), stricter than the defaults
//! (500 ms / 3 s). The load: 3,000 subscription writes spread over the nodes, then
//! [`TRIGGERS`] fan-outs of the 3,000 (fan-out, hand-off and deliveries on every node, and
//! the test's endpoint server), while [`BURNERS`] `yes > /dev/null` processes compete for
//! the cores and the nodes run at nice [`NODE_NICE`], so each node gets a small share of a
//! saturated machine — a node whose runtime is always behind. The burners live only until
//! the last delivery (and die with the test). With the transport on the nodes' main
//! runtime instead (and only pings counting as signs of life), this load marks peers down
//! within seconds and requests answer 503.
//!
//! Two observers count peer state changes, from the first subscription to the last delivery:
//! each node's `/ready` is polled for its peers' states, and each node's log is searched for
//! `peer is down`. A cross-node read through every node at each poll must answer 200 (a peer
//! marked down would answer 503), and so must every trigger. All must be zero, and every
//! delivery must arrive.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

const ACCOUNTS_PER_NODE: usize = 10;
const SUBSCRIPTIONS_PER_ACCOUNT: usize = 100;
/// Triggers of the registration, sent at once: each fans out to every subscription.
const TRIGGERS: usize = 6;
/// CPU-burning processes during the fan-outs: one per core of the 2-core test machines.
const BURNERS: usize = 2;
/// The nodes' nice value during the load: the burners (and the rest of the machine) get
/// about ten times a node thread's share of a busy core.
const NODE_NICE: libc::c_int = 10;
/// Pause between two rounds of the observers' probes.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const LOG_LINE_DOWN: &str = "peer is down";

/// What the observers saw while the load ran.
#[derive(Default, Debug)]
struct Observed {
    /// Probe rounds (one `/ready` and one cross-node read per node each).
    rounds: usize,
    /// `(elapsed, observer, peer, state)` of every peer state other than `up` seen.
    not_up: Vec<(Duration, String, String, String)>,
    /// `(elapsed, via, status)` of every cross-node read that did not answer 200.
    failed_reads: Vec<(Duration, String, u16)>,
}

/// `peer is down` lines in each node's log so far.
fn down_lines(c: &TestCluster) -> Vec<usize> {
    c.nodes
        .iter()
        .map(|n| n.config.log().matches(LOG_LINE_DOWN).count())
        .collect()
}

/// CPU seconds (user + system) used so far by each node's process.
fn cpu_secs(c: &TestCluster) -> Vec<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    c.nodes
        .iter()
        .map(|n| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", n.pid()))
                .expect("read the node's /proc stat");
            // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')').expect("stat has (comm)").1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |k: usize| fields[k - 3].parse::<f64>().expect("numeric stat field");
            (field(14) + field(15)) / ticks
        })
        .collect()
}

/// Sets the nice value of every thread of process `pid` (Linux applies `setpriority` to
/// one thread; threads started later inherit their creator's value).
fn lower_priority(pid: u32, nice: libc::c_int) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the node's threads");
    for task in tasks {
        let name = task.expect("a thread entry").file_name();
        let tid: libc::id_t = name.to_string_lossy().parse().expect("a thread id");
        // SAFETY: setpriority(2) on a thread of our own child; no memory is passed.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        assert_eq!(rc, 0, "setpriority({tid}, {nice}) failed");
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Probes every node until `stop`: its peers' states in `/ready`, and a read of an account
/// owned by the next node sent through it.
async fn observe(c: &TestCluster, readers: &[Account], stop: &AtomicBool) -> Observed {
    let started = Instant::now();
    let mut seen = Observed::default();
    while !stop.load(Ordering::SeqCst) {
        for (i, node) in c.nodes.iter().enumerate() {
            let (_, body) = ready_of(node).await;
            for p in body["peers"].as_array().into_iter().flatten() {
                let state = p["state"].as_str().unwrap_or("?");
                if state != "up" {
                    seen.not_up.push((
                        started.elapsed(),
                        c.id(i).to_string(),
                        p["id"].as_str().unwrap_or("?").to_string(),
                        state.to_string(),
                    ));
                }
            }
            let other = &readers[(i + 1) % c.len()];
            let r = node
                .get(&format!("/v1/account/{}", other.id))
                .auth(other)
                .send_unchecked()
                .await;
            if r.status != 200 {
                seen.failed_reads
                    .push((started.elapsed(), c.id(i).to_string(), r.status));
            }
        }
        seen.rounds += 1;
        tokio::time::sleep(PROBE_EVERY).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_fanout_marks_no_healthy_peer_down() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let c = TestCluster::start(3).await;
    let ep = EndpointServer::start().await;
    let a = c.admin_index;
    let owner = account_on(&c, a, &c.username_on(a, "liveowner"), &ep, "owner").await;
    let reg = register(c.node(a), &owner, "live.event").await;

    // 30 subscribers, 10 per node, each subscribed 100 times: 3,000 subscriptions.
    let mut creates = Vec::new();
    for node in 0..c.len() {
        for j in 0..ACCOUNTS_PER_NODE {
            let name = c.username_on(node, &format!("live{node}s{j}x"));
            creates.push(c.node(j % c.len()).post("/v1/account").json(
                &json!({"username": name, "endpoint": ep.endpoint_url(&format!("live/{name}"))}),
            ));
        }
    }
    let subscribers: Vec<Account> = send_all(creates, 16)
        .await
        .into_iter()
        .map(|r| Account::from_record(r.expect(201).json().clone()))
        .collect();
    // One reader per node: the first subscriber it owns.
    let readers: Vec<Account> = (0..c.len())
        .map(|i| {
            subscribers
                .iter()
                .find(|s| c.owner_of(&s.id) == i)
                .cloned()
                .expect("a subscriber on every node")
        })
        .collect();

    for node in &c.nodes {
        lower_priority(node.pid(), NODE_NICE);
    }
    let down_before = down_lines(&c);
    let cpu_before = cpu_secs(&c);
    let stop = AtomicBool::new(false);
    let load = async {
        let who: Vec<(usize, &Account)> = subscribers
            .iter()
            .enumerate()
            .map(|(k, acct)| (k % c.len(), acct))
            .collect();
        let total = subscribe_many(&c, &reg, &who, SUBSCRIPTIONS_PER_ACCOUNT).await;

        let fanout = Instant::now();
        let mut burners: Vec<tokio::process::Child> = (0..BURNERS)
            .map(|_| {
                tokio::process::Command::new("yes")
                    .stdout(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn yes")
            })
            .collect();
        // Sent one after the other, so the later ones meet a cluster busy with the first.
        let (mut tids, mut refused) = (Vec::new(), Vec::new());
        for k in 0..TRIGGERS {
            let r = c
                .node(k % c.len())
                .post(&format!("/v1/webhook/triggered/{reg}"))
                .auth(&owner)
                .send_unchecked()
                .await;
            match r.status {
                201 => tids.push(id_of(r.json())),
                _ => refused.push(r.to_string()),
            }
        }
        for tid in &tids {
            c.node(a)
                .wait_trigger_counts(
                    &owner,
                    tid,
                    &delivery_counts(&[("succeeded", total as u64)]),
                    Duration::from_secs(180),
                )
                .await;
        }
        let expected = total * tids.len();
        eventually(
            "every delivery at the endpoint",
            Duration::from_secs(30),
            || async { (ep.post_count() >= expected).then_some(()) },
        )
        .await;
        let fanout_time = fanout.elapsed();
        for burner in &mut burners {
            burner.kill().await.expect("stop a burner");
        }
        stop.store(true, Ordering::SeqCst);
        (total, tids, refused, fanout_time)
    };
    let ((total, tids, refused, fanout_time), seen) =
        tokio::join!(load, observe(&c, &readers, &stop));
    let wall = started.elapsed();
    let cpu_used: f64 = cpu_secs(&c)
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after - before)
        .sum();
    let down_after = down_lines(&c);
    let down_during: Vec<usize> = down_after
        .iter()
        .zip(&down_before)
        .map(|(after, before)| after - before)
        .collect();

    // Every trigger reached every subscription exactly once (distinct webhook-ids).
    let posts = posts_by_path(&ep, "live.event");
    let distinct: HashSet<String> = posts
        .values()
        .flatten()
        .filter_map(|p| p.header("webhook-id"))
        .collect();
    println!(
        "{} triggers x {total} subscriptions delivered in {fanout_time:?} with {BURNERS} \
         burners \
         ({} POSTs, {} distinct webhook-ids); the nodes used {cpu_used:.1} CPU-s \
         (~{:.2} cores over the {:?} since the cluster was up); load average {}",
        tids.len(),
        posts.values().map(Vec::len).sum::<usize>(),
        distinct.len(),
        cpu_used / wall.as_secs_f64(),
        wall,
        load_average()
    );
    println!(
        "peer state changes: {} `{LOG_LINE_DOWN}` log lines per node {down_during:?} \
         (before the load {down_before:?}); /ready showed a peer not up {} times and \
         cross-node reads failed {} times in {} probe rounds; {} of {TRIGGERS} triggers refused",
        down_during.iter().sum::<usize>(),
        seen.not_up.len(),
        seen.failed_reads.len(),
        seen.rounds,
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "triggers refused under load: {refused:?}"
    );
    assert_eq!(
        distinct.len(),
        total * TRIGGERS,
        "every trigger must reach every subscription"
    );
    assert!(
        down_during.iter().all(|n| *n == 0),
        "a node marked a healthy peer down under load: {down_during:?} `{LOG_LINE_DOWN}` lines"
    );
    assert!(
        seen.not_up.is_empty(),
        "/ready reported a peer not up: {:?}",
        seen.not_up
    );
    assert!(
        seen.failed_reads.is_empty(),
        "cross-node reads failed under load: {:?}",
        seen.failed_reads
    );
    assert!(seen.rounds > 0, "the observers never ran");
}
