//! Failed-authentication throttling, black-box against one node with a production-like
//! PBKDF2 cost ([`PBKDF2_ITERATIONS`]) and the default budget
//! (`security.auth_failures_per_minute` = 20).
//!
//! A wrong `api-key` for an existing username costs a full PBKDF2, so a flood of them used
//! to pin the node's CPU. Here a client on another loopback address ([`ATTACKER`]) floods one
//! existing username with wrong keys from [`FLOOD_WORKERS`] concurrent workers, bounded in
//! count and time, while an honest client on 127.0.0.1 keeps reading its own account:
//!
//! * once the budget is spent the flood is answered 429 with `Retry-After`, before any
//!   hashing: at most budget + workers − 1 wrong keys are ever hashed (those already past
//!   the check when the budget ran out), and the refusals answer much faster than a hash;
//! * the honest client's median latency during the flood stays within 2× its median before
//!   (plus [`LATENCY_SLACK`]);
//! * a correct key for a different username, never verified before, is accepted during the
//!   flood from the honest client's address;
//! * `webhookd_auth_failures_total` and `webhookd_auth_throttled_total` in `/metrics` move
//!   by exactly the 401s and 429s answered.
//!
//! What the throttle costs, documented by assertions: the flooded username's *correct* key
//! is refused too (429) for the rest of the window in which its budget ran out — at most a
//! minute after the failures stop — unless it was verified within
//! `security.auth_cache_ttl_secs`, because a cached verification is answered before the
//! throttle is consulted. Likewise the flooding address is refused for every username whose
//! key is not cached, as its own budget is spent.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::api::REQUEST_TIMEOUT;
use crate::common::*;

/// `security.pbkdf2_iterations` of the node. The default (100,000) costs 15–20 ms of CPU in
/// a release build, but over a second in the unoptimised test build, which would make the
/// budget's worth of hashes alone take most of a minute on two cores. This count gives a
/// wrong key in the test build about the cost of a default one in production, which is what
/// the flood must be measured against (the base test config's 1,000 would be cheaper).
const PBKDF2_ITERATIONS: u32 = 2_000;
/// `security.auth_failures_per_minute` by default.
const DEFAULT_BUDGET: u64 = 20;
/// The flooding client's address (Linux answers the whole of 127.0.0.0/8 on loopback).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Concurrent flooding workers.
const FLOOD_WORKERS: usize = 16;
/// Each worker sends at most one wrong key per this interval. 16 workers: 64 per second,
/// more than a core's worth of PBKDF2 unthrottled, and a request rate the node serves
/// without notice when every one is refused before hashing (a plain request flood is not
/// what this suite measures).
const FLOOD_PACE: Duration = Duration::from_millis(250);
/// The flood lasts this long ...
const FLOOD_FOR: Duration = Duration::from_secs(8);
/// ... or this many requests, whichever comes first.
const FLOOD_MAX: usize = 1_000;
/// Honest requests timed before the flood.
const SAMPLES_BEFORE: usize = 60;
/// Absolute allowance on top of 2× the honest median (timer and scheduler noise on a
/// shared machine at sub-millisecond medians).
const LATENCY_SLACK: Duration = Duration::from_millis(5);
const TOO_MANY_AUTH_FAILURES: &str = "Too many failed authentications";

/// One flood request and its answer.
struct Shot {
    sent: Instant,
    done: Instant,
    status: u16,
    retry_after: Option<String>,
    body: Option<serde_json::Value>,
}

fn client_on(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(ip))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build reqwest client")
}

fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    samples[samples.len() / 2]
}

