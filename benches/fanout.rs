//! `cargo bench --bench fanout -- [--quick] [--nodes 1|3]`
//!
//! Starts one webhookd node as a real process (temporary storage, PBKDF2 at 1,000
//! iterations so setup is quick, `delivery.max_in_flight` = 64 like the ceiling's
//! concurrency), then measures in the same run, against the same sink:
//!
//! * (a) the ceiling: the same POSTs a delivery sends, from a hyper-util pooled client
//!   straight to the sink, 64 in flight — measured before (b), between (b) and (c), and
//!   after (c). The machine's speed drifts within a run (by a third, in some runs), so
//!   (b) and (c) are each compared with the mean of the two measurements beside them;
//!   their ratio to the highest of the three, the strictest yardstick, is printed too;
//! * idle latency: trigger → first delivery for a 100-subscriber registration, triggers
//!   fired one after another;
//! * (b) fan-out, 1 registration × 10,000 subscriptions × 5 triggers;
//! * (c) 100 registrations × 100 subscriptions × 5 triggers, all fired concurrently;
//! * (d) authenticated `GET /v1/account/<id>` requests/s vs a hello-world hyper server;
//! * (e) the node's peak RSS during a 100,000-subscriber fan-out.
//!
//! `--nodes 3` then stops that node and starts a local three-node cluster (`node1..node3`
//! as separate processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, free ports, the same node
//! settings, 256 shards, a random cookie; the bench waits until every node's `GET /ready`
//! answers 200), and measures idle latency, (b) and (c) again with the same sizes, the API
//! calls spread round-robin over the three nodes. Subscribers are sharded across the nodes
//! by account, so about two thirds of the deliveries are handed off by the registration's
//! node to another one (the exact share is computed from the shard map and printed). It
//! reports the cluster's deliveries/s with their ratio to the ceiling and to the single
//! node's, node CPU per delivery summed over the three nodes against the single node's —
//! the cross-node cost, in µs of CPU per delivery — and each node's peak RSS.
//!
//! Figures are printed with their ratio to the ceiling and written to
//! `target/bench/fanout.json` (the cluster's under `"cluster"`) and
//! `target/bench/fanout.svg`. `--quick` shrinks the sizes so the run takes well under a
//! minute (well under two with `--nodes 3`): (b) 1 × 2,000 × 5, (c) 20 × 100 × 5, (e)
//! 20,000 subscribers, and 1.5 s load windows. Run without `--bench` (as `cargo test
//! --all-targets` does) it does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::HeaderMap;
use serde_json::{json, Value};
use webhookd::bench::client::{Account, ApiClient};
use webhookd::bench::cluster::{self, ClusterSpec, LocalCluster};
use webhookd::bench::load::{
    api_headers, get_rate, post_ceiling, HelloServer, LoadReport, LoadShape,
};
use webhookd::bench::node::{self, NodeProcess};
use webhookd::bench::progress::group;
use webhookd::bench::report::{
    latency_line, ms, per_s, ratio, svg_chart, write_file, Reference, Series, Table,
};
use webhookd::bench::run::{
    create_accounts, create_registrations, delivery_like_request, idle_latency, run_fanout,
    subscribe_all, warm_auth, FanoutReport, FanoutSpec, IdleLatency, IdleSpec, SetupOptions,
    StepFigure,
};
use webhookd::bench::sink::Sink;
use webhookd::bench::stats::Latency;
use webhookd::bench::{BenchError, BenchResult};
use webhookd::cluster::ShardMap;

/// How long the node may take to print `listening on`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long the cluster may take, once every node listens, until every `/ready` is 200.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// In-flight requests for the ceiling, the API reads and the setup calls.
const CONCURRENCY: usize = 64;
/// Subscriber accounts (every subscription comes from one of them).
const ACCOUNTS: usize = 100;
/// `delivery.max_in_flight` of the node under test: the ceiling's concurrency, so both
/// keep as many POSTs in flight. (The default, 256, suits endpoints that take a while to
/// answer; against this sink, which answers at once, the extra workers and connections
/// only cost CPU: about 15–20% more per delivery.)
const MAX_IN_FLIGHT: usize = CONCURRENCY;
/// `security.pbkdf2_iterations` of the node under test.
const PBKDF2_ITERATIONS: u32 = 1000;
/// Loopback, any free port.
const LOOPBACK: &str = "127.0.0.1:0";
/// The `--nodes` values accepted: one node, or one node then a cluster of three.
const NODE_COUNTS: [usize; 2] = [1, 3];
/// Usage line.
const USAGE: &str = "usage: cargo bench --bench fanout -- [--quick] [--nodes 1|3]";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    warmup: Duration,
    measure: Duration,
    latency_triggers: usize,
    latency_subscribers: usize,
    b_subscribers: usize,
    c_registrations: usize,
    c_subscribers: usize,
    triggers: usize,
    /// (e): subscribers of the memory fan-out (None: skipped).
    e_subscribers: Option<usize>,
    deadline: Duration,
}

const FULL: Sizes = Sizes {
    warmup: Duration::from_secs(1),
    measure: Duration::from_secs(5),
    // 200 so that p99 is not just the slowest trigger (the 2nd slowest of 200).
    latency_triggers: 200,
    latency_subscribers: 100,
    b_subscribers: 10_000,
    c_registrations: 100,
    c_subscribers: 100,
    triggers: 5,
    e_subscribers: Some(100_000),
    deadline: Duration::from_secs(300),
};

