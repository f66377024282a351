//! Membership: the configured peers, their connections and their liveness.
//!
//! ractor_cluster connects nodes but neither reconnects nor notices a hung peer, so each
//! peer gets a task that dials it (with backoff) until its gateway appears, then pings it
//! every `cluster.heartbeat_interval_ms`. A peer that has not answered for
//! `cluster.down_after_ms` is down: calls for its shards answer 503 at once instead of
//! queueing behind a peer that may never read them. A peer whose [`Layout`] differs is
//! refused, and both nodes log which setting differs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

use serde::{Deserialize, Serialize};

use super::gateway::{Gateway, GatewayMsg, GATEWAY_GROUP, GATEWAY_SCOPE};
use super::layout::Layout;
pub use super::peer::{Peer, PeerState};
use super::rpc::{
    decode, decode_answer, encode, AnswerBody, CallError, Endpoints, Envelope, FrameError, Rpc,
};
use super::shard::{ShardId, ShardMap};
use crate::config::{ClusterConfig, Member};
/// Longest wait between two dials of an unreachable peer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Who serves a shard.
pub enum Owner {
    /// This node.
    Local,
    /// A peer.
    Remote(Arc<Peer>),
}

/// Who serves each shard when that changes at run time (a replicated shard is served by
/// its group's current leader); without one, the shard map's static owner serves it.
pub trait ShardOwners: Send + Sync {
    /// The member serving `shard` now, if known.
    fn owner(&self, shard: ShardId) -> Option<String>;
}

/// This node's view of the cluster.
pub struct Cluster {
    node_id: String,
    map: ShardMap,
    layout: Layout,
    config: ClusterConfig,
    /// Every peer known: the configured ones, then members admitted at run time. Peers
    /// are only ever added (a removed member stays, marked), so a peer's index is stable.
    peers: RwLock<Arc<Vec<Arc<Peer>>>>,
    endpoints: Arc<Endpoints>,
    transport: OnceLock<tokio::runtime::Handle>,
    /// The cluster listener, which dials peers added after start-up.
    server: OnceLock<ActorRef<NodeServerMessage>>,
    owners: OnceLock<Arc<dyn ShardOwners>>,
    /// The number of peers, for subsystems that run a task per peer.
    peer_count: tokio::sync::watch::Sender<usize>,
}

/// The heartbeat: the sender's layout, which must equal the receiver's.
#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    from: String,
    layout: Layout,
}

/// The answer to a [`Ping`].
#[derive(Debug, Serialize, Deserialize)]
enum Pong {
    /// Same configuration.
    Accepted,
    /// The configurations differ; the receiver's layout.
    Refused(Layout),
}

impl Rpc for Ping {
    type Answer = Pong;
    const NAME: &'static str = "cluster/ping";
}

