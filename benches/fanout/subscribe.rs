//! The subscribe rate: distinct accounts subscribing concurrently to one registration
//! through the HTTP API. Every subscribe is a write of the one registration's actor, so
//! this measures how fast one record's writes go when they share group commits. The
//! accounts are created and authenticated once first (the verification cache is warm), so
//! the figure is the write path's, not PBKDF2's.

use std::time::Duration;

use webhookd::bench::progress::group;
use webhookd::bench::report::per_s;
use webhookd::bench::run::{
    create_accounts, create_registrations, subscribe_all, warm_auth, StepFigure,
};
use webhookd::bench::BenchResult;

use crate::context::Ctx;

/// Username prefix of the subscribing accounts (the others are `bench-<n>`).
const PREFIX: &str = "subscriber";

/// The subscribe rate, and the node's CPU time per subscribe.
pub(crate) struct SubscribeRate {
    pub(crate) figure: StepFigure,
    pub(crate) node_cpu_us: f64,
}

/// `accounts` subscribing, each once, to one fresh registration.
pub(crate) async fn subscribe_rate(
    ctx: &mut Ctx<'_>,
    accounts: usize,
) -> BenchResult<SubscribeRate> {
    let (subscribers, created) =
        create_accounts(&ctx.api, ctx.sink, PREFIX, 0, accounts, ctx.opts).await?;
    ctx.setup.push(created);
    ctx.setup
        .push(warm_auth(&ctx.api, &subscribers, ctx.opts).await?);
    let (registration, made) = create_registrations(&ctx.api, &ctx.owner, 1, ctx.opts).await?;
    ctx.setup.push(made);
    let cpu_before: Duration = ctx.node_cpu()?.iter().sum();
    let mut figure =
        subscribe_all(&ctx.api, &registration, &subscribers, accounts, ctx.opts).await?;
    let cpu: Duration = ctx
        .node_cpu()?
        .iter()
        .sum::<Duration>()
        .saturating_sub(cpu_before);
    let node_cpu_us = cpu.as_micros() as f64 / accounts.max(1) as f64;
    figure.step = format!(
        "subscribe rate: {} accounts subscribing concurrently to one registration through the HTTP API",
        group(accounts as u64)
    );
    println!(
        "{}: {} (node CPU per subscribe {node_cpu_us:.0} µs)",
        figure.step,
        per_s(figure.per_second)
    );
    Ok(SubscribeRate {
        figure,
        node_cpu_us,
    })
}