const QUICK: Sizes = Sizes {
    warmup: Duration::from_millis(300),
    measure: Duration::from_millis(1500),
    latency_triggers: 50,
    latency_subscribers: 100,
    b_subscribers: 2_000,
    c_registrations: 20,
    c_subscribers: 100,
    triggers: 5,
    e_subscribers: Some(20_000),
    deadline: Duration::from_secs(60),
};

impl Sizes {
    fn b_label(&self) -> String {
        format!(
            "(b) 1 × {} × {}",
            group(self.b_subscribers as u64),
            self.triggers
        )
    }

    fn c_label(&self) -> String {
        format!(
            "(c) {} × {} × {}",
            self.c_registrations, self.c_subscribers, self.triggers
        )
    }
}

/// Command-line options (after `--`).
#[derive(Debug, Clone, Copy)]
struct Options {
    bench: bool,
    quick: bool,
    nodes: usize,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        bench: false,
        quick: false,
        nodes: 1,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let nodes = |v: Option<String>| {
            let n = v
                .ok_or("--nodes needs a value".to_string())?
                .parse::<usize>()
                .map_err(|e| format!("--nodes: {e}"))?;
            if NODE_COUNTS.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "--nodes {n}: the bench runs 1 node, or 1 node and then a local 3-node cluster (--nodes 3); {USAGE}"
                ))
            }
        };
        match arg.as_str() {
            "--bench" => opts.bench = true,
            "--quick" => opts.quick = true,
            "--nodes" => opts.nodes = nodes(args.next())?,
            other if other.starts_with("--nodes=") => {
                opts.nodes = nodes(other.strip_prefix("--nodes=").map(str::to_string))?
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !opts.bench {
        println!("fanout: not run under `cargo bench`; nothing to do");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `target/bench` (honouring `CARGO_TARGET_DIR`).
fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

/// The settings every node under test runs with, single or in the cluster.
fn node_settings() -> String {
    format!(
        "[security]\npbkdf2_iterations = {PBKDF2_ITERATIONS}\n\n[delivery]\nmax_in_flight = {MAX_IN_FLIGHT}\n"
    )
}

fn node_config(dir: &Path) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n{}",
        dir.join("data").display().to_string(),
        node_settings()
    )
}

fn loopback() -> SocketAddr {
    LOOPBACK
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// A fan-out run with the CPU time of the node(s) around it.
struct Measured {
    report: FanoutReport,
    /// CPU time of every node under test, summed.
    node_cpu: Duration,
    /// CPU time of each node, in node order.
    per_node_cpu: Vec<Duration>,
    bench_cpu: Duration,
}

impl Measured {
    fn node_cpu_us_per_delivery(&self) -> f64 {
        self.node_cpu.as_micros() as f64 / self.report.delivered.max(1) as f64
    }

    fn json(&self) -> Value {
        json!({
            "report": self.report,
            "node_cpu_s": self.node_cpu.as_secs_f64(),
            "node_cpu_us_per_delivery": self.node_cpu_us_per_delivery(),
            "bench_process_cpu_s": self.bench_cpu.as_secs_f64(),
        })
    }
}

/// Everything a scenario needs.
struct Ctx<'a> {
    api: Arc<ApiClient>,
    sink: &'a Sink,
    owner: Account,
    subscribers: Vec<Account>,
    /// The node processes under test (one, or every cluster member).
    pids: Vec<u32>,
    opts: SetupOptions,
    setup: Vec<StepFigure>,
    deadline: Duration,
}

impl<'a> Ctx<'a> {
    /// Creates the owner (account 0) and the subscriber accounts through `api`, and
    /// authenticates each once.
    async fn new(
        api: Arc<ApiClient>,
        sink: &'a Sink,
        pids: Vec<u32>,
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
        })
    }

    /// Creates `registrations` registrations with `subscribers` subscriptions each.
    async fn registrations(
        &mut self,
        registrations: usize,
        subscribers: usize,
        what: &str,
    ) -> BenchResult<Vec<String>> {
        let (ids, figure) =
            create_registrations(&self.api, &self.owner, registrations, self.opts).await?;
        self.setup.push(figure);
        let mut figure =
            subscribe_all(&self.api, &ids, &self.subscribers, subscribers, self.opts).await?;
        figure.step = format!("subscribe ({what})");
        self.setup.push(figure);
        Ok(ids)
    }

    /// Idle latency on a fresh `subscribers`-subscriber registration.
    async fn idle_latency(&mut self, sizes: Sizes) -> BenchResult<IdleLatency> {
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
    fn node_cpu(&self) -> BenchResult<Vec<Duration>> {
        self.pids.iter().map(|pid| node::cpu_time(*pid)).collect()
    }

    /// (b) or (c) on the cluster: `shape` is (registrations, subscriptions each); also
    /// counts, from `map`, the deliveries handed off to another node.
    async fn cluster_fanout(
        &mut self,
        map: &ShardMap,
        label: String,
        shape: (usize, usize),
        what: &str,
        triggers: usize,
    ) -> BenchResult<ClusterFanout> {
        let (registrations, subscribers) = shape;
        let regs = self.registrations(registrations, subscribers, what).await?;
        let handoff = Handoff::of(map, &regs, &self.subscribers, subscribers, triggers)?;
        let measured = self.fanout(&label, &regs, subscribers, triggers).await?;
        println!(
            "{label}: {} ({:.0}% handed off to another node)",
            per_s(measured.report.deliveries_per_s),
            100.0 * handoff.share()
        );
        Ok(ClusterFanout { measured, handoff })
    }

    async fn fanout(
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
        let (nodes_before, me_before) = (self.node_cpu()?, node::cpu_time(me)?);
        let report = run_fanout(
            &self.api,
            self.sink,
            &self.owner,
            registrations,
            subscribers,
            &spec,
        )
        .await?;
        let (nodes_after, me_after) = (self.node_cpu()?, node::cpu_time(me)?);
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
        })
    }
}

