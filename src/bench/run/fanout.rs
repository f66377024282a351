//! A fan-out run: triggers fired at every registration at once, the sink's arrivals
//! attributed to their triggers, and the figures (rates, latencies, what the node
//! persisted).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::{event_data, next_seq};
use crate::bench::client::{Account, ApiClient};
use crate::bench::error::BenchResult;
use crate::bench::pool::run_indexed;
use crate::bench::progress::Progress;
use crate::bench::sink::{Arrival, Sink};
use crate::bench::stats::{bucket_counts, rate, Latency, Timeline};

/// How a fan-out run is shaped.
#[derive(Debug, Clone)]
pub struct FanoutSpec {
    /// Name of the run (table row, JSON key, chart legend).
    pub label: String,
    /// Triggers per registration.
    pub triggers_per_registration: usize,
    /// Trigger requests in flight at once.
    pub concurrency: usize,
    /// Give up waiting for deliveries after this long (from the first trigger).
    pub deadline: Duration,
    /// Afterwards, wait (bounded) until the node reports every outcome persisted.
    pub verify_persisted: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The node's own count of a run's delivery outcomes (`GET /v1/webhook/triggered/<id>`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Persisted {
    /// Outcomes recorded as delivered.
    pub succeeded: u64,
    /// Still waiting for an attempt (or its outcome write).
    pub pending: u64,
    /// Recorded as failed.
    pub failed: u64,
    /// Skipped or cancelled.
    pub other: u64,
    /// Whether every expected outcome was recorded as delivered within the deadline.
    pub complete: bool,
    /// From the last delivery at the sink until the check passed (or gave up), µs.
    pub wait_us: u64,
}

/// The figures of one fan-out run.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Name of the run.
    pub label: String,
    /// Registrations triggered.
    pub registrations: usize,
    /// Subscriptions per registration.
    pub subscribers_per_registration: usize,
    /// Triggers fired (all registrations).
    pub triggers: usize,
    /// Deliveries expected: registrations × subscribers × triggers per registration.
    pub expected: u64,
    /// Deliveries of this run that reached the sink.
    pub delivered: u64,
    /// Expected deliveries that did not arrive before the deadline.
    pub missing: u64,
    /// Deliveries beyond the expected count (duplicates).
    pub extra: u64,
    /// POSTs that arrived during the run but belong to no trigger of it.
    pub stray: u64,
    /// First trigger sent → last delivery received, µs.
    pub duration_us: u64,
    /// `delivered / duration`.
    pub deliveries_per_s: f64,
    /// Triggers answered per second (first sent → last answered).
    pub triggers_accepted_per_s: f64,
    /// Round trip of the trigger requests.
    pub trigger_response: Latency,
    /// Trigger sent → each delivery received.
    pub latency: Latency,
    /// Trigger sent → that trigger's first delivery received.
    pub first_delivery: Latency,
    /// Deliveries received in each second from the first trigger.
    pub per_second: Vec<u64>,
    /// Deliveries/s over time (finer buckets, for the chart).
    pub timeline: Timeline,
    /// The node's own outcome counts, when checked.
    pub persisted: Option<Persisted>,
}

/// A trigger that was fired.
struct Fired {
    seq: u32,
    id: String,
    sent_us: u64,
    answered_us: u64,
}

/// Fires `spec.triggers_per_registration` triggers at each registration (interleaved,
/// `spec.concurrency` at a time), waits until the sink received every delivery or the
/// deadline passed, and computes the figures.
pub async fn run_fanout(
    api: &Arc<ApiClient>,
    sink: &Sink,
    owner: &Account,
    registrations: &[String],
    subscribers_per_registration: usize,
    spec: &FanoutSpec,
) -> BenchResult<FanoutReport> {
    let r = registrations.len();
    let triggers = r * spec.triggers_per_registration;
    let expected = (triggers * subscribers_per_registration) as u64;
    let jobs: Arc<Vec<(usize, u32)>> =
        Arc::new((0..triggers).map(|i| (i % r, next_seq())).collect());

    sink.take();
    let base = sink.posts();
    let progress = Progress::start(
        format!("{:<13}", spec.label),
        expected,
        sink.post_counter(base),
        spec.progress,
    );
    let started = Instant::now();
    let clock = sink.clock();
    let fired = {
        let (api, owner) = (api.clone(), Arc::new(owner.clone()));
        let regs = Arc::new(registrations.to_vec());
        let jobs = jobs.clone();
        run_indexed(
            triggers,
            spec.concurrency,
            Arc::new(AtomicU64::new(0)),
            move |i| {
                let (api, owner, regs, jobs) =
                    (api.clone(), owner.clone(), regs.clone(), jobs.clone());
                async move {
                    let (reg, seq) = jobs[i];
                    let sent_us = clock.now_us();
                    let id = api.trigger(&owner, &regs[reg], &event_data(seq)).await?;
                    Ok(Fired {
                        seq,
                        id,
                        sent_us,
                        answered_us: clock.now_us(),
                    })
                }
            },
        )
        .await
    };
    let fired = match fired {
        Ok(fired) => fired,
        Err(e) => {
            progress.finish().await;
            return Err(e);
        }
    };
    let arrivals = collect_deliveries(sink, &fired, base, expected, started + spec.deadline).await;
    progress.finish().await;
    let waited_at = Instant::now();
    let mut report = figures(
        &spec.label,
        r,
        subscribers_per_registration,
        &fired,
        &arrivals,
        expected,
    );
    if spec.verify_persisted {
        let mut persisted = persisted_counts(
            api,
            owner,
            &fired,
            subscribers_per_registration as u64,
            spec.concurrency,
        )
        .await?;
        persisted.wait_us = waited_at.elapsed().as_micros() as u64;
        report.persisted = Some(persisted);
    }
    Ok(report)
}

/// Waits until the sink holds `expected` deliveries of the `fired` triggers (POSTs that
/// belong to none of them do not count) or `deadline`; returns every arrival taken.
async fn collect_deliveries(
    sink: &Sink,
    fired: &[Fired],
    base: u64,
    expected: u64,
    deadline: Instant,
) -> Vec<Arrival> {
    let seqs: std::collections::HashSet<u32> = fired.iter().map(|f| f.seq).collect();
    let mut arrivals = Vec::new();
    let mut mine = 0;
    let mut target = base + expected;
    loop {
        let reached = sink.wait_for_posts(target, deadline).await;
        // Read the count before taking: an arrival in between is then taken but not
        // counted, so the next target can only fall short (one more round), never overshoot.
        let seen = sink.posts();
        let taken = sink.take();
        mine += taken.iter().filter(|a| seqs.contains(&a.seq)).count() as u64;
        arrivals.extend(taken);
        if mine >= expected || !reached {
            return arrivals;
        }
        // Stray POSTs took some of the count: wait for as many more.
        target = seen + (expected - mine);
    }
}

/// Turns the fired triggers and the sink's arrivals into a report (pure).
fn figures(
    label: &str,
    registrations: usize,
    subscribers_per_registration: usize,
    fired: &[Fired],
    arrivals: &[Arrival],
    expected: u64,
) -> FanoutReport {
    let by_seq: HashMap<u32, usize> = fired.iter().enumerate().map(|(i, f)| (f.seq, i)).collect();
    let mut latencies = Vec::with_capacity(arrivals.len());
    let mut times = Vec::with_capacity(arrivals.len());
    let mut first = vec![u64::MAX; fired.len()];
    let mut stray = 0;
    for a in arrivals {
        let Some(&i) = by_seq.get(&a.seq) else {
            stray += 1;
            continue;
        };
        let at = u64::from(a.at_us);
        let latency = at.saturating_sub(fired[i].sent_us);
        latencies.push(latency);
        times.push(at);
        first[i] = first[i].min(latency);
    }
    let delivered = latencies.len() as u64;
    let start = fired.iter().map(|f| f.sent_us).min().unwrap_or(0);
    let last_answer = fired.iter().map(|f| f.answered_us).max().unwrap_or(start);
    let last_arrival = times.iter().copied().max().unwrap_or(start);
    let duration_us = last_arrival.saturating_sub(start);
    let mut responses: Vec<u64> = fired.iter().map(|f| f.answered_us - f.sent_us).collect();
    let mut firsts: Vec<u64> = first.into_iter().filter(|&f| f != u64::MAX).collect();
    FanoutReport {
        label: label.to_string(),
        registrations,
        subscribers_per_registration,
        triggers: fired.len(),
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        extra: delivered.saturating_sub(expected),
        stray,
        duration_us,
        deliveries_per_s: rate(delivered, duration_us),
        triggers_accepted_per_s: rate(fired.len() as u64, last_answer.saturating_sub(start)),
        trigger_response: Latency::from_samples(&mut responses),
        latency: Latency::from_samples(&mut latencies),
        first_delivery: Latency::from_samples(&mut firsts),
        per_second: bucket_counts(times.iter().copied(), start, 1_000_000),
        timeline: Timeline::new(&times, start),
        persisted: None,
    }
}

/// How long the persisted-outcome check may take.
const PERSIST_DEADLINE: Duration = Duration::from_secs(30);

/// Polls each fired trigger's delivery counts until all `per_trigger` outcomes are
/// recorded as delivered, or [`PERSIST_DEADLINE`].
async fn persisted_counts(
    api: &Arc<ApiClient>,
    owner: &Account,
    fired: &[Fired],
    per_trigger: u64,
    concurrency: usize,
) -> BenchResult<Persisted> {
    let deadline = Instant::now() + PERSIST_DEADLINE;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    // The latest counts of every trigger; only the unfinished ones are asked again.
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut open: Vec<String> = fired.iter().map(|f| f.id.clone()).collect();
    let owner = Arc::new(owner.clone());
    while !open.is_empty() {
        let ids = Arc::new(std::mem::take(&mut open));
        let (api, owner, asked) = (api.clone(), owner.clone(), ids.clone());
        let counts = run_indexed(
            ids.len(),
            concurrency,
            Arc::new(AtomicU64::new(0)),
            move |i| {
                let (api, owner, ids) = (api.clone(), owner.clone(), asked.clone());
                async move { api.trigger_counts(&owner, &ids[i]).await }
            },
        )
        .await?;
        for (id, c) in ids.iter().zip(counts) {
            if field(&c, "succeeded") < per_trigger {
                open.push(id.clone());
            }
            latest.insert(id.clone(), c);
        }
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut total = Persisted {
        complete: open.is_empty(),
        ..Persisted::default()
    };
    for c in latest.values() {
        total.succeeded += field(c, "succeeded");
        total.pending += field(c, "pending");
        total.failed += field(c, "failed");
        total.other += field(c, "skipped") + field(c, "cancelled");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sink::{NO_SEQ, NO_SUBSCRIBER};
    use bytes::Bytes;

    fn fired(seq: u32, sent_us: u64) -> Fired {
        Fired {
            seq,
            id: format!("t{seq}"),
            sent_us,
            answered_us: sent_us + 100,
        }
    }

    fn arrival(seq: u32, at_us: u32) -> Arrival {
        Arrival {
            at_us,
            seq,
            subscriber: 0,
        }
    }

    async fn post(url: String, body: &'static str) {
        let http = crate::bench::client::http_client();
        let request = hyper::Request::builder()
            .method("POST")
            .uri(url)
            .body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        crate::bench::client::send(&http, request, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn stray_posts_do_not_end_the_wait_early() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = sink.endpoint(1);
        let fired = [fired(41, 0)];
        let base = sink.posts();
        // A stray and one of ours arrive first; the second of ours comes later.
        post(url.clone(), r#"{"seq": 40}"#).await;
        post(url.clone(), r#"{"seq": 41}"#).await;
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            post(url, r#"{"seq": 41}"#).await;
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let arrivals = collect_deliveries(&sink, &fired, base, 2, deadline).await;
        late.await.unwrap();
        assert_eq!(arrivals.iter().filter(|a| a.seq == 41).count(), 2);
        assert_eq!(arrivals.len(), 3);
    }

    #[test]
    fn figures_attribute_deliveries_to_their_triggers() {
        let fired = [fired(7, 1_000), fired(8, 2_000)];
        let arrivals = [
            arrival(7, 3_000),
            arrival(7, 5_000),
            arrival(8, 2_500),
            arrival(8, 1_001_000),
            Arrival {
                at_us: 4_000,
                seq: NO_SEQ,
                subscriber: NO_SUBSCRIBER,
            },
        ];
        let r = figures("b", 2, 2, &fired, &arrivals, 5);
        assert_eq!((r.delivered, r.missing, r.extra, r.stray), (4, 1, 0, 1));
        assert_eq!(r.duration_us, 1_000_000);
        assert_eq!(r.deliveries_per_s, 4.0);
        assert_eq!(r.per_second, vec![3, 1]);
        assert_eq!(r.first_delivery.count, 2);
        assert_eq!(r.first_delivery.max_us, 2_000);
        assert_eq!(r.latency.max_us, 999_000);
        assert_eq!(r.trigger_response.p50_us, 100);
        // Two triggers answered in 1,100 µs from the first send.
        assert!((r.triggers_accepted_per_s - 2.0 / 0.0011).abs() < 1e-6);
    }
}
