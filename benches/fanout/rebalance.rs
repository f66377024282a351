//! A rebalance under load: deliveries/s and API latency while a fourth node is admitted
//! into the replicated cluster and the groups move its share of replicas and leads to it,
//! against the same load on the settled cluster just before.
//!
//! The load runs through the first three nodes for the whole scenario: `TRIGGER_LOOPS`
//! loops each trigger a registration with `SUBSCRIBERS` subscribers (sink endpoints) one
//! trigger at a time, and one probe reads accounts (`GET /v1/account/<id>`, as the
//! account) one request at a time. The steady window is `STEADY` on the settled cluster;
//! the rebalance window runs from the admission (`POST /v1/cluster/members`) until every
//! group has its placed voters and the four nodes lead their share of the groups. Each
//! window counts the deliveries the sink received in it and summarises the probe's
//! latencies; a probe or trigger answered other than with success is counted as failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use webhookd::bench::client::{http_client, Account, ApiClient};
use webhookd::bench::cluster::{LocalCluster, GROUPS};
use webhookd::bench::groups::{leads, parse_groups, wait_settled};
use webhookd::bench::report::{ms, per_s};
use webhookd::bench::run::{create_accounts, warm_auth, SetupOptions};
use webhookd::bench::sink::Sink;
use webhookd::bench::stats::Latency;
use webhookd::bench::{BenchError, BenchResult};

use crate::failover::SETTLE;

/// Subscribers of the triggered registration.
const SUBSCRIBERS: usize = 100;
/// Trigger loops running at once.
const TRIGGER_LOOPS: usize = 4;
/// Load before the steady window starts.
const WARM_UP: Duration = Duration::from_secs(1);
/// The steady window.
const STEADY: Duration = Duration::from_secs(5);

/// One window's figures.
pub(crate) struct Window {
    took: Duration,
    deliveries: u64,
    api: Latency,
    /// Calls not answered with success, by call and status.
    failed: BTreeMap<String, usize>,
}

impl Window {
    fn deliveries_per_s(&self) -> f64 {
        self.deliveries as f64 / self.took.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.took.as_secs_f64(),
            "deliveries": self.deliveries,
            "deliveries_per_s": self.deliveries_per_s(),
            "api_get_account_us": self.api,
            "failed_calls": self.failed,
        })
    }
}

/// The rebalance scenario's figures.
pub(crate) struct RebalanceRun {
    joined: String,
    steady: Window,
    rebalance: Window,
}

/// What the load tasks record.
#[derive(Default)]
struct Recorded {
    /// Probe latencies, µs, each with when it was answered.
    probes: Vec<(Instant, u64)>,
    /// Failed calls, each with when and what.
    failed: Vec<(Instant, String)>,
}

/// Admits a fourth node into `cluster` (settled, `admin` its admin) under load.
pub(crate) async fn rebalance_part(
    cluster: &mut LocalCluster,
    api: &Arc<ApiClient>,
    sink: &Sink,
    admin: &Account,
) -> BenchResult<RebalanceRun> {
    let opts = SetupOptions {
        concurrency: 16,
        progress: false,
    };
    let (accounts, _) = create_accounts(api, sink, "rebalance", 0, SUBSCRIBERS + 1, opts).await?;
    warm_auth(api, &accounts, opts).await?;
    let owner = accounts[0].clone();
    let registration = api
        .create_registration(&owner, "rebalance", &json!({"n": 0}))
        .await?;
    for a in &accounts[1..] {
        api.subscribe(a, &registration).await?;
    }
    let http = http_client();
    let urls = cluster.urls();
    let mut ids: Vec<String> = cluster.members().iter().map(|m| m.id.clone()).collect();
    let expected = usize::from(GROUPS) + 1;
    wait_settled(&http, &urls[0], admin, &ids, (expected, true), SETTLE).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TRIGGER_LOOPS {
        let (api, owner, registration) = (api.clone(), owner.clone(), registration.clone());
        let (stop, recorded) = (stop.clone(), recorded.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = api.trigger(&owner, &registration, &json!({"n": 1})).await {
                    let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
                    r.failed
                        .push((Instant::now(), format!("trigger: {}", short(&e))));
                }
            }
        });
    }
    {
        let (api, accounts, stop, recorded) = (
            api.clone(),
            accounts.clone(),
            stop.clone(),
            recorded.clone(),
        );
        tasks.spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let who = &accounts[k % accounts.len()];
                k += 1;
                let sent = Instant::now();
                let path = format!("/v1/account/{}", who.id);
                let answer = api.call(Method::GET, &path, Some(who), None).await;
                let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
                match answer {
                    Ok((StatusCode::OK, _)) => r
                        .probes
                        .push((Instant::now(), sent.elapsed().as_micros() as u64)),
                    Ok((status, _)) => r
                        .failed
                        .push((Instant::now(), format!("GET account: {status}"))),
                    Err(e) => r
                        .failed
                        .push((Instant::now(), format!("GET account: {}", short(&e)))),
                }
            }
        });
    }

    tokio::time::sleep(WARM_UP).await;
    let steady_start = (Instant::now(), sink.posts());
    tokio::time::sleep(STEADY).await;
    let steady_end = (Instant::now(), sink.posts());

    let joining = cluster.start_joining().await?;
    let rebalance_start = (Instant::now(), sink.posts());
    let body = json!({
        "id": joining.id,
        "cluster_addr": joining.cluster_addr.to_string(),
        "http_addr": joining.http_addr.to_string(),
    });
    let (status, answer) = api
        .call(
            Method::POST,
            "/v1/cluster/members",
            Some(admin),
            Some(body.to_string().into()),
        )
        .await?;
    if status != StatusCode::CREATED {
        stop.store(true, Ordering::Relaxed);
        return Err(BenchError::Status {
            what: "POST /v1/cluster/members".into(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&answer).chars().take(200).collect(),
        });
    }
    ids.push(joining.id.clone());
    let settled = rebalanced(api, admin, &ids).await;
    let rebalance_end = (Instant::now(), sink.posts());
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    settled?;

    let recorded = recorded.lock().unwrap_or_else(|p| p.into_inner());
    let window = |(from, from_posts): (Instant, u64), (to, to_posts): (Instant, u64)| {
        let mut samples: Vec<u64> = recorded
            .probes
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, us)| *us)
            .collect();
        let mut failed = BTreeMap::new();
        for (_, what) in recorded
            .failed
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
        {
            *failed.entry(what.clone()).or_default() += 1;
        }
        Window {
            took: to - from,
            deliveries: to_posts.saturating_sub(from_posts),
            api: Latency::from_samples(&mut samples),
            failed,
        }
    };
    let run = RebalanceRun {
        joined: joining.id,
        steady: window(steady_start, steady_end),
        rebalance: window(rebalance_start, rebalance_end),
    };
    for line in run.lines() {
        println!("{line}");
    }
    Ok(run)
}

