//! Error paths of the subscription routes (routes 15–19 of the auth table).

use crate::common::*;

use super::guards::*;

const SUB: &str = "/v1/webhook/subscription";
const SUBS: &str = "/v1/webhook/subscriptions";

fn sub_path(id: &str) -> String {
    format!("{SUB}/{id}")
}

/// World plus one registration by john.
async fn with_registration() -> (World, String) {
    let w = World::new().await;
    let reg = id_of(&w.node.register(&w.john, "john.event").await);
    (w, reg)
}

// ---------------------------------------------------------------------------------------------
// 15. POST /v1/webhook/subscription/<registration_id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_returns_the_record_and_allows_duplicates() {
    let (w, reg) = with_registration().await;
    let first = w.node.subscribe(&w.jane, &reg).await;
    let keys: std::collections::BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["account_id", "epoch", "id", "registration_id"]
            .into_iter()
            .collect()
    );
    assert_eq!(first["account_id"], w.jane.id.as_str());
    assert_eq!(first["registration_id"], reg.as_str());
    // A duplicate is a new row; the owner may subscribe to their own registration
    let second = w.node.subscribe(&w.jane, &reg).await;
    assert_ne!(first["id"], second["id"]);
    w.node.subscribe(&w.john, &reg).await;
    assert_eq!(w.node.all_subscriptions().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_missing_id() {
    // The original's naming quirk (Q26): the message says subscription_id.
    let w = World::new().await;
    for path in [SUB, "/v1/webhook/subscription/"] {
        w.node
            .post(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing subscription_id");
        w.node
            .post(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing subscription_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_someone_elses_registration_is_allowed() {
    // There is no ownership on this route: any account may subscribe to any registration.
    let (w, reg) = with_registration().await;
    let sub = w.node.subscribe(&w.jane, &reg).await;
    assert_eq!(sub["account_id"], w.jane.id.as_str());
    w.node.subscribe(&w.admin(), &reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_bad_and_unknown_ids() {
    let (w, reg) = with_registration().await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        for who in [w.jane.creds(), w.admin()] {
            w.node
                .post(&sub_path(id))
                .auth(&who)
                .send()
                .await
                .expect_error(404, "The registration id does not exist");
        }
    }
    // a deleted registration no longer exists either
    w.node
        .delete(&format!("/v1/webhook/registration/{reg}"))
        .auth(&w.john)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    w.node
        .post(&sub_path(&reg))
        .auth(&w.jane)
        .send()
        .await
        .expect_error(404, "The registration id does not exist");
    assert!(w.node.all_subscriptions().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 16. GET /v1/webhook/subscription (own)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_own_subscriptions_bad_paging() {
    let w = World::new().await;
    assert_bad_paging(|q| w.node.get(&format!("{SUB}?{q}")).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_own_subscriptions_shows_only_the_callers() {
    let (w, reg) = with_registration().await;
    let jane_sub = w.node.subscribe(&w.jane, &reg).await;
    // john owns the registration but has no subscription of his own
    w.node.page(SUB, &w.john, 0, 10).await.expect_no_content();
    let r = w.node.page(SUB, &w.jane, 0, 10).await;
    assert_eq!(r.items("subscriptions"), vec![jane_sub]);
}

// ---------------------------------------------------------------------------------------------
// 17. DELETE /v1/webhook/subscription/<subscription_id>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_missing_id() {
    let w = World::new().await;
    for path in [SUB, "/v1/webhook/subscription/"] {
        w.node
            .delete(path)
            .auth(&w.john)
            .send()
            .await
            .expect_error(400, "Missing subscription_id");
        w.node
            .delete(path)
            .no_content_type()
            .send()
            .await
            .expect_error(400, "Missing subscription_id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_non_owner_even_the_registration_owner() {
    let (w, reg) = with_registration().await;
    let path = sub_path(&id_of(&w.node.subscribe(&w.jane, &reg).await));
    // john owns the registration, but only the subscriber (or an admin) may unsubscribe
    w.node
        .delete(&path)
        .auth(&w.john)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
    assert_eq!(w.node.all_subscriptions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_bad_and_unknown_ids() {
    let (w, reg) = with_registration().await;
    w.node.subscribe(&w.jane, &reg).await;
    let unknown = unknown_id();
    for id in MALFORMED_IDS.iter().copied().chain([unknown.as_str()]) {
        w.node
            .delete(&sub_path(id))
            .auth(&w.jane)
            .send()
            .await
            .expect_error(401, NOT_AUTHORIZED);
        w.node
            .delete(&sub_path(id))
            .auth(&w.admin())
            .send()
            .await
            .expect_write(&[("skipped", 1)]);
    }
    assert_eq!(w.node.all_subscriptions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_deletes_exactly_one_row() {
    let (w, reg) = with_registration().await;
    let first = id_of(&w.node.subscribe(&w.jane, &reg).await);
    let dup = id_of(&w.node.subscribe(&w.jane, &reg).await);
    w.node
        .delete(&sub_path(&first))
        .auth(&w.jane)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    let left = w.node.all_subscriptions().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], dup.as_str());
    // already gone: the subscriber now gets 401 like anyone else
    w.node
        .delete(&sub_path(&first))
        .auth(&w.jane)
        .send()
        .await
        .expect_error(401, NOT_AUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// 18. GET /v1/webhook/subscriptions (all)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_subscriptions_bad_paging() {
    let w = World::new().await;
    assert_bad_paging(|q| w.node.get(&format!("{SUBS}?{q}")).auth(&w.john)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_subscriptions_shows_everyones() {
    let (w, reg) = with_registration().await;
    let a = w.node.subscribe(&w.jane, &reg).await;
    let b = w.node.subscribe(&w.john, &reg).await;
    for who in [w.john.creds(), w.jane.creds(), w.admin()] {
        let r = w.node.page(SUBS, &who, 0, 10).await;
        assert_eq!(r.items("subscriptions"), vec![a.clone(), b.clone()]);
    }
}

// ---------------------------------------------------------------------------------------------
// 19. DELETE /v1/webhook/subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_subscriptions_counts_rows_and_keeps_registrations() {
    let (w, reg) = with_registration().await;
    w.node.subscribe(&w.jane, &reg).await;
    w.node.subscribe(&w.jane, &reg).await;
    w.node.subscribe(&w.john, &reg).await;
    w.node
        .delete(SUBS)
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("deleted", 3)]);
    assert!(w.node.all_subscriptions().await.is_empty());
    assert_eq!(w.node.all_registrations().await.len(), 1);
    w.node
        .delete(SUBS)
        .auth(&w.admin())
        .send()
        .await
        .expect_write(&[("deleted", 0)]);
}
