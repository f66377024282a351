//! The single-node part: one node as a real process, and every scenario on it in order:
//! (a), idle latency, (b), (a), (c), (a), (d), the subscribe rate, (e).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webhookd::bench::ceiling::Ceiling;
use webhookd::bench::client::ApiClient;
use webhookd::bench::load::{HelloServer, LoadReport, LoadShape};
use webhookd::bench::node::{self, NodeProcess};
use webhookd::bench::report::{ms, per_s, write_file};
use webhookd::bench::run::{delivery_like_request, IdleLatency, StepFigure};
use webhookd::bench::sink::Sink;
use webhookd::bench::{BenchError, BenchResult};

use crate::ceiling::ceiling_run;
use crate::context::{
    cpus, loopback, node_config, Ctx, Measured, CONCURRENCY, MAX_IN_FLIGHT, PBKDF2_ITERATIONS,
    REQUEST_TIMEOUT, START_DEADLINE,
};
use crate::memory::{memory_check, MemoryCheck};
use crate::options::{Options, Sizes};
use crate::reads::read_rates;
use crate::subscribe::{subscribe_rate, SubscribeRate};

/// The figures of the single-node part.
pub(crate) struct SingleRun {
    /// The highest of `ceiling_runs`.
    pub(crate) ceiling: Ceiling,
    /// The ceiling measured before (b), between (b) and (c), and after (c).
    pub(crate) ceiling_runs: [Ceiling; 3],
    pub(crate) idle: IdleLatency,
    pub(crate) b: Measured,
    pub(crate) c: Measured,
    pub(crate) node_read: LoadReport,
    pub(crate) hello_read: LoadReport,
    /// Distinct accounts subscribing concurrently to one registration.
    pub(crate) subscribe: SubscribeRate,
    pub(crate) memory: Option<MemoryCheck>,
    /// Peak RSS through (d), before (e) (KiB): what the cluster's peaks compare with.
    pub(crate) peak_before_e_kib: u64,
    pub(crate) lifetime_peak_kib: u64,
    pub(crate) setup: Vec<StepFigure>,
    /// Storage growth of each subscribing step: (step, subscriptions, bytes).
    pub(crate) subscription_disk: Vec<(String, u64, i64)>,
    /// Node start included.
    pub(crate) wall_time: Duration,
}

impl SingleRun {
    /// The ceiling (b) is compared with: the mean of the measurements before and after it.
    pub(crate) fn b_ceiling(&self) -> f64 {
        self.bracket(0)
    }

    /// The ceiling (c) is compared with: the mean of the measurements before and after it.
    pub(crate) fn c_ceiling(&self) -> f64 {
        self.bracket(1)
    }

    pub(crate) fn bracket(&self, before: usize) -> f64 {
        let runs = &self.ceiling_runs;
        (runs[before].load.per_second + runs[before + 1].load.per_second) / 2.0
    }

    pub(crate) fn read_ratio(&self) -> f64 {
        if self.hello_read.per_second > 0.0 {
            self.node_read.per_second / self.hello_read.per_second
        } else {
            0.0
        }
    }

    /// Deliveries that did not arrive in time.
    pub(crate) fn missing(&self) -> u64 {
        [&self.b, &self.c]
            .iter()
            .map(|m| m.report.missing)
            .chain(self.memory.as_ref().map(|m| m.measured.report.missing))
            .sum::<u64>()
            + self.idle.missing
    }
}

/// The single-node part: starts the node, runs every scenario, stops the node.
pub(crate) async fn single_node(
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
    let result = single_scenarios(&node, &dir.path().join("data"), sink, sizes).await;
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

/// Every single-node scenario in order, on a running `node`.
pub(crate) async fn single_scenarios(
    node: &NodeProcess,
    storage: &Path,
    sink: &Sink,
    sizes: Sizes,
) -> BenchResult<SingleRun> {
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

    let pids = vec![node.pid()];
    let mut ctx = Ctx::new(api.clone(), sink, pids, storage.into(), sizes.deadline).await?;

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
    let (node_read, hello_read) = read_rates(node.url(), &ctx.owner, &hello, shape).await?;

    let subscribe = subscribe_rate(&mut ctx, sizes.b_subscribers, None).await?;

    // (e) Peak RSS during a big fan-out.
    let pid = node.pid();
    let peak_before_e_kib = node::memory(pid)?.hwm_kib;
    let memory = match sizes.e_subscribers {
        None => None,
        Some(n) => Some(memory_check(&mut ctx, pid, n).await?),
    };
    let lifetime_peak_kib = node::memory(pid)?.hwm_kib;
    let ceiling_runs = [ceiling_before, ceiling_between, ceiling_after];
    let ceiling = ceiling_runs
        .iter()
        .max_by(|x, y| x.load.per_second.total_cmp(&y.load.per_second))
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
        subscribe,
        memory,
        peak_before_e_kib,
        lifetime_peak_kib,
        setup: ctx.setup,
        subscription_disk: ctx.subscription_disk,
        wall_time: Duration::ZERO,
    })
}
