//! The gateway: the one remote-capable actor of a node.
//!
//! Peers find it through a ractor process group and send it encoded [`Envelope`]s; each
//! is served on its own task (a slow operation, such as an echo challenge, must not hold
//! up the others) by the handler registered for its operation, and the encoded answer goes
//! back.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::rpc::{decode, encode, AnswerBody, CallError, Endpoints, Envelope};

/// Process-group scope the gateways join.
pub const GATEWAY_SCOPE: &str = "webhookd";
/// Process group of the gateways.
pub const GATEWAY_GROUP: &str = "gateways";

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
        tokio::spawn(async move {
            let answer = match decode::<Envelope>(&bytes) {
                Ok(envelope) => endpoints.dispatch(&node_id, envelope).await,
                Err(e) => Err(CallError::Protocol(format!("peer request: {e}"))),
            };
            // The caller may have timed out meanwhile; nothing to do then.
            let _ = port.send(encode(&answer.map(AnswerBody)));
        });
        Ok(())
    }
}