/// Samples the RSS of `pid` every 20 ms until stopped; returns the largest value (KiB).
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(m) = node::memory(pid) {
                max = max.max(m.rss_kib);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    })
}

/// Result of the memory check.
struct MemoryCheck {
    subscribers: usize,
    measured: Measured,
    rss_before_kib: u64,
    peak_kib: u64,
    sampled_max_kib: u64,
    reset: bool,
}

/// The figures of the single-node part.
struct SingleRun {
    /// The highest of `ceiling_runs`.
    ceiling: LoadReport,
    /// The ceiling measured before (b), between (b) and (c), and after (c).
    ceiling_runs: [LoadReport; 3],
    idle: IdleLatency,
    b: Measured,
    c: Measured,
    node_read: LoadReport,
    hello_read: LoadReport,
    memory: Option<MemoryCheck>,
    /// Peak RSS through (d), before (e) (KiB): what the cluster's peaks compare with.
    peak_before_e_kib: u64,
    lifetime_peak_kib: u64,
    setup: Vec<StepFigure>,
    /// Node start included.
    wall_time: Duration,
}

impl SingleRun {
    /// The ceiling (b) is compared with: the mean of the measurements before and after it.
    fn b_ceiling(&self) -> f64 {
        self.bracket(0)
    }

    /// The ceiling (c) is compared with: the mean of the measurements before and after it.
    fn c_ceiling(&self) -> f64 {
        self.bracket(1)
    }

    fn bracket(&self, before: usize) -> f64 {
        let runs = &self.ceiling_runs;
        (runs[before].per_second + runs[before + 1].per_second) / 2.0
    }

    fn read_ratio(&self) -> f64 {
        if self.hello_read.per_second > 0.0 {
            self.node_read.per_second / self.hello_read.per_second
        } else {
            0.0
        }
    }

    /// Deliveries that did not arrive in time.
    fn missing(&self) -> u64 {
        [&self.b, &self.c]
            .iter()
            .map(|m| m.report.missing)
            .chain(self.memory.as_ref().map(|m| m.measured.report.missing))
            .sum::<u64>()
            + self.idle.missing
    }
}

/// How much of a fan-out's deliveries the registration's node handed off to another node.
#[derive(Debug, Clone, Copy, Default)]
struct Handoff {
    /// Deliveries of subscribers owned by another node than the registration.
    handed_off: u64,
    /// All the deliveries of the run.
    deliveries: u64,
}

impl Handoff {
    /// Counts, from the shard map, the subscriptions (subscription `j` of each registration
    /// comes from `subscribers[j % len]`, as `subscribe_all` makes them) whose subscriber
    /// lives on another node than their registration, times `triggers`.
    fn of(
        map: &ShardMap,
        registrations: &[String],
        subscribers: &[Account],
        per_registration: usize,
        triggers: usize,
    ) -> BenchResult<Self> {
        if subscribers.is_empty() {
            return Ok(Self::default());
        }
        let ids: Vec<&str> = (0..per_registration)
            .map(|j| subscribers[j % subscribers.len()].id.as_str())
            .collect();
        let mut handed_off = 0;
        for registration in registrations {
            handed_off += cluster::handed_off(map, registration, &ids)?;
        }
        Ok(Self {
            handed_off: handed_off * triggers as u64,
            deliveries: (registrations.len() * per_registration * triggers) as u64,
        })
    }

    fn share(&self) -> f64 {
        self.handed_off as f64 / self.deliveries.max(1) as f64
    }

    fn json(&self) -> Value {
        json!({
            "deliveries": self.deliveries,
            "handed_off_to_another_node": self.handed_off,
            "share": self.share(),
        })
    }
}

/// A cluster fan-out with its hand-off share.
struct ClusterFanout {
    measured: Measured,
    handoff: Handoff,
}

/// A cluster member as it ran.
struct MemberFigures {
    id: String,
    url: String,
    cluster_addr: SocketAddr,
    pid: u32,
    /// Peak RSS during the cluster scenarios (since the reset after start, when the kernel
    /// allowed it), KiB.
    peak_kib: u64,
    peak_reset: bool,
}

/// The figures of the cluster part.
struct ClusterRun {
    members: Vec<MemberFigures>,
    ready_in: Duration,
    idle: IdleLatency,
    b: ClusterFanout,
    c: ClusterFanout,
    setup: Vec<StepFigure>,
    /// Cluster start included.
    wall_time: Duration,
}

impl ClusterRun {
    fn nodes(&self) -> usize {
        self.members.len()
    }

    fn missing(&self) -> u64 {
        self.b.measured.report.missing + self.c.measured.report.missing + self.idle.missing
    }
}

