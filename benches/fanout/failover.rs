//! The failover window of a replicated cluster: how long a client's requests for the
//! records of a group fail, or wait, when the node leading that group is SIGKILLed.
//!
//! Each kill starts from a settled cluster (every group led, every follower caught up,
//! leaders spread). The victim is the node leading the most shard groups. For each group
//! it leads, two request streams run back to back through a survivor: `GET
//! /v1/account/<id>` of an account in the group, and `PATCH
//! /v1/webhook/registration/<id>` of a registration in it (as its owner); one more stream
//! reads an account of a group the victim does not lead, as a control. A stream's window is
//! the time from the SIGKILL to the answer of its first request sent after the kill that
//! succeeded: what a client retrying at once waits. The victim is restarted on its data
//! and the cluster settles again before the next kill.
//!
//! The window is measured on these API operations; that triggers and deliveries resume on
//! the groups' next leaders is checked by the tests (`tests/cluster/trigger_failover.rs`,
//! `tests/cluster/fanout_takeover.rs`), not timed here.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use webhookd::bench::client::{http_client, Account, ApiClient};
use webhookd::bench::cluster::{LocalCluster, GROUPS};
use webhookd::bench::groups::{group_of, leads, wait_settled, GroupView, META};
use webhookd::bench::report::ms;
use webhookd::bench::run::{create_accounts, warm_auth, SetupOptions};
use webhookd::bench::sink::Sink;
use webhookd::bench::stats::Latency;
use webhookd::bench::{BenchError, BenchResult};

/// Accounts (each with one registration, in its group) the streams pick from: enough that
/// every group has one, almost always.
const ACCOUNTS: usize = 60;
/// How long the streams run before the kill.
const BEFORE_KILL: Duration = Duration::from_millis(300);
/// How long a stream may go without a success after the kill before the run gives up.
const GIVE_UP: Duration = Duration::from_secs(20);
/// Timeout of one stream request (above `cluster.failover_wait_ms`, 3 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to settle again after the restart.
pub(crate) const SETTLE: Duration = Duration::from_secs(60);

/// What a stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    GetAccount,
    PatchRegistration,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::GetAccount => "GET account",
            Kind::PatchRegistration => "PATCH registration",
        }
    }
}

/// One stream of one kill.
pub(crate) struct StreamFigures {
    kind: Kind,
    group: String,
    via: String,
    /// Whether the victim led the group (false: the control stream).
    led_by_victim: bool,
    /// SIGKILL → first success of a request sent after it (None: none within `GIVE_UP`).
    window: Option<Duration>,
    /// Requests that failed, by status (or `transport error`, `timeout`).
    failed: BTreeMap<String, usize>,
    /// The slowest request, failed or not.
    slowest: Duration,
    /// The first error answer: status and the start of its body.
    example: Option<String>,
}

/// One kill.
pub(crate) struct KillFigures {
    victim: String,
    led: Vec<String>,
    streams: Vec<StreamFigures>,
    /// From the restart until every group was settled (and leaders spread) again.
    settled_in: Duration,
}

/// The failover scenario's figures.
pub(crate) struct FailoverRun {
    pub(crate) kills: Vec<KillFigures>,
    /// Windows of the streams of the victims' groups, µs.
    pub(crate) windows: Latency,
    /// Streams of the victims' groups that never succeeded again within `GIVE_UP`.
    pub(crate) never: usize,
    /// The slowest request of the control streams (groups the victim did not lead).
    pub(crate) control_slowest: Duration,
}

/// A record of each group: an account in it and a registration of that account.
struct Records {
    by_group: Vec<(String, Account, String)>,
}

impl Records {
    fn of(&self, group: &str) -> Option<&(String, Account, String)> {
        self.by_group.iter().find(|(g, _, _)| g == group)
    }
}

