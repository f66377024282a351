//! Bulk recovery: `POST /v1/webhook/deliveries/recover` queues again exactly the caller's
//! failed deliveries of a time window — to its endpoint, and of its registrations.

use super::*;

#[tokio::test]
async fn recovery_requeues_exactly_the_failed_deliveries_of_the_window() {
    let p = Pair::new(
        &delivery_config(1.0, &["retry_delays_secs = []", "breaker_failures = 0"]),
        "recover.event",
    )
    .await;
    // A healthy subscriber too: its deliveries succeed and must not be touched.
    let (healthy, _) = p.add_subscriber("healthy").await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let failed = [("succeeded", 1), ("failed", 1)];
    let old = p.trigger().await;
    p.wait_counts(&old, &failed).await;
    let since = now_secs();
    let mut recent = Vec::new();
    for _ in 0..3 {
        let tid = p.trigger().await;
        p.wait_counts(&tid, &failed).await;
        recent.push(tid);
    }
    let posts_before = p.ep.posts_to(&p.sub.endpoint).len();
    assert_eq!(posts_before, 4);

    // Bad windows are refused, and change nothing.
    let recover = |body: Value| p.node.post("/v1/webhook/deliveries/recover").json(&body);
    for (body, message) in [
        (json!({}), "Missing since field"),
        (json!({"since": -1}), "Invalid since field"),
        (json!({"since": "yesterday"}), "Invalid since field"),
        (json!({"since": 0, "until": -1}), "Invalid until field"),
    ] {
        recover(body)
            .auth(&p.sub)
            .send()
            .await
            .expect_error(400, message);
    }
    p.node
        .post("/v1/webhook/deliveries/recover")
        .auth(&p.sub)
        .body("[1]")
        .send()
        .await
        .expect(400);

    let empty = json!({"since": since, "until": since - 10.0});
    let r = recover(empty).auth(&p.sub).send().await.expect(200);
    assert_eq!(r.json(), &json!({"requeued": 0}), "an empty window");

    // The subscriber recovers its own failures since `since`: the three recent ones.
    p.ep.set_post_status(&p.sub.endpoint, 200);
    let r = recover(json!({ "since": since }))
        .auth(&p.sub)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 3}));
    for tid in &recent {
        p.wait_counts(tid, &[("succeeded", 2)]).await;
    }
    p.ep.wait_for_posts(&p.sub.endpoint, posts_before + 3, DELIVERY_DEADLINE)
        .await;
    assert_eq!(
        p.node.trigger_status(&p.owner, &old).await["deliveries"],
        delivery_counts(&failed),
        "outside the window"
    );

    // The healthy subscriber has no failure; the registration's owner recovers the old one.
    let r = recover(json!({ "since": 0 }))
        .auth(&healthy)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 0}));
    let r = recover(json!({ "since": 0, "until": since }))
        .auth(&p.owner)
        .send()
        .await
        .expect(200);
    assert_eq!(r.json(), &json!({"requeued": 1}));
    p.wait_counts(&old, &[("succeeded", 2)]).await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), posts_before + 4);
    assert_eq!(p.ep.posts_to(&healthy.endpoint).len(), 4, "never requeued");
}
