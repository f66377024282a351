//! The NodeGateway: the one remote-capable actor of a node.
//!
//! Peers find it through a ractor process group and send it encoded [`Command`]s; each is
//! executed on its own task (a slow command, such as an echo challenge, must not hold up
//! the others) by the node's ordinary operations, and the encoded reply goes back.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::protocol::{decode, encode, Command, Reply};
use crate::service::{Node, ServiceError};

/// Process-group scope the gateways join.
pub const GATEWAY_SCOPE: &str = "webhookd";
/// Process group of the gateways.
pub const GATEWAY_GROUP: &str = "gateways";

/// Messages a gateway accepts (from any node).
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// An encoded [`Command`]; the reply is an encoded [`Reply`].
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The gateway actor.
pub struct NodeGateway {
    node: Node,
}

impl NodeGateway {
    /// The registered name of `node_id`'s gateway (peers tell gateways apart by it).
    pub fn name(node_id: &str) -> String {
        format!("gateway:{node_id}")
    }

    /// Spawns this node's gateway and joins it to the gateways' group.
    pub async fn start(
        node_id: &str,
        node: Node,
    ) -> Result<ActorRef<GatewayMsg>, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(Some(Self::name(node_id)), NodeGateway { node }, ()).await?;
        Ok(actor)
    }
}

impl Actor for NodeGateway {
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
        let node = self.node.clone();
        tokio::spawn(async move {
            let reply: Reply = match decode::<Command>(&bytes) {
                Ok(command) => node.execute(command).await,
                Err(e) => Err(ServiceError::Internal(format!("peer command: {e}"))),
            };
            // The caller may have timed out meanwhile; nothing to do then.
            let _ = port.send(encode(&reply));
        });
        Ok(())
    }
}
