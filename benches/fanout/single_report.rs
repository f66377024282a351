//! The single-node figures: the printed table and the JSON document.

use serde_json::{json, Value};
use webhookd::bench::progress::group;
use webhookd::bench::report::{per_s, ratio, Table};

use crate::context::{cpus, MAX_IN_FLIGHT, PBKDF2_ITERATIONS};
use crate::options::Options;
use crate::report::{
    fanout_rows, goal_text, idle_rows, setup_rows, subscription_disk_rows, FanoutNotes,
};

/// Node CPU per delivery the single node is to stay within in (b) and in (c), µs.
const B_CPU_GOAL_US: f64 = 20.0;
const C_CPU_GOAL_US: f64 = 25.0;
/// Disk per delivery (a successful first attempt, kept for the retention window) and per
/// subscription the single node is to stay within, bytes.
const DELIVERY_STORAGE_GOAL: f64 = 100.0;
const SUBSCRIPTION_STORAGE_GOAL: f64 = 300.0;
/// Idle trigger → first delivery p99 the single node is to stay within, µs.
const IDLE_P99_GOAL_US: u64 = 5_000;
use crate::single_node::SingleRun;

pub(crate) fn single_table(s: &SingleRun) -> Table {
    let c = s.ceiling.load.per_second;
    let mut table = Table::new(["figure", "value", "ratio", "goal"]);
    table.row([
        "(a) ceiling: delivery-like POSTs, lean client → sink, 64 in flight".to_string(),
        per_s(c),
        "1.000×".into(),
        "the highest of:".into(),
    ]);
    table.row([
        "    measured before (b) / between / after (c)".to_string(),
        format!(
            "{} / {} / {}",
            per_s(s.ceiling_runs[0].load.per_second),
            per_s(s.ceiling_runs[1].load.per_second),
            per_s(s.ceiling_runs[2].load.per_second)
        ),
        String::new(),
        String::new(),
    ]);
    table.row([
        "    CPU per POST: client / sink (the highest run)".to_string(),
        format!(
            "{:.1} µs / {:.1} µs",
            s.ceiling.cpu.client_us, s.ceiling.cpu.server_us
        ),
        String::new(),
        String::new(),
    ]);
    for (m, own, cpu_goal) in [
        (&s.b, s.b_ceiling(), B_CPU_GOAL_US),
        (&s.c, s.c_ceiling(), C_CPU_GOAL_US),
    ] {
        let cpu = m.node_cpu_us_per_delivery();
        let storage = m.disk_bytes_per_delivery();
        let notes = FanoutNotes {
            rate: String::new(),
            cpu: goal_text(&format!("≤ {cpu_goal:.0} µs"), cpu <= cpu_goal),
            storage: goal_text(
                &format!("≤ {DELIVERY_STORAGE_GOAL:.0} bytes"),
                storage <= DELIVERY_STORAGE_GOAL,
            ),
        };
        fanout_rows(&mut table, m, own, notes, "");
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
    let subscribe = &s.subscribe.spread.figure;
    table.row([
        subscribe.step.clone(),
        per_s(subscribe.per_second),
        String::new(),
        format!(
            "≥ 10,000/s: {}",
            if subscribe.per_second >= 10_000.0 {
                "met"
            } else {
                "NOT met"
            }
        ),
    ]);
    table.row([
        "    node CPU per subscribe".to_string(),
        format!("{:.0} µs", s.subscribe.spread.node_cpu_us),
        String::new(),
        String::new(),
    ]);
    let goal = goal_text(
        &format!("p99 < {} ms", IDLE_P99_GOAL_US / 1000),
        s.idle.first_delivery.p99_us < IDLE_P99_GOAL_US,
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
    subscription_disk_rows(&mut table, &s.subscription_disk, SUBSCRIPTION_STORAGE_GOAL);
    setup_rows(&mut table, &s.setup);
    table.row([
        "wall time (node start included)".to_string(),
        format!("{:.1} s", s.wall_time.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    table
}

pub(crate) fn single_json(s: &SingleRun, opts: Options) -> Value {
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
        "subscribe_rate": {
            "figure": s.subscribe.spread.figure,
            "node_cpu_us_per_subscribe": s.subscribe.spread.node_cpu_us,
        },
        "memory": memory_json,
        "node_peak_rss_before_e_kib": s.peak_before_e_kib,
        "node_lifetime_peak_rss_kib": s.lifetime_peak_kib,
        "setup": s.setup,
        "subscription_disk": s.subscription_disk,
        "single_node_wall_time_s": s.wall_time.as_secs_f64(),
    })
}
