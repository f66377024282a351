//! What every scenario shares: the node settings, the accounts and registrations a run
//! creates ([`Ctx`]), and a fan-out measured with the CPU time of the nodes around it
//! ([`Measured`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use webhookd::bench::client::{Account, ApiClient};
use webhookd::bench::node::{self};
use webhookd::bench::run::{
    create_accounts, create_registrations, idle_latency, run_fanout, subscribe_all, warm_auth,
    FanoutReport, FanoutSpec, IdleLatency, IdleSpec, SetupOptions, StepFigure,
};
use webhookd::bench::sink::Sink;
use webhookd::bench::BenchResult;

use crate::options::Sizes;

/// How long the node may take to print `listening on`.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long the cluster may take, once every node listens, until every `/ready` is 200.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one API request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// In-flight requests for the ceiling, the API reads and the setup calls.
pub(crate) const CONCURRENCY: usize = 64;
/// Subscriber accounts (every subscription comes from one of them).
pub(crate) const ACCOUNTS: usize = 100;
/// `delivery.max_in_flight` of the node under test: the ceiling's concurrency, so both
/// keep as many POSTs in flight. (The default, 256, suits endpoints that take a while to
/// answer; against this sink, which answers at once, the extra workers and connections
/// only cost CPU: about 15–20% more per delivery.)
pub(crate) const MAX_IN_FLIGHT: usize = CONCURRENCY;
/// `security.pbkdf2_iterations` of the node under test.
pub(crate) const PBKDF2_ITERATIONS: u32 = 1000;
/// Loopback, any free port.
pub(crate) const LOOPBACK: &str = "127.0.0.1:0";

/// `target/bench` (honouring `CARGO_TARGET_DIR`).
pub(crate) fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

/// The settings every node under test runs with, single or in the cluster.
pub(crate) fn node_settings() -> String {
    format!(
        "[security]\npbkdf2_iterations = {PBKDF2_ITERATIONS}\n\n[delivery]\nmax_in_flight = {MAX_IN_FLIGHT}\n"
    )
}

pub(crate) fn node_config(dir: &Path) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n{}",
        dir.join("data").display().to_string(),
        node_settings()
    )
}

pub(crate) fn loopback() -> SocketAddr {
    LOOPBACK
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// A fan-out run with the CPU time of the node(s) around it.
pub(crate) struct Measured {
    pub(crate) report: FanoutReport,
    /// CPU time of every node under test, summed.
    pub(crate) node_cpu: Duration,
    /// CPU time of each node, in node order.
    pub(crate) per_node_cpu: Vec<Duration>,
    pub(crate) bench_cpu: Duration,
    /// CPU time of the sink's thread (part of `bench_cpu`).
    pub(crate) sink_cpu: Duration,
    /// Growth of the nodes' storage on disk over the run, bytes (negative: compacted).
    pub(crate) disk_growth: i64,
}

impl Measured {
    pub(crate) fn node_cpu_us_per_delivery(&self) -> f64 {
        self.node_cpu.as_micros() as f64 / self.report.delivered.max(1) as f64
    }

    /// Storage on disk per delivery made (summed over the nodes).
    pub(crate) fn disk_bytes_per_delivery(&self) -> f64 {
        self.disk_growth as f64 / self.report.delivered.max(1) as f64
    }

    /// What the sink spent per POST received, beside the node's CPU per delivery.
    pub(crate) fn sink_cpu_us_per_post(&self) -> f64 {
        self.sink_cpu.as_micros() as f64 / self.report.delivered.max(1) as f64
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "report": self.report,
            "node_cpu_s": self.node_cpu.as_secs_f64(),
            "node_cpu_us_per_delivery": self.node_cpu_us_per_delivery(),
            "bench_process_cpu_s": self.bench_cpu.as_secs_f64(),
            "sink_cpu_us_per_post": self.sink_cpu_us_per_post(),
            "disk_growth_bytes": self.disk_growth,
            "disk_bytes_per_delivery": self.disk_bytes_per_delivery(),
        })
    }
}

/// Everything a scenario needs.
pub(crate) struct Ctx<'a> {
    pub(crate) api: Arc<ApiClient>,
    pub(crate) sink: &'a Sink,
    pub(crate) owner: Account,
    pub(crate) subscribers: Vec<Account>,
    /// The node processes under test (one, or every cluster member).
    pub(crate) pids: Vec<u32>,
    pub(crate) opts: SetupOptions,
    pub(crate) setup: Vec<StepFigure>,
    pub(crate) deadline: Duration,
    /// The directory holding the nodes' storage.
    pub(crate) storage: PathBuf,
    /// Storage growth of each subscribing step: (step, subscriptions, bytes).
    pub(crate) subscription_disk: Vec<(String, u64, i64)>,
}