/// The value of a counter or gauge in `/metrics`.
async fn metric(node: &TestNode, name: &str) -> u64 {
    let text = node.metrics().await;
    metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

/// Asserts a 429 `{"Error": "Too many failed authentications"}` with a `Retry-After` of
/// 1..=60 whole seconds (the rest of a one-minute window).
#[track_caller]
fn assert_throttled(status: u16, retry_after: Option<&str>, body: Option<&serde_json::Value>) {
    assert_eq!(status, 429, "expected 429: {body:?}");
    assert_eq!(
        body,
        Some(&serde_json::json!({ "Error": TOO_MANY_AUTH_FAILURES })),
        "429 body"
    );
    let secs = retry_after
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {retry_after:?}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
}

/// One worker: wrong keys for `victim`, one per [`FLOOD_PACE`], until `until` or until the
/// flood has sent [`FLOOD_MAX`] requests.
async fn flood_worker(
    client: reqwest::Client,
    url: String,
    path: String,
    victim: String,
    until: Instant,
    sent: Arc<AtomicUsize>,
    throttled: Arc<AtomicBool>,
) -> Vec<Shot> {
    let mut ticks = tokio::time::interval(FLOOD_PACE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shots = Vec::new();
    loop {
        ticks.tick().await;
        if Instant::now() >= until || sent.fetch_add(1, Ordering::SeqCst) >= FLOOD_MAX {
            return shots;
        }
        let req = Req::new(client.clone(), "GET", &path, url.clone());
        let sent_at = Instant::now();
        let r = req.key(&victim, &random_hex40()).send().await;
        if r.status == 429 {
            throttled.store(true, Ordering::SeqCst);
        }
        shots.push(Shot {
            sent: sent_at,
            done: Instant::now(),
            status: r.status,
            retry_after: r.header("retry-after"),
            body: r.json,
        });
    }
}

/// Times one honest read of `who`'s own account (it must answer 200).
async fn honest_read(node: &TestNode, who: &Account) -> Duration {
    let started = Instant::now();
    node.get(&format!("/v1/account/{}", who.id))
        .auth(who)
        .send()
        .await
        .expect(200);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_flood_is_throttled_before_hashing_and_spares_other_accounts() {
    // Latency is compared before and during the flood: not while a cluster test's fan-out
    // (and its CPU burners) compete for the cores.
    let _serial = crate::cluster::SERIAL.lock().await;
    let node = TestNode::spawn_with(&format!(
        "[security]\npbkdf2_iterations = {PBKDF2_ITERATIONS}"
    ))
    .await;
    let ep = EndpointServer::start().await;
    let victim = node
        .create_account("flooded", &ep.endpoint_url("flooded"))
        .await;
    let honest = node
        .create_account("honest", &ep.endpoint_url("honest"))
        .await;
    let newcomer = node
        .create_account("newcomer", &ep.endpoint_url("newcomer"))
        .await;
    let stranger = node
        .create_account("stranger", &ep.endpoint_url("stranger"))
        .await;
    assert_eq!(
        metric(&node, "webhookd_auth_failures_budget_per_minute").await,
        DEFAULT_BUDGET
    );

    // The honest client's normal latency (its key verified once, then cached).
    honest_read(&node, &honest).await;
    let mut before: Vec<Duration> = Vec::new();
    for _ in 0..SAMPLES_BEFORE {
        before.push(honest_read(&node, &honest).await);
    }
    let before = median(&mut before);
    let failures_before = metric(&node, "webhookd_auth_failures_total").await;
    let throttled_before = metric(&node, "webhookd_auth_throttled_total").await;

    // The flood, the honest reads and the newcomer's first sign-in, all at once.
    let flood_started = Instant::now();
    let until = flood_started + FLOOD_FOR;
    let (sent, throttled) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let attacker = client_on(ATTACKER);
    let path = format!("/v1/account/{}", victim.id);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_WORKERS {
        workers.spawn(flood_worker(
            attacker.clone(),
            node.url(&path),
            path.clone(),
            victim.username.clone(),
            until,
            sent.clone(),
            throttled.clone(),
        ));
    }
    let flooding = AtomicBool::new(true);
    let honest_reads = async {
        let mut during = Vec::new();
        while flooding.load(Ordering::SeqCst) {
            during.push(honest_read(&node, &honest).await);
        }
        during
    };
    let first_sign_ins = async {
        eventually("the flood to be throttled", FLOOD_FOR, || async {
            throttled.load(Ordering::SeqCst).then_some(())
        })
        .await;
        // A different username's correct key, never verified before: accepted.
        let newcomer_read = honest_read(&node, &newcomer).await;
        // The same from the flooding address: refused, the address's budget is spent.
        let path = format!("/v1/account/{}", stranger.id);
        let r = Req::new(attacker.clone(), "GET", &path, node.url(&path))
            .auth(&stranger)
            .send()
            .await;
        assert_throttled(
            r.status,
            r.header("retry-after").as_deref(),
            r.json.as_ref(),
        );
        newcomer_read
    };
    let collect = async {
        let mut shots = Vec::new();
        while let Some(joined) = workers.join_next().await {
            match joined {
                Ok(mut s) => shots.append(&mut s),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("flood worker failed: {e}"),
            }
        }
        flooding.store(false, Ordering::SeqCst);
        shots
    };
    let (mut shots, mut during, newcomer_latency) =
        tokio::join!(collect, honest_reads, first_sign_ins);
    let flood_time = flood_started.elapsed();

    // After the flood: the flooded username's own correct key is refused within the window
    // (it was never verified, so nothing is cached), from the honest address too.
    let r = node
        .get(&format!("/v1/account/{}", victim.id))
        .auth(&victim)
        .send()
        .await;
    assert_throttled(
        r.status,
        r.header("retry-after").as_deref(),
        r.json.as_ref(),
    );
    let refused_elsewhere = 2;

    shots.sort_by_key(|s| s.sent);
    let hashed: Vec<&Shot> = shots.iter().filter(|s| s.status == 401).collect();
    let refused: Vec<&Shot> = shots.iter().filter(|s| s.status == 429).collect();
    let first_refusal = refused
        .iter()
        .map(|s| s.done)
        .min()
        .expect("the flood was never throttled");
    let mut hashed_latency: Vec<Duration> = hashed.iter().map(|s| s.done - s.sent).collect();
    let mut refused_latency: Vec<Duration> = refused.iter().map(|s| s.done - s.sent).collect();
    let (hashed_median, refused_median) =
        (median(&mut hashed_latency), median(&mut refused_latency));
    let during_median = median(&mut during);
    let failures = metric(&node, "webhookd_auth_failures_total").await - failures_before;
    let throttled_count = metric(&node, "webhookd_auth_throttled_total").await - throttled_before;
    println!(
        "wrong-key flood: {} requests from {FLOOD_WORKERS} workers in {flood_time:?}: {} hashed \
         (401, median {hashed_median:?}), {} refused before hashing (429, median \
         {refused_median:?}), the first refusal {:?} after the start; honest median latency \
         {before:?} before, {during_median:?} during ({} samples); a newcomer's first sign-in \
         during the flood took {newcomer_latency:?}; /metrics: auth failures +{failures}, \
         throttled +{throttled_count}",
        shots.len(),
        hashed.len(),
        refused.len(),
        first_refusal - flood_started,
        during.len()
    );

    for s in &shots {
        match s.status {
            401 => assert_eq!(
                s.body,
                Some(serde_json::json!({ "Error": INVALID_API_KEY })),
                "401 body"
            ),
            429 => assert_throttled(s.status, s.retry_after.as_deref(), s.body.as_ref()),
            other => panic!("a wrong key answered {other}"),
        }
    }
    let budget = DEFAULT_BUDGET as usize;
    assert!(
        (budget..budget + FLOOD_WORKERS).contains(&hashed.len()),
        "{} wrong keys were hashed; the budget is {budget}, plus at most {} already in flight",
        hashed.len(),
        FLOOD_WORKERS - 1
    );
    assert!(
        shots
            .iter()
            .filter(|s| s.sent > first_refusal)
            .all(|s| s.status == 429),
        "a wrong key sent after the first refusal was hashed"
    );
    assert!(
        refused.len() > 5 * hashed.len(),
        "the flood was too short to show the throttle: {} refused, {} hashed",
        refused.len(),
        hashed.len()
    );
    assert!(
        refused_median * 5 < hashed_median,
        "refusals ({refused_median:?}) must answer much faster than a hash ({hashed_median:?})"
    );
    assert!(
        during_median <= before * 2 + LATENCY_SLACK,
        "the honest client's median latency rose from {before:?} to {during_median:?}"
    );
    assert_eq!(
        failures,
        hashed.len() as u64,
        "webhookd_auth_failures_total"
    );
    assert_eq!(
        throttled_count,
        (refused.len() + refused_elsewhere) as u64,
        "webhookd_auth_throttled_total"
    );
}
