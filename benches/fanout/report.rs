//! Table rows shared by the single-node and the cluster tables.

use webhookd::bench::progress::group;
use webhookd::bench::report::{latency_line, ms, per_s, ratio, Table};
use webhookd::bench::run::{IdleLatency, StepFigure};
use webhookd::bench::stats::Latency;

use crate::context::Measured;

/// The last column of a fan-out's rows: its rate's, its CPU's and its storage's.
#[derive(Default)]
pub(crate) struct FanoutNotes {
    pub(crate) rate: String,
    pub(crate) cpu: String,
    pub(crate) storage: String,
}

/// Rows of a fan-out figure: deliveries/s and the lines under it.
pub(crate) fn fanout_rows(
    table: &mut Table,
    m: &Measured,
    c: f64,
    notes: FanoutNotes,
    cpu_note: &str,
) {
    let r = &m.report;
    table.row([
        format!("{} deliveries/s", r.label),
        per_s(r.deliveries_per_s),
        ratio(r.deliveries_per_s, c),
        notes.rate,
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
        notes.cpu,
    ]);
    table.row([
        "    storage per delivery (disk growth over the run)".to_string(),
        format!("{:.0} bytes", m.disk_bytes_per_delivery()),
        String::new(),
        notes.storage,
    ]);
    table.row([
        "    sink CPU per POST received".to_string(),
        format!("{:.1} µs", m.sink_cpu_us_per_post()),
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
pub(crate) fn p50_p99(l: &Latency) -> String {
    format!("{} / {}", ms(l.p50_us), ms(l.p99_us))
}

/// The idle-latency rows; `last` fills the last column of each (goal, or comparison).
pub(crate) fn idle_rows(table: &mut Table, idle: &IdleLatency, last: [String; 2]) {
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

/// Storage growth per subscription of each subscribing step, against `goal` bytes.
pub(crate) fn subscription_disk_rows(table: &mut Table, steps: &[(String, u64, i64)], goal: f64) {
    for (step, count, bytes) in steps {
        let per = *bytes as f64 / (*count).max(1) as f64;
        table.row([
            format!("storage per subscription: {step}"),
            format!(
                "{per:.0} bytes ({} subscriptions, {:.1} MB)",
                group(*count),
                *bytes as f64 / 1e6
            ),
            String::new(),
            goal_text(&format!("≤ {goal:.0} bytes"), per <= goal),
        ]);
    }
}

/// `"<goal>: met"` or `"<goal>: NOT met"`.
pub(crate) fn goal_text(goal: &str, met: bool) -> String {
    format!("{goal}: {}", if met { "met" } else { "NOT met" })
}

pub(crate) fn setup_rows(table: &mut Table, setup: &[StepFigure]) {
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

/// `+12.3 µs` / `-4.0 µs`.
pub(crate) fn signed_us(us: f64) -> String {
    format!("{}{:.1} µs", if us >= 0.0 { "+" } else { "-" }, us.abs())
}
