//! One peer of the cluster: its member entry, its connection state and when it was last
//! heard from. [`super::membership`] dials and judges it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ractor::ActorRef;

use super::gateway::GatewayMsg;
use crate::config::Member;

/// What this node knows of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// Not connected yet (or reconnecting).
    Connecting,
    /// Answering pings.
    Up,
    /// Connected but silent past `down_after`, or disconnected.
    Down,
    /// Its cluster configuration differs; never used.
    Refused(String),
}

impl PeerState {
    /// The state's name as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            PeerState::Connecting => "connecting",
            PeerState::Up => "up",
            PeerState::Down => "down",
            PeerState::Refused(_) => "refused",
        }
    }

    /// Why the peer was refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            PeerState::Refused(why) => Some(why),
            _ => None,
        }
    }
}

struct PeerInner {
    state: PeerState,
    gateway: Option<ActorRef<GatewayMsg>>,
    /// When the peer last answered anything: a ping or any other call.
    last_heard: Option<Instant>,
}

/// One peer: configured, or admitted at run time.
pub struct Peer {
    /// Its configuration entry.
    pub member: Member,
    inner: Mutex<PeerInner>,
    /// Set once the member is removed from the cluster: it is not dialled any more.
    removed: AtomicBool,
}

impl Peer {
    pub(super) fn new(member: Member) -> Self {
        Self {
            member,
            inner: Mutex::new(PeerInner {
                state: PeerState::Connecting,
                gateway: None,
                last_heard: None,
            }),
            removed: Default::default(),
        }
    }

    pub(super) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Marks the member removed; true when it was not yet.
    pub(super) fn mark_removed(&self) -> bool {
        !self.removed.swap(true, Ordering::SeqCst)
    }

    /// Marks the member admitted again; true when it was removed.
    pub(super) fn unmark_removed(&self) -> bool {
        self.removed.swap(false, Ordering::SeqCst)
    }

    /// Its current state.
    pub fn state(&self) -> PeerState {
        self.inner
            .lock()
            .map(|i| i.state.clone())
            .unwrap_or(PeerState::Down)
    }

    pub(super) fn set(&self, state: PeerState, gateway: Option<ActorRef<GatewayMsg>>) {
        if let Ok(mut i) = self.inner.lock() {
            if i.state != state {
                match &state {
                    PeerState::Up => tracing::info!(peer = %self.member.id, "peer is up"),
                    PeerState::Down => tracing::warn!(peer = %self.member.id, "peer is down"),
                    PeerState::Refused(why) => {
                        tracing::error!(peer = %self.member.id, reason = %why, "peer refused")
                    }
                    PeerState::Connecting => {}
                }
            }
            i.state = state;
            i.gateway = gateway;
        }
    }

    /// Notes an answer from the peer: any answered call is a sign of life.
    pub(super) fn heard(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.last_heard = Some(Instant::now());
        }
    }

    /// True when the peer answered something within `window`.
    pub(super) fn heard_within(&self, window: Duration) -> bool {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.last_heard)
            .is_some_and(|t| t.elapsed() < window)
    }

    /// True when a call to the peer would be sent now (it is up and connected).
    pub fn is_connected(&self) -> bool {
        self.usable_gateway().is_some()
    }

    /// Its gateway, when the peer is up.
    pub(super) fn usable_gateway(&self) -> Option<ActorRef<GatewayMsg>> {
        let i = self.inner.lock().ok()?;
        (i.state == PeerState::Up)
            .then(|| i.gateway.clone())
            .flatten()
    }
}