impl<'a> Ctx<'a> {
    /// Creates the owner (account 0) and the subscriber accounts through `api`, and
    /// authenticates each once.
    pub(crate) async fn new(
        api: Arc<ApiClient>,
        sink: &'a Sink,
        pids: Vec<u32>,
        storage: PathBuf,
        deadline: Duration,
    ) -> BenchResult<Ctx<'a>> {
        // Accounts: 0 owns every registration, 1..=ACCOUNTS subscribe.
        let opts = SetupOptions {
            concurrency: CONCURRENCY,
            progress: true,
        };
        let mut setup = Vec::new();
        let (mut accounts, figure) =
            create_accounts(&api, sink, "bench", 0, ACCOUNTS + 1, opts).await?;
        setup.push(figure);
        setup.push(warm_auth(&api, &accounts, opts).await?);
        let owner = accounts.remove(0);
        Ok(Ctx {
            api,
            sink,
            owner,
            subscribers: accounts,
            pids,
            opts,
            setup,
            deadline,
            storage,
            subscription_disk: Vec::new(),
        })
    }

    /// Bytes the nodes' storage takes on disk now.
    pub(crate) fn disk(&self) -> BenchResult<i64> {
        node::disk_usage(&self.storage).map(|b| i64::try_from(b).unwrap_or(i64::MAX))
    }

    /// Creates `registrations` registrations with `subscribers` subscriptions each.
    pub(crate) async fn registrations(
        &mut self,
        registrations: usize,
        subscribers: usize,
        what: &str,
    ) -> BenchResult<Vec<String>> {
        let (ids, figure) =
            create_registrations(&self.api, &self.owner, registrations, self.opts).await?;
        self.setup.push(figure);
        let before = self.disk()?;
        let mut figure =
            subscribe_all(&self.api, &ids, &self.subscribers, subscribers, self.opts).await?;
        figure.step = format!("subscribe ({what})");
        self.subscription_disk
            .push((figure.step.clone(), figure.count, self.disk()? - before));
        self.setup.push(figure);
        Ok(ids)
    }

    /// Idle latency on a fresh `subscribers`-subscriber registration.
    pub(crate) async fn idle_latency(&mut self, sizes: Sizes) -> BenchResult<IdleLatency> {
        let regs = self
            .registrations(1, sizes.latency_subscribers, "latency")
            .await?;
        idle_latency(
            &self.api,
            self.sink,
            &self.owner,
            &regs[0],
            sizes.latency_subscribers,
            IdleSpec {
                triggers: sizes.latency_triggers,
                deadline: Duration::from_secs(10),
                pause: Duration::from_millis(20),
            },
        )
        .await
    }

    /// CPU time of every node under test, in node order.
    pub(crate) fn node_cpu(&self) -> BenchResult<Vec<Duration>> {
        self.pids.iter().map(|pid| node::cpu_time(*pid)).collect()
    }

    pub(crate) async fn fanout(
        &self,
        label: &str,
        registrations: &[String],
        subscribers: usize,
        triggers: usize,
    ) -> BenchResult<Measured> {
        let spec = FanoutSpec {
            label: label.into(),
            triggers_per_registration: triggers,
            concurrency: CONCURRENCY,
            deadline: self.deadline,
            verify_persisted: true,
            progress: true,
        };
        let me = std::process::id();
        let sink = self.sink.cpu();
        let disk_before = self.disk()?;
        let (nodes_before, me_before, sink_before) =
            (self.node_cpu()?, node::cpu_time(me)?, sink.now()?);
        let report = run_fanout(
            &self.api,
            self.sink,
            &self.owner,
            registrations,
            subscribers,
            &spec,
        )
        .await?;
        let (nodes_after, me_after, sink_after) =
            (self.node_cpu()?, node::cpu_time(me)?, sink.now()?);
        let per_node_cpu: Vec<Duration> = nodes_after
            .iter()
            .zip(&nodes_before)
            .map(|(after, before)| after.saturating_sub(*before))
            .collect();
        Ok(Measured {
            report,
            node_cpu: per_node_cpu.iter().sum(),
            per_node_cpu,
            bench_cpu: me_after.saturating_sub(me_before),
            sink_cpu: sink_after.saturating_sub(sink_before),
            disk_growth: self.disk()? - disk_before,
        })
    }
}
