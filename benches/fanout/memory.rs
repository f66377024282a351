//! (e): the node's peak RSS during a big fan-out, sampled every 20 ms besides the kernel's
//! high-water mark (reset before the fan-out when the kernel allows it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use webhookd::bench::node::{self};
use webhookd::bench::progress::group;
use webhookd::bench::report::per_s;
use webhookd::bench::BenchResult;

use crate::context::{Ctx, Measured};

/// Result of the memory check.
pub(crate) struct MemoryCheck {
    pub(crate) subscribers: usize,
    pub(crate) measured: Measured,
    pub(crate) rss_before_kib: u64,
    pub(crate) peak_kib: u64,
    pub(crate) sampled_max_kib: u64,
    pub(crate) reset: bool,
}

/// Samples the RSS of `pid` every 20 ms until stopped; returns the largest value (KiB).
pub(crate) fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
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

/// Runs the (e) fan-out to `n` subscribers of one fresh registration, watching `pid`.
pub(crate) async fn memory_check(
    ctx: &mut Ctx<'_>,
    pid: u32,
    n: usize,
) -> BenchResult<MemoryCheck> {
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
    Ok(MemoryCheck {
        subscribers: n,
        measured,
        rss_before_kib: before.rss_kib,
        peak_kib: after.hwm_kib,
        sampled_max_kib,
        reset,
    })
}
