//! Handoff: a fan-out's deliveries for subscribers served by other nodes. The sender hands
//! each node its queued batches and forgets a batch once that node has persisted it; the
//! receiver accepts a batch as its own fan-out step would. A batch sent again (the answer
//! was lost) creates nothing twice.

use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::replicated::{accept_replicated, by_group};
use crate::actors::fanout::{accepted, judge, skipped};
use crate::actors::remote::AcceptDeliveries;
use crate::actors::{now_us, NodeState, Written};
use crate::domain::ServiceError;
use crate::store::{DeliveryRow, Handoff, NewDelivery, RecordWrite, StoreError, Triggered};

/// How often queued handoffs to an unavailable peer are retried.
const HANDOFF_RETRY: Duration = Duration::from_secs(1);
/// Handoff batches sent to one peer at once at most. A round's handed batches are removed
/// in one write per trigger group, and replicated each write is a log entry on every
/// voter: a wide round keeps those entries few under many small fan-outs. Wider still (256)
/// floods a peer with accepts that slow its groups' other writes.
const HANDOFF_WINDOW: usize = 64;

/// Persists a batch handed over by the node that owns the trigger (through the
/// subscribers' groups when replicated); answers how many deliveries were created.
pub async fn accept_batch(
    ctx: &Arc<NodeState>,
    triggered: Triggered,
    items: Vec<NewDelivery>,
) -> Result<u64, ServiceError> {
    if ctx.records.is_replicated() {
        return accept_replicated(ctx, &triggered, items).await;
    }
    let accepting = ctx.clone();
    let created = ctx
        .store
        .run(move |_| accept_remote_batch(&accepting, &triggered, &items))
        .await?;
    ctx.store.flush().await?;
    Ok(created)
}

/// [`accept_batch`] on this node's storage (unreplicated).
fn accept_remote_batch(
    ctx: &NodeState,
    triggered: &Triggered,
    items: &[NewDelivery],
) -> Result<u64, StoreError> {
    ctx.store.keep_remote_trigger(triggered)?;
    ctx.delivery.remember_body(triggered.clone());
    let judged = judge(ctx, items.to_vec())?;
    let entries = ctx.store.accept_handed_over(
        &triggered.id,
        &triggered.registration_id,
        &judged,
        now_us(),
    )?;
    Ok(accepted(ctx, entries, skipped(&judged)))
}

/// What became of a queued batch in one round of [`run_handoff`].
enum Sent {
    /// Persisted by its node: the batch at this key of this trigger is to be removed.
    Handed(Vec<u8>, Uuid),
    /// Accepted here or queued for the nodes serving its subscribers now.
    Redirected,
    /// Still queued (the node is down, or the redirect failed).
    Failed,
}

/// Runs [`run_handoff`] for every peer, those admitted later included.
pub async fn run_peer_handoffs(ctx: Arc<NodeState>) {
    let mut count = ctx.cluster.watch_peer_count();
    let mut started = 0;
    loop {
        let peers = *count.borrow_and_update();
        for peer in started..peers {
            tokio::spawn(run_handoff(ctx.clone(), Some(peer)));
        }
        started = started.max(peers);
        if count.changed().await.is_err() {
            return;
        }
    }
}

