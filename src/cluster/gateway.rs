//! The gateway: the one remote-capable actor of a node.
//!
//! Peers find it through a ractor process group and send it encoded [`Envelope`]s; each
//! is served on its own task (a slow operation, such as an echo challenge, must not hold
//! up the others) by the handler registered for its operation, and the encoded answer goes
//! back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::rpc::{
    decode, encode, AnswerBody, CallError, Endpoints, Envelope, FrameError, PROTOCOL_VERSION,
};

/// Process-group scope the gateways join.
pub const GATEWAY_SCOPE: &str = "webhookd";
/// Process group of the gateways.
pub const GATEWAY_GROUP: &str = "gateways";
/// How often a peer speaking another protocol version is logged, at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Messages a gateway accepts (from any node).
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// An encoded [`Envelope`]; the answer is an encoded `Result<AnswerBody, CallError>`.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The gateway actor.
pub struct Gateway {
    node_id: String,
    endpoints: Arc<Endpoints>,
    refusals: Arc<VersionRefusals>,
}

impl Gateway {
    /// The registered name of `node_id`'s gateway (peers tell gateways apart by it).
    pub fn name(node_id: &str) -> String {
        format!("gateway:{node_id}")
    }

    /// Spawns this node's gateway and joins it to the gateways' group.
    pub async fn start(
        node_id: &str,
        endpoints: Arc<Endpoints>,
    ) -> Result<ActorRef<GatewayMsg>, ractor::SpawnErr> {
        let gateway = Gateway {
            node_id: node_id.to_string(),
            endpoints,
            refusals: Arc::default(),
        };
        let (actor, _) = Actor::spawn(Some(Self::name(node_id)), gateway, ()).await?;
        Ok(actor)
    }
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            GATEWAY_SCOPE.to_string(),
            GATEWAY_GROUP.to_string(),
            vec![myself.get_cell()],
        );
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Call(bytes, port) = message;
        let endpoints = self.endpoints.clone();
        let node_id = self.node_id.clone();
        let refusals = self.refusals.clone();
        tokio::spawn(async move {
            let answer = serve_frame(&endpoints, &node_id, &refusals, &bytes).await;
            // The caller may have timed out meanwhile; nothing to do then.
            let _ = port.send(answer);
        });
        Ok(())
    }
}

/// Serves one encoded call; the encoded answer. A call in another protocol version is
/// refused: the answer, in this node's version, tells the caller which version this node
/// speaks, and the refusal is logged here too (once a minute per version: the caller's
/// heartbeats keep coming).
async fn serve_frame(
    endpoints: &Endpoints,
    node_id: &str,
    refusals: &VersionRefusals,
    bytes: &[u8],
) -> Vec<u8> {
    let answer = match decode::<Envelope>(bytes) {
        Ok(envelope) => endpoints.dispatch(node_id, envelope).await,
        Err(FrameError::Version(version)) => {
            if refusals.first_in_a_while(version) {
                tracing::error!(
                    peer_version = version,
                    version = PROTOCOL_VERSION,
                    "refusing calls from a peer that speaks another protocol version: every \
                     node of a cluster must run a release of the same protocol version"
                );
            }
            Err(CallError::Protocol(format!(
                "this node speaks protocol version {PROTOCOL_VERSION}, not {version}"
            )))
        }
        Err(e) => Err(CallError::Protocol(format!("peer request: {e}"))),
    };
    encode(&answer.map(AnswerBody))
}

/// When each refused protocol version was last logged.
#[derive(Default)]
struct VersionRefusals(Mutex<HashMap<u16, Instant>>);

impl VersionRefusals {
    /// True when `version` was not logged within the last [`REFUSAL_LOG_INTERVAL`].
    fn first_in_a_while(&self, version: u16) -> bool {
        let mut logged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let due = logged
            .get(&version)
            .is_none_or(|at| now.duration_since(*at) >= REFUSAL_LOG_INTERVAL);
        if due {
            logged.insert(version, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rpc::Rpc;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl Rpc for Ping {
        type Answer = ();
        const NAME: &'static str = "test/ping";
    }

    #[tokio::test]
    async fn a_call_in_another_protocol_version_is_refused_naming_this_version() {
        let endpoints = Endpoints::default();
        endpoints.serve(|Ping| async {});
        let mut frame = encode(&Envelope::of(&Ping).unwrap());
        let theirs = PROTOCOL_VERSION + 1;
        frame[..2].copy_from_slice(&theirs.to_be_bytes());
        let refusals = VersionRefusals::default();
        let answer = serve_frame(&endpoints, "n1", &refusals, &frame).await;
        // The answer is in this node's version, so the caller can tell which it speaks.
        let answer: Result<AnswerBody, CallError> = decode(&answer).unwrap();
        match answer {
            Err(CallError::Protocol(why)) => assert!(
                why.contains(&format!(
                    "protocol version {PROTOCOL_VERSION}, not {theirs}"
                )),
                "{why}"
            ),
            other => panic!("not refused: {other:?}"),
        }
        // Logged once, not at every heartbeat.
        assert!(!refusals.first_in_a_while(theirs));
        assert!(refusals.first_in_a_while(theirs + 1));
    }
}
