//! Port of the original functional scenario (`tests/functional/http_interactions.py`,
//! pywebhooks-original.md §13.2) against one real node. The scenario itself lives in
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
