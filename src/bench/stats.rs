//! Pure figure computations: percentiles, rates and time bucketing.

use serde::Serialize;

/// Nearest-rank percentile `p` (0–100) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A latency distribution in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: u64,
}

impl Latency {
    /// Summarises `samples` (µs; sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Self {
            count: samples.len(),
            p50_us: percentile(samples, 50.0),
            p90_us: percentile(samples, 90.0),
            p99_us: percentile(samples, 99.0),
            max_us: samples[samples.len() - 1],
            mean_us: (sum / samples.len() as u128) as u64,
        }
    }
}

/// Events per second; 0 when no time passed.
pub fn rate(count: u64, micros: u64) -> f64 {
    if micros == 0 {
        0.0
    } else {
        count as f64 * 1_000_000.0 / micros as f64
    }
}

/// Counts `times` (µs) per bucket of `width_us` starting at `start_us`; times before the
/// start count in the first bucket. The result ends with the last non-empty bucket.
pub fn bucket_counts(
    times: impl IntoIterator<Item = u64>,
    start_us: u64,
    width_us: u64,
) -> Vec<u64> {
    let width = width_us.max(1);
    let mut buckets: Vec<u64> = Vec::new();
    for t in times {
        let i = (t.saturating_sub(start_us) / width) as usize;
        if i >= buckets.len() {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    buckets
}

/// Bucket widths the timeline picks from, in ms.
const TIMELINE_WIDTHS_MS: [u64; 9] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
/// The timeline aims at no more than this many points.
const TIMELINE_POINTS: u64 = 120;

/// A rate over time, for the chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// Width of one bucket in ms.
    pub bucket_ms: u64,
    /// Events per second in each bucket, from the start.
    pub per_second: Vec<f64>,
}

impl Timeline {
    /// The rate of `times` (µs) from `start_us`, in the narrowest bucket width that keeps
    /// the span within about 120 points.
    pub fn new(times: &[u64], start_us: u64) -> Self {
        let span_ms = times
            .iter()
            .map(|t| t.saturating_sub(start_us))
            .max()
            .unwrap_or(0)
            / 1000;
        let bucket_ms = TIMELINE_WIDTHS_MS
            .iter()
            .copied()
            .find(|w| span_ms / w < TIMELINE_POINTS)
            .unwrap_or(TIMELINE_WIDTHS_MS[TIMELINE_WIDTHS_MS.len() - 1]);
        let counts = bucket_counts(times.iter().copied(), start_us, bucket_ms * 1000);
        let scale = 1000.0 / bucket_ms as f64;
        Self {
            bucket_ms,
            per_second: counts.iter().map(|&c| c as f64 * scale).collect(),
        }
    }

    /// `(seconds since the start, rate)` of each bucket, placed at the bucket's middle.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let w = self.bucket_ms as f64 / 1000.0;
        self.per_second
            .iter()
            .enumerate()
            .map(|(i, &r)| ((i as f64 + 0.5) * w, r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 50.0), 20);
        assert_eq!(percentile(&v, 51.0), 30);
    }

    #[test]
    fn latency_summary_sorts_and_summarises() {
        let mut samples = vec![5, 1, 4, 2, 3];
        let l = Latency::from_samples(&mut samples);
        assert_eq!(l.count, 5);
        assert_eq!((l.p50_us, l.p90_us, l.p99_us, l.max_us), (3, 5, 5, 5));
        assert_eq!(l.mean_us, 3);
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn rates() {
        assert_eq!(rate(500, 250_000), 2000.0);
        assert_eq!(rate(5, 0), 0.0);
    }

    #[test]
    fn per_second_bucketing() {
        let times = [
            1_000_000, 1_500_000, 1_999_999, 2_000_000, 4_100_000, 500_000,
        ];
        // From t = 1 s: [1.0, 2.0) holds 3 (+ the early one), [2, 3) one, [3, 4) none,
        // [4, 5) one.
        assert_eq!(bucket_counts(times, 1_000_000, 1_000_000), vec![4, 1, 0, 1]);
        assert!(bucket_counts(std::iter::empty(), 0, 1_000_000).is_empty());
    }

    #[test]
    fn timeline_picks_a_width_and_scales_to_per_second() {
        // 1,000 events spread over 1 s → 10 ms buckets of 10 events = 1,000/s each.
        let times: Vec<u64> = (0..1000).map(|i| i * 1000).collect();
        let t = Timeline::new(&times, 0);
        assert_eq!(t.bucket_ms, 10);
        assert_eq!(t.per_second.len(), 100);
        assert!(t.per_second.iter().all(|&r| (r - 1000.0).abs() < 1e-9));
        let p = t.points();
        assert!((p[0].0 - 0.005).abs() < 1e-12);
        // A 60 s span needs 1 s buckets to stay under 120 points.
        let t = Timeline::new(&[0, 60_000_000], 0);
        assert_eq!(t.bucket_ms, 1000);
        assert_eq!(t.per_second.len(), 61);
    }
}
