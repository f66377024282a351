//! Soak test: mixed API load plus triggers against one node for a bounded
//! time, with a receiver that fails 20% of delivery attempts at random (500).
//!
//! Ignored by default; `.ci/run` runs it as `SOAK_SECS=60 cargo test --test it -- --ignored soak::`
//! (`SOAK_SECS` defaults to 60). It asserts:
//!
//! * zero 5xx (and zero transport errors) over the whole run, every status counted;
//! * every answer is the one the operation calls for (e.g. 201 for a create, 4xx for the
//!   deliberately bad requests);
//! * no delivery lost: after the load stops, every trigger reaches `pending == 0` with its
//!   fan-out complete; every trigger has exactly one delivery per subscription that existed
//!   throughout; each delivery either succeeded (after at most 3 failed attempts) or failed
//!   after exactly 4 attempts, or was cancelled because its subscription was deleted; the
//!   attempt log matches what the receiver answered, attempt for attempt; and the receiver
//!   saw no delivery that the node does not list;
//! * the node's RSS at the end is within 20% of its RSS after warm-up (the first 30% of the
//!   run: the node's caches — sled's pages, endpoints and secrets, trigger bodies — fill
//!   during the first 20 s or so; a heap profile of the node under this load grew from 40
//!   to 45 MB by then and stayed there). "The end" is once the node settled after the
//!   checks: idle actors stop and the allocator hands freed pages back asynchronously, so
//!   the RSS is polled for up to `SETTLE_DEADLINE`; a leak never comes back within the
//!   tolerance.

mod load;
mod ops;
mod receiver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{id_of, Account, AsCreds, Creds, TestNode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use load::{Load, Trigger};
use ops::worker;
use receiver::Receiver;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

/// Node settings for the run (merged over the common test config, which already has
/// `retry_delays_secs = [0.2, 0.2, 0.2]` and a 2 s outbound timeout).
/// Actors stop after 5 s idle (default 60 s): in a 60 s run the default would count every
/// actor the load touched as growth; a short idle time makes the run reach steady state.
/// The sled page cache is capped (4 MiB, against ~11 MiB written during the run) so that
/// filling it with the data the checks read back is not mistaken for a leak either.
const SOAK_CONFIG: &str = r#"
[log]
level = "warn"

[actors]
idle_stop_secs = 5.0

[storage]
cache_capacity_bytes = 4194304

# Every client here shares 127.0.0.1 and some send wrong keys on purpose: with the default
# budget the address throttle would refuse the others' correct keys (its own suite,
# `auth_throttle`, tests that); a budget the soak cannot reach keeps the rest under test.
[security]
auth_failures_per_minute = 100000
"#;

/// Concurrent client tasks.
const WORKERS: usize = 6;
/// Pause between two operations of one worker.
const THINK: Duration = Duration::from_millis(5);
/// Accounts owning the triggered registrations, and registrations per owner.
const OWNERS: usize = 3;
const REGS_PER_OWNER: usize = 2;
/// Accounts subscribed to every triggered registration for the whole run.
const STABLE_SUBSCRIBERS: usize = 6;
/// Share of delivery attempts the receiver fails, in 1/65536.
const FAIL_PER_65536: u32 = 13_107; // 20%
/// Attempts of a delivery that keeps failing: 1 + len(retry_delays_secs).
const MAX_ATTEMPTS: usize = 4;
/// How long the deliveries may take to settle once the load stopped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
/// Share of the run before the warm-up RSS sample.
const WARM_UP: f64 = 0.3;
/// Allowed RSS growth (and shrinkage) between warm-up and the end.
const RSS_TOLERANCE: f64 = 0.20;
/// How long the node may take, after the checks, to settle back within `RSS_TOLERANCE`:
/// three times `idle_stop_secs`, so the actors the checks woke have stopped.
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e} (did the node process exit?)"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn soak_secs() -> u64 {
    match std::env::var("SOAK_SECS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SOAK_SECS must be whole seconds, got {v:?}")),
        Err(_) => 60,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run with `cargo test --test it -- --ignored soak::` (SOAK_SECS, default 60)"]