async fn run(opts: Options) -> BenchResult<()> {
    let wall = Instant::now();
    let sizes = if opts.quick { QUICK } else { FULL };
    let sink = Sink::start(loopback()).await?;
    let single = single_node(&sink, sizes, opts, wall).await?;
    let cluster = if opts.nodes > 1 {
        Some(cluster_part(&sink, sizes, opts.nodes).await?)
    } else {
        None
    };
    let wall_time = wall.elapsed();
    let c = single.ceiling.per_second;

    println!();
    print!("{}", single_table(&single).render());
    if let Some(cl) = &cluster {
        println!();
        println!(
            "cluster of {} nodes (the same sizes; API calls round-robin over the nodes):",
            cl.nodes()
        );
        print!("{}", cluster_table(cl, &single).render());
        println!();
        for line in cross_node_lines(cl, &single) {
            println!("{line}");
        }
        println!(
            "total wall time (single node, then the cluster): {:.1} s",
            wall_time.as_secs_f64()
        );
    }

    // Files.
    let out = out_dir();
    let mut doc = single_json(&single, opts);
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "cluster".into(),
            cluster
                .as_ref()
                .map_or(Value::Null, |cl| cluster_json(cl, &single)),
        );
        obj.insert("wall_time_s".into(), json!(wall_time.as_secs_f64()));
    }
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| BenchError::Invalid(format!("cannot serialise the figures: {e}")))?;
    let json_path = out.join("fanout.json");
    write_file(&json_path, &text)?;
    let mut series = vec![
        Series {
            label: single.b.report.label.clone(),
            points: single.b.report.timeline.points(),
        },
        Series {
            label: single.c.report.label.clone(),
            points: single.c.report.timeline.points(),
        },
    ];
    if let Some(m) = &single.memory {
        series.push(Series {
            label: m.measured.report.label.clone(),
            points: m.measured.report.timeline.points(),
        });
    }
    if let Some(cl) = &cluster {
        for f in [&cl.b, &cl.c] {
            series.push(Series {
                label: f.measured.report.label.clone(),
                points: f.measured.report.timeline.points(),
            });
        }
    }
    let references = [
        Reference {
            label: format!("ceiling {}", per_s(c)),
            value: c,
        },
        Reference {
            label: "0.5 × ceiling".into(),
            value: c / 2.0,
        },
    ];
    let svg_path = out.join("fanout.svg");
    write_file(
        &svg_path,
        &svg_chart(
            "webhookd fan-out: deliveries/s since the first trigger",
            &series,
            &references,
        ),
    )?;
    println!(
        "\nwritten: {} and {}",
        json_path.display(),
        svg_path.display()
    );
    let missing = single.missing() + cluster.as_ref().map_or(0, ClusterRun::missing);
    if missing > 0 {
        return Err(BenchError::Invalid(format!(
            "{} deliveries did not arrive in time",
            group(missing)
        )));
    }
    Ok(())
}

/// The single-node part: starts the node, runs every scenario, stops the node.
async fn single_node(
    sink: &Sink,
    sizes: Sizes,
    opts: Options,
    wall: Instant,
) -> BenchResult<SingleRun> {
    let dir = tempfile::Builder::new()
        .prefix("webhookd-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temp dir", e))?;
    let config_path = dir.path().join("webhookd.toml");
    let config = node_config(dir.path());
    write_file(&config_path, &config)?;
    let log_path = dir.path().join("webhookd.log");
    let node = NodeProcess::start(
        Path::new(env!("CARGO_BIN_EXE_webhookd")),
        &config_path,
        &log_path,
        START_DEADLINE,
    )
    .await?;
    let started_in = wall.elapsed();
    println!(
        "fanout bench{}{}: 1 node at {} (pid {}, started in {}), storage in {}",
        if opts.quick { " --quick" } else { "" },
        if opts.nodes > 1 {
            format!(" --nodes {}", opts.nodes)
        } else {
            String::new()
        },
        node.url(),
        node.pid(),
        ms(started_in.as_micros() as u64),
        dir.path().display()
    );
    println!(
        "  node config: pbkdf2_iterations = {PBKDF2_ITERATIONS}, delivery.max_in_flight = {MAX_IN_FLIGHT}, other settings default (log level info, stderr to a file)"
    );
    if opts.nodes > 1 {
        println!(
            "  nodes: 1 first, then a local {}-node cluster with the same settings; {} CPUs",
            opts.nodes,
            cpus()
        );
    } else {
        println!(
            "  nodes: 1 (--nodes 3 adds a local three-node cluster); {} CPUs",
            cpus()
        );
    }
    let result = single_scenarios(&node, sink, sizes).await;
    node.stop().await;
    if result.is_err() {
        // Keep the node's log for a post-mortem.
        let kept = dir.keep();
        eprintln!("node log kept in {}", kept.join("webhookd.log").display());
    }
    let mut single = result?;
    single.wall_time = wall.elapsed();
    Ok(single)
}

/// One measurement of the ceiling (a), printed.
async fn ceiling_run(
    sink: &Sink,
    body: &Bytes,
    headers: &HeaderMap,
    shape: LoadShape,
    when: &str,
) -> BenchResult<LoadReport> {
    let ceiling = post_ceiling(sink.connect_addr(), body.clone(), headers.clone(), shape).await?;
    sink.take();
    println!(
        "(a) ceiling {when}: {} ({} POSTs of {} bytes, {} errors)",
        per_s(ceiling.per_second),
        group(ceiling.requests),
        body.len(),
        ceiling.errors
    );
    Ok(ceiling)
}

