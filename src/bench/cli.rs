//! `webhookd bench`: measure a running node (or several) from the outside.
//!
//! Runs its own sink, creates the accounts (every endpoint is the sink), the
//! registration(s) and the subscriptions through the public API, fires the triggers,
//! waits until every delivery reached the sink, and prints the figures. No admin key is
//! needed: the accounts delete themselves at the end unless `--keep` is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::client::ApiClient;
use super::error::{BenchError, BenchResult};
use super::progress::group;
use super::report::{fanout_rows, per_s, svg_chart, write_file, Series, Table};
use super::run::{
    create_accounts, create_registrations, delete_accounts, run_fanout, subscribe_all, warm_auth,
    FanoutSpec, SetupOptions, StepFigure,
};
use super::sink::Sink;

/// Subscriber accounts created when `--subscribers-per-account` is not given.
pub const DEFAULT_ACCOUNTS: usize = 100;
/// Timeout of one API request during setup and triggering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `webhookd bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of a running node; repeat to spread the requests over several nodes.
    #[arg(
        long = "target",
        value_name = "URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub targets: Vec<String>,
    /// Subscriptions per registration.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub subscribers: usize,
    /// Triggers per registration.
    #[arg(long, value_name = "M", default_value_t = 5)]
    pub triggers: usize,
    /// Registrations (each gets N subscriptions and M triggers).
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub registrations: usize,
    /// Subscriptions made by each subscriber account, so N subscriptions need N/K accounts
    /// (account creation costs one PBKDF2 hash on the node). Default: N/100, i.e. 100
    /// accounts.
    #[arg(long, value_name = "K")]
    pub subscribers_per_account: Option<usize>,
    /// API requests (setup calls, triggers) in flight at once.
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub concurrency: usize,
    /// Address the receiving sink binds (loopback recommended; port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub sink_listen: SocketAddr,
    /// Seconds to wait, from the first trigger, for every delivery to arrive.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub deadline: f64,
    /// Write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of deliveries/s over time to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Keep the bench's accounts, registrations and subscriptions on the node.
    #[arg(long)]
    pub keep: bool,
    /// No progress bars on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The derived shape of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Subscriber accounts to create.
    pub accounts: usize,
    /// Subscriptions each of them makes per registration, at most (they are dealt out
    /// round-robin).
    pub per_account: usize,
    /// Deliveries expected.
    pub deliveries: u64,
}

/// Validates the arguments and derives the plan.
pub fn plan(args: &BenchArgs) -> BenchResult<Plan> {
    for (name, value) in [
        ("--subscribers", args.subscribers),
        ("--triggers", args.triggers),
        ("--registrations", args.registrations),
        ("--concurrency", args.concurrency),
    ] {
        if value == 0 {
            return Err(BenchError::Invalid(format!("{name} must be at least 1")));
        }
    }
    if !(args.deadline.is_finite() && args.deadline > 0.0) {
        return Err(BenchError::Invalid(
            "--deadline must be a positive number of seconds".into(),
        ));
    }
    let per_account = match args.subscribers_per_account {
        Some(0) => {
            return Err(BenchError::Invalid(
                "--subscribers-per-account must be at least 1".into(),
            ))
        }
        Some(k) => k.min(args.subscribers),
        None => args.subscribers.div_ceil(DEFAULT_ACCOUNTS),
    };
    Ok(Plan {
        accounts: args.subscribers.div_ceil(per_account),
        per_account,
        deliveries: (args.registrations * args.subscribers * args.triggers) as u64,
    })
}

