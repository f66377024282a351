//! Redeliver: a failed delivery is queued again until it succeeds.

use super::*;

/// The owner asks to redeliver trigger `tid`'s failed deliveries; returns the answer.
async fn redeliver(p: &Pair, tid: &str) -> Value {
    p.node
        .post(&format!("/v1/webhook/triggered/{tid}/redeliver"))
        .auth(&p.owner)
        .send()
        .await
        .expect(200)
        .json()
        .clone()
}

#[tokio::test]
async fn redeliver_requeues_a_failed_delivery_until_it_succeeds() {
    let p = Pair::new(
        &delivery_config(1.0, &["retry_delays_secs = [0.05]"]),
        "redo.event",
    )
    .await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;
    p.wait_single_row(&tid, "failed", "the delivery to fail")
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 2);
    assert_eq!(p.node.failed_count(&p.sub).await, 2);

    p.ep.set_post_status(&p.sub.endpoint, 200);
    assert_eq!(redeliver(&p, &tid).await, json!({"requeued": 1}));

    let row = &p
        .wait_single_row(&tid, "succeeded", "the redelivery to succeed")
        .await;
    let attempts = attempts_of(row);
    assert_eq!(
        attempts.len(),
        3,
        "two failed attempts, then the redelivery: {row}"
    );
    assert_attempt(&attempts[0], Some(500), true);
    assert_attempt(&attempts[1], Some(500), true);
    assert_attempt(&attempts[2], Some(200), false);
    assert_eq!(row["next_attempt"], Value::Null);

    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 3, "{posts:?}");
    assert_eq!(posts[2].answered, 200);
    let ids: HashSet<String> = posts
        .iter()
        .map(|post| assert_signed_delivery(post, &p.sub.secret_key, "redo.event"))
        .collect();
    assert_eq!(ids, HashSet::from([str_of(row, "id").to_string()]));
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    p.wait_counts(&tid, &[("succeeded", 1)]).await;

    // Nothing failed any more: nothing to requeue.
    assert_eq!(redeliver(&p, &tid).await, json!({"requeued": 0}));
}
