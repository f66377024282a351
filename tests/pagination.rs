//! Pagination semantics: oldest first by epoch, 204 for an empty page,
//! `next_start` whenever the page is full. The per-route bad-paging checks live in the
//! `errors` suites.

use crate::common::*;
use serde_json::Value;

fn names(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["username"].as_str().unwrap().to_string())
        .collect()
}

fn next_start(r: &Resp) -> Option<u64> {
    r.json().get("next_start").map(|v| {
        v.as_u64()
            .unwrap_or_else(|| panic!("next_start is not an integer: {r}"))
    })
}

/// The original's observation with 5 accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_accounts_page_like_the_original() {
    let ep = EndpointServer::start().await;
    let node = TestNode::spawn().await;
    for name in ["johndoe", "janedoe", "samjones", "sarahfranks"] {
        node.create_account(name, &ep.endpoint_url(name)).await;
    }
    let admin = node.admin();
    let all = ["admin", "johndoe", "janedoe", "samjones", "sarahfranks"];

    let r = node.page("/v1/accounts", &admin, 0, 2).await;
    assert_eq!(names(&r.items("accounts")), all[0..2]);
    assert_eq!(next_start(&r), Some(2));

    let r = node.page("/v1/accounts", &admin, 2, 2).await;
    assert_eq!(names(&r.items("accounts")), all[2..4]);
    assert_eq!(next_start(&r), Some(4));

    let r = node.page("/v1/accounts", &admin, 4, 2).await;
    assert_eq!(names(&r.items("accounts")), all[4..5]);
    assert_eq!(next_start(&r), None, "short page: no next_start: {r}");

    node.page("/v1/accounts", &admin, 5, 1)
        .await
        .expect_no_content();
    node.page("/v1/accounts", &admin, 10, 3)
        .await
        .expect_no_content();

    // a full last page still carries next_start; following it gives 204
    let r = node.page("/v1/accounts", &admin, 0, 5).await;
    assert_eq!(names(&r.items("accounts")), all);
    assert_eq!(next_start(&r), Some(5));

    let r = node.page("/v1/accounts", &admin, 0, 100).await;
    assert_eq!(names(&r.items("accounts")), all);
    assert_eq!(next_start(&r), None);

    let r = node.page("/v1/accounts", &admin, 3, 1).await;
    assert_eq!(names(&r.items("accounts")), ["samjones"]);
    assert_eq!(next_start(&r), Some(4));

    // ordered by epoch, oldest first
    let epochs: Vec<f64> = node
        .all_accounts()
        .await
        .iter()
        .map(|a| a["epoch"].as_f64().unwrap())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_boundaries_are_accepted() {
    let node = TestNode::spawn().await;
    let admin = node.admin();
    for query in [
        "start=0&limit=1",
        "start=0&limit=100",
        "limit=100&start=0",
        "start=999999999999999&limit=100",
        "start=999999999999999&limit=1",
    ] {
        let r = node
            .get(&format!("/v1/accounts?{query}"))
            .auth(&admin)
            .send()
            .await;
        assert!(
            r.status == 200 || r.status == 204,
            "`{query}` should be accepted: {r}"
        );
    }
    let r = node.page("/v1/accounts", &admin, 0, 1).await;
    assert_eq!(r.items("accounts").len(), 1);
    assert_eq!(next_start(&r), Some(1), "a full page of one row");
    node.page("/v1/accounts", &admin, 999_999_999_999_999, 100)
        .await
        .expect_no_content();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_listings_are_204_with_an_empty_body() {
    let w = World::new().await;
    for path in [
        "/v1/webhook/registration",
        "/v1/webhook/registrations",
        "/v1/webhook/subscription",
        "/v1/webhook/subscriptions",
        "/v1/webhook/triggered",
    ] {
        w.node.page(path, &w.john, 0, 10).await.expect_no_content();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_is_ordered_oldest_first_and_pages_consistently() {
    let w = World::new().await;
    let mut regs = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &w.john } else { &w.jane };
        regs.push(w.node.register(who, &format!("event.{i}")).await);
    }
    let mut subs = Vec::new();
    let mut triggered = Vec::new();
    for (i, reg) in regs.iter().enumerate() {
        let reg_id = id_of(reg);
        subs.push(w.node.subscribe(&w.jane, &reg_id).await);
        let owner = if i % 2 == 0 { &w.john } else { &w.jane };
        triggered.push(w.node.trigger(owner, &reg_id).await);
    }
    let jane_regs: Vec<Value> = regs.iter().skip(1).step_by(2).cloned().collect();

    let listings: [(&str, &str, &Vec<Value>); 5] = [
        ("/v1/webhook/registrations", "registrations", &regs),
        ("/v1/webhook/registration", "registrations", &jane_regs),
        ("/v1/webhook/subscriptions", "subscriptions", &subs),
        ("/v1/webhook/subscription", "subscriptions", &subs),
        ("/v1/webhook/triggered", "triggered_webhooks", &triggered),
    ];
    for (path, key, expected) in listings {
        // pages of 2 concatenate to the creation order
        let mut got = Vec::new();
        let mut start = 0;
        loop {
            let r = w.node.page(path, &w.jane, start, 2).await;
            if r.status == 204 {
                r.expect_no_content();
                break;
            }
            let rows = r.items(key);
            assert!(rows.len() <= 2, "{r}");
            let full = rows.len() == 2;
            got.extend(rows);
            match next_start(&r) {
                Some(next) => {
                    assert!(full, "next_start only on a full page: {r}");
                    assert_eq!(next, start + 2);
                    start = next;
                }
                None => {
                    assert!(!full, "a full page must carry next_start: {r}");
                    break;
                }
            }
        }
        assert_eq!(&got, expected, "{path}: pages in creation (epoch) order");
    }
}