async fn single_scenarios(node: &NodeProcess, sink: &Sink, sizes: Sizes) -> BenchResult<SingleRun> {
    let api = Arc::new(ApiClient::new(&[node.url().to_string()], REQUEST_TIMEOUT)?);
    let hello = HelloServer::start(loopback()).await?;
    let shape = LoadShape {
        concurrency: CONCURRENCY,
        warmup: sizes.warmup,
        measure: sizes.measure,
    };

    // (a) The ceiling.
    let (body, headers) = delivery_like_request();
    let ceiling_before = ceiling_run(sink, &body, &headers, shape, "before (b)").await?;

    let mut ctx = Ctx::new(api.clone(), sink, vec![node.pid()], sizes.deadline).await?;

    // Idle latency.
    let idle = ctx.idle_latency(sizes).await?;
    println!(
        "idle latency: trigger → first delivery p50 {} p99 {} ({} triggers × {} subscribers)",
        ms(idle.first_delivery.p50_us),
        ms(idle.first_delivery.p99_us),
        idle.triggers,
        idle.subscribers
    );

    // (b) One registration, many subscribers.
    let b_label = sizes.b_label();
    let regs = ctx.registrations(1, sizes.b_subscribers, "b").await?;
    let b = ctx
        .fanout(&b_label, &regs, sizes.b_subscribers, sizes.triggers)
        .await?;
    println!("{b_label}: {}", per_s(b.report.deliveries_per_s));
    let ceiling_between = ceiling_run(sink, &body, &headers, shape, "between (b) and (c)").await?;

    // (c) Many registrations, triggered concurrently.
    let c_label = sizes.c_label();
    let regs = ctx
        .registrations(sizes.c_registrations, sizes.c_subscribers, "c")
        .await?;
    let cc = ctx
        .fanout(&c_label, &regs, sizes.c_subscribers, sizes.triggers)
        .await?;
    println!("{c_label}: {}", per_s(cc.report.deliveries_per_s));
    let ceiling_after = ceiling_run(sink, &body, &headers, shape, "after (c)").await?;

    // (d) Authenticated reads vs hello-world.
    let read_headers = api_headers(&ctx.owner.username, &ctx.owner.api_key)?;
    let node_read = get_rate(
        &format!("{}/v1/account/{}", node.url(), ctx.owner.id),
        read_headers.clone(),
        shape,
    )
    .await?;
    let hello_read = get_rate(&format!("http://{}/", hello.addr()), read_headers, shape).await?;
    println!(
        "(d) GET /v1/account/<id>: {} vs hello-world {}",
        per_s(node_read.per_second),
        per_s(hello_read.per_second)
    );

    // (e) Peak RSS during a big fan-out.
    let pid = node.pid();
    let peak_before_e_kib = node::memory(pid)?.hwm_kib;
    let memory = match sizes.e_subscribers {
        None => None,
        Some(n) => {
            let regs = ctx.registrations(1, n, "e").await?;
            let before = node::memory(pid)?;
            let reset = node::reset_peak_rss(pid);
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_rss(pid, stop.clone());
            let label = format!("(e) 1 × {} × 1", group(n as u64));
            let measured = ctx.fanout(&label, &regs, n, 1).await;
            stop.store(true, Ordering::Relaxed);
            let sampled_max_kib = sampler.await.unwrap_or(0);
            let measured = measured?;
            let after = node::memory(pid)?;
            println!(
                "{label}: {}, peak RSS {:.1} MB",
                per_s(measured.report.deliveries_per_s),
                after.hwm_kib as f64 / 1024.0
            );
            Some(MemoryCheck {
                subscribers: n,
                measured,
                rss_before_kib: before.rss_kib,
                peak_kib: after.hwm_kib,
                sampled_max_kib,
                reset,
            })
        }
    };
    let lifetime_peak_kib = node::memory(pid)?.hwm_kib;
    let ceiling_runs = [ceiling_before, ceiling_between, ceiling_after];
    let ceiling = ceiling_runs
        .iter()
        .max_by(|x, y| x.per_second.total_cmp(&y.per_second))
        .cloned()
        .unwrap_or_else(|| ceiling_runs[0].clone());
    Ok(SingleRun {
        ceiling,
        ceiling_runs,
        idle,
        b,
        c: cc,
        node_read,
        hello_read,
        memory,
        peak_before_e_kib,
        lifetime_peak_kib,
        setup: ctx.setup,
        wall_time: Duration::ZERO,
    })
}

/// Rows of a fan-out figure: deliveries/s and the lines under it.
fn fanout_rows(table: &mut Table, m: &Measured, c: f64, goal: &str, cpu_note: &str) {
    let r = &m.report;
    table.row([
        format!("{} deliveries/s", r.label),
        per_s(r.deliveries_per_s),
        ratio(r.deliveries_per_s, c),
        goal.to_string(),
    ]);
    table.row([
        "    trigger → delivery p50/p90/p99/max".to_string(),
        latency_line(&r.latency),
        String::new(),
        String::new(),
    ]);
    table.row([
        "    triggers accepted/s".to_string(),
        per_s(r.triggers_accepted_per_s),
        String::new(),
        String::new(),
    ]);
    table.row([
        format!("    node CPU per delivery{cpu_note}"),
        format!("{:.1} µs", m.node_cpu_us_per_delivery()),
        String::new(),
        String::new(),
    ]);
    table.row([
        "    delivered / persisted / missing".to_string(),
        format!(
            "{} / {} / {}",
            group(r.delivered),
            r.persisted
                .as_ref()
                .map_or("-".into(), |p| group(p.succeeded)),
            group(r.missing)
        ),
        String::new(),
        String::new(),
    ]);
}

/// `p50 / p99` of a latency, in ms.
fn p50_p99(l: &Latency) -> String {
    format!("{} / {}", ms(l.p50_us), ms(l.p99_us))
}

