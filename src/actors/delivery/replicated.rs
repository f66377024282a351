//! The delivery engine's writes with replicated shards. A delivery belongs to its
//! subscriber's group: the group's leader accepts handed-over deliveries, makes their
//! attempts and records their outcomes, each write computed from its applied state and
//! proposed to the group's log (`RecordWrite::AcceptDeliveries`,
//! `RecordWrite::DeliveryRows`), which every voter applies as it is. So when the lead
//! moves, the group's new leader holds every pending batch, due retry, `failed_count` and
//! `410 Gone` mark, and resumes them ([`NodeState::resume_led_deliveries`]).
//!
//! Two writes never compute rows from the same stale state: an accept holds its
//! trigger's accept lock from reading what exists to the commit, and the outcome writer
//! writes a batch's groups before it takes the next batch. Outcomes whose write fails
//! while this node still leads are attempted again; once it lost the lead, the new
//! leader makes them (at least once: an attempt made just before the lead moved may be
//! made twice).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use uuid::Uuid;

use super::messages::DeliveryMsg;
use crate::actors::fanout::{accepted, judge, skipped};
use crate::actors::{now_us, NodeState};
use crate::cluster::ShardId;
use crate::domain::ServiceError;
use crate::store::{
    delivery_row_subscriber, DeliveryRow, DueEntry, NewDelivery, Outcome, RecordWrite, Triggered,
};

/// `items` by the group of the id `id_of` gives each (its subscriber's, or its trigger's),
/// each group with a shard of it to write through.
pub(super) fn by_group<T>(
    ctx: &NodeState,
    items: Vec<T>,
    id_of: impl Fn(&T) -> Uuid,
) -> BTreeMap<u16, (ShardId, Vec<T>)> {
    let mut groups: BTreeMap<u16, (ShardId, Vec<T>)> = BTreeMap::new();
    for item in items {
        let shard = ctx.cluster.map().shard_of_id(&id_of(&item));
        let group = ctx.records.group_number(shard);
        groups
            .entry(group)
            .or_insert((shard, Vec::new()))
            .1
            .push(item);
    }
    groups
}

/// Accepts a handed-over batch through its subscribers' groups, which this node must
/// lead; answers how many deliveries were created (a batch handed over again creates
/// none twice).
pub async fn accept_replicated(
    ctx: &Arc<NodeState>,
    triggered: &Triggered,
    items: Vec<NewDelivery>,
) -> Result<u64, ServiceError> {
    let mut created = 0;
    for (_, (shard, items)) in by_group(ctx, items, |i| i.account_id) {
        if !items.iter().all(|i| ctx.cluster.serves_id(&i.account_id)) {
            // The sender hands it to the group's leader of the moment.
            return Err(ServiceError::NotServedHere { leader: None });
        }
        let _accepting = ctx.delivery.accepting.lock(&triggered.id).await;
        // A new leader may not have applied an accept of this batch from an earlier term
        // yet: read only once it has, or the batch would be accepted (and sent) twice.
        ctx.records.fence(shard).await?;
        let (reading, t) = (ctx.clone(), triggered.clone());
        let (prepared, skipped) = ctx
            .store
            .run(move |s| {
                let judged = judge(&reading, items)?;
                let prepared = s.prepare_accept(&t.id, &t.registration_id, &judged, now_us())?;
                Ok::<_, crate::store::StoreError>((prepared, skipped(&judged)))
            })
            .await?;
        let write = RecordWrite::AcceptDeliveries {
            triggered: triggered.clone(),
            rows: prepared.rows().to_vec(),
        };
        ctx.records.write_committed(shard, write).await?;
        let entries = ctx
            .store
            .run(move |s| Ok::<_, crate::store::StoreError>(s.opened_elsewhere(prepared)))
            .await?;
        ctx.delivery.remember_body(triggered.clone());
        created += accepted(ctx, entries, skipped);
    }
    Ok(created)
}

