//! The subscribe rate: distinct accounts subscribing concurrently to one registration
//! through the HTTP API. Every subscribe is a write of the one registration's actor, so
//! this measures how fast one record's writes go when they share group commits (and, in a
//! replicated cluster, Raft entries of the registration's group). The accounts are created
//! and authenticated once first (the verification cache is warm), so the figure is the
//! write path's, not PBKDF2's.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use webhookd::bench::client::{Account, ApiClient, HttpClient};
use webhookd::bench::groups::{group_of, groups, GroupView};
use webhookd::bench::progress::group;
use webhookd::bench::report::per_s;
use webhookd::bench::run::{
    create_accounts, create_registrations, subscribe_all, warm_auth, StepFigure,
};
use webhookd::bench::{BenchError, BenchResult};
use webhookd::cluster::ShardMap;

use crate::context::{Ctx, REQUEST_TIMEOUT};

/// Username prefix of the subscribing accounts (the others are `bench-<n>`).
const PREFIX: &str = "subscriber";

/// Where a replicated cluster's Raft log positions are read (`GET /v1/cluster`), and
/// each member's API (to subscribe through the registration group's leader only).
pub(crate) struct RaftProbe<'a> {
    pub(crate) http: HttpClient,
    pub(crate) base: String,
    pub(crate) admin: Account,
    pub(crate) map: &'a ShardMap,
    pub(crate) groups: u16,
    /// (member id, base URL) of every member.
    pub(crate) members: Vec<(String, String)>,
}

impl RaftProbe<'_> {
    async fn groups(&self) -> BenchResult<Vec<GroupView>> {
        groups(&self.http, &self.base, &self.admin).await
    }

    /// The registration's group, its Raft log position and its leader.
    async fn position(&self, registration: &str) -> BenchResult<(String, u64, Option<String>)> {
        let g = group_of(self.map, self.groups, registration)?;
        let gs = self.groups().await?;
        let view = gs.iter().find(|v| v.group == g);
        Ok((
            g.clone(),
            view.map_or(0, |v| v.last_log_index),
            view.and_then(|v| v.leader.clone()),
        ))
    }
}

/// The registration's group during the subscribes: its leader and the Raft entries it
/// appended.
pub(crate) struct RaftFigures {
    pub(crate) group: String,
    pub(crate) leader: Option<String>,
    pub(crate) entries: u64,
}

/// One measured subscribe run.
pub(crate) struct Subscribes {
    pub(crate) figure: StepFigure,
    pub(crate) node_cpu_us: f64,
    /// CPU time of each node during the subscribes, in node order.
    pub(crate) per_node_cpu: Vec<Duration>,
    /// Replicated clusters: the registration's group.
    pub(crate) raft: Option<RaftFigures>,
}

impl Subscribes {
    fn json(&self) -> Value {
        json!({
            "figure": self.figure,
            "node_cpu_us_per_subscribe": self.node_cpu_us,
            "node_cpu_s_per_node": self.per_node_cpu.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "raft": self.raft.as_ref().map(|r| json!({
                "group": r.group,
                "leader": r.leader,
                "entries_appended": r.entries,
            })),
        })
    }
}

/// The subscribe rate (through every target, round-robin), and in a replicated cluster
/// the same accounts subscribing to another registration through its group's leader only.
pub(crate) struct SubscribeRate {
    pub(crate) spread: Subscribes,
    pub(crate) via_leader: Option<Subscribes>,
}

impl SubscribeRate {
    pub(crate) fn json(&self) -> Value {
        json!({
            "round_robin": self.spread.json(),
            "through_the_leader": self.via_leader.as_ref().map(Subscribes::json),
        })
    }
}