async fn soak_mixed_load_with_a_flaky_receiver() {
    let run = Duration::from_secs(soak_secs());
    let receiver = Receiver::start().await;
    let node = TestNode::spawn_with(SOAK_CONFIG).await;
    let pid = node.pid();
    let admin = node.admin();

    // Set-up: owners with registrations, stable subscribers on all of them.
    let mut owners = Vec::new();
    let mut registrations = Vec::new();
    for o in 0..OWNERS {
        let owner = node
            .create_account(&format!("owner{o}"), &receiver.url(&format!("owner{o}")))
            .await;
        for r in 0..REGS_PER_OWNER {
            let reg = node.register(&owner, &format!("soak.event.{o}.{r}")).await;
            registrations.push((o, id_of(&reg)));
        }
        owners.push(owner);
    }
    let mut subscribers = Vec::new();
    let mut stable: HashMap<String, Vec<String>> = HashMap::new();
    for s in 0..STABLE_SUBSCRIBERS {
        let sub = node
            .create_account(&format!("sub{s}"), &receiver.url(&format!("sub{s}")))
            .await;
        for (_, reg) in &registrations {
            let subscription = node.subscribe(&sub, reg).await;
            stable
                .entry(reg.clone())
                .or_default()
                .push(id_of(&subscription));
        }
        subscribers.push(sub);
    }

    let load = Arc::new(Load {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: node.base_url.clone(),
        admin: admin.clone(),
        receiver_url: receiver.url("NAME"),
        owners,
        registrations,
        subscribers,
        stable,
        triggers: Mutex::default(),
        churn_subs: Mutex::default(),
        temp_accounts: Mutex::default(),
        deleted_subs: Mutex::default(),
        tally: Mutex::default(),
        seq: AtomicU64::new(0),
    });

    // The load, with RSS sampled after warm-up.
    let started = Instant::now();
    let until = started + run;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(worker(load.clone(), until));
    }
    tokio::time::sleep(run.mul_f64(WARM_UP)).await;
    let warm_rss = rss_kib(pid);
    let warm_fds = open_fds(pid);
    let warm_at = started.elapsed();
    println!(
        "soak: warm-up RSS {} at {warm_at:.1?}, {warm_fds} open fds",
        mib(warm_rss)
    );
    let mut peak_rss = warm_rss;
    // RSS every ~10% of the run, printed with the summary.
    let mut timeline = vec![(warm_at.as_secs(), warm_rss)];
    let step = run.mul_f64(0.1).max(Duration::from_secs(1));
    let mut next_sample = started + warm_at + step;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(pid);
        peak_rss = peak_rss.max(rss);
        if Instant::now() >= next_sample {
            timeline.push((started.elapsed().as_secs(), rss));
            next_sample += step;
        }
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("worker failed: {e}");
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    let load_end_rss = rss_kib(pid);

    // Drain: every trigger settles (nothing pending, fan-out complete).
    let triggers = load.triggers.lock().unwrap().clone();
    let drain_started = Instant::now();
    let mut unsettled: Vec<&Trigger> = triggers.iter().collect();
    let mut statuses: HashMap<String, Value> = HashMap::new();
    while !unsettled.is_empty() {
        let mut still = Vec::new();
        for t in unsettled {
            let status = node.trigger_status(&load.owners[t.owner], &t.id).await;
            if status["fanout_complete"] == true && status["deliveries"]["pending"] == 0 {
                statuses.insert(t.id.clone(), status);
            } else {
                still.push(t);
            }
        }
        unsettled = still;
        if !unsettled.is_empty() {
            assert!(
                drain_started.elapsed() < DRAIN_DEADLINE,
                "{} of {} triggers still had pending deliveries {DRAIN_DEADLINE:?} after the \
                 load stopped, e.g. {}: {}",
                unsettled.len(),
                triggers.len(),
                unsettled[0].id,
                node.trigger_status(&load.owners[unsettled[0].owner], &unsettled[0].id)
                    .await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();

    // Every delivery of every trigger, checked against the receiver.
    let deleted = load.deleted_subs.lock().unwrap().clone();
    let received = std::mem::take(&mut receiver.state.lock().unwrap().by_id);
    let mut seen_ids = HashSet::new();
    let mut lost: Vec<String> = Vec::new();
    let mut outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempts_total = 0usize;
    let mut attempt_histogram: BTreeMap<usize, u64> = BTreeMap::new();
    for t in &triggers {
        let owner = &load.owners[t.owner];
        let rows = node.deliveries(owner, &t.id).await;
        let status = &statuses[&t.id];
        // The counts agree with the rows.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for row in &rows {
            *counts
                .entry(row["state"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        for state in ["pending", "succeeded", "failed", "skipped", "cancelled"] {
            let listed = counts.get(state).copied().unwrap_or(0);
            if status["deliveries"][state] != listed {
                lost.push(format!(
                    "trigger {}: status says {state} = {}, the listing has {listed}",
                    t.id, status["deliveries"][state]
                ));
            }
        }
        // One delivery per stable subscription.
        for sub in &load.stable[&t.registration] {
            let n = rows.iter().filter(|r| r["subscription_id"] == *sub).count();
            if n != 1 {
                lost.push(format!(
                    "trigger {}: {n} deliveries for stable subscription {sub}",
                    t.id
                ));
            }
        }
        for row in &rows {
            let id = row["id"].as_str().unwrap_or_default().to_string();
            let sub = row["subscription_id"].as_str().unwrap_or_default();
            let state = row["state"].as_str().unwrap_or_default();
            *outcome.entry(state.to_string()).or_default() += 1;
            let attempts: Vec<Option<u64>> = row["attempts"]
                .as_array()
                .map(|a| a.iter().map(|x| x["status_code"].as_u64()).collect())
                .unwrap_or_default();
            attempts_total += attempts.len();
            *attempt_histogram.entry(attempts.len()).or_default() += 1;
            let ok = |s: &Option<u64>| s.is_some_and(|s| (200..300).contains(&s));
            let valid = match state {
                "succeeded" => {
                    attempts.len() <= MAX_ATTEMPTS
                        && attempts.last().is_some_and(ok)
                        && attempts[..attempts.len() - 1].iter().all(|a| !ok(a))
                }
                "failed" => attempts.len() == MAX_ATTEMPTS && attempts.iter().all(|a| !ok(a)),
                "cancelled" => deleted.contains(sub) && attempts.iter().all(|a| !ok(a)),
                _ => false,
            };
            if !valid {
                lost.push(format!("trigger {}: delivery {row}", t.id));
            }
            // The attempt log is what the receiver answered, attempt for attempt.
            let answered: Vec<Option<u64>> = received
                .get(&id)
                .map(|v| v.iter().map(|s| Some(u64::from(*s))).collect())
                .unwrap_or_default();
            if answered != attempts {
                lost.push(format!(
                    "delivery {id}: the node logged attempts {attempts:?}, the receiver \
                     answered {answered:?}"
                ));
            }
            seen_ids.insert(id);
        }
    }
    let phantom: Vec<&String> = received
        .keys()
        .filter(|id| !seen_ids.contains(*id))
        .collect();
    let checked_rss = rss_kib(pid);
    let settle_started = Instant::now();
    let growth_of = |rss: u64| rss as f64 / warm_rss as f64 - 1.0;
    let mut end_rss = checked_rss;
    while growth_of(end_rss).abs() > RSS_TOLERANCE && settle_started.elapsed() < SETTLE_DEADLINE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        end_rss = rss_kib(pid);
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let end_fds = open_fds(pid);

    // Summary.
    let tally = load.tally.lock().unwrap();
    let recv = receiver.state.lock().unwrap();
    let requests: u64 = tally.statuses.values().sum();
    let growth = growth_of(end_rss);
    println!(
        "soak summary ({load_secs:.1} s of load, {WORKERS} workers, drained in {drain_secs:.1} s)"
    );
    println!(
        "  requests: {requests} ({:.0}/s); by operation: {:?}",
        requests as f64 / load_secs,
        tally.ops
    );
    println!("  statuses: {:?}", tally.statuses);
    println!(
        "  triggers: {}; deliveries: {} {:?}; attempts: {attempts_total} by count {:?}",
        triggers.len(),
        seen_ids.len(),
        outcome,
        attempt_histogram
    );
    println!(
        "  receiver: {} POSTs, {} answered 500 ({:.1}%), {} echoes; {} subscriptions deleted",
        recv.posts,
        recv.failed,
        100.0 * recv.failed as f64 / recv.posts.max(1) as f64,
        recv.echoes,
        deleted.len()
    );
    let timeline: Vec<String> = timeline
        .iter()
        .map(|(t, kib)| format!("{t}s {:.1}", *kib as f64 / 1024.0))
        .collect();
    println!("  RSS timeline (MiB): {}", timeline.join(", "));
    println!(
        "  storage: {} on disk",
        mib(dir_bytes(node.data_dir()) / 1024)
    );
    println!(
        "  RSS: warm-up {} → load end {} → after the checks {} → end {} after {settle_secs:.1} s \
         (peak {}, {:+.1}%); open fds {warm_fds} → {end_fds}",
        mib(warm_rss),
        mib(load_end_rss),
        mib(checked_rss),
        mib(end_rss),
        mib(peak_rss),
        100.0 * growth
    );

    assert!(
        tally.problem_count == 0,
        "{} problems (5xx, transport errors, unexpected statuses), e.g.:\n{}",
        tally.problem_count,
        tally.problems.join("\n")
    );
    assert!(
        !tally.statuses.keys().any(|s| *s >= 500),
        "5xx answers: {:?}",
        tally.statuses
    );
    assert!(!triggers.is_empty(), "the load made no triggers");
    assert_eq!(recv.anonymous, 0, "delivery POSTs without webhook-id");
    assert!(
        lost.is_empty(),
        "{} delivery problems, e.g.:\n{}",
        lost.len(),
        lost.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        phantom.is_empty(),
        "the receiver got {} deliveries that no trigger lists, e.g. {:?}",
        phantom.len(),
        phantom.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        growth.abs() <= RSS_TOLERANCE,
        "RSS went from {} after warm-up to {} at the end, {SETTLE_DEADLINE:?} after the checks \
         ({:+.1}%, allowed ±{:.0}%)",
        mib(warm_rss),
        mib(end_rss),
        100.0 * growth,
        100.0 * RSS_TOLERANCE
    );
}
