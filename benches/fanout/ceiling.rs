//! (a): the ceiling, the same POSTs a delivery sends, from a pooled client straight to the
//! sink. Measured three times per run, since the machine's speed drifts within a run.

use bytes::Bytes;
use hyper::HeaderMap;
use webhookd::bench::load::{post_ceiling, LoadReport, LoadShape};
use webhookd::bench::progress::group;
use webhookd::bench::report::per_s;
use webhookd::bench::sink::Sink;
use webhookd::bench::BenchResult;

/// One measurement of the ceiling (a), printed.
pub(crate) async fn ceiling_run(
    sink: &Sink,
    body: &Bytes,
    headers: &HeaderMap,
    shape: LoadShape,
    when: &str,
) -> BenchResult<LoadReport> {
    let ceiling = post_ceiling(sink.connect_addr(), body.clone(), headers.clone(), shape).await?;
    sink.take();
    println!(
        "(a) ceiling {when}: {} ({} POSTs of {} bytes, {} errors)",
        per_s(ceiling.per_second),
        group(ceiling.requests),
        body.len(),
        ceiling.errors
    );
    Ok(ceiling)
}
