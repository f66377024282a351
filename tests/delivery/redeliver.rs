//! Redeliver: a failed delivery is queued again until it succeeds.

use super::*;

#[tokio::test]
async fn redeliver_requeues_a_failed_delivery_until_it_succeeds() {
    let p = Pair::new(
        r#"
[delivery]
retry_delays_secs = [0.05]
[http_client]
timeout_secs = 1.0
"#,
        "redo.event",
    )
    .await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;
    p.node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the delivery to fail",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "failed"),
        )
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 2);
    assert_eq!(p.node.failed_count(&p.sub).await, 2);

    p.ep.set_post_status(&p.sub.endpoint, 200);
    let r = p
        .node
        .post(&format!("/v1/webhook/triggered/{tid}/redeliver"))
        .auth(&p.owner)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 1}));

    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the redelivery to succeed",
            DELIVERY_DEADLINE,
            |rows| single_row_in_state(rows, "succeeded"),
        )
        .await;
    let row = &rows[0];
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
    p.node
        .wait_trigger_counts(
            &p.owner,
            &tid,
            &delivery_counts(&[("succeeded", 1)]),
            DELIVERY_DEADLINE,
        )
        .await;

    // Nothing failed any more: nothing to requeue.
    let r = p
        .node
        .post(&format!("/v1/webhook/triggered/{tid}/redeliver"))
        .auth(&p.owner)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 0}));
}
