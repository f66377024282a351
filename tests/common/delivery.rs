//! What the delivery engine reports: the counts of a trigger's status and the Prometheus
//! samples of `/metrics`.

use serde_json::{json, Value};

/// The `deliveries` counts object of a trigger status with the given counts, every other
/// counter 0.
pub fn delivery_counts(counts: &[(&str, u64)]) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["pending", "succeeded", "failed", "skipped", "cancelled"] {
        let v = counts.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
        out.insert(k.into(), json!(v));
    }
    for (name, _) in counts {
        assert!(out.contains_key(*name), "not a delivery counter: {name}");
    }
    Value::Object(out)
}

/// The value of the Prometheus sample whose line starts with `series` (name and labels).
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
