//! Request counters, rendered as Prometheus text at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    total: u64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(String, &'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// The node's HTTP metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, method: &str, route: &'static str, status: u16, took: Duration) {
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        *c.requests
            .entry((method.to_string(), route, status))
            .or_insert(0) += 1;
        let h = c.latency.entry(route).or_default();
        let secs = took.as_secs_f64();
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *count += 1;
            }
        }
        h.sum += secs;
        h.total += 1;
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(c) = self.inner.lock() else {
            return out;
        };
        out.push_str(
            "# HELP webhookd_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE webhookd_http_requests_total counter\n");
        for ((method, route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "webhookd_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP webhookd_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE webhookd_http_request_duration_seconds histogram\n");
        for (route, h) in &c.latency {
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "webhookd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "webhookd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(
                out,
                "webhookd_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "webhookd_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.total
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.record("GET", "/v1/accounts", 200, Duration::from_millis(2));
        m.record("GET", "/v1/accounts", 200, Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains(
            "webhookd_http_requests_total{method=\"GET\",route=\"/v1/accounts\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "webhookd_http_request_duration_seconds_bucket{route=\"/v1/accounts\",le=\"0.0025\"} 1"
        ));
        assert!(
            text.contains("webhookd_http_request_duration_seconds_count{route=\"/v1/accounts\"} 2")
        );
    }
}
