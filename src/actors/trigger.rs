//! Triggering a registration, on its actor: the trigger's record, its `Idempotency-Key`
//! and its fan-out's first step are written together; the rest of the fan-out runs off
//! the actor, so the next trigger is not held up.
//!
//! Unreplicated, the registration's node writes them in one storage batch, its local
//! subscribers' deliveries included. Replicated, they are one [`RecordWrite::Trigger`] of
//! the registration's group, whose first step queues every delivery as a handoff batch
//! (see [`super::replicated_fanout`]): the trigger is answered once a majority of the
//! group has it, and the group's next leader can finish its fan-out.

use std::sync::Arc;

use uuid::Uuid;

use super::fanout::{self, run_fanout, PreparedStep, StepOutcome};
use super::replicated_fanout::run_replicated_fanout;
use super::{now_us, NodeState, Written};
use crate::delivery::pyjson::to_python_json;
use crate::domain::access;
use crate::domain::{msg, Caller, ServiceError};
use crate::store::{DueEntry, RecordWrite, Triggered};

/// A trigger read and prepared, not written yet.
enum Prepared {
    /// A repeated `Idempotency-Key`: the first trigger.
    Replay(Triggered),
    /// A new trigger, with its fan-out's first step unless the node's backlog says
    /// fan-outs must wait.
    New {
        triggered: Triggered,
        first: Option<PreparedStep>,
    },
}

/// A trigger as recorded on this node's storage (unreplicated).
enum Recorded {
    /// A repeated `Idempotency-Key`: the first trigger.
    Replay(Triggered),
    /// A new trigger, with its fan-out's first step when it was written with it.
    New {
        triggered: Triggered,
        first: Option<(StepOutcome, Vec<DueEntry>)>,
    },
}

/// Triggers `registration` for `caller`: answers the triggered record, and whether it
/// is a replay of an earlier trigger with the same `idempotency_key`.
pub async fn trigger(
    ctx: &Arc<NodeState>,
    registration: Uuid,
    caller: Caller,
    event_data: Option<String>,
    idempotency_key: Option<String>,
    written: &mut Written,
) -> Result<(Triggered, bool), ServiceError> {
    if ctx.records.is_replicated() {
        return trigger_replicated(
            ctx,
            registration,
            caller,
            event_data,
            idempotency_key,
            written,
        )
        .await;
    }
    let recording = ctx.clone();
    let recorded = ctx
        .store
        .run(move |_| {
            record(
                &recording,
                registration,
                &caller,
                event_data,
                idempotency_key,
            )
        })
        .await?;
    let (triggered, first) = match recorded {
        Recorded::Replay(first) => return Ok((first, true)),
        Recorded::New { triggered, first } => (triggered, first),
    };
    written.wrote(&ctx.store);
    let commit = written.commit();
    let (ctx, triggered_id) = (ctx.clone(), triggered.id);
    // The first attempts wait for the commit; written, they are delivered even if it
    // failed (they land with the next one).
    tokio::spawn(async move {
        if let Some(commit) = commit {
            let _ = commit.wait().await;
        }
        let started = first.is_some();
        let more = match first {
            Some((outcome, entries)) => outcome.written(&ctx, entries),
            None => true,
        };
        if more {
            run_fanout(ctx, registration, triggered_id, started).await;
        }
    });
    Ok((triggered, false))
}

/// [`trigger`] through the registration's group.
async fn trigger_replicated(
    ctx: &Arc<NodeState>,
    registration: Uuid,
    caller: Caller,
    event_data: Option<String>,
    idempotency_key: Option<String>,
    written: &mut Written,
) -> Result<(Triggered, bool), ServiceError> {
    let (preparing, key) = (ctx.clone(), idempotency_key.clone());
    let prepared = ctx
        .store
        .run(move |_| prepare(&preparing, registration, &caller, event_data, key, true))
        .await?;
    let (triggered, first) = match prepared {
        Prepared::Replay(first) => return Ok((first, true)),
        Prepared::New {
            triggered,
            first: Some(first),
        } => (triggered, first),
        Prepared::New { first: None, .. } => {
            return Err(ServiceError::Internal(
                "a trigger without its first step".into(),
            ))
        }
    };
    let write = RecordWrite::Trigger {
        triggered: triggered.clone(),
        idempotency_key,
        first_step: first.deliveries.into_rows(),
    };
    let shard = ctx.cluster.map().shard_of_id(&registration);
    ctx.records.write_one(shard, write, written).await?;
    if first.outcome.written(ctx, Vec::new()) {
        tokio::spawn(run_replicated_fanout(
            ctx.clone(),
            registration,
            triggered.id,
        ));
    }
    Ok((triggered, false))
}

/// Checks and records a trigger of `registration` (on a storage thread: one round trip).
fn record(
    ctx: &NodeState,
    registration: Uuid,
    caller: &Caller,
    event_data: Option<String>,
    idempotency_key: Option<String>,
) -> Result<Recorded, ServiceError> {
    let store = &ctx.store;
    // The fan-out's first step is written with the trigger (one commit; a registration
    // of up to FIRST_BATCH subscribers needs no other), unless the node's backlog says
    // fan-outs must wait.
    let with_first = fanout::backlog_allows(ctx);
    let key = idempotency_key.clone();
    let (triggered, first) = match prepare(ctx, registration, caller, event_data, key, with_first)?
    {
        Prepared::Replay(first) => return Ok(Recorded::Replay(first)),
        Prepared::New { triggered, first } => (triggered, first),
    };
    let first_rows = first.as_ref().map(|step| step.deliveries.rows());
    store.insert_triggered(&triggered, idempotency_key.as_deref(), first_rows)?;
    ctx.delivery.remember_body(triggered.clone());
    let first = first.map(|step| {
        let entries = store.opened_elsewhere(step.deliveries);
        (step.outcome, entries)
    });
    Ok(Recorded::New { triggered, first })
}

/// Checks a trigger of `registration` and prepares its record, with its fan-out's first
/// step when `with_first` (on a storage thread; writes nothing).
fn prepare(
    ctx: &NodeState,
    registration_id: Uuid,
    caller: &Caller,
    event_data: Option<String>,
    idempotency_key: Option<String>,
    with_first: bool,
) -> Result<Prepared, ServiceError> {
    let store = &ctx.store;
    let registration = store
        .registration(&registration_id)?
        .ok_or(ServiceError::NotFound(
            msg::NO_SUCH_REGISTRATION_TRIGGER.into(),
        ))?;
    access::trigger(caller, registration.account_id)?;
    if let Some(key) = &idempotency_key {
        if let Some(first) = store.idempotent_trigger(&registration_id, key, now_us())? {
            return Ok(Prepared::Replay(first));
        }
    }
    let data = event_data.as_deref().unwrap_or(&registration.event_data);
    let value: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| ServiceError::Internal(format!("stored event_data: {e}")))?;
    let shards = ctx.cluster.map();
    let triggered = Triggered {
        id: shards.new_id_in(shards.shard_of_id(&registration_id)),
        epoch_us: store.next_epoch_us(),
        registration_id,
        account_id: registration.account_id,
        event: registration.event,
        body: to_python_json(&value),
    };
    let first = match with_first {
        true => Some(PreparedStep::read(
            ctx,
            &registration_id,
            &triggered.id,
            None,
            fanout::FIRST_BATCH,
        )?),
        false => None,
    };
    Ok(Prepared::New { triggered, first })
}
