//! Port of the original PyWebhooks functional scenario (its
//! `tests/functional/http_interactions.py`) against one real node. The scenario itself lives in
//! `tests/common/scenario.rs`, shared with `tests/cluster/` (which sends each request to a
//! randomly chosen node of a three-node cluster).

use crate::common::scenario::{functional_scenario, Scenario};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_functional_scenario() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    functional_scenario(&Scenario::single(&node, &ep)).await;
}
