//! (a): the ceiling, the same POSTs a delivery sends, from a lean client straight to the
//! sink ([`webhookd::bench::ceiling`]). Measured three times per run, since the machine's
//! speed drifts within a run.

use bytes::Bytes;
use hyper::HeaderMap;
use webhookd::bench::ceiling::{post_ceiling, Ceiling};
use webhookd::bench::load::LoadShape;
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
) -> BenchResult<Ceiling> {
    let ceiling = post_ceiling(sink, body.clone(), headers, shape).await?;
    sink.take();
    println!(
        "(a) ceiling {when}: {} ({} POSTs of {} bytes, {} errors; CPU per POST: client {:.1} µs, sink {:.1} µs)",
        per_s(ceiling.load.per_second),
        group(ceiling.load.requests),
        body.len(),
        ceiling.load.errors,
        ceiling.cpu.client_us,
        ceiling.cpu.server_us,
    );
    Ok(ceiling)
}