/// A username prefix unique to this run.
fn run_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench-{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

fn setup_row(table: &mut Table, f: &StepFigure) {
    table.row([
        f.step.clone(),
        format!(
            "{} in {:.2} s ({})",
            group(f.count),
            f.duration_us as f64 / 1e6,
            per_s(f.per_second)
        ),
    ]);
}

/// Runs `webhookd bench`; the figures go to stdout, progress to stderr.
pub async fn run(args: BenchArgs) -> BenchResult<()> {
    let plan = plan(&args)?;
    let api = Arc::new(ApiClient::new(&args.targets, REQUEST_TIMEOUT)?);
    api.check_targets().await?;
    let sink = Sink::start(args.sink_listen).await?;
    let opts = SetupOptions {
        concurrency: args.concurrency,
        progress: !args.quiet,
    };
    println!(
        "webhookd bench: {} registration(s) × {} subscriptions × {} trigger(s) = {} deliveries",
        group(args.registrations as u64),
        group(args.subscribers as u64),
        group(args.triggers as u64),
        group(plan.deliveries)
    );
    println!("  targets: {}", api.targets().join(", "));
    println!(
        "  sink: http://{} (subscriber n's endpoint is /s/<n>)",
        sink.connect_addr()
    );
    println!(
        "  subscriptions come from {} accounts, {} per account{}",
        group(plan.accounts as u64),
        group(plan.per_account as u64),
        if args.subscribers_per_account.is_none() {
            format!(" (default: {DEFAULT_ACCOUNTS} accounts; set --subscribers-per-account)")
        } else {
            String::new()
        }
    );

    let prefix = run_prefix();
    let mut setup = Vec::new();
    // Account 0 owns the registrations; 1..=accounts subscribe.
    let (mut accounts, figure) =
        create_accounts(&api, &sink, &prefix, 0, plan.accounts + 1, opts).await?;
    setup.push(figure);
    setup.push(warm_auth(&api, &accounts, opts).await?);
    let owner = accounts.remove(0);
    let (registrations, figure) =
        create_registrations(&api, &owner, args.registrations, opts).await?;
    setup.push(figure);
    setup.push(subscribe_all(&api, &registrations, &accounts, args.subscribers, opts).await?);

    let spec = FanoutSpec {
        label: "fan-out".into(),
        triggers_per_registration: args.triggers,
        concurrency: args.concurrency,
        deadline: Duration::from_secs_f64(args.deadline),
        verify_persisted: true,
        progress: !args.quiet,
    };
    let report = run_fanout(&api, &sink, &owner, &registrations, args.subscribers, &spec).await?;

    let cleanup = if args.keep {
        None
    } else {
        // The owner first: its deletion removes the registrations and their subscriptions.
        let mut all = vec![owner.clone()];
        all.extend(accounts.iter().cloned());
        Some(delete_accounts(&api, &all, opts).await?)
    };

    let mut table = Table::new(["figure", "value"]);
    for f in &setup {
        setup_row(&mut table, f);
    }
    for (figure, value) in fanout_rows(&report) {
        table.row([figure, value]);
    }
    match &cleanup {
        Some(f) => setup_row(&mut table, f),
        None => table.row([
            "cleanup".to_string(),
            format!("kept (accounts named {prefix}-<n>)"),
        ]),
    }
    println!();
    print!("{}", table.render());

    if let Some(path) = &args.json {
        let doc = json!({
            "tool": "webhookd bench",
            "targets": api.targets(),
            "plan": {
                "registrations": args.registrations,
                "subscribers_per_registration": args.subscribers,
                "triggers_per_registration": args.triggers,
                "subscriber_accounts": plan.accounts,
                "subscribers_per_account": plan.per_account,
                "concurrency": args.concurrency,
                "expected_deliveries": plan.deliveries,
            },
            "setup": setup,
            "fanout": report,
            "cleanup": cleanup,
        });
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| BenchError::Invalid(format!("cannot serialise the figures: {e}")))?;
        write_file(path, &text)?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &args.svg {
        let series = [Series {
            label: format!(
                "{} × {} × {} triggers",
                group(args.registrations as u64),
                group(args.subscribers as u64),
                group(args.triggers as u64)
            ),
            points: report.timeline.points(),
        }];
        write_file(
            path,
            &svg_chart("webhookd bench: deliveries/s", &series, &[]),
        )?;
        println!("chart written to {}", path.display());
    }
    if report.missing > 0 {
        return Err(BenchError::Invalid(format!(
            "{} of {} deliveries did not arrive within {} s",
            group(report.missing),
            group(report.expected),
            args.deadline
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> BenchArgs {
        Wrapper::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_use_100_accounts() {
        let args = parse(&["--subscribers", "10000"]);
        assert_eq!(args.targets, vec!["http://127.0.0.1:8081".to_string()]);
        let p = plan(&args).unwrap();
        assert_eq!(
            (p.accounts, p.per_account, p.deliveries),
            (100, 100, 50_000)
        );
        let p = plan(&parse(&["--subscribers", "50"])).unwrap();
        assert_eq!((p.accounts, p.per_account), (50, 1));
    }

    #[test]
    fn per_account_and_targets_are_honoured() {
        let args = parse(&[
            "--target",
            "http://127.0.0.1:1",
            "--target",
            "http://127.0.0.1:2",
            "--subscribers",
            "1000",
            "--subscribers-per-account",
            "300",
            "--registrations",
            "2",
        ]);
        assert_eq!(args.targets.len(), 2);
        let p = plan(&args).unwrap();
        assert_eq!((p.accounts, p.per_account, p.deliveries), (4, 300, 10_000));
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(plan(&parse(&["--subscribers", "0"])).is_err());
        assert!(plan(&parse(&["--subscribers-per-account", "0"])).is_err());
        assert!(plan(&parse(&["--deadline", "0"])).is_err());
    }
}
