//! (f) Endpoint isolation: one endpoint that never answers must not slow the healthy ones.
//!
//! A fresh node (the same settings, plus `delivery.max_in_flight_per_endpoint` at an eighth
//! of `max_in_flight`, the defaults' ratio) with 200 healthy subscriber endpoints and one
//! that accepts connections and never answers (the sink's `/hang/`). Two registrations: one
//! with the 200 healthy subscribers, one with the same 200 and the dead endpoint. A warm-up
//! trigger of the first, then the same fan-out on each — without, then with the dead
//! endpoint — and the healthy deliveries/s and p99 latency (trigger → delivery) compared:
//! with the dead endpoint they must stay within 20 % of the run without it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use webhookd::bench::client::ApiClient;
use webhookd::bench::node::NodeProcess;
use webhookd::bench::report::{ms, per_s, write_file};
use webhookd::bench::run::{
    create_accounts, create_registrations, run_fanout, subscribe_all, warm_auth, FanoutReport,
    FanoutSpec, SetupOptions,
};
use webhookd::bench::sink::Sink;
use webhookd::bench::{BenchError, BenchResult};

use crate::context::{node_config, CONCURRENCY, MAX_IN_FLIGHT, REQUEST_TIMEOUT, START_DEADLINE};
use crate::options::Sizes;

/// Healthy subscriber endpoints.
const HEALTHY: usize = 200;
/// The largest slowdown accepted with the dead endpoint.
const TOLERANCE: f64 = 0.20;

/// The two runs of (f).
pub(crate) struct IsolationRun {
    pub(crate) without: FanoutReport,
    pub(crate) with_dead: FanoutReport,
    /// `delivery.max_in_flight_per_endpoint` of the node.
    pub(crate) cap: usize,
}

impl IsolationRun {
    /// Healthy deliveries/s with the dead endpoint over those without it.
    pub(crate) fn rate_ratio(&self) -> f64 {
        ratio(
            self.with_dead.deliveries_per_s,
            self.without.deliveries_per_s,
        )
    }

    /// p99 latency with the dead endpoint over that without it.
    pub(crate) fn p99_ratio(&self) -> f64 {
        ratio(
            self.with_dead.latency.p99_us as f64,
            self.without.latency.p99_us as f64,
        )
    }

    /// Whether both stay within [`TOLERANCE`].
    pub(crate) fn passed(&self) -> bool {
        self.rate_ratio() >= 1.0 - TOLERANCE && self.p99_ratio() <= 1.0 + TOLERANCE
    }

    /// The lines printed for (f).
    pub(crate) fn lines(&self) -> Vec<String> {
        let row = |what: &str, r: &FanoutReport| {
            format!(
                "  {what:<28} {:>12}  p50 {:>9}  p99 {:>9}  ({} deliveries)",
                per_s(r.deliveries_per_s),
                ms(r.latency.p50_us),
                ms(r.latency.p99_us),
                r.delivered
            )
        };
        vec![
            format!(
                "(f) endpoint isolation: 1 × {HEALTHY} healthy endpoints × {} triggers, delivery.max_in_flight_per_endpoint = {}",
                self.without.triggers, self.cap
            ),
            row("without the dead endpoint", &self.without),
            row("with 1 that never answers", &self.with_dead),
            format!(
                "  with/without: deliveries/s × {:.2}, p99 × {:.2} (within {:.0} %: {})",
                self.rate_ratio(),
                self.p99_ratio(),
                TOLERANCE * 100.0,
                if self.passed() { "yes" } else { "NO" }
            ),
        ]
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "healthy_endpoints": HEALTHY,
            "max_in_flight_per_endpoint": self.cap,
            "without_dead_endpoint": self.without,
            "with_dead_endpoint": self.with_dead,
            "deliveries_per_s_ratio": self.rate_ratio(),
            "p99_ratio": self.p99_ratio(),
            "within_tolerance": self.passed(),
        })
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Runs (f) on a node of its own.
pub(crate) async fn isolation_part(sink: &Sink, sizes: Sizes) -> BenchResult<IsolationRun> {
    let dir = tempfile::Builder::new()
        .prefix("webhookd-bench-isolation-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temp dir", e))?;
    let cap = (MAX_IN_FLIGHT / 8).max(1);
    let config = format!(
        "{}max_in_flight_per_endpoint = {cap}\n",
        node_config(dir.path())
    );
    let config_path = dir.path().join("webhookd.toml");
    write_file(&config_path, &config)?;
    let node = NodeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_webhookd")),
        &config_path,
        &dir.path().join("webhookd.log"),
        START_DEADLINE,
    )
    .await?;
    let result = runs(&node, sink, sizes, cap).await;
    node.stop().await;
    if result.is_err() {
        let kept = dir.keep();
        eprintln!("node log kept in {}", kept.join("webhookd.log").display());
    }
    result
}

async fn runs(
    node: &NodeProcess,
    sink: &Sink,
    sizes: Sizes,
    cap: usize,
) -> BenchResult<IsolationRun> {
    let api = Arc::new(ApiClient::new(&[node.url().to_string()], REQUEST_TIMEOUT)?);
    let opts = SetupOptions {
        concurrency: CONCURRENCY,
        progress: true,
    };
    let (mut accounts, _) = create_accounts(&api, sink, "iso", 0, HEALTHY + 1, opts).await?;
    let owner = accounts.remove(0);
    let dead = api
        .create_account("iso-dead", &sink.hanging_endpoint(0))
        .await?;
    warm_auth(&api, &accounts, opts).await?;
    let (regs, _) = create_registrations(&api, &owner, 2, opts).await?;
    let (healthy_only, with_dead) = (vec![regs[0].clone()], vec![regs[1].clone()]);
    subscribe_all(&api, &regs, &accounts, HEALTHY, opts).await?;
    api.subscribe(&dead, &regs[1]).await?;

    let spec = |label: &str, triggers: usize, verify_persisted: bool| FanoutSpec {
        label: label.into(),
        triggers_per_registration: triggers,
        concurrency: CONCURRENCY,
        deadline: Duration::from_secs(60),
        verify_persisted,
        progress: true,
    };
    // Connections to the 200 endpoints opened, caches filled.
    run_fanout(
        &api,
        sink,
        &owner,
        &healthy_only,
        HEALTHY,
        &spec("(f) warm-up", 2, false),
    )
    .await?;
    let triggers = sizes.f_triggers;
    let without = run_fanout(
        &api,
        sink,
        &owner,
        &healthy_only,
        HEALTHY,
        &spec("(f) healthy", triggers, true),
    )
    .await?;
    // The dead endpoint's deliveries never complete: only the healthy ones are counted.
    let with_dead = run_fanout(
        &api,
        sink,
        &owner,
        &with_dead,
        HEALTHY,
        &spec("(f) + dead", triggers, false),
    )
    .await?;
    Ok(IsolationRun {
        without,
        with_dead,
        cap,
    })
}
