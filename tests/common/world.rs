//! A common starting point for the per-route tests: a node, an endpoint server and two
//! ordinary accounts.

use crate::common::endpoint::EndpointServer;
use crate::common::node::TestNode;
use crate::common::records::{Account, Creds};

/// A node, an endpoint server and two ordinary accounts (`john`, `jane`).
pub struct World {
    pub node: TestNode,
    pub ep: EndpointServer,
    pub john: Account,
    pub jane: Account,
}

impl World {
    pub async fn new() -> Self {
        Self::with_config("").await
    }

    pub async fn with_config(extra_toml: &str) -> Self {
        let ep = EndpointServer::start().await;
        let node = TestNode::spawn_with(extra_toml).await;
        let john = node
            .create_account("johndoe", &ep.endpoint_url("john/endpoint"))
            .await;
        let jane = node
            .create_account("janedoe", &ep.endpoint_url("jane/endpoint"))
            .await;
        Self {
            node,
            ep,
            john,
            jane,
        }
    }

    pub fn admin(&self) -> Creds {
        self.node.admin()
    }
}
