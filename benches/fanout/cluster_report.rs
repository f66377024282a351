//! The cluster figures against the single node's: the printed table, the cross-node cost in
//! words, and the JSON document.

use serde_json::{json, Value};
use webhookd::bench::cluster::{self};
use webhookd::bench::progress::group;
use webhookd::bench::report::{ms, per_s, ratio, Table};

use crate::cluster_part::{ClusterFanout, ClusterRun};
use crate::context::Measured;
use crate::report::{fanout_rows, idle_rows, p50_p99, setup_rows, signed_us, FanoutNotes};
use crate::single_node::SingleRun;
use crate::subscribe::Subscribes;

pub(crate) fn cluster_table(cl: &ClusterRun, single: &SingleRun) -> Table {
    let c = single.ceiling.load.per_second;
    let n = cl.nodes();
    let mut table = Table::new(["figure", "value", "ratio", "vs the single node"]);
    for (f, s) in [(&cl.b, &single.b), (&cl.c, &single.c)] {
        let m = &f.measured;
        fanout_rows(
            &mut table,
            m,
            c,
            FanoutNotes {
                rate: format!(
                    "{} ({})",
                    ratio(m.report.deliveries_per_s, s.report.deliveries_per_s),
                    per_s(s.report.deliveries_per_s)
                ),
                cpu: format!("{:.1} µs", s.node_cpu_us_per_delivery()),
                storage: format!("{:.0} bytes", s.disk_bytes_per_delivery()),
            },
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
    let (sub, single_sub) = (&cl.subscribe.spread, &single.subscribe.spread);
    let goal = if cl.replication_factor > 1 {
        format!(
            "≥ 3,000/s with RF {}: {}",
            cl.replication_factor,
            if sub.figure.per_second >= 3_000.0 {
                "met"
            } else {
                "NOT met"
            }
        )
    } else {
        String::new()
    };
    subscribe_rows(
        &mut table,
        cl,
        sub,
        format!("subscribe rate through the {n} nodes (round-robin)"),
        [
            goal,
            format!(
                "{} ({})",
                ratio(sub.figure.per_second, single_sub.figure.per_second),
                per_s(single_sub.figure.per_second)
            ),
            format!("single node {:.0} µs", single_sub.node_cpu_us),
        ],
    );
    if let Some(direct) = &cl.subscribe.via_leader {
        subscribe_rows(
            &mut table,
            cl,
            direct,
            "    the same through the group's leader only".to_string(),
            [String::new(), String::new(), String::new()],
        );
    }
    if let Some(f) = &cl.failover {
        table.row([
            "failover window p50 / p99 / max (API requests)".to_string(),
            format!(
                "{} / {} / {}",
                ms(f.windows.p50_us),
                ms(f.windows.p99_us),
                ms(f.windows.max_us)
            ),
            format!(
                "{} kills, {} streams",
                f.kills.len(),
                f.windows.count + f.never
            ),
            format!(
                "p99 < 3 s: {}",
                if f.never == 0 && f.windows.p99_us < 3_000_000 {
                    "met"
                } else {
                    "NOT met"
                }
            ),
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

/// Rows of one subscribe run: the rate, the CPU per subscribe (each node's in the third
/// column) and, replicated, the Raft entries of the registration's group; `last` fills
/// the goal and comparison cells of the rate and the comparison cell of the CPU.
fn subscribe_rows(
    table: &mut Table,
    cl: &ClusterRun,
    sub: &Subscribes,
    label: String,
    last: [String; 3],
) {
    let n = cl.nodes();
    let [goal, versus, cpu_versus] = last;
    table.row([label, per_s(sub.figure.per_second), goal, versus]);
    table.row([
        format!("      node CPU per subscribe (sum of {n} nodes)"),
        format!("{:.0} µs", sub.node_cpu_us),
        cl.members
            .iter()
            .zip(&sub.per_node_cpu)
            .map(|(member, cpu)| format!("{} {:.2} s", member.id, cpu.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        cpu_versus,
    ]);
    if let Some(r) = &sub.raft {
        table.row([
            "      registration's group: Raft entries appended".to_string(),
            format!(
                "{} ({:.1} subscribes per entry)",
                group(r.entries),
                sub.figure.count as f64 / r.entries.max(1) as f64
            ),
            format!(
                "group {}, leader {}",
                r.group,
                r.leader.as_deref().unwrap_or("none")
            ),
            String::new(),
        ]);
    }
}

/// The cross-node cost in words, (b) first.
pub(crate) fn cross_node_lines(cl: &ClusterRun, single: &SingleRun) -> Vec<String> {
    let c = single.ceiling.load.per_second;
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

pub(crate) fn cross_node_json(f: &ClusterFanout, s: &Measured, ceiling: f64) -> Value {
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

pub(crate) fn cluster_json(cl: &ClusterRun, single: &SingleRun) -> Value {
    let c = single.ceiling.load.per_second;
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
        "replication_factor": cl.replication_factor,
        "groups": (cl.replication_factor > 1).then_some(cluster::GROUPS),
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
        "subscribe_rate": cl.subscribe.json(),
        "failover": cl.failover.as_ref().map(|f| f.json()),
        "rebalance": cl.rebalance.as_ref().map(|r| r.json()),
        "cross_node_cost": {
            "fanout_one_registration": cross_node_json(&cl.b, &single.b, c),
            "fanout_many_registrations": cross_node_json(&cl.c, &single.c, c),
        },
        "setup": cl.setup,
        "wall_time_s": cl.wall_time.as_secs_f64(),
    })
}
