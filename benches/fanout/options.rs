//! The command line and the sizes of a run (full, or `--quick`).

use std::time::Duration;

use webhookd::bench::progress::group;

/// The `--nodes` values accepted: one node, or one node then a cluster of three.
const NODE_COUNTS: [usize; 2] = [1, 3];

/// The `--replication-factor` values accepted (the cluster's, 3 unless told).
const REPLICATION_FACTORS: [usize; 2] = [1, 3];

const USAGE: &str = "usage: cargo bench --bench fanout -- [--quick] [--nodes 1|3] [--replication-factor 1|3] [--isolation-only]";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    pub(crate) latency_triggers: usize,
    pub(crate) latency_subscribers: usize,
    pub(crate) b_subscribers: usize,
    pub(crate) c_registrations: usize,
    pub(crate) c_subscribers: usize,
    pub(crate) triggers: usize,
    /// (e): subscribers of the memory fan-out (None: skipped).
    pub(crate) e_subscribers: Option<usize>,
    /// (f) triggers of the 200-endpoint registration, per run.
    pub(crate) f_triggers: usize,
    pub(crate) deadline: Duration,
    /// SIGKILLs of a group leader in the failover scenario (replicated clusters only).
    pub(crate) kills: usize,
}

pub(crate) const FULL: Sizes = Sizes {
    warmup: Duration::from_secs(1),
    measure: Duration::from_secs(5),
    // 200 so that p99 is not just the slowest trigger (the 2nd slowest of 200).
    latency_triggers: 200,
    latency_subscribers: 100,
    b_subscribers: 10_000,
    c_registrations: 100,
    c_subscribers: 100,
    triggers: 5,
    e_subscribers: Some(100_000),
    f_triggers: 200,
    deadline: Duration::from_secs(300),
    kills: 8,
};

pub(crate) const QUICK: Sizes = Sizes {
    warmup: Duration::from_millis(300),
    measure: Duration::from_millis(1500),
    latency_triggers: 50,
    latency_subscribers: 100,
    b_subscribers: 2_000,
    c_registrations: 20,
    c_subscribers: 100,
    triggers: 5,
    e_subscribers: Some(20_000),
    f_triggers: 50,
    deadline: Duration::from_secs(60),
    kills: 3,
};

impl Sizes {
    pub(crate) fn b_label(&self) -> String {
        format!(
            "(b) 1 × {} × {}",
            group(self.b_subscribers as u64),
            self.triggers
        )
    }

    pub(crate) fn c_label(&self) -> String {
        format!(
            "(c) {} × {} × {}",
            self.c_registrations, self.c_subscribers, self.triggers
        )
    }
}

/// Command-line options (after `--`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) bench: bool,
    pub(crate) quick: bool,
    pub(crate) nodes: usize,
    /// `--replication-factor` of the cluster (None: 3, the factor the cluster is for).
    pub(crate) replication_factor: Option<usize>,
    /// Run (f), the endpoint-isolation scenario, alone.
    pub(crate) isolation_only: bool,
}

impl Options {
    /// The cluster's replication factor: as given, else 3 (the single node always runs 1).
    pub(crate) fn cluster_replication_factor(&self) -> usize {
        self.replication_factor.unwrap_or(3).min(self.nodes)
    }
}

/// The value given to `flag`, which must be one of `allowed` (`meaning` says what they
/// mean).
fn one_of(
    flag: &str,
    value: Option<String>,
    allowed: &[usize],
    meaning: &str,
) -> Result<usize, String> {
    let n = value
        .ok_or(format!("{flag} needs a value"))?
        .parse::<usize>()
        .map_err(|e| format!("{flag}: {e}"))?;
    if allowed.contains(&n) {
        Ok(n)
    } else {
        Err(format!("{flag} {n}: {meaning}; {USAGE}"))
    }
}

pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        bench: false,
        quick: false,
        nodes: 1,
        replication_factor: None,
        isolation_only: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // A value flag takes its value inline (`--nodes=3`) or as the next argument.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        match (name, inline) {
            ("--bench", None) => opts.bench = true,
            ("--quick", None) => opts.quick = true,
            ("--isolation-only", None) => opts.isolation_only = true,
            ("--nodes", value) => {
                opts.nodes = one_of(
                    "--nodes",
                    value.or_else(|| args.next()),
                    &NODE_COUNTS,
                    "the bench runs 1 node, or 1 node and then a local 3-node cluster (--nodes 3)",
                )?
            }
            ("--replication-factor", value) => {
                opts.replication_factor = Some(one_of(
                    "--replication-factor",
                    value.or_else(|| args.next()),
                    &REPLICATION_FACTORS,
                    "the cluster runs 1 (no Raft) or 3",
                )?)
            }
            _ => return Err(format!("unknown argument {arg:?}; {USAGE}")),
        }
    }
    Ok(opts)
}