/// Hands queued fan-out batches to `peer` (`None`: this node, whose own subscribers a
/// replicated fan-out hands over too), removing each only once that node persisted it.
/// Up to `HANDOFF_WINDOW` batches are in flight at once (redirects included): each waits
/// for the peer's flush or a group's commit, so one at a time would fall behind many small
/// fan-outs.
///
/// Replicated, the batches are rows of their trigger's group: only its leader hands them
/// over, and removes them through the group's log.
pub async fn run_handoff(ctx: Arc<NodeState>, peer_index: Option<usize>) {
    let peer = match peer_index {
        Some(i) => match ctx.cluster.all_peers().get(i) {
            Some(peer) => Some(peer.clone()),
            None => return,
        },
        None => None,
    };
    let target = peer
        .as_ref()
        .map_or_else(|| ctx.cluster.node_id(), |p| p.member.id.as_str());
    let replicated = ctx.records.is_replicated();
    loop {
        let (reading, target_id) = (ctx.clone(), target.to_string());
        let batches = match ctx
            .store
            .run(move |s| {
                let mine = |t: &Uuid| !replicated || reading.cluster.serves_id(t);
                s.handoffs_for(&target_id, HANDOFF_WINDOW, &mine)
            })
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the handoff queue failed");
                Vec::new()
            }
        };
        let mut triggers: HashMap<Uuid, Triggered> = HashMap::new();
        let mut calls = JoinSet::new();
        let mut progressed = false;
        for Handoff {
            key,
            triggered,
            items,
        } in batches
        {
            let trigger = match triggers.get(&triggered) {
                Some(t) => t.clone(),
                None => match ctx.store.run(move |s| s.triggered(&triggered)).await {
                    Ok(Some(t)) => {
                        triggers.insert(triggered, t.clone());
                        t
                    }
                    // The trigger is gone (wiped): nothing left to deliver.
                    Ok(None) => {
                        let _ = forget(&ctx, &triggered, vec![(key, None)]).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading a trigger for handoff failed");
                        break;
                    }
                },
            };
            // Replicated, a shard's owner is its group's leader, which moves: a batch
            // goes to whoever serves its subscribers now.
            let items = if replicated {
                let mut owners = owners_of(&ctx, items);
                let peer_id = peer.as_ref().map(|p| p.member.id.clone());
                let only_peer = peer_id.is_some() && owners.len() == 1;
                let mine = match only_peer {
                    true => owners.remove(&peer_id),
                    false => None,
                };
                match mine {
                    Some(items) => items,
                    None => {
                        let ctx = ctx.clone();
                        calls.spawn(async move {
                            match redirect(&ctx, key, trigger, owners).await {
                                Ok(()) => Sent::Redirected,
                                Err(e) => {
                                    tracing::warn!(error = %e, "redirecting a handoff failed");
                                    Sent::Failed
                                }
                            }
                        });
                        continue;
                    }
                }
            } else {
                items
            };
            let command = AcceptDeliveries {
                triggered: trigger,
                items,
            };
            let ctx = ctx.clone();
            calls.spawn(async move {
                let handed = match peer_index.and_then(|i| ctx.cluster.all_peers().get(i).cloned())
                {
                    Some(peer) => matches!(ctx.cluster.call(&peer, &command).await, Ok(Ok(_))),
                    None => false,
                };
                match handed {
                    true => Sent::Handed(key, command.triggered.id),
                    false => Sent::Failed,
                }
            });
        }
        let mut handed: Vec<(Vec<u8>, Uuid)> = Vec::new();
        while let Some(call) = calls.join_next().await {
            match call {
                Ok(Sent::Handed(key, triggered)) => handed.push((key, triggered)),
                Ok(Sent::Redirected) => progressed = true,
                // Not handed (the peer is down): the batch waits; resending creates no
                // duplicates.
                Ok(Sent::Failed) | Err(_) => {}
            }
        }
        // The batches handed over, by their trigger's group: removed in one write each.
        for (_, (_, batches)) in by_group(&ctx, handed, |(_, triggered)| *triggered) {
            let Some(&(_, triggered)) = batches.first() else {
                continue;
            };
            let rows = batches.into_iter().map(|(key, _)| (key, None)).collect();
            match forget(&ctx, &triggered, rows).await {
                Ok(()) => progressed = true,
                Err(e) => tracing::warn!(error = %e, "removing handed-over batches failed"),
            }
        }
        if !progressed {
            tokio::select! {
                () = ctx.delivery.handoff_wake.notified() => {}
                () = tokio::time::sleep(HANDOFF_RETRY) => {}
            }
        }
    }
}

/// Writes fan-out rows of `triggered` (handoff batches removed or replaced): through its
/// group's log when replicated.
async fn forget(
    ctx: &NodeState,
    triggered: &Uuid,
    rows: Vec<DeliveryRow>,
) -> Result<(), ServiceError> {
    let shard = ctx.cluster.map().shard_of_id(triggered);
    let write = RecordWrite::FanoutRows(rows);
    ctx.records
        .write_one(shard, write, &mut Written::default())
        .await
        .map(drop)
}

/// `items` by the member serving each subscriber now (`None`: this node).
fn owners_of(
    ctx: &NodeState,
    items: Vec<NewDelivery>,
) -> HashMap<Option<String>, Vec<NewDelivery>> {
    let cluster = &ctx.cluster;
    let mut owners: HashMap<Option<String>, Vec<NewDelivery>> = HashMap::new();
    for item in items {
        let owner = cluster
            .remote_owner(cluster.map().shard_of_id(&item.account_id))
            .map(|p| p.member.id.clone());
        owners.entry(owner).or_default().push(item);
    }
    owners
}

/// Accepts the batch's deliveries this node serves now, and queues the rest for their
/// owners in place of the batch.
async fn redirect(
    ctx: &Arc<NodeState>,
    key: Vec<u8>,
    trigger: Triggered,
    mut owners: HashMap<Option<String>, Vec<NewDelivery>>,
) -> Result<(), ServiceError> {
    if let Some(local) = owners.remove(&None) {
        accept_batch(ctx, trigger.clone(), local).await?;
    }
    let to: Vec<(String, Vec<NewDelivery>)> = owners
        .into_iter()
        .filter_map(|(peer, items)| peer.map(|p| (p, items)))
        .collect();
    let id = trigger.id;
    let rows = ctx
        .store
        .run(move |s| s.redirected_handoff(&key, &id, &to, now_us()))
        .await?;
    forget(ctx, &trigger.id, rows).await?;
    ctx.delivery.handoff_wake.notify_waiters();
    Ok(())
}
