//! `cargo bench --bench fanout -- [--quick] [--nodes 1]`
//!
//! Starts one webhookd node as a real process (temporary storage, PBKDF2 at 1,000
//! iterations so setup is quick), then measures in the same run, against the same sink:
//!
//! * (a) the ceiling: the same POSTs a delivery sends, from a hyper-util pooled client
//!   straight to the sink, 64 in flight;
//! * idle latency: trigger → first delivery for a 100-subscriber registration, triggers
//!   fired one after another;
//! * (b) fan-out, 1 registration × 10,000 subscriptions × 5 triggers;
//! * (c) 100 registrations × 100 subscriptions × 5 triggers, all fired concurrently;
//! * (d) authenticated `GET /v1/account/<id>` requests/s vs a hello-world hyper server;
//! * (e) the node's peak RSS during a 100,000-subscriber fan-out.
//!
//! Figures are printed with their ratio to the ceiling and written to
//! `target/bench/fanout.json` and `target/bench/fanout.svg`. `--quick` shrinks the sizes
//! so the run takes well under a minute: (b) 1 × 2,000 × 5, (c) 20 × 100 × 5, (e) 20,000
//! subscribers, and 1.5 s load windows. Run without `--bench` (as `cargo test
//! --all-targets` does) it does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhookd::bench::client::{Account, ApiClient};
use webhookd::bench::load::{api_headers, get_rate, post_ceiling, HelloServer, LoadShape};
use webhookd::bench::node::{self, NodeProcess};
use webhookd::bench::progress::group;
use webhookd::bench::report::{
    latency_line, ms, per_s, ratio, svg_chart, write_file, Reference, Series, Table,
};
use webhookd::bench::run::{
    create_accounts, create_registrations, delivery_like_request, idle_latency, run_fanout,
    subscribe_all, warm_auth, FanoutReport, FanoutSpec, IdleSpec, SetupOptions, StepFigure,
};
use webhookd::bench::sink::Sink;
use webhookd::bench::{BenchError, BenchResult};

/// How long the node may take to print `listening on`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// In-flight requests for the ceiling, the API reads and the setup calls.
const CONCURRENCY: usize = 64;
/// Subscriber accounts (every subscription comes from one of them).
const ACCOUNTS: usize = 100;
/// `delivery.max_in_flight` of the node under test.
const MAX_IN_FLIGHT: usize = 256;
/// `security.pbkdf2_iterations` of the node under test.
const PBKDF2_ITERATIONS: u32 = 1000;
/// Loopback, any free port.
const LOOPBACK: &str = "127.0.0.1:0";

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
    latency_triggers: 50,
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
            v.ok_or("--nodes needs a value".to_string())?
                .parse::<usize>()
                .map_err(|e| format!("--nodes: {e}"))
        };
        match arg.as_str() {
            "--bench" => opts.bench = true,
            "--quick" => opts.quick = true,
            "--nodes" => opts.nodes = nodes(args.next())?,
            other if other.starts_with("--nodes=") => {
                opts.nodes = nodes(other.strip_prefix("--nodes=").map(str::to_string))?
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo bench --bench fanout -- [--quick] [--nodes 1]"
                ))
            }
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
    if opts.nodes != 1 {
        eprintln!(
            "error: --nodes {}: clustering does not exist yet, so the bench runs a single node; only --nodes 1 is accepted",
            opts.nodes
        );
        return ExitCode::FAILURE;
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

fn node_config(dir: &Path) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n[security]\npbkdf2_iterations = {PBKDF2_ITERATIONS}\n\n[delivery]\nmax_in_flight = {MAX_IN_FLIGHT}\n",
        dir.join("data").display().to_string()
    )
}

