//! The cluster part (`--nodes 3`): a local cluster as separate processes, and idle
//! latency, (b), (c) and the subscribe rate again on it, with the share of deliveries
//! handed off to another node computed from the shard map. With a replication factor
//! above 1 (3 unless `--replication-factor 1`), the cluster first waits until its groups
//! are settled, the subscribe rate also counts the Raft entries of the registration's
//! group, and the failover and rebalance scenarios run last (see `failover.rs`,
//! `rebalance.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhookd::bench::client::{http_client, Account, ApiClient};
use webhookd::bench::cluster::{self, ClusterSpec, LocalCluster, GROUPS};
use webhookd::bench::groups::{wait_admin, wait_settled};
use webhookd::bench::node::{self};
use webhookd::bench::report::{ms, per_s};
use webhookd::bench::run::{IdleLatency, StepFigure};
use webhookd::bench::sink::Sink;
use webhookd::bench::{BenchError, BenchResult};
use webhookd::cluster::ShardMap;

use crate::context::{
    node_settings, Ctx, Measured, READY_DEADLINE, REQUEST_TIMEOUT, START_DEADLINE,
};
use crate::failover::{failover_part, FailoverRun, SETTLE};
use crate::options::Sizes;
use crate::rebalance::{rebalance_part, RebalanceRun};
use crate::subscribe::{subscribe_rate, RaftProbe, SubscribeRate};

/// How much of a fan-out's deliveries the registration's node handed off to another node.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Handoff {
    /// Deliveries of subscribers owned by another node than the registration.
    pub(crate) handed_off: u64,
    /// All the deliveries of the run.
    pub(crate) deliveries: u64,
}

impl Handoff {
    /// Counts, from the shard map, the subscriptions (subscription `j` of each registration
    /// comes from `subscribers[j % len]`, as `subscribe_all` makes them) whose subscriber
    /// lives on another node than their registration, times `triggers`.
    pub(crate) fn of(
        map: &ShardMap,
        registrations: &[String],
        subscribers: &[Account],
        per_registration: usize,
        triggers: usize,
    ) -> BenchResult<Self> {
        if subscribers.is_empty() {
            return Ok(Self::default());
        }
        let ids: Vec<&str> = (0..per_registration)
            .map(|j| subscribers[j % subscribers.len()].id.as_str())
            .collect();
        let mut handed_off = 0;
        for registration in registrations {
            handed_off += cluster::handed_off(map, registration, &ids)?;
        }
        Ok(Self {
            handed_off: handed_off * triggers as u64,
            deliveries: (registrations.len() * per_registration * triggers) as u64,
        })
    }

    pub(crate) fn share(&self) -> f64 {
        self.handed_off as f64 / self.deliveries.max(1) as f64
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "deliveries": self.deliveries,
            "handed_off_to_another_node": self.handed_off,
            "share": self.share(),
        })
    }
}

/// A cluster fan-out with its hand-off share.
pub(crate) struct ClusterFanout {
    pub(crate) measured: Measured,
    pub(crate) handoff: Handoff,
}

/// A cluster member as it ran.
pub(crate) struct MemberFigures {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) cluster_addr: SocketAddr,
    pub(crate) pid: u32,
    /// Peak RSS during the cluster scenarios (since the reset after start, when the kernel
    /// allowed it), KiB.
    pub(crate) peak_kib: u64,
    pub(crate) peak_reset: bool,
}

/// The figures of the cluster part.
pub(crate) struct ClusterRun {
    pub(crate) replication_factor: usize,
    pub(crate) members: Vec<MemberFigures>,
    pub(crate) ready_in: Duration,
    pub(crate) idle: IdleLatency,
    pub(crate) b: ClusterFanout,
    pub(crate) c: ClusterFanout,
    /// Distinct accounts subscribing to one registration, through every node.
    pub(crate) subscribe: SubscribeRate,
    /// Replicated clusters: SIGKILLs of group leaders.
    pub(crate) failover: Option<FailoverRun>,
    /// Replicated clusters: a fourth node admitted under load.
    pub(crate) rebalance: Option<RebalanceRun>,
    pub(crate) setup: Vec<StepFigure>,
    /// Cluster start included.
    pub(crate) wall_time: Duration,
}