/// The idle-latency rows; `last` fills the last column of each (goal, or comparison).
fn idle_rows(table: &mut Table, idle: &IdleLatency, last: [String; 2]) {
    let [first_last, all_last] = last;
    table.row([
        "idle: trigger → first delivery p50 / p99".to_string(),
        p50_p99(&idle.first_delivery),
        String::new(),
        first_last,
    ]);
    table.row([
        format!(
            "idle: trigger → all {} delivered p50 / p99",
            idle.subscribers
        ),
        p50_p99(&idle.all_delivered),
        String::new(),
        all_last,
    ]);
}

fn setup_rows(table: &mut Table, setup: &[StepFigure]) {
    for f in setup {
        table.row([
            format!("setup: {}", f.step),
            format!(
                "{} in {:.2} s ({})",
                group(f.count),
                f.duration_us as f64 / 1e6,
                per_s(f.per_second)
            ),
            String::new(),
            String::new(),
        ]);
    }
}

fn single_table(s: &SingleRun) -> Table {
    let c = s.ceiling.per_second;
    let mut table = Table::new(["figure", "value", "ratio", "goal (issue 5)"]);
    table.row([
        "(a) ceiling: delivery-like POSTs → sink, 64 in flight".to_string(),
        per_s(c),
        "1.000×".into(),
        "the highest of:".into(),
    ]);
    table.row([
        "    measured before (b) / between / after (c)".to_string(),
        format!(
            "{} / {} / {}",
            per_s(s.ceiling_runs[0].per_second),
            per_s(s.ceiling_runs[1].per_second),
            per_s(s.ceiling_runs[2].per_second)
        ),
        String::new(),
        String::new(),
    ]);
    for (m, own) in [(&s.b, s.b_ceiling()), (&s.c, s.c_ceiling())] {
        let goal = if m.report.deliveries_per_s >= 0.5 * own {
            "≥ 0.5× its ceiling: met"
        } else {
            "≥ 0.5× its ceiling: NOT met"
        };
        fanout_rows(&mut table, m, own, goal, "");
        table.row([
            "    its ceiling (mean of the two beside it)".to_string(),
            per_s(own),
            format!("{} highest", ratio(m.report.deliveries_per_s, c)),
            String::new(),
        ]);
    }
    table.row([
        "(d) authenticated GET /v1/account/<id>".to_string(),
        per_s(s.node_read.per_second),
        format!(
            "{} hello",
            ratio(s.node_read.per_second, s.hello_read.per_second)
        ),
        format!(
            "≥ 0.3× hello-world: {}",
            if s.read_ratio() >= 0.3 {
                "met"
            } else {
                "NOT met"
            }
        ),
    ]);
    table.row([
        "    hello-world hyper server (same client)".to_string(),
        per_s(s.hello_read.per_second),
        ratio(s.hello_read.per_second, c),
        String::new(),
    ]);
    let goal = format!(
        "p99 < 10 ms: {}",
        if s.idle.first_delivery.p99_us < 10_000 {
            "met"
        } else {
            "NOT met"
        }
    );
    idle_rows(&mut table, &s.idle, [goal, String::new()]);
    match &s.memory {
        Some(m) => {
            let r = &m.measured.report;
            let scaled = if m.subscribers == 100_000 {
                String::new()
            } else {
                format!(" ({} subscribers in --quick)", group(m.subscribers as u64))
            };
            table.row([
                format!("(e) peak RSS during the fan-out{scaled}"),
                format!("{:.1} MB", m.peak_kib as f64 / 1024.0),
                String::new(),
                format!(
                    "< 300 MB at 100,000: {}",
                    if m.subscribers < 100_000 {
                        "n/a in --quick"
                    } else if m.peak_kib < 300 * 1024 {
                        "met"
                    } else {
                        "NOT met"
                    }
                ),
            ]);
            table.row([
                format!("{} deliveries/s", r.label),
                per_s(r.deliveries_per_s),
                ratio(r.deliveries_per_s, c),
                String::new(),
            ]);
        }
        None => table.row([
            "(e) peak RSS".to_string(),
            "skipped".to_string(),
            String::new(),
            String::new(),
        ]),
    }
    setup_rows(&mut table, &s.setup);
    table.row([
        "wall time (node start included)".to_string(),
        format!("{:.1} s", s.wall_time.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    table
}

fn single_json(s: &SingleRun, opts: Options) -> Value {
    let memory_json = s.memory.as_ref().map(|m| {
        json!({
            "subscribers": m.subscribers,
            "peak_rss_kib": m.peak_kib,
            "peak_reset_before_fanout": m.reset,
            "rss_before_fanout_kib": m.rss_before_kib,
            "sampled_max_rss_kib": m.sampled_max_kib,
            "fanout": m.measured.json(),
        })
    });
    json!({
        "bench": "fanout",
        "quick": opts.quick,
        "nodes": opts.nodes,
        "cpus": cpus(),
        "node_config": {
            "pbkdf2_iterations": PBKDF2_ITERATIONS,
            "delivery_max_in_flight": MAX_IN_FLIGHT,
        },
        "ceiling": s.ceiling,
        "ceiling_runs": s.ceiling_runs,
        "ceiling_for_b": s.b_ceiling(),
        "ceiling_for_c": s.c_ceiling(),
        "ratio_b_to_its_ceiling": s.b.report.deliveries_per_s / s.b_ceiling(),
        "ratio_c_to_its_ceiling": s.c.report.deliveries_per_s / s.c_ceiling(),
        "idle_latency": s.idle,
        "fanout_one_registration": s.b.json(),
        "fanout_many_registrations": s.c.json(),
        "api_read": {
            "node": s.node_read,
            "hello_world": s.hello_read,
            "ratio_to_hello_world": s.read_ratio(),
        },
        "memory": memory_json,
        "node_peak_rss_before_e_kib": s.peak_before_e_kib,
        "node_lifetime_peak_rss_kib": s.lifetime_peak_kib,
        "setup": s.setup,
        "single_node_wall_time_s": s.wall_time.as_secs_f64(),
    })
}

/// The cluster part: starts the cluster, runs its scenarios, stops it.
async fn cluster_part(sink: &Sink, sizes: Sizes, nodes: usize) -> BenchResult<ClusterRun> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("webhookd-bench-cluster-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temp dir", e))?;
    let spec = ClusterSpec {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_webhookd")),
        dir: dir.path().to_path_buf(),
        nodes,
        settings: node_settings(),
        start_deadline: START_DEADLINE,
        ready_deadline: READY_DEADLINE,
    };
    let cluster = match LocalCluster::start(&spec).await {
        Ok(cluster) => cluster,
        Err(e) => {
            // Keep the nodes' configs and logs for a post-mortem.
            let _ = dir.keep();
            return Err(e);
        }
    };
    println!();
    println!(
        "cluster: {} nodes ready in {} (all /ready 200 {} after the last one listened), storage in {}",
        nodes,
        ms(started.elapsed().as_micros() as u64),
        ms(cluster.ready_in().as_micros() as u64),
        cluster.dir().display()
    );
    for ((m, url), pid) in cluster
        .members()
        .iter()
        .zip(cluster.urls())
        .zip(cluster.pids())
    {
        println!(
            "  {}: {url} (cluster port {}, pid {pid})",
            m.id, m.cluster_addr
        );
    }
    println!(
        "  cluster config: shards = {}, heartbeat_interval_ms = {}, down_after_ms = {}, rpc_timeout_ms = {}; node settings as above",
        cluster::SHARDS,
        cluster::HEARTBEAT_MS,
        cluster::DOWN_AFTER_MS,
        cluster::RPC_TIMEOUT_MS
    );
    let result = cluster_scenarios(&cluster, sink, sizes).await;
    cluster.stop().await;
    if result.is_err() {
        let kept = dir.keep();
        eprintln!("cluster configs and logs kept in {}", kept.display());
    }
    let mut run = result?;
    run.wall_time = started.elapsed();
    Ok(run)
}

async fn cluster_scenarios(
    cluster: &LocalCluster,
    sink: &Sink,
    sizes: Sizes,
) -> BenchResult<ClusterRun> {
    let pids = cluster.pids();
    // Peak RSS from here on (the kernel may refuse; then it is the lifetime peak).
    let resets: Vec<bool> = pids.iter().map(|pid| node::reset_peak_rss(*pid)).collect();
    let api = Arc::new(ApiClient::new(&cluster.urls(), REQUEST_TIMEOUT)?);
    let map = cluster.shard_map();
    let nodes = pids.len();
    let mut ctx = Ctx::new(api, sink, pids.clone(), sizes.deadline).await?;

    let idle = ctx.idle_latency(sizes).await?;
    println!(
        "cluster idle latency: trigger → first delivery p50 {} p99 {} ({} triggers × {} subscribers)",
        ms(idle.first_delivery.p50_us),
        ms(idle.first_delivery.p99_us),
        idle.triggers,
        idle.subscribers
    );

    let b = ctx
        .cluster_fanout(
            map,
            format!("{} on {nodes} nodes", sizes.b_label()),
            (1, sizes.b_subscribers),
            "b, cluster",
            sizes.triggers,
        )
        .await?;
    let c = ctx
        .cluster_fanout(
            map,
            format!("{} on {nodes} nodes", sizes.c_label()),
            (sizes.c_registrations, sizes.c_subscribers),
            "c, cluster",
            sizes.triggers,
        )
        .await?;

    let mut members = Vec::with_capacity(nodes);
    for (((m, url), pid), reset) in cluster
        .members()
        .iter()
        .zip(cluster.urls())
        .zip(pids)
        .zip(resets)
    {
        members.push(MemberFigures {
            id: m.id.clone(),
            url,
            cluster_addr: m.cluster_addr,
            pid,
            peak_kib: node::memory(pid)?.hwm_kib,
            peak_reset: reset,
        });
    }
    Ok(ClusterRun {
        members,
        ready_in: cluster.ready_in(),
        idle,
        b,
        c,
        setup: ctx.setup,
        wall_time: Duration::ZERO,
    })
}

/// `+12.3 µs` / `-4.0 µs`.
fn signed_us(us: f64) -> String {
    format!("{}{:.1} µs", if us >= 0.0 { "+" } else { "-" }, us.abs())
}

fn cluster_table(cl: &ClusterRun, single: &SingleRun) -> Table {
    let c = single.ceiling.per_second;
    let n = cl.nodes();
    let mut table = Table::new(["figure", "value", "ratio", "vs the single node"]);
    for (f, s) in [(&cl.b, &single.b), (&cl.c, &single.c)] {
        let m = &f.measured;
        fanout_rows(
            &mut table,
            m,
            c,
            &format!(
                "{} ({})",
                ratio(m.report.deliveries_per_s, s.report.deliveries_per_s),
                per_s(s.report.deliveries_per_s)
            ),
            &format!(" (sum of {n} nodes)"),
        );
        table.row([
            "    node CPU per node".to_string(),
            cl.members
                .iter()
                .zip(&m.per_node_cpu)
                .map(|(member, cpu)| format!("{} {:.2} s", member.id, cpu.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
            String::new(),
        ]);
        table.row([
            "    cross-node cost: extra CPU per delivery".to_string(),
            signed_us(m.node_cpu_us_per_delivery() - s.node_cpu_us_per_delivery()),
            String::new(),
            format!("single node {:.1} µs", s.node_cpu_us_per_delivery()),
        ]);
        table.row([
            "    handed off to another node".to_string(),
            format!(
                "{} of {} ({:.0}%)",
                group(f.handoff.handed_off),
                group(f.handoff.deliveries),
                100.0 * f.handoff.share()
            ),
            String::new(),
            String::new(),
        ]);
    }
    idle_rows(
        &mut table,
        &cl.idle,
        [
            format!("single node {}", p50_p99(&single.idle.first_delivery)),
            format!("single node {}", p50_p99(&single.idle.all_delivered)),
        ],
    );
    table.row([
        "peak RSS per node (cluster scenarios)".to_string(),
        cl.members
            .iter()
            .map(|m| format!("{} {:.1} MB", m.id, m.peak_kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", "),
        String::new(),
        format!(
            "single node {:.1} MB (through (d), before (e))",
            single.peak_before_e_kib as f64 / 1024.0
        ),
    ]);
    setup_rows(&mut table, &cl.setup);
    table.row([
        "wall time (cluster start included)".to_string(),
        format!("{:.1} s", cl.wall_time.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    table
}

/// The cross-node cost in words, (b) first.
fn cross_node_lines(cl: &ClusterRun, single: &SingleRun) -> Vec<String> {
    let c = single.ceiling.per_second;
    let n = cl.nodes();
    let mut lines = Vec::new();
    for (f, s) in [(&cl.b, &single.b), (&cl.c, &single.c)] {
        let (m, r) = (&f.measured, &f.measured.report);
        lines.push(format!(
            "cross-node cost, {}: {} CPU per delivery ({:.1} µs summed over the {n} nodes vs {:.1} µs on the single node)",
            r.label,
            signed_us(m.node_cpu_us_per_delivery() - s.node_cpu_us_per_delivery()),
            m.node_cpu_us_per_delivery(),
            s.node_cpu_us_per_delivery(),
        ));
        lines.push(format!(
            "  deliveries: {} = {} the ceiling, {} the single node's {}",
            per_s(r.deliveries_per_s),
            ratio(r.deliveries_per_s, c),
            ratio(r.deliveries_per_s, s.report.deliveries_per_s),
            per_s(s.report.deliveries_per_s),
        ));
    }
    lines.push(format!(
        "subscribers are sharded across the {n} nodes by account, so about {}/{n} of the deliveries are handed off by the registration's node to another node: here {:.0}% in (b), {:.0}% in (c)",
        n - 1,
        100.0 * cl.b.handoff.share(),
        100.0 * cl.c.handoff.share()
    ));
    lines
}

fn cross_node_json(f: &ClusterFanout, s: &Measured, ceiling: f64) -> Value {
    let (m, r) = (&f.measured, &f.measured.report);
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    json!({
        "cluster_deliveries_per_s": r.deliveries_per_s,
        "cluster_ratio_to_ceiling": div(r.deliveries_per_s, ceiling),
        "single_node_deliveries_per_s": s.report.deliveries_per_s,
        "ratio_cluster_to_single_node": div(r.deliveries_per_s, s.report.deliveries_per_s),
        "cluster_node_cpu_us_per_delivery": m.node_cpu_us_per_delivery(),
        "single_node_cpu_us_per_delivery": s.node_cpu_us_per_delivery(),
        "extra_cpu_us_per_delivery": m.node_cpu_us_per_delivery() - s.node_cpu_us_per_delivery(),
        "handed_off_share": f.handoff.share(),
    })
}

fn cluster_json(cl: &ClusterRun, single: &SingleRun) -> Value {
    let c = single.ceiling.per_second;
    let fanout = |f: &ClusterFanout| {
        let mut v = f.measured.json();
        if let Some(obj) = v.as_object_mut() {
            let per_node: serde_json::Map<String, Value> = cl
                .members
                .iter()
                .zip(&f.measured.per_node_cpu)
                .map(|(m, cpu)| (m.id.clone(), json!(cpu.as_secs_f64())))
                .collect();
            obj.insert("node_cpu_s_per_node".into(), Value::Object(per_node));
            obj.insert("handoff".into(), f.handoff.json());
        }
        v
    };
    json!({
        "nodes": cl.nodes(),
        "shards": cluster::SHARDS,
        "heartbeat_interval_ms": cluster::HEARTBEAT_MS,
        "down_after_ms": cluster::DOWN_AFTER_MS,
        "rpc_timeout_ms": cluster::RPC_TIMEOUT_MS,
        "api_requests": "round-robin over every node",
        "members": cl.members.iter().map(|m| json!({
            "id": m.id,
            "url": m.url,
            "cluster_addr": m.cluster_addr.to_string(),
            "pid": m.pid,
            "peak_rss_kib": m.peak_kib,
            "peak_reset_after_start": m.peak_reset,
        })).collect::<Vec<_>>(),
        "ready_after_listening_s": cl.ready_in.as_secs_f64(),
        "idle_latency": cl.idle,
        "fanout_one_registration": fanout(&cl.b),
        "fanout_many_registrations": fanout(&cl.c),
        "cross_node_cost": {
            "fanout_one_registration": cross_node_json(&cl.b, &single.b, c),
            "fanout_many_registrations": cross_node_json(&cl.c, &single.c, c),
        },
        "setup": cl.setup,
        "wall_time_s": cl.wall_time.as_secs_f64(),
    })
}
