//! Setup through the API: accounts, registrations and subscriptions, created with bounded
//! concurrency, each step timed as a [`StepFigure`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{event_data, EVENT};
use crate::bench::client::{Account, ApiClient};
use crate::bench::error::{BenchError, BenchResult};
use crate::bench::pool::run_indexed;
use crate::bench::progress::Progress;
use crate::bench::sink::Sink;
use crate::bench::stats::rate;

/// Options shared by the setup steps.
#[derive(Debug, Clone, Copy)]
pub struct SetupOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// Time and rate of one setup step.
#[derive(Debug, Clone, Serialize)]
pub struct StepFigure {
    /// What was done.
    pub step: String,
    /// How many requests.
    pub count: u64,
    /// Wall time, µs.
    pub duration_us: u64,
    /// Requests per second.
    pub per_second: f64,
}

impl StepFigure {
    fn new(step: &str, count: usize, took: Duration) -> Self {
        let duration_us = took.as_micros() as u64;
        Self {
            step: step.into(),
            count: count as u64,
            duration_us,
            per_second: rate(count as u64, duration_us),
        }
    }
}

/// Creates accounts `first..first + count` named `<prefix>-<n>`, each with the sink's
/// endpoint `/s/<n>`.
pub async fn create_accounts(
    api: &Arc<ApiClient>,
    sink: &Sink,
    prefix: &str,
    first: usize,
    count: usize,
    opts: SetupOptions,
) -> BenchResult<(Vec<Account>, StepFigure)> {
    let endpoints: Arc<Vec<String>> =
        Arc::new((first..first + count).map(|n| sink.endpoint(n)).collect());
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let progress = Progress::start(
        "accounts     ",
        count as u64,
        Arc::new(move || counter.load(Ordering::Relaxed)),
        opts.progress,
    );
    let started = Instant::now();
    let (api, prefix) = (api.clone(), prefix.to_string());
    let result = run_indexed(count, opts.concurrency, done, move |i| {
        let (api, endpoints) = (api.clone(), endpoints.clone());
        let username = format!("{prefix}-{}", first + i);
        async move { api.create_account(&username, &endpoints[i]).await }
    })
    .await;
    progress.finish().await;
    let accounts = result?;
    Ok((
        accounts,
        StepFigure::new("create accounts", count, started.elapsed()),
    ))
}

/// One authenticated read per account, so that the node's key-verification cache is warm
/// before many requests per account arrive at once.
pub async fn warm_auth(
    api: &Arc<ApiClient>,
    accounts: &[Account],
    opts: SetupOptions,
) -> BenchResult<StepFigure> {
    let accounts = Arc::new(accounts.to_vec());
    let count = accounts.len();
    let started = Instant::now();
    let api = api.clone();
    run_indexed(
        count,
        opts.concurrency,
        Arc::new(AtomicU64::new(0)),
        move |i| {
            let (api, accounts) = (api.clone(), accounts.clone());
            async move {
                match api.read_own_account(&accounts[i]).await? {
                    true => Ok(()),
                    false => Err(BenchError::Invalid(format!(
                        "GET /v1/account/{} was refused for its own account",
                        accounts[i].id
                    ))),
                }
            }
        },
    )
    .await?;
    Ok(StepFigure::new(
        "first authentication",
        count,
        started.elapsed(),
    ))
}

/// Creates `count` registrations owned by `owner`.
pub async fn create_registrations(
    api: &Arc<ApiClient>,
    owner: &Account,
    count: usize,
    opts: SetupOptions,
) -> BenchResult<(Vec<String>, StepFigure)> {
    let started = Instant::now();
    let (api, owner) = (api.clone(), Arc::new(owner.clone()));
    let ids = run_indexed(
        count,
        opts.concurrency,
        Arc::new(AtomicU64::new(0)),
        move |_| {
            let (api, owner) = (api.clone(), owner.clone());
            async move { api.create_registration(&owner, EVENT, &event_data(0)).await }
        },
    )
    .await?;
    Ok((
        ids,
        StepFigure::new("create registrations", count, started.elapsed()),
    ))
}

/// Subscribes `per_registration` times to each registration; subscription `j` of a
/// registration comes from `subscribers[j % subscribers.len()]` (an account subscribed
/// twice gets two deliveries per trigger).
pub async fn subscribe_all(
    api: &Arc<ApiClient>,
    registrations: &[String],
    subscribers: &[Account],
    per_registration: usize,
    opts: SetupOptions,
) -> BenchResult<StepFigure> {
    if subscribers.is_empty() {
        return Err(BenchError::Invalid("no subscriber accounts".into()));
    }
    let total = registrations.len() * per_registration;
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let progress = Progress::start(
        "subscriptions",
        total as u64,
        Arc::new(move || counter.load(Ordering::Relaxed)),
        opts.progress,
    );
    let started = Instant::now();
    let regs = Arc::new(registrations.to_vec());
    let subs = Arc::new(subscribers.to_vec());
    let api = api.clone();
    // Interleaved over the registrations, so their actors work in parallel.
    let result = run_indexed(total, opts.concurrency, done, move |i| {
        let (api, regs, subs) = (api.clone(), regs.clone(), subs.clone());
        async move {
            let registration = &regs[i % regs.len()];
            let j = i / regs.len();
            api.subscribe(&subs[j % subs.len()], registration).await
        }
    })
    .await;
    progress.finish().await;
    result?;
    Ok(StepFigure::new("subscribe", total, started.elapsed()))
}

/// Deletes `accounts` (each as itself; the node cascades to registrations and
/// subscriptions).
pub async fn delete_accounts(
    api: &Arc<ApiClient>,
    accounts: &[Account],
    opts: SetupOptions,
) -> BenchResult<StepFigure> {
    let accounts = Arc::new(accounts.to_vec());
    let count = accounts.len();
    let started = Instant::now();
    let api = api.clone();
    run_indexed(
        count,
        opts.concurrency,
        Arc::new(AtomicU64::new(0)),
        move |i| {
            let (api, accounts) = (api.clone(), accounts.clone());
            async move { api.delete_own_account(&accounts[i]).await }
        },
    )
    .await?;
    Ok(StepFigure::new("delete accounts", count, started.elapsed()))
}