impl ClusterRun {
    pub(crate) fn nodes(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn missing(&self) -> u64 {
        self.b.measured.report.missing + self.c.measured.report.missing + self.idle.missing
    }
}

/// (b) or (c) on the cluster: `shape` is (registrations, subscriptions each); also counts,
/// from `map`, the deliveries handed off to another node.
pub(crate) async fn cluster_fanout(
    ctx: &mut Ctx<'_>,
    map: &ShardMap,
    label: String,
    shape: (usize, usize),
    what: &str,
    triggers: usize,
) -> BenchResult<ClusterFanout> {
    let (registrations, subscribers) = shape;
    let regs = ctx.registrations(registrations, subscribers, what).await?;
    let handoff = Handoff::of(map, &regs, &ctx.subscribers, subscribers, triggers)?;
    let measured = ctx.fanout(&label, &regs, subscribers, triggers).await?;
    println!(
        "{label}: {} ({:.0}% handed off to another node)",
        per_s(measured.report.deliveries_per_s),
        100.0 * handoff.share()
    );
    Ok(ClusterFanout { measured, handoff })
}

/// The cluster part: starts the cluster, runs its scenarios, stops it.
pub(crate) async fn cluster_part(
    sink: &Sink,
    sizes: Sizes,
    nodes: usize,
    replication_factor: usize,
) -> BenchResult<ClusterRun> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("webhookd-bench-cluster-")
        .tempdir()
        .map_err(|e| BenchError::io("cannot create a temp dir", e))?;
    let spec = ClusterSpec {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_webhookd")),
        dir: dir.path().to_path_buf(),
        nodes,
        replication_factor,
        settings: node_settings(),
        start_deadline: START_DEADLINE,
        ready_deadline: READY_DEADLINE,
    };
    let mut cluster = match LocalCluster::start(&spec).await {
        Ok(cluster) => cluster,
        Err(e) => {
            // Keep the nodes' configs and logs for a post-mortem.
            let _ = dir.keep();
            return Err(e);
        }
    };
    println!();
    println!(
        "cluster: {} nodes ready in {} (all /ready 200 {} after the last one listened), storage in {}",
        nodes,
        ms(started.elapsed().as_micros() as u64),
        ms(cluster.ready_in().as_micros() as u64),
        cluster.dir().display()
    );
    for ((m, url), pid) in cluster
        .members()
        .iter()
        .zip(cluster.urls())
        .zip(cluster.pids())
    {
        println!(
            "  {}: {url} (cluster port {}, pid {pid})",
            m.id, m.cluster_addr
        );
    }
    println!(
        "  cluster config: shards = {}, heartbeat_interval_ms = {}, down_after_ms = {}, rpc_timeout_ms = {}, replication_factor = {replication_factor}{}; node settings as above",
        cluster::SHARDS,
        cluster::HEARTBEAT_MS,
        cluster::DOWN_AFTER_MS,
        cluster::RPC_TIMEOUT_MS,
        if replication_factor > 1 {
            format!(", groups = {GROUPS} (election_timeout_ms and failover_wait_ms: the defaults)")
        } else {
            String::new()
        }
    );
    let result = cluster_scenarios(&mut cluster, sink, sizes, replication_factor).await;
    cluster.stop().await;
    if result.is_err() {
        let kept = dir.keep();
        eprintln!("cluster configs and logs kept in {}", kept.display());
    }
    let mut run = result?;
    run.wall_time = started.elapsed();
    Ok(run)
}

pub(crate) async fn cluster_scenarios(
    cluster: &mut LocalCluster,
    sink: &Sink,
    sizes: Sizes,
    replication_factor: usize,
) -> BenchResult<ClusterRun> {
    let admin = if replication_factor > 1 {
        let since = Instant::now();
        let admin = wait_admin(cluster, SETTLE).await?;
        let ids: Vec<String> = cluster.members().iter().map(|m| m.id.clone()).collect();
        let expected = (usize::from(GROUPS) + 1, true);
        let urls = cluster.urls();
        wait_settled(&http_client(), &urls[0], &admin, &ids, expected, SETTLE).await?;
        println!(
            "  every group led, followers caught up and leaders spread {} later",
            ms(since.elapsed().as_micros() as u64)
        );
        Some(admin)
    } else {
        None
    };
    let pids = cluster.pids();
    // Peak RSS from here on (the kernel may refuse; then it is the lifetime peak).
    let resets: Vec<bool> = pids.iter().map(|pid| node::reset_peak_rss(*pid)).collect();
    let api = Arc::new(ApiClient::new(&cluster.urls(), REQUEST_TIMEOUT)?);
    let map = &cluster.shard_map().clone();
    let nodes = pids.len();
    let storage = cluster.dir().to_path_buf();
    let mut ctx = Ctx::new(api.clone(), sink, pids.clone(), storage, sizes.deadline).await?;

    let idle = ctx.idle_latency(sizes).await?;
    println!(
        "cluster idle latency: trigger → first delivery p50 {} p99 {} ({} triggers × {} subscribers)",
        ms(idle.first_delivery.p50_us),
        ms(idle.first_delivery.p99_us),
        idle.triggers,
        idle.subscribers
    );

    let b = cluster_fanout(
        &mut ctx,
        map,
        format!("{} on {nodes} nodes", sizes.b_label()),
        (1, sizes.b_subscribers),
        "b, cluster",
        sizes.triggers,
    )
    .await?;
    let c = cluster_fanout(
        &mut ctx,
        map,
        format!("{} on {nodes} nodes", sizes.c_label()),
        (sizes.c_registrations, sizes.c_subscribers),
        "c, cluster",
        sizes.triggers,
    )
    .await?;

    let probe = admin.as_ref().map(|a| RaftProbe {
        http: http_client(),
        base: cluster.urls()[0].clone(),
        admin: a.clone(),
        map,
        groups: GROUPS,
        members: cluster
            .members()
            .iter()
            .map(|m| m.id.clone())
            .zip(cluster.urls())
            .collect(),
    });
    let subscribe = subscribe_rate(&mut ctx, sizes.b_subscribers, probe.as_ref()).await?;

    let mut members = Vec::with_capacity(nodes);
    for (((m, url), pid), reset) in cluster
        .members()
        .iter()
        .zip(cluster.urls())
        .zip(pids)
        .zip(resets)
    {
        members.push(MemberFigures {
            id: m.id.clone(),
            url,
            cluster_addr: m.cluster_addr,
            pid,
            peak_kib: node::memory(pid)?.hwm_kib,
            peak_reset: reset,
        });
    }
    let setup = std::mem::take(&mut ctx.setup);
    drop(ctx);
    let failover = match &admin {
        Some(admin) => Some(failover_part(cluster, &api, sink, admin, sizes.kills).await?),
        None => None,
    };
    let rebalance = match &admin {
        Some(admin) => Some(rebalance_part(cluster, &api, sink, admin).await?),
        None => None,
    };
    Ok(ClusterRun {
        replication_factor,
        members,
        ready_in: cluster.ready_in(),
        idle,
        b,
        c,
        subscribe,
        failover,
        rebalance,
        setup,
        wall_time: Duration::ZERO,
    })
}