/// Polls `GET /v1/cluster` until it lists no move left (every group has its placed
/// voters), every group is led, and each of `ids` leads its share of the shard groups
/// (within one). Followers' lags are not waited for: under load they never reach 0.
async fn rebalanced(api: &ApiClient, admin: &Account, ids: &[String]) -> BenchResult<()> {
    let until = Instant::now() + SETTLE;
    let fair = usize::from(GROUPS) / ids.len().max(1);
    loop {
        let (status, body) = api
            .call(Method::GET, "/v1/cluster", Some(admin), None)
            .await?;
        let view: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let done = status == StatusCode::OK
            && view["replication"]["moves"]
                .as_array()
                .is_some_and(Vec::is_empty)
            && parse_groups(&view).is_ok_and(|gs| {
                let leads = leads(&gs);
                gs.iter().all(|g| g.leader.is_some())
                    && ids.iter().all(|id| {
                        leads.get(id).copied().unwrap_or(0) >= fair.saturating_sub(1).max(1)
                    })
            });
        if done {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(BenchError::Timeout {
                what: format!("the groups moved and their leads spread (last: {status} {view})"),
                after: SETTLE,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An error's first words, to count alike ones together.
fn short(e: &BenchError) -> String {
    e.to_string().chars().take(80).collect()
}

impl RebalanceRun {
    /// The summary lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        let (s, r) = (&self.steady, &self.rebalance);
        let failed = |w: &Window| match w.failed.is_empty() {
            true => "no failed calls".to_string(),
            false => {
                let list: Vec<String> =
                    w.failed.iter().map(|(f, n)| format!("{f} × {n}")).collect();
                format!("failed calls {}", list.join(", "))
            }
        };
        vec![
            format!(
                "rebalance (admitting {} under load, until its share of groups and leads moved): {:.1} s; deliveries/s {} vs {} steady ({:.2}×); API GET p99 {} vs {} steady",
                self.joined,
                r.took.as_secs_f64(),
                per_s(r.deliveries_per_s()),
                per_s(s.deliveries_per_s()),
                r.deliveries_per_s() / s.deliveries_per_s().max(1e-9),
                ms(r.api.p99_us),
                ms(s.api.p99_us),
            ),
            format!(
                "  steady ({:.1} s): {}; rebalance: {}",
                s.took.as_secs_f64(),
                failed(s),
                failed(r)
            ),
        ]
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "what": "A fourth node admitted (POST /v1/cluster/members) while triggers of a 100-subscriber registration and account reads run through the first three; the rebalance window runs until every group has its placed voters and the four nodes lead their share. The steady window is the same load just before.",
            "joined": self.joined,
            "steady": self.steady.json(),
            "rebalance": self.rebalance.json(),
        })
    }
}