/// Runs `kills` kills on `cluster` (settled, `admin` its admin).
pub(crate) async fn failover_part(
    cluster: &mut LocalCluster,
    api: &Arc<ApiClient>,
    sink: &Sink,
    admin: &Account,
    kills: usize,
) -> BenchResult<FailoverRun> {
    let records = records(cluster, api, sink).await?;
    let http = http_client();
    let ids: Vec<String> = cluster.members().iter().map(|m| m.id.clone()).collect();
    let urls = cluster.urls();
    let expected = usize::from(GROUPS) + 1;
    let mut figures = Vec::with_capacity(kills);
    for k in 0..kills {
        let gs = wait_settled(&http, &urls[0], admin, &ids, (expected, true), SETTLE).await?;
        let victim = pick_victim(&gs, &ids, k);
        let kill = one_kill(cluster, &records, &gs, victim).await?;
        let since = Instant::now();
        cluster.restart(victim).await?;
        let ask = &urls[(victim + 1) % urls.len()];
        wait_settled(&http, ask, admin, &ids, (expected, true), SETTLE).await?;
        let settled_in = since.elapsed();
        let windows: Vec<String> = kill
            .streams
            .iter()
            .filter(|s| s.led_by_victim)
            .map(|s| s.window.map_or("none".into(), |w| ms(w.as_micros() as u64)))
            .collect();
        println!(
            "failover {}/{kills}: SIGKILL {} (led groups {}): windows {}; restarted, settled in {}",
            k + 1,
            ids[victim],
            kill.led.join(", "),
            windows.join(", "),
            ms(settled_in.as_micros() as u64)
        );
        figures.push(KillFigures { settled_in, ..kill });
    }
    let led = || {
        figures
            .iter()
            .flat_map(|k| &k.streams)
            .filter(|s| s.led_by_victim)
    };
    let mut samples: Vec<u64> = led()
        .filter_map(|s| s.window)
        .map(|w| w.as_micros() as u64)
        .collect();
    let never = led().filter(|s| s.window.is_none()).count();
    let control_slowest = figures
        .iter()
        .flat_map(|k| &k.streams)
        .filter(|s| !s.led_by_victim)
        .map(|s| s.slowest)
        .max()
        .unwrap_or_default();
    Ok(FailoverRun {
        kills: figures,
        windows: Latency::from_samples(&mut samples),
        never,
        control_slowest,
    })
}

/// Accounts in as many groups as `ACCOUNTS` reach, each with one registration.
async fn records(
    cluster: &LocalCluster,
    api: &Arc<ApiClient>,
    sink: &Sink,
) -> BenchResult<Records> {
    let opts = SetupOptions {
        concurrency: 16,
        progress: false,
    };
    let (accounts, _) = create_accounts(api, sink, "failover", 0, ACCOUNTS, opts).await?;
    warm_auth(api, &accounts, opts).await?;
    let mut by_group: Vec<(String, Account, String)> = Vec::new();
    for account in accounts {
        let group = group_of(cluster.shard_map(), GROUPS, &account.id)?;
        if by_group.iter().any(|(g, _, _)| *g == group) {
            continue;
        }
        let registration = api
            .create_registration(&account, "failover", &json!({"n": 0}))
            .await?;
        by_group.push((group, account, registration));
    }
    Ok(Records { by_group })
}

