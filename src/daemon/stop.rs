//! How a node stops: on a signal, within a deadline, and on its own when its storage fails.
//!
//! Both rely on OS threads, not on the async runtime: a broken disk can block sled calls
//! made on the async workers, and then no task runs, but the node must still stop.
//!
//! * A signal (SIGTERM, SIGINT) is received by a thread of its own, on a one-thread runtime
//!   of its own, so it is seen even when every worker of the main runtime is blocked. It
//!   starts the graceful stop and arms a backstop: a node still running [`backstop`] after
//!   the signal exits. Replicated, the graceful stop begins, while the API still serves,
//!   by stopping the delivery engine and handing the node's leads over ([`hand_over`]).
//! * A failed storage (see `store::health`) cannot be repaired in place: the storage
//!   watchdog's thread waits [`FAILED_EXIT_DELAY`], so that in-flight requests get their
//!   answers (writes 507) and `/ready` answers 503 meanwhile, and exits with
//!   [`EXIT_STORAGE`], for the supervisor to restart the node on a fresh storage engine.
//!
//! Exiting with [`std::process::exit`] runs no destructor, on purpose: dropping the store
//! joins the flush thread and flushes sled, and either can wait forever on a stuck disk.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::signal::unix::{signal, SignalKind};

use super::DaemonError;
use crate::actors::DeliveryMsg;
use crate::cluster::Cluster;
use crate::replication::Replication;
use crate::store::Store;

/// Exit code of a node whose storage failed (`EX_IOERR` of sysexits.h).
const EXIT_STORAGE: i32 = 74;
/// Exit code of a node that did not stop in time after a signal. (A failed storage has
/// ended the process [`FAILED_EXIT_DELAY`] after the failure, with [`EXIT_STORAGE`].)
const EXIT_STUCK: i32 = 1;
/// How long a node whose storage failed keeps answering before it exits.
const FAILED_EXIT_DELAY: Duration = Duration::from_secs(2);
/// After the HTTP drain, the time left to stop the delivery engine and flush the storage.
pub const STOP_TAIL: Duration = Duration::from_secs(5);
/// The part of [`STOP_TAIL`] given to stopping the delivery engine; the rest is kept for
/// the final flush.
pub const ENGINE_STOP: Duration = Duration::from_secs(4);

/// How long a replicated node waits, after its HTTP drain, for the answers to its peers'
/// calls; taken from [`STOP_TAIL`] (its engine stopped before the drain).
pub const PEER_ANSWERS: Duration = Duration::from_secs(2);

/// How long after a signal a node that has not finished stopping is made to exit: the HTTP
/// drain (`grace`), the stop tail, and one second to log and exit.
fn backstop(grace: Duration) -> Duration {
    grace + STOP_TAIL + Duration::from_secs(1)
}

/// Stops the delivery engine: outcomes it buffered are written as it stops; attempts still
/// running keep their pending or due rows and are made again by whoever delivers next.
pub async fn stop_engine(engine: &ActorRef<DeliveryMsg>) {
    if let Err(e) = engine.stop_and_wait(None, Some(ENGINE_STOP)).await {
        tracing::warn!(error = %e, "the delivery engine did not stop in time");
    }
}

/// What a replicated node does after the signal and before the HTTP drain, while its API
/// still serves (forwarding to the new leaders): it stops its delivery engine while it
/// still leads the groups the outcomes belong to, so they are written rather than made
/// again by the next leaders, then hands the leads over, within `within`.
pub async fn hand_over(
    replication: &Arc<Replication>,
    engine: &ActorRef<DeliveryMsg>,
    within: Duration,
) {
    stop_engine(engine).await;
    let (led, handed) = replication.hand_over_leads(within).await;
    tracing::info!(
        led,
        handed,
        "handed over the lead of the groups this node led"
    );
}

/// Waits for the answers to what peers asked of this node, [`PEER_ANSWERS`] at most: a
/// write it took (and may have committed) is then answered, rather than its caller seeing
/// the connection close and answering 503 "may or may not have been applied".
pub async fn answer_peers(cluster: &Cluster) {
    let unanswered = cluster.answered_all(PEER_ANSWERS).await;
    if unanswered > 0 {
        tracing::warn!(unanswered, "stopping with peers' calls not answered");
    }
}

/// Ends the process because the storage failed. Logs why first.
pub fn exit_storage_failed(reason: &str) -> ! {
    tracing::error!(
        %reason,
        code = EXIT_STORAGE,
        "exiting: the storage failed and cannot recover in place; the supervisor restarts \
         the node on the same data (every acknowledged write is on disk)"
    );
    std::process::exit(EXIT_STORAGE)
}

/// Starts the storage watchdog with the daemon's answer to a failure: answer for
/// [`FAILED_EXIT_DELAY`], then exit.
pub fn watch_storage(store: &Store, stall: Duration) -> Result<(), DaemonError> {
    store.watch(stall, |reason| {
        tracing::error!(
            %reason,
            "storage failed: writes answer 507 and the node exits in {:.0} s",
            FAILED_EXIT_DELAY.as_secs_f64()
        );
        std::thread::sleep(FAILED_EXIT_DELAY);
        exit_storage_failed(&reason)
    })?;
    Ok(())
}

/// Listens for SIGTERM and SIGINT on a thread of its own. The returned future resolves on
/// the first one; [`backstop`]`(grace)` later, a process still running exits.
pub fn stop_signal(grace: Duration) -> Result<impl Future<Output = ()>, DaemonError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("webhookd-signals".into())
        .spawn(move || {
            let listened = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async {
                        let mut term = signal(SignalKind::terminate())?;
                        let mut int = signal(SignalKind::interrupt())?;
                        let _ = ready_tx.send(Ok(()));
                        tokio::select! {
                            _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
                            _ = int.recv() => tracing::info!("SIGINT received, stopping"),
                        }
                        Ok(())
                    })
                });
            if let Err(e) = listened {
                let _ = ready_tx.send(Err(e));
                return;
            }
            let _ = stop_tx.send(());
            let deadline = backstop(grace);
            std::thread::sleep(deadline);
            tracing::error!(
                code = EXIT_STUCK,
                "the node did not stop within {:.1} s of the signal: exiting",
                deadline.as_secs_f64()
            );
            std::process::exit(EXIT_STUCK)
        })
        .map_err(DaemonError::Signals)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(async move {
            let _ = stop_rx.await;
        }),
        Ok(Err(e)) => Err(DaemonError::Signals(e)),
        Err(_) => Err(DaemonError::Signals(std::io::Error::other(
            "the signal thread ended",
        ))),
    }
}
