//! Dynamic payloads and idempotency: a trigger body replaces `event_data`, and an
//! `Idempotency-Key` delivers once.

use super::*;

#[tokio::test]
async fn a_trigger_body_replaces_event_data_and_an_idempotency_key_delivers_once() {
    let p = Pair::new(FAST, "dyn.event").await;
    let body = r#"{"event_data": {"x": [1, 2.5]}}"#;
    let first = p
        .node
        .trigger_with(&p.owner, &p.reg, Some(body), Some("order-42"))
        .await
        .expect(201);
    let tid = id_of(first.json());
    p.wait_counts(&tid, &[("succeeded", 1)]).await;

    // The repeat answers 200 with the first record and starts nothing.
    let again = p
        .node
        .trigger_with(&p.owner, &p.reg, Some(body), Some("order-42"))
        .await
        .expect(200);
    assert_eq!(
        again.json(),
        first.json(),
        "the repeat returns the first record"
    );

    // A later trigger without a body (and without a key) is a barrier: once it is
    // delivered, a delivery caused by the repeat would have been made as well.
    let plain = p.trigger().await;
    assert_ne!(plain, tid);
    p.wait_counts(&plain, &[("succeeded", 1)]).await;

    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(
        posts.len(),
        2,
        "one delivery per distinct trigger: {posts:?}"
    );
    let dynamic: Vec<&RecordedPost> = posts
        .iter()
        .filter(|post| post.body.as_ref() == br#"{"x": [1, 2.5]}"#)
        .collect();
    assert_eq!(dynamic.len(), 1, "the dynamic payload once: {posts:?}");
    assert_signed_delivery(dynamic[0], &p.sub.secret_key, "dyn.event");
    let registered: Vec<&RecordedPost> = posts
        .iter()
        .filter(|post| post.body.as_ref() == DEFAULT_EVENT_DATA_PYTHON.as_bytes())
        .collect();
    assert_eq!(
        registered.len(),
        1,
        "the registered event_data is unchanged: {posts:?}"
    );

    let triggers: Vec<Value> = p
        .node
        .all_triggered()
        .await
        .into_iter()
        .filter(|t| t["registration_id"] == p.reg.as_str())
        .collect();
    assert_eq!(
        triggers.len(),
        2,
        "the repeat recorded no trigger: {triggers:?}"
    );
}