impl Cluster {
    /// The cluster described by `[cluster]` (a cluster of one when no peers are listed).
    pub fn new(config: &ClusterConfig) -> Self {
        let peers: Vec<Arc<Peer>> = config
            .members
            .iter()
            .filter(|m| m.id != config.node_id)
            .map(|m| Arc::new(Peer::new(m.clone())))
            .collect();
        let map = ShardMap::new(config.shards, config.member_ids());
        let (peer_count, _) = tokio::sync::watch::channel(peers.len());
        Self {
            node_id: config.node_id.clone(),
            layout: Layout::new(config, &map),
            map,
            config: config.clone(),
            peers: RwLock::new(Arc::new(peers)),
            endpoints: Arc::default(),
            transport: OnceLock::new(),
            server: OnceLock::new(),
            owners: OnceLock::new(),
            peer_count,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The shard map.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// The peers (every member but this node), in the order they became known.
    pub fn peers(&self) -> Arc<Vec<Arc<Peer>>> {
        let all = self.all_peers();
        match all.iter().any(|p| p.is_removed()) {
            false => all,
            true => Arc::new(all.iter().filter(|p| !p.is_removed()).cloned().collect()),
        }
    }

    /// Every peer ever known, removed members included: an index into it never changes.
    pub fn all_peers(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The peer whose member id is `id`.
    pub fn peer(&self, id: &str) -> Option<Arc<Peer>> {
        self.peers().iter().find(|p| p.member.id == id).cloned()
    }

    /// Makes `member` a peer, dialled and pinged from now on, unless it is this node or
    /// already known (then its addresses are kept: a member's addresses do not change).
    /// Returns true when it was added.
    pub fn add_peer(self: &Arc<Self>, member: Member) -> bool {
        if member.id == self.node_id {
            return false;
        }
        // The listener is read under the lock that `start_transport` sets it under, so
        // that exactly one of the two starts the new peer's watcher.
        let (peer, server) = {
            let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(known) = peers.iter().find(|p| p.member.id == member.id) {
                // A removed member admitted again is dialled again (its watcher ended).
                if !known.unmark_removed() {
                    return false;
                }
                (known.clone(), self.server.get().cloned())
            } else {
                let peer = Arc::new(Peer::new(member));
                let mut grown = peers.as_ref().clone();
                grown.push(peer.clone());
                self.peer_count.send_replace(grown.len());
                *peers = Arc::new(grown);
                (peer, self.server.get().cloned())
            }
        };
        tracing::info!(peer = %peer.member.id, addr = %peer.member.cluster_addr, "peer added");
        if let (Some(runtime), Some(server)) = (self.transport.get(), server) {
            let cluster = self.clone();
            runtime.spawn(async move { cluster.watch_peer(peer, server).await });
        }
        true
    }

    /// Stops dialling the removed member `id`; it is no peer any more.
    pub fn remove_peer(&self, id: &str) {
        let peers = self.all_peers();
        if let Some(peer) = peers.iter().find(|p| p.member.id == id) {
            if peer.mark_removed() {
                tracing::info!(peer = %id, "peer removed from the cluster");
                peer.set(PeerState::Down, None);
            }
        }
    }

    /// The number of peers, changed each time one is added (a peer's index in
    /// [`Cluster::peers`] never changes).
    pub fn watch_peer_count(&self) -> tokio::sync::watch::Receiver<usize> {
        self.peer_count.subscribe()
    }

    /// True when every peer is up.
    pub fn all_up(&self) -> bool {
        self.peers().iter().all(|p| p.state() == PeerState::Up)
    }

    /// Makes `owners` the judge of who serves each shard (once, at start-up).
    pub fn set_shard_owners(&self, owners: Arc<dyn ShardOwners>) {
        let _ = self.owners.set(owners);
    }

    /// Who serves `shard`.
    pub fn owner(&self, shard: ShardId) -> Owner {
        let dynamic = self.owners.get().and_then(|o| o.owner(shard));
        match dynamic.as_deref().or(self.map.owner(shard)) {
            Some(id) if id != self.node_id => self.peer(id).map_or(Owner::Local, Owner::Remote),
            _ => Owner::Local,
        }
    }

    /// True when this node serves the record `id` now.
    pub fn serves_id(&self, id: &uuid::Uuid) -> bool {
        self.remote_owner(self.map.shard_of_id(id)).is_none()
    }

    /// The peers that are up.
    pub fn up_peers(&self) -> Vec<Arc<Peer>> {
        self.peers()
            .iter()
            .filter(|p| p.state() == PeerState::Up)
            .cloned()
            .collect()
    }

    /// The peer serving `shard`, or `None` when this node does.
    pub fn remote_owner(&self, shard: ShardId) -> Option<Arc<Peer>> {
        match self.owner(shard) {
            Owner::Remote(p) => Some(p),
            Owner::Local => None,
        }
    }

    /// Serves operation `R` with a cheap `handler` on the transport's own runtime, where
    /// it answers under load (heartbeats, Raft's messages).
    pub fn serve_on_transport<R, F, Fut>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R::Answer> + Send + 'static,
    {
        self.endpoints.serve_inline(handler);
    }

    /// The transport's runtime, once [`Cluster::start`] started it: work that must keep
    /// its timing under load (Raft's ticks) runs there.
    pub fn transport_runtime(&self) -> Option<tokio::runtime::Handle> {
        self.transport.get().cloned()
    }

    /// Waits, for `within` at most, until every operation peers asked of this node has
    /// answered (see [`Endpoints::answered_all`]); how many have not.
    pub async fn answered_all(&self, within: std::time::Duration) -> usize {
        self.endpoints.answered_all(within).await
    }

    /// Serves operation `R` to the peers with `handler`.
    pub fn serve<R, F, Fut>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R::Answer> + Send + 'static,
    {
        self.endpoints.serve(handler);
    }

    async fn send<R: Rpc>(
        &self,
        peer: &Peer,
        gateway: &ActorRef<GatewayMsg>,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Answer, CallError> {
        let frame = encode(&Envelope::of(request)?);
        let unavailable = || CallError::Unavailable(peer.member.id.clone());
        match gateway
            .call(|port| GatewayMsg::Call(frame, port), Some(timeout))
            .await
        {
            Ok(CallResult::Success(reply)) => {
                decode_answer::<R>(&read_answer(&peer.member.id, &reply)?.0)
            }
            _ => Err(unavailable()),
        }
    }

    /// Asks `peer` to serve `request`; [`CallError::Unavailable`] when it is not up or does
    /// not answer within `cluster.rpc_timeout_ms`.
    pub async fn call<R: Rpc>(&self, peer: &Peer, request: &R) -> Result<R::Answer, CallError> {
        self.call_within(
            peer,
            request,
            Duration::from_millis(self.config.rpc_timeout_ms),
        )
        .await
    }

    /// [`Cluster::call`] with its own timeout.
    pub async fn call_within<R: Rpc>(
        &self,
        peer: &Peer,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Answer, CallError> {
        let gateway = peer
            .usable_gateway()
            .ok_or_else(|| CallError::Unavailable(peer.member.id.clone()))?;
        let answer = self.send(peer, &gateway, request, timeout).await;
        if !matches!(answer, Err(CallError::Unavailable(_))) {
            peer.heard();
        }
        answer
    }

    /// Starts the cluster side of this node on a thread and runtime of its own: listener,
    /// gateway, dialers and heartbeats. A node whose runtime is saturated by its own work
    /// still answers and sends heartbeats on time, so load does not make healthy peers
    /// look dead; the operations it serves still run on the caller's runtime.
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        if !self.config.is_multi_node() && !self.config.join {
            return Ok(());
        }
        self.endpoints
            .run_handlers_on(tokio::runtime::Handle::current());
        let me = self.clone();
        self.endpoints.serve_inline(move |ping: Ping| {
            let me = me.clone();
            async move { me.pong(&ping.from, &ping.layout) }
        });
        let (started, ready) = tokio::sync::oneshot::channel();
        let me = self.clone();
        std::thread::Builder::new()
            .name("webhookd-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(format!("starting the cluster runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let result = me.start_transport().await;
                    let serving = result.is_ok();
                    let _ = started.send(result);
                    if serving {
                        std::future::pending::<()>().await;
                    }
                });
            })
            .map_err(|e| format!("starting the cluster thread: {e}"))?;
        ready
            .await
            .map_err(|_| "the cluster thread stopped while starting".to_string())?
    }

    /// The listener, gateway and peer watchers, on the current (the cluster's) runtime.
    async fn start_transport(self: &Arc<Self>) -> Result<(), String> {
        let _ = self.transport.set(tokio::runtime::Handle::current());
        let listen = self.config.listen;
        let server = NodeServer::new(
            listen.port(),
            self.config.cookie.clone(),
            self.node_id.clone(),
            listen.ip().to_string(),
            None,
            None,
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| format!("starting the cluster listener on {listen}: {e}"))?;
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "webhookd-membership".into(),
            subscription: Box::new(SessionLog::default()),
        });
        Gateway::start(&self.node_id, self.endpoints.clone())
            .await
            .map_err(|e| format!("starting the gateway: {e}"))?;
        // Peers added from here on are watched by `add_peer`; the lock orders the two.
        let peers = {
            let peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
            let _ = self.server.set(server.clone());
            peers.clone()
        };
        for peer in peers.iter() {
            let cluster = self.clone();
            let (peer, server) = (peer.clone(), server.clone());
            tokio::spawn(async move { cluster.watch_peer(peer, server).await });
        }
        Ok(())
    }

    /// Dials, pings and judges one peer, forever.
    async fn watch_peer(self: Arc<Self>, peer: Arc<Peer>, server: ActorRef<NodeServerMessage>) {
        let peer = peer.as_ref();
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        let down_after = Duration::from_millis(self.config.down_after_ms);
        let mut backoff = Duration::from_millis(100);
        let mut last_dial: Option<Instant> = None;
        while !peer.is_removed() {
            let Some(gateway) = find_gateway(&peer.member.id) else {
                if peer.state() == PeerState::Up {
                    peer.set(PeerState::Down, None);
                }
                if last_dial.is_none_or(|t| t.elapsed() >= backoff) {
                    last_dial = Some(Instant::now());
                    if let Err(e) =
                        ractor_cluster::client_connect(&server, peer.member.cluster_addr.as_str())
                            .await
                    {
                        tracing::debug!(peer = %peer.member.id, error = %e, "dial failed");
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                tokio::time::sleep(interval.min(backoff)).await;
                continue;
            };
            backoff = Duration::from_millis(100);
            let ping = Ping {
                from: self.node_id.clone(),
                layout: self.layout,
            };
            match self.send(peer, &gateway, &ping, down_after).await {
                Ok(Pong::Accepted) => {
                    peer.heard();
                    peer.set(PeerState::Up, Some(gateway));
                }
                Ok(Pong::Refused(theirs)) => {
                    // The peer judged the layouts different; say how from this side. Should
                    // they compare equal here (a peer that changed since), refuse anyway.
                    let why = self.layout.mismatch(&theirs).unwrap_or_else(|| {
                        "cluster configuration differs: the peer refused this node's layout"
                            .to_string()
                    });
                    peer.set(PeerState::Refused(why), None);
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
                Err(refused @ CallError::Version { .. }) => {
                    peer.set(PeerState::Refused(refused.to_string()), None);
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
                Err(_) => {
                    if !peer.heard_within(down_after) {
                        peer.set(PeerState::Down, None);
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// This node's answer to a ping: refuse a peer whose layout differs.
    fn pong(&self, from: &str, layout: &Layout) -> Pong {
        match self.layout.mismatch(layout) {
            Some(why) => {
                tracing::error!(peer = %from, reason = %why, "refusing peer");
                Pong::Refused(self.layout)
            }
            None => Pong::Accepted,
        }
    }
}

/// The answer `node` sent to a call: a frame of another protocol version is the peer's
/// release speaking, not a corruption.
fn read_answer(node: &str, reply: &[u8]) -> Result<AnswerBody, CallError> {
    match decode::<Result<AnswerBody, CallError>>(reply) {
        Ok(answer) => answer,
        Err(FrameError::Version(version)) => Err(CallError::Version {
            node: node.to_string(),
            version,
        }),
        Err(e) => Err(CallError::Protocol(format!("peer answer: {e}"))),
    }
}

/// The remote gateway of `node_id`, if its node is connected.
fn find_gateway(node_id: &str) -> Option<ActorRef<GatewayMsg>> {
    let name = Gateway::name(node_id);
    ractor::pg::get_scoped_members(&GATEWAY_SCOPE.to_string(), &GATEWAY_GROUP.to_string())
        .into_iter()
        .find(|cell| !cell.get_id().is_local() && cell.get_name().as_deref() == Some(name.as_str()))
        .map(ActorRef::<GatewayMsg>::from)
}

/// Logs sessions; one that ends before authenticating most likely had the wrong cookie.
#[derive(Default)]
struct SessionLog {
    authenticated: Arc<Mutex<HashSet<u64>>>,
}

impl NodeEventSubscription for SessionLog {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        tracing::debug!(peer = %ses.peer_addr, "cluster session opened");
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut a) = self.authenticated.lock() {
            a.insert(ses.node_id);
        }
        tracing::info!(peer = %ses.peer_addr, "cluster session authenticated");
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let was_authenticated = self
            .authenticated
            .lock()
            .map(|mut a| a.remove(&ses.node_id))
            .unwrap_or(false);
        if was_authenticated {
            tracing::warn!(peer = %ses.peer_addr, "cluster session closed");
        } else {
            tracing::error!(
                peer = %ses.peer_addr,
                "cluster peer refused: the session closed before authenticating \
                 (is cluster.cookie the same on both nodes?)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_another_protocol_version_names_the_peer_and_its_version() {
        let answer: Result<AnswerBody, CallError> = Ok(AnswerBody(vec![1]));
        let mut frame = encode(&answer);
        assert!(read_answer("node2", &frame).is_ok());
        let theirs = super::super::rpc::PROTOCOL_VERSION + 1;
        frame[..2].copy_from_slice(&theirs.to_be_bytes());
        match read_answer("node2", &frame) {
            Err(e @ CallError::Version { .. }) => {
                let why = e.to_string();
                assert!(
                    why.starts_with(&format!("node node2 speaks protocol version {theirs}")),
                    "{why}"
                );
            }
            other => panic!("not a version refusal: {other:?}"),
        }
        assert!(matches!(
            read_answer("node2", &[0]),
            Err(CallError::Protocol(_))
        ));
    }
}
