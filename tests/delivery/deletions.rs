//! Deletions end pending retries: deleting the subscription or the subscriber's account
//! cancels what was still to be attempted.

use super::*;

/// Slow retries, so there is time to delete between the first attempt and the retry.
const SLOW_RETRIES: &str = r#"
[delivery]
retry_delays_secs = [2.0, 2.0]
[http_client]
timeout_secs = 1.0
"#;

/// Triggers against a failing endpoint and waits until the first attempt is recorded and
/// a retry is pending; returns the trigger id and the retry's due time (epoch seconds).
async fn first_attempt_failed(p: &Pair) -> (String, f64) {
    p.ep.set_post_status(&p.sub.endpoint, 500);
    let tid = p.trigger().await;
    let rows = p
        .node
        .wait_deliveries(
            &p.owner,
            &tid,
            "the first attempt to be recorded",
            DELIVERY_DEADLINE,
            |rows| rows.len() == 1 && attempts_of(&rows[0]).len() == 1,
        )
        .await;
    assert_eq!(rows[0]["state"], "pending", "{}", rows[0]);
    let next = rows[0]["next_attempt"]
        .as_f64()
        .unwrap_or_else(|| panic!("a retry should be scheduled: {}", rows[0]));
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 1);
    (tid, next)
}

/// After a deletion: the delivery ends `cancelled` without another attempt or POST.
async fn assert_cancelled(p: &Pair, tid: &str, retry_due: f64) {
    let deleted_at = now_secs();
    assert!(
        deleted_at < retry_due,
        "the deletion came after the retry was due ({deleted_at} >= {retry_due}); the machine is too slow for this test"
    );
    let row = &p
        .wait_single_row(tid, "cancelled", "the delivery to be cancelled")
        .await;
    assert_eq!(
        attempts_of(row).len(),
        1,
        "no attempt after the deletion: {row}"
    );
    assert_eq!(row["next_attempt"], Value::Null, "{row}");
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        1,
        "no POST after the deletion"
    );
    p.wait_counts(tid, &[("cancelled", 1)]).await;
}

#[tokio::test]
async fn deleting_the_subscription_cancels_pending_retries() {
    let p = Pair::new(SLOW_RETRIES, "gone.event").await;
    let (tid, retry_due) = first_attempt_failed(&p).await;
    p.node
        .delete(&format!("/v1/webhook/subscription/{}", p.subscription))
        .auth(&p.sub)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    assert_cancelled(&p, &tid, retry_due).await;
}

#[tokio::test]
async fn deleting_a_subscription_before_its_first_attempt_cancels_it() {
    // One attempt at a time: the later subscription's first attempt waits behind a held one.
    let p = Pair::new(
        &delivery_config(2.0, &["max_in_flight = 1", "retry_delays_secs = []"]),
        "late.event",
    )
    .await;
    let (late, late_subscription) = p.add_subscriber("late").await;
    p.ep.hold_posts(&p.sub.endpoint, Duration::from_secs(30));
    let tid = p.trigger().await;
    p.ep.wait_for_posts(&p.sub.endpoint, 1, DELIVERY_DEADLINE)
        .await;
    // Fanned out already; deleted before its attempt comes up.
    p.node
        .delete(&format!("/v1/webhook/subscription/{late_subscription}"))
        .auth(&late)
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    p.wait_counts(&tid, &[("failed", 1), ("cancelled", 1)])
        .await;
    assert!(p.ep.posts_to(&late.endpoint).is_empty());
}

#[tokio::test]
async fn deleting_the_subscriber_account_cancels_pending_retries() {
    let p = Pair::new(SLOW_RETRIES, "gone.event").await;
    let (tid, retry_due) = first_attempt_failed(&p).await;
    p.node
        .delete(&format!("/v1/account/{}", p.sub.id))
        .auth(&p.node.admin())
        .send()
        .await
        .expect_write(&[("deleted", 1)]);
    assert_cancelled(&p, &tid, retry_due).await;
}