/// Writes a batch of outcomes through their subscribers' groups (the groups at once);
/// answers the first attempts to make again, those of groups whose write failed while
/// this node still leads them.
pub async fn write_outcomes_replicated(ctx: &Arc<NodeState>, taken: Vec<Outcome>) -> Vec<DueEntry> {
    let mut writes = JoinSet::new();
    for (_, (shard, outcomes)) in by_group(ctx, taken, |o| o.due.account_id) {
        let ctx = ctx.clone();
        writes.spawn(async move { write_group_outcomes(&ctx, shard, outcomes).await });
    }
    let mut again = Vec::new();
    while let Some(write) = writes.join_next().await {
        match write {
            Ok(Ok(())) => {}
            // The lead moved: the group's new leader resumes them (this node's view of
            // who leads may lag, so it is not asked).
            Ok(Err((ServiceError::NotServedHere { .. }, _))) => {}
            Ok(Err((e, outcomes))) => {
                tracing::warn!(error = %e, "recording delivery outcomes through their group failed");
                again.extend(
                    outcomes
                        .into_iter()
                        .filter(|o| o.due.due_key().is_none())
                        .filter(|o| ctx.cluster.serves_id(&o.due.account_id))
                        .map(|o| o.due),
                );
            }
            // The group's leader (this node again, or the next) resumes them.
            Err(e) => tracing::error!(error = %e, "recording delivery outcomes crashed"),
        }
    }
    again
}

/// One group's outcomes: computed from this node's applied state, proposed, then noted.
/// A failed write answers the outcomes back, to be made again.
async fn write_group_outcomes(
    ctx: &NodeState,
    shard: ShardId,
    outcomes: Vec<Outcome>,
) -> Result<(), (ServiceError, Vec<Outcome>)> {
    if let Err(e) = ctx.records.fence(shard).await {
        return Err((e, outcomes));
    }
    let (prepared, outcomes) = ctx
        .store
        .run(move |s| {
            let prepared = s.prepare_outcomes(&outcomes, now_us());
            Ok::<_, crate::store::StoreError>((prepared, outcomes))
        })
        .await
        .map_err(|e| (e.into(), Vec::new()))?;
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return Err((e.into(), outcomes)),
    };
    if !prepared.is_empty() {
        let write = RecordWrite::DeliveryRows(prepared.rows().to_vec());
        if let Err(e) = ctx.records.write_committed(shard, write).await {
            return Err((e, outcomes));
        }
    }
    ctx.store
        .run(move |s| {
            s.outcomes_written(prepared);
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .map_err(|e| (e.into(), Vec::new()))
}

/// Writes delivery rows (requeued deliveries) through their subscribers' groups.
pub async fn write_rows_replicated(
    ctx: &NodeState,
    rows: Vec<DeliveryRow>,
) -> Result<(), ServiceError> {
    let mut attributed = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        let subscriber = match &value {
            Some(v) => delivery_row_subscriber(&key, v)?,
            None => None,
        };
        let subscriber = subscriber.ok_or_else(|| {
            ServiceError::Internal("a requeued delivery row names no subscriber".into())
        })?;
        attributed.push((subscriber, (key, value)));
    }
    for (_, (shard, rows)) in by_group(ctx, attributed, |(s, _)| *s) {
        let rows = rows.into_iter().map(|(_, row)| row).collect();
        ctx.records
            .write_committed(shard, RecordWrite::DeliveryRows(rows))
            .await?;
    }
    Ok(())
}

impl NodeState {
    /// True when this node delivers to `account`: always unreplicated; replicated, while it
    /// leads the account's group.
    pub fn delivers_to(&self, account: &Uuid) -> bool {
        !self.records.is_replicated() || self.cluster.serves_id(account)
    }

    /// Resumes the first attempts of the pending batches of the groups this node leads
    /// (their retries are in the due queue, which the supervisor polls for the groups it
    /// leads). Run when the node takes the lead of a group, and when a handover of one
    /// ends with the lead kept; attempts in flight here already, or recorded since the
    /// read began, are not made twice (see `release.rs`).
    pub async fn resume_led_deliveries(self: &Arc<Self>) -> Result<(), ServiceError> {
        let epochs = &self.delivery.resume_epochs;
        let epoch = epochs.begin_resume();
        let reading = self.clone();
        let read = self
            .store
            .run(move |s| s.resume_first_attempts(&|a: &Uuid| reading.delivers_to(a)))
            .await;
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                epochs.end_resume();
                return Err(e.into());
            }
        };
        if !entries.is_empty() {
            tracing::info!(
                first_attempts = entries.len(),
                "resuming the first attempts of groups this node leads now"
            );
        }
        let resumed = DeliveryMsg::Resumed { entries, epoch };
        let supervisor = self.delivery.supervisor.get();
        if supervisor.is_none_or(|s| s.cast(resumed).is_err()) {
            epochs.end_resume();
        }
        Ok(())
    }
}
