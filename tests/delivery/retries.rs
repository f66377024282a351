//! Retries and `failed_count`: a failing endpoint gets every attempt, a success resets the
//! count, an account at `max_failed_count` is skipped, and a receiver that never answers
//! times out.

use super::*;

#[tokio::test]
async fn a_failing_endpoint_gets_four_attempts_then_a_success_resets_failed_count() {
    let p = Pair::new(FAST, "retry.event").await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;

    let row = &p
        .wait_single_row(&tid, "failed", "the delivery to fail")
        .await;
    assert_eq!(row["subscription_id"], p.subscription.as_str());
    assert_eq!(row["account_id"], p.sub.id.as_str());
    assert_eq!(row["next_attempt"], Value::Null, "{row}");
    let attempts = attempts_of(row);
    assert_eq!(attempts.len(), 4, "1 attempt + 3 retries: {row}");
    for a in &attempts {
        assert_attempt(a, Some(500), true);
    }
    for w in attempts.windows(2) {
        let gap = w[1]["at"].as_f64().unwrap() - w[0]["at"].as_f64().unwrap();
        assert!(
            (0.049..2.0).contains(&gap),
            "attempts should be ~50 ms apart, got {gap} s: {row}"
        );
    }

    // The receiver saw exactly those four, ~50 ms apart, same webhook-id, all signed.
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 4, "{posts:?}");
    let ids: HashSet<String> = posts
        .iter()
        .map(|post| assert_signed_delivery(post, &p.sub.secret_key, "retry.event"))
        .collect();
    assert_eq!(
        ids,
        HashSet::from([str_of(row, "id").to_string()]),
        "webhook-id is the delivery id, the same on every retry"
    );
    for w in posts.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(45) && gap < Duration::from_secs(2),
            "retry delay should be ~50 ms, got {gap:?}"
        );
    }
    assert!(posts.iter().all(|post| post.answered == 500));
    assert_eq!(p.node.failed_count(&p.sub).await, 4);
    p.wait_counts(&tid, &[("failed", 1)]).await;

    // The endpoint recovers: the next delivery succeeds and failed_count goes back to 0.
    p.ep.set_post_status(&p.sub.endpoint, 200);
    let second = p.trigger().await;
    p.wait_counts(&second, &[("succeeded", 1)]).await;
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 5, "{posts:?}");
    assert_eq!(posts[4].answered, 200);
    assert_signed_delivery(&posts[4], &p.sub.secret_key, "retry.event");
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"webhookd_deliveries_total{outcome="failed"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"webhookd_deliveries_total{outcome="succeeded"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_count_249_is_still_delivered_and_250_is_skipped() {
    // One attempt per trigger, so each trigger adds exactly 1 to failed_count; no breaker,
    // so every one of them is attempted.
    let p = Pair::new(
        &delivery_config(
            1.0,
            &[
                "retry_delays_secs = []",
                "breaker_failures = 0",
                "max_failed_count = 250",
                "max_in_flight = 64",
            ],
        ),
        "limit.event",
    )
    .await;
    // A healthy control subscriber shows when each fan-out has run.
    let (control, _) = p.add_subscriber("control").await;
    p.ep.set_post_status(&p.sub.endpoint, 500);

    let path = format!("/v1/webhook/triggered/{}", p.reg);
    let reqs = (0..249)
        .map(|_| p.node.post(&path).auth(&p.owner))
        .collect();
    for r in send_all(reqs, 32).await {
        r.expect(201);
    }
    p.node
        .wait_failed_count(&p.sub, 249, Duration::from_secs(120))
        .await;
    p.ep.wait_for_posts(&control.endpoint, 249, Duration::from_secs(120))
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 249);

    // failed_count 249 < 250: still delivered (and fails once more).
    let t250 = p.trigger().await;
    p.wait_counts(&t250, &[("succeeded", 1), ("failed", 1)])
        .await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 250);
    assert_eq!(p.node.failed_count(&p.sub).await, 250);

    // failed_count 250: skipped, no POST; the control still gets its delivery.
    let t251 = p.trigger().await;
    p.wait_counts(&t251, &[("succeeded", 1), ("skipped", 1)])
        .await;
    assert_eq!(p.ep.posts_to(&control.endpoint).len(), 251);
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        250,
        "a subscriber at failed_count 250 must not be called"
    );
    let rows = p.node.deliveries(&p.owner, &t251).await;
    let skipped: Vec<&Value> = rows.iter().filter(|r| r["state"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{rows:?}");
    assert_eq!(skipped[0]["account_id"], p.sub.id.as_str());
    assert_eq!(skipped[0]["attempts"], json!([]));
    assert_eq!(skipped[0]["next_attempt"], Value::Null);
    assert_eq!(p.node.failed_count(&p.sub).await, 250);
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"webhookd_deliveries_total{outcome="skipped"}"#),
        Some(1.0),
        "{metrics}"
    );

    // PATCH /v1/account with an endpoint resets failed_count, and delivery resumes.
    p.reverify().await;
    assert_eq!(p.node.failed_count(&p.sub).await, 0);
    p.ep.set_post_status(&p.sub.endpoint, 200);
    let t252 = p.trigger().await;
    p.wait_counts(&t252, &[("succeeded", 2)]).await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 251);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_counts_as_a_failure() {
    let p = Pair::new(
        &delivery_config(1.0, &["retry_delays_secs = []"]),
        "slow.event",
    )
    .await;
    // Held far longer than the 1 s client timeout (bounded: the server drops at test end).
    p.ep.hold_posts(&p.sub.endpoint, Duration::from_secs(30));
    let tid = p.trigger().await;
    let attempt = &p
        .wait_failed_once(&tid, None, "the held delivery to fail")
        .await;
    eprintln!("timed-out attempt: {attempt}");
    let ms = attempt["duration_ms"].as_f64().unwrap();
    assert!(
        (900.0..5000.0).contains(&ms),
        "the attempt should end at the 1 s timeout, took {ms} ms: {attempt}"
    );
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 1);
    assert_eq!(p.node.failed_count(&p.sub).await, 1);
    p.wait_counts(&tid, &[("failed", 1)]).await;
}