fn loopback() -> SocketAddr {
    LOOPBACK
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A fan-out run with the node's CPU time around it.
struct Measured {
    report: FanoutReport,
    node_cpu: Duration,
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
struct Ctx {
    api: Arc<ApiClient>,
    sink: Sink,
    owner: Account,
    subscribers: Vec<Account>,
    pid: u32,
    opts: SetupOptions,
    setup: Vec<StepFigure>,
    deadline: Duration,
}

impl Ctx {
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
        let (node_before, me_before) = (node::cpu_time(self.pid)?, node::cpu_time(me)?);
        let report = run_fanout(
            &self.api,
            &self.sink,
            &self.owner,
            registrations,
            subscribers,
            &spec,
        )
        .await?;
        let (node_after, me_after) = (node::cpu_time(self.pid)?, node::cpu_time(me)?);
        Ok(Measured {
            report,
            node_cpu: node_after.saturating_sub(node_before),
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

async fn run(opts: Options) -> BenchResult<()> {
    let wall = Instant::now();
    let sizes = if opts.quick { QUICK } else { FULL };
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
        "fanout bench{}: 1 node at {} (pid {}, started in {}), storage in {}",
        if opts.quick { " --quick" } else { "" },
        node.url(),
        node.pid(),
        ms(started_in.as_micros() as u64),
        dir.path().display()
    );
    println!(
        "  node config: pbkdf2_iterations = {PBKDF2_ITERATIONS}, delivery.max_in_flight = {MAX_IN_FLIGHT}, other settings default (log level info, stderr to a file)"
    );
    println!(
        "  nodes: 1 (clustering does not exist yet; --nodes accepts only 1); {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let result = scenarios(&node, sizes, opts, wall).await;
    node.stop().await;
    if result.is_err() {
        // Keep the node's log for a post-mortem.
        let kept = dir.keep();
        eprintln!("node log kept in {}", kept.join("webhookd.log").display());
    }
    result
}

async fn scenarios(
    node: &NodeProcess,
    sizes: Sizes,
    opts: Options,
    wall: Instant,
) -> BenchResult<()> {
    let api = Arc::new(ApiClient::new(&[node.url().to_string()], REQUEST_TIMEOUT)?);
    let sink = Sink::start(loopback()).await?;
    let hello = HelloServer::start(loopback()).await?;
    let shape = LoadShape {
        concurrency: CONCURRENCY,
        warmup: sizes.warmup,
        measure: sizes.measure,
    };

    // (a) The ceiling.
    let (body, headers) = delivery_like_request();
    let ceiling = post_ceiling(sink.connect_addr(), body.clone(), headers, shape).await?;
    sink.take();
    println!(
        "(a) ceiling: {} ({} POSTs of {} bytes, {} errors)",
        per_s(ceiling.per_second),
        group(ceiling.requests),
        body.len(),
        ceiling.errors
    );
    let c = ceiling.per_second;

    // Accounts: 0 owns every registration, 1..=ACCOUNTS subscribe.
    let opts_setup = SetupOptions {
        concurrency: CONCURRENCY,
        progress: true,
    };
    let mut setup = Vec::new();
    let (mut accounts, figure) =
        create_accounts(&api, &sink, "bench", 0, ACCOUNTS + 1, opts_setup).await?;
    setup.push(figure);
    setup.push(warm_auth(&api, &accounts, opts_setup).await?);
    let owner = accounts.remove(0);
    let mut ctx = Ctx {
        api: api.clone(),
        sink,
        owner,
        subscribers: accounts,
        pid: node.pid(),
        opts: opts_setup,
        setup,
        deadline: sizes.deadline,
    };

    // Idle latency.
    let regs = ctx
        .registrations(1, sizes.latency_subscribers, "latency")
        .await?;
    let idle = idle_latency(
        &ctx.api,
        &ctx.sink,
        &ctx.owner,
        &regs[0],
        sizes.latency_subscribers,
        IdleSpec {
            triggers: sizes.latency_triggers,
            deadline: Duration::from_secs(10),
            pause: Duration::from_millis(20),
        },
    )
    .await?;
    println!(
        "idle latency: trigger → first delivery p50 {} p99 {} ({} triggers × {} subscribers)",
        ms(idle.first_delivery.p50_us),
        ms(idle.first_delivery.p99_us),
        idle.triggers,
        idle.subscribers
    );

    // (b) One registration, many subscribers.
    let b_label = format!(
        "(b) 1 × {} × {}",
        group(sizes.b_subscribers as u64),
        sizes.triggers
    );
    let regs = ctx.registrations(1, sizes.b_subscribers, "b").await?;
    let b = ctx
        .fanout(&b_label, &regs, sizes.b_subscribers, sizes.triggers)
        .await?;
    println!("{b_label}: {}", per_s(b.report.deliveries_per_s));

    // (c) Many registrations, triggered concurrently.
    let c_label = format!(
        "(c) {} × {} × {}",
        sizes.c_registrations, sizes.c_subscribers, sizes.triggers
    );
    let regs = ctx
        .registrations(sizes.c_registrations, sizes.c_subscribers, "c")
        .await?;
    let cc = ctx
        .fanout(&c_label, &regs, sizes.c_subscribers, sizes.triggers)
        .await?;
    println!("{c_label}: {}", per_s(cc.report.deliveries_per_s));

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
    let memory = match sizes.e_subscribers {
        None => None,
        Some(n) => {
            let regs = ctx.registrations(1, n, "e").await?;
            let before = node::memory(ctx.pid)?;
            let reset = node::reset_peak_rss(ctx.pid);
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_rss(ctx.pid, stop.clone());
            let label = format!("(e) 1 × {} × 1", group(n as u64));
            let measured = ctx.fanout(&label, &regs, n, 1).await;
            stop.store(true, Ordering::Relaxed);
            let sampled_max_kib = sampler.await.unwrap_or(0);
            let measured = measured?;
            let after = node::memory(ctx.pid)?;
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
    let lifetime_peak = node::memory(ctx.pid)?.hwm_kib;

    // Summary.
    let mut table = Table::new(["figure", "value", "ratio", "goal (issue 5)"]);
    table.row([
        "(a) ceiling: delivery-like POSTs → sink, 64 in flight".to_string(),
        per_s(c),
        "1.000×".into(),
        String::new(),
    ]);
    for m in [&b, &cc] {
        let r = &m.report;
        let goal = if r.deliveries_per_s >= 0.5 * c {
            "≥ 0.5× ceiling: met"
        } else {
            "≥ 0.5× ceiling: NOT met"
        };
        table.row([
            format!("{} deliveries/s", r.label),
            per_s(r.deliveries_per_s),
            ratio(r.deliveries_per_s, c),
            goal.into(),
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
            "    node CPU per delivery".to_string(),
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
    let read_ratio = if hello_read.per_second > 0.0 {
        node_read.per_second / hello_read.per_second
    } else {
        0.0
    };
    table.row([
        "(d) authenticated GET /v1/account/<id>".to_string(),
        per_s(node_read.per_second),
        format!(
            "{} hello",
            ratio(node_read.per_second, hello_read.per_second)
        ),
        format!(
            "≥ 0.3× hello-world: {}",
            if read_ratio >= 0.3 { "met" } else { "NOT met" }
        ),
    ]);
    table.row([
        "    hello-world hyper server (same client)".to_string(),
        per_s(hello_read.per_second),
        ratio(hello_read.per_second, c),
        String::new(),
    ]);
    table.row([
        "idle: trigger → first delivery p50 / p99".to_string(),
        format!(
            "{} / {}",
            ms(idle.first_delivery.p50_us),
            ms(idle.first_delivery.p99_us)
        ),
        String::new(),
        format!(
            "p99 < 10 ms: {}",
            if idle.first_delivery.p99_us < 10_000 {
                "met"
            } else {
                "NOT met"
            }
        ),
    ]);
    table.row([
        "idle: trigger → all 100 delivered p50 / p99".to_string(),
        format!(
            "{} / {}",
            ms(idle.all_delivered.p50_us),
            ms(idle.all_delivered.p99_us)
        ),
        String::new(),
        String::new(),
    ]);
    match &memory {
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
    for f in &ctx.setup {
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
    let wall_time = wall.elapsed();
    table.row([
        "wall time (node start included)".to_string(),
        format!("{:.1} s", wall_time.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    println!();
    print!("{}", table.render());

    // Files.
    let out = out_dir();
    let memory_json = memory.as_ref().map(|m| {
        json!({
            "subscribers": m.subscribers,
            "peak_rss_kib": m.peak_kib,
            "peak_reset_before_fanout": m.reset,
            "rss_before_fanout_kib": m.rss_before_kib,
            "sampled_max_rss_kib": m.sampled_max_kib,
            "fanout": m.measured.json(),
        })
    });
    let doc = json!({
        "bench": "fanout",
        "quick": opts.quick,
        "nodes": 1,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "node_config": {
            "pbkdf2_iterations": PBKDF2_ITERATIONS,
            "delivery_max_in_flight": MAX_IN_FLIGHT,
        },
        "ceiling": ceiling,
        "idle_latency": idle,
        "fanout_one_registration": b.json(),
        "fanout_many_registrations": cc.json(),
        "api_read": {
            "node": node_read,
            "hello_world": hello_read,
            "ratio_to_hello_world": read_ratio,
        },
        "memory": memory_json,
        "node_lifetime_peak_rss_kib": lifetime_peak,
        "setup": ctx.setup,
        "wall_time_s": wall_time.as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| BenchError::Invalid(format!("cannot serialise the figures: {e}")))?;
    let json_path = out.join("fanout.json");
    write_file(&json_path, &text)?;
    let mut series = vec![
        Series {
            label: b.report.label.clone(),
            points: b.report.timeline.points(),
        },
        Series {
            label: cc.report.label.clone(),
            points: cc.report.timeline.points(),
        },
    ];
    if let Some(m) = &memory {
        series.push(Series {
            label: m.measured.report.label.clone(),
            points: m.measured.report.timeline.points(),
        });
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
    let missing: u64 = [&b, &cc]
        .iter()
        .map(|m| m.report.missing)
        .chain(memory.as_ref().map(|m| m.measured.report.missing))
        .sum::<u64>()
        + idle.missing;
    if missing > 0 {
        return Err(BenchError::Invalid(format!(
            "{} deliveries did not arrive in time",
            group(missing)
        )));
    }
    Ok(())
}