/// `accounts` subscribing, each once, to one fresh registration; with `probe`, the Raft
/// entries its group appended meanwhile, then the same through the group's leader.
pub(crate) async fn subscribe_rate(
    ctx: &mut Ctx<'_>,
    accounts: usize,
    probe: Option<&RaftProbe<'_>>,
) -> BenchResult<SubscribeRate> {
    let (subscribers, created) =
        create_accounts(&ctx.api, ctx.sink, PREFIX, 0, accounts, ctx.opts).await?;
    ctx.setup.push(created);
    ctx.setup
        .push(warm_auth(&ctx.api, &subscribers, ctx.opts).await?);
    let api = ctx.api.clone();
    let spread = measure(ctx, api, &subscribers, probe).await?;
    let step = format!(
        "subscribe rate: {} accounts subscribing concurrently to one registration through the HTTP API",
        group(accounts as u64)
    );
    print_figures(&step, &spread);
    let spread = Subscribes {
        figure: StepFigure {
            step,
            ..spread.figure
        },
        ..spread
    };
    let via_leader = match probe {
        None => None,
        Some(p) => {
            let (registration, made) =
                create_registrations(&ctx.api, &ctx.owner, 1, ctx.opts).await?;
            ctx.setup.push(made);
            let id = registration.first().map(String::as_str).unwrap_or_default();
            let (_, _, leader) = p.position(id).await?;
            let url = p
                .members
                .iter()
                .find(|(m, _)| Some(m) == leader.as_ref())
                .map(|(_, url)| url.clone())
                .ok_or_else(|| BenchError::Invalid(format!("no leader for the group of {id}")))?;
            let api = Arc::new(ApiClient::new(&[url], REQUEST_TIMEOUT)?);
            let m = measure_on(ctx, api, registration, &subscribers, probe).await?;
            let step = format!(
                "the same accounts subscribing to another registration through its group's leader ({})",
                leader.as_deref().unwrap_or("none")
            );
            print_figures(&step, &m);
            Some(Subscribes {
                figure: StepFigure { step, ..m.figure },
                ..m
            })
        }
    };
    Ok(SubscribeRate { spread, via_leader })
}

fn print_figures(step: &str, m: &Subscribes) {
    println!(
        "{step}: {} (node CPU per subscribe {:.0} µs)",
        per_s(m.figure.per_second),
        m.node_cpu_us
    );
    if let Some(r) = &m.raft {
        println!(
            "  registration's group {} (leader {}): {} Raft entries for {} subscribes",
            r.group,
            r.leader.as_deref().unwrap_or("none"),
            group(r.entries),
            group(m.figure.count)
        );
    }
}

/// A fresh registration, then [`measure_on`] it.
async fn measure(
    ctx: &mut Ctx<'_>,
    api: Arc<ApiClient>,
    subscribers: &[Account],
    probe: Option<&RaftProbe<'_>>,
) -> BenchResult<Subscribes> {
    let (registration, made) = create_registrations(&ctx.api, &ctx.owner, 1, ctx.opts).await?;
    ctx.setup.push(made);
    measure_on(ctx, api, registration, subscribers, probe).await
}

/// Every subscriber subscribing once to `registration` through `api`, with the nodes'
/// CPU time and (with `probe`) the Raft entries of the registration's group.
async fn measure_on(
    ctx: &Ctx<'_>,
    api: Arc<ApiClient>,
    registration: Vec<String>,
    subscribers: &[Account],
    probe: Option<&RaftProbe<'_>>,
) -> BenchResult<Subscribes> {
    let id = registration.first().cloned().unwrap_or_default();
    let before = match probe {
        Some(p) => Some(p.position(&id).await?),
        None => None,
    };
    let cpu_before = ctx.node_cpu()?;
    let figure = subscribe_all(
        &api,
        &registration,
        subscribers,
        subscribers.len(),
        ctx.opts,
    )
    .await?;
    let per_node_cpu: Vec<Duration> = ctx
        .node_cpu()?
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let cpu: Duration = per_node_cpu.iter().sum();
    let raft = match (probe, before) {
        (Some(p), Some((group, index, _))) => {
            let (_, after, leader) = p.position(&id).await?;
            Some(RaftFigures {
                group,
                leader,
                entries: after.saturating_sub(index),
            })
        }
        _ => None,
    };
    Ok(Subscribes {
        node_cpu_us: cpu.as_micros() as f64 / subscribers.len().max(1) as f64,
        figure,
        per_node_cpu,
        raft,
    })
}
