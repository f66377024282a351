//! `cargo bench --bench fanout -- [--quick] [--nodes 1|3] [--replication-factor 1|3]`
//!
//! Starts one webhookd node as a real process (temporary storage, PBKDF2 at 1,000
//! iterations so setup is quick, `delivery.max_in_flight` = 64 like the ceiling's
//! concurrency), then measures in the same run, against the same sink:
//!
//! * (a) the ceiling: the same POSTs a delivery sends, from a lean client (one request
//!   serialised once, written over keep-alive connections) straight to the sink, 64 in
//!   flight, with the CPU per POST of the client and of the sink — measured before (b),
//!   between (b) and (c), and after (c). The machine's speed drifts within a run (by a
//!   third, in some runs), so (b) and (c) are each compared with the mean of the two
//!   measurements beside them; their ratio to the highest of the three, the strictest
//!   yardstick, is printed too;
//! * idle latency: trigger → first delivery for a 100-subscriber registration, triggers
//!   fired one after another;
//! * (b) fan-out, 1 registration × 10,000 subscriptions × 5 triggers;
//! * (c) 100 registrations × 100 subscriptions × 5 triggers, all fired concurrently;
//! * (d) authenticated `GET /v1/account/<id>` requests/s vs a hello-world hyper server;
//! * the subscribe rate: as many accounts as (b) has subscriptions, each subscribing once
//!   to one registration, 64 in flight;
//! * (e) the node's peak RSS during a 100,000-subscriber fan-out;
//! * (f) endpoint isolation, on a fresh node: 200 healthy endpoints with and without one
//!   more that never answers; the healthy deliveries/s and p99 latency of both runs, and
//!   whether the dead endpoint kept them within 20 % (`--isolation-only` runs it alone).
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
//! the cross-node cost, in µs of CPU per delivery — and each node's peak RSS. The subscribe
//! rate is measured again through the three nodes.
//!
//! The cluster runs with `cluster.replication_factor = 3` (12 groups, the default) unless
//! `--replication-factor 1` asks for the unreplicated cluster; the single node always
//! runs 1. Replicated, accounts, registrations and subscriptions go through their group's
//! Raft log and every `/v1` call is served by the group's leader; the bench waits until
//! every group is led and caught up before measuring, and last measures the failover
//! window: SIGKILLs of the node leading the most groups (8, or 3 with `--quick`), each
//! timing how long API requests for that node's groups' records fail through the
//! survivors, then restarting it and waiting until the groups settle again; then the
//! rebalance: a fourth node admitted under load, deliveries/s and API p99 while the groups
//! move their replicas and leads to it, against the steady load just before.
//!
//! Figures are printed with their ratio to the ceiling and written to
//! `target/bench/fanout.json` (the cluster's under `"cluster"`) and
//! `target/bench/fanout.svg`. `--quick` shrinks the sizes so the run takes well under a
//! minute (well under two with `--nodes 3`): (b) 1 × 2,000 × 5, (c) 20 × 100 × 5, (e)
//! 20,000 subscribers, and 1.5 s load windows. Run without `--bench` (as `cargo test
//! --all-targets` does) it does nothing.

mod ceiling;
mod cluster_part;
mod cluster_report;
mod context;
mod failover;
mod isolation;
mod memory;
mod options;
mod reads;
mod rebalance;
mod report;
mod single_node;
mod single_report;
mod subscribe;

use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Value};
use webhookd::bench::progress::group;
use webhookd::bench::report::{per_s, svg_chart, write_file, Reference, Series};
use webhookd::bench::sink::Sink;
use webhookd::bench::{BenchError, BenchResult};

use crate::cluster_part::{cluster_part, ClusterRun};
use crate::cluster_report::{cluster_json, cluster_table, cross_node_lines};
use crate::context::{loopback, out_dir};
use crate::isolation::isolation_part;
use crate::options::{parse_args, Options, FULL, QUICK};
use crate::single_node::single_node;
use crate::single_report::{single_json, single_table};

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

async fn run(opts: Options) -> BenchResult<()> {
    let wall = Instant::now();
    let sizes = if opts.quick { QUICK } else { FULL };
    let sink = Sink::start(loopback()).await?;
    if opts.isolation_only {
        let f = isolation_part(&sink, sizes).await?;
        println!();
        for line in f.lines() {
            println!("{line}");
        }
        return Ok(());
    }
    let single = single_node(&sink, sizes, opts, wall).await?;
    let cluster = if opts.nodes > 1 {
        let factor = opts.cluster_replication_factor();
        Some(cluster_part(&sink, sizes, opts.nodes, factor).await?)
    } else {
        None
    };
    let isolation = isolation_part(&sink, sizes).await?;
    let wall_time = wall.elapsed();
    let c = single.ceiling.load.per_second;

    println!();
    print!("{}", single_table(&single).render());
    if let Some(cl) = &cluster {
        println!();
        println!(
            "cluster of {} nodes, replication factor {} (the same sizes; API calls round-robin over the nodes):",
            cl.nodes(),
            cl.replication_factor
        );
        print!("{}", cluster_table(cl, &single).render());
        println!();
        for line in cross_node_lines(cl, &single) {
            println!("{line}");
        }
        if let Some(f) = &cl.failover {
            for line in f.lines() {
                println!("{line}");
            }
        }
        if let Some(r) = &cl.rebalance {
            for line in r.lines() {
                println!("{line}");
            }
        }
        println!(
            "total wall time (single node, then the cluster): {:.1} s",
            wall_time.as_secs_f64()
        );
    }

    println!();
    for line in isolation.lines() {
        println!("{line}");
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
        obj.insert("isolation".into(), isolation.json());
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
    let missing = single.missing()
        + cluster.as_ref().map_or(0, ClusterRun::missing)
        + isolation.without.missing
        + isolation.with_dead.missing;
    if missing > 0 {
        return Err(BenchError::Invalid(format!(
            "{} deliveries did not arrive in time",
            group(missing)
        )));
    }
    Ok(())
}
