//! The delivery engine: a per-node [`DeliverySupervisor`] and its pool of workers.
//!
//! The supervisor takes first attempts from fan-out steps (in memory; persisted as pending
//! batches) and retries from the persisted due queue, which it polls every tick, and queues
//! them in a work queue shared with its `delivery.max_in_flight` workers (so at most that
//! many attempts run at once). A woken worker takes attempts from the queue until it is
//! empty, hands each outcome to the outcome writer and then reports itself idle: one
//! message per busy spell, not two per attempt. The writer records outcomes in batches:
//! the attempt log, the next due time and the subscriber's `failed_count` change in one
//! atomic write. An attempt leaves its pending batch or the due queue only with its
//! outcome, so a crash at any point re-runs it after restart (at-least-once). An attempt
//! starts only with a place in the commit window, which it keeps until its outcome is
//! committed: at most `delivery.max_in_flight + delivery.commit_window` deliveries are
//! ever attempted and not on disk, so a crash re-sends at most that many ([`queue`]).
//!
//! A worker makes at most `delivery.max_in_flight_per_endpoint` attempts to one endpoint
//! at once and none while its circuit breaker is open ([`isolation`]): a dead endpoint
//! cannot hold the slots the healthy ones need.
//!
//! Workers are linked children and show the attempt they are making in a slot: a
//! panicking worker is reported to the supervisor, which records that attempt as failed and
//! starts a replacement; a worker stuck past its deadline is killed the same way.
//!
//! Deliveries are created by fan-out (`actors::fanout`); [`handoff`] carries those of
//! subscribers owned by other nodes.
//!
//! The modules depend one way: [`messages`] and [`isolation`] on none of the others,
//! [`queue`] on `isolation`;
//! [`context`] and [`outcomes`] on `messages`; [`worker`] on those; [`supervisor`] on all
//! of them; [`handoff`] only on fan-out.

mod context;
mod handoff;
mod isolation;
mod messages;
mod outcomes;
mod queue;
mod release;
mod replicated;
mod supervisor;
mod worker;

pub use context::DeliveryContext;
pub use handoff::{accept_batch, run_handoff, run_peer_handoffs};
pub use messages::DeliveryMsg;
pub use replicated::write_rows_replicated;
pub use supervisor::DeliverySupervisor;
