//! Many accounts subscribing at once to one registration. Their subscribes are writes of
//! one actor, committed together: every one is acknowledged, every acknowledged one is
//! listed, and a SIGKILL right after the acknowledgements loses none of them (an answer
//! waits for the flush that covers its write).

use std::collections::HashSet;

use tokio::task::JoinSet;

use crate::common::*;

/// Accounts subscribing at once.
const SUBSCRIBERS: usize = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribes_to_one_registration_all_survive_a_sigkill() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let owner = node
        .create_account("owner", &ep.endpoint_url("owner"))
        .await;
    let registration = id_of(&node.register(&owner, "popular").await);
    let mut accounts = Vec::with_capacity(SUBSCRIBERS);
    for n in 0..SUBSCRIBERS {
        let name = format!("subscriber{n}");
        accounts.push(node.create_account(&name, &ep.endpoint_url(&name)).await);
    }

    let mut subscribes = JoinSet::new();
    for who in &accounts {
        let request = node
            .post(&format!("/v1/webhook/subscription/{registration}"))
            .auth(who);
        let subscriber = who.id.clone();
        subscribes.spawn(async move { (subscriber, request.send().await) });
    }
    let mut acknowledged = HashSet::new();
    while let Some(answer) = subscribes.join_next().await {
        let (subscriber, response) = answer.expect("a subscribe task");
        let record = response.expect(201).json().clone();
        assert_eq!(record["account_id"], subscriber.as_str(), "{record}");
        assert_eq!(record["registration_id"], registration.as_str(), "{record}");
        acknowledged.insert(id_of(&record));
    }
    assert_eq!(acknowledged.len(), SUBSCRIBERS, "one subscription each");
    let listed = |subscriptions: Vec<serde_json::Value>| -> HashSet<String> {
        subscriptions
            .iter()
            .filter(|s| s["registration_id"] == registration.as_str())
            .map(id_of)
            .collect()
    };
    assert_eq!(listed(node.all_subscriptions().await), acknowledged);

    // No clean stop: every acknowledged subscribe must already be on disk.
    node.kill().await;
    node.restart().await;
    assert_eq!(listed(node.all_subscriptions().await), acknowledged);
}