/// The node leading the most shard groups; among equals, the `k`-th in turn.
fn pick_victim(groups: &[GroupView], ids: &[String], k: usize) -> usize {
    let leads = leads(groups);
    let most = ids
        .iter()
        .map(|id| leads.get(id).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let equal: Vec<usize> = (0..ids.len())
        .filter(|&i| leads.get(&ids[i]).copied().unwrap_or(0) == most)
        .collect();
    equal.get(k % equal.len().max(1)).copied().unwrap_or(0)
}

/// Streams on the victim's groups (and one control), the kill, and each stream's window.
async fn one_kill(
    cluster: &mut LocalCluster,
    records: &Records,
    groups: &[GroupView],
    victim: usize,
) -> BenchResult<KillFigures> {
    let ids: Vec<String> = cluster.members().iter().map(|m| m.id.clone()).collect();
    let urls = cluster.urls();
    let survivors: Vec<usize> = (0..ids.len()).filter(|&i| i != victim).collect();
    let led: Vec<String> = groups
        .iter()
        .filter(|g| g.group != META && g.leader.as_deref() == Some(ids[victim].as_str()))
        .map(|g| g.group.clone())
        .collect();
    let control = groups
        .iter()
        .filter(|g| g.group != META && g.leader.as_deref() != Some(ids[victim].as_str()))
        .find_map(|g| records.of(&g.group));
    let mut plan: Vec<(Kind, &(String, Account, String), bool)> = Vec::new();
    for g in &led {
        if let Some(r) = records.of(g) {
            plan.push((Kind::GetAccount, r, true));
            plan.push((Kind::PatchRegistration, r, true));
        }
    }
    if let Some(r) = control {
        plan.push((Kind::GetAccount, r, false));
    }
    if !plan.iter().any(|(_, _, led)| *led) {
        return Err(BenchError::Invalid(format!(
            "{} leads no group that has a bench record (groups {led:?})",
            ids[victim]
        )));
    }
    let killed_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let mut tasks = Vec::with_capacity(plan.len());
    for (n, (kind, (group, account, registration), led_by_victim)) in plan.into_iter().enumerate() {
        let via = survivors[n % survivors.len()];
        let api = ApiClient::new(&[urls[via].clone()], REQUEST_TIMEOUT)?;
        let (account, registration) = (account.clone(), registration.clone());
        let killed_at = killed_at.clone();
        let task =
            tokio::spawn(async move { stream(api, kind, account, registration, killed_at).await });
        tasks.push((kind, group.clone(), ids[via].clone(), led_by_victim, task));
    }
    tokio::time::sleep(BEFORE_KILL).await;
    let _ = killed_at.set(Instant::now());
    cluster.kill(victim).await;
    let mut streams = Vec::with_capacity(tasks.len());
    for (kind, group, via, led_by_victim, task) in tasks {
        let (samples, example) = task
            .await
            .map_err(|e| BenchError::Invalid(format!("a failover stream failed: {e}")))?;
        let mut figures = figures(kind, group, via, led_by_victim, &samples, &killed_at);
        figures.example = example;
        streams.push(figures);
    }
    Ok(KillFigures {
        victim: ids[victim].clone(),
        led,
        streams,
        settled_in: Duration::ZERO,
    })
}

/// One request: when it was sent, when it was answered, why it failed (if it did).
struct Sample {
    sent: Instant,
    answered: Instant,
    failure: Option<String>,
}

/// Requests back to back until one sent after the kill succeeded (or `GIVE_UP` after it);
/// also the first error answer (status and the start of its body).
async fn stream(
    api: ApiClient,
    kind: Kind,
    account: Account,
    registration: String,
    killed_at: Arc<OnceLock<Instant>>,
) -> (Vec<Sample>, Option<String>) {
    let mut samples = Vec::new();
    let mut example = None;
    let mut n = 0u64;
    loop {
        let sent = Instant::now();
        let answer = match kind {
            Kind::GetAccount => {
                let path = format!("/v1/account/{}", account.id);
                api.call(Method::GET, &path, Some(&account), None).await
            }
            Kind::PatchRegistration => {
                n += 1;
                let body =
                    Bytes::from(json!({ "description": format!("failover {n}") }).to_string());
                let path = format!("/v1/webhook/registration/{registration}");
                api.call(Method::PATCH, &path, Some(&account), Some(body))
                    .await
            }
        };
        let failure = match answer {
            Ok((StatusCode::OK, _)) => None,
            Ok((status, body)) => {
                if example.is_none() {
                    example = Some(format!(
                        "{} {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(160)
                            .collect::<String>()
                    ));
                }
                Some(status.as_u16().to_string())
            }
            Err(BenchError::Timeout { .. }) => Some("timeout".into()),
            Err(_) => Some("transport error".into()),
        };
        let answered = Instant::now();
        let ok = failure.is_none();
        samples.push(Sample {
            sent,
            answered,
            failure,
        });
        if let Some(&kill) = killed_at.get() {
            if (ok && sent >= kill) || answered.duration_since(kill) > GIVE_UP {
                return (samples, example);
            }
        }
    }
}

fn figures(
    kind: Kind,
    group: String,
    via: String,
    led_by_victim: bool,
    samples: &[Sample],
    killed_at: &OnceLock<Instant>,
) -> StreamFigures {
    let kill = killed_at.get().copied();
    let window = kill.and_then(|kill| {
        samples
            .iter()
            .find(|s| s.failure.is_none() && s.sent >= kill)
            .map(|s| s.answered.duration_since(kill))
    });
    StreamFigures {
        kind,
        group,
        via,
        led_by_victim,
        window,
        failed: samples.iter().filter_map(|s| s.failure.clone()).fold(
            BTreeMap::new(),
            |mut m, f| {
                *m.entry(f).or_default() += 1;
                m
            },
        ),
        slowest: samples
            .iter()
            .map(|s| s.answered.duration_since(s.sent))
            .max()
            .unwrap_or_default(),
        example: None,
    }
}

impl FailoverRun {
    /// The summary lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        let w = &self.windows;
        let streams: usize = self.kills.iter().map(|k| k.streams.len()).sum();
        let failed = self.failures();
        let failed_text = if failed.is_empty() {
            "no failed requests".to_string()
        } else {
            let list: Vec<String> = failed.iter().map(|(f, n)| format!("{f} × {n}")).collect();
            format!("failed requests {}", list.join(", "))
        };
        let settle: Vec<u64> = self
            .kills
            .iter()
            .map(|k| k.settled_in.as_micros() as u64)
            .collect();
        let example = self
            .kills
            .iter()
            .flat_map(|k| &k.streams)
            .find_map(|s| s.example.clone())
            .unwrap_or_else(|| "none".into());
        vec![
            format!(
                "failover window (SIGKILL of a group leader → first success of a request sent after it, through a survivor), {} kills, {} streams on the victims' groups: p50 {} p99 {} max {} (target p99 < 3 s: {}){}",
                self.kills.len(),
                w.count + self.never,
                ms(w.p50_us),
                ms(w.p99_us),
                ms(w.max_us),
                if self.never == 0 && w.p99_us < 3_000_000 { "met" } else { "NOT met" },
                if self.never > 0 { format!("; {} streams never succeeded again", self.never) } else { String::new() },
            ),
            format!(
                "  measured on API operations (GET account, PATCH registration); {failed_text} over {streams} streams (each retrying at once); slowest request of a group the victim did not lead {}; restart → settled again: max {}",
                ms(self.control_slowest.as_micros() as u64),
                ms(settle.iter().copied().max().unwrap_or(0)),
            ),
            format!("  first error answer: {example}"),
        ]
    }

    /// Failed requests of every stream, by status.
    fn failures(&self) -> BTreeMap<String, usize> {
        let mut all = BTreeMap::new();
        for s in self.kills.iter().flat_map(|k| &k.streams) {
            for (f, n) in &s.failed {
                *all.entry(f.clone()).or_default() += n;
            }
        }
        all
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "failed_requests": self.failures(),
            "what": "SIGKILL of the node leading the most groups; per request stream (GET account, PATCH registration of a record in a group it led, through a survivor), the time from the kill to the answer of the first request sent after it that succeeded. Measured on API operations only.",
            "windows_us": self.windows,
            "never_succeeded_again": self.never,
            "control_slowest_request_us": self.control_slowest.as_micros() as u64,
            "kills": self.kills.iter().map(|k| json!({
                "victim": k.victim,
                "led_groups": k.led,
                "settled_after_restart_s": k.settled_in.as_secs_f64(),
                "streams": k.streams.iter().map(|s| json!({
                    "kind": s.kind.name(),
                    "group": s.group,
                    "via": s.via,
                    "led_by_victim": s.led_by_victim,
                    "window_us": s.window.map(|w| w.as_micros() as u64),
                    "failed_requests": s.failed,
                    "slowest_request_us": s.slowest.as_micros() as u64,
                    "first_error_answer": s.example,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
