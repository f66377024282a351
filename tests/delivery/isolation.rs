//! Endpoint isolation: a per-endpoint cap on attempts in flight keeps a receiver that never
//! answers from holding every worker, and a circuit breaker defers a failing endpoint's
//! deliveries (no POST, no worker) until a probe succeeds; its state is in /metrics.

use std::time::Instant;

use super::*;

#[tokio::test]
async fn a_receiver_that_never_answers_holds_only_its_own_slots() {
    // Four workers, two per endpoint; the held POSTs would time out after 5 s.
    let p = Pair::new(
        &delivery_config(
            5.0,
            &[
                "retry_delays_secs = []",
                "max_in_flight = 4",
                "max_in_flight_per_endpoint = 2",
                "breaker_failures = 0",
            ],
        ),
        "isolated.event",
    )
    .await;
    let (healthy, _) = p.add_subscriber("healthy").await;
    p.ep.hold_posts(&p.sub.endpoint, Duration::from_secs(30));
    const N: usize = 10;
    let started = Instant::now();
    for _ in 0..N {
        p.trigger().await;
    }
    p.ep.wait_for_posts(&healthy.endpoint, N, Duration::from_secs(20))
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the healthy endpoint got its {N} deliveries in {took:?}, not after the held ones time out"
    );
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        2,
        "the dead endpoint holds at most its cap of attempts"
    );
}

#[tokio::test]
async fn failures_in_a_row_open_the_breaker_until_a_probe_succeeds() {
    let p = Pair::new(
        &delivery_config(
            1.0,
            &[
                "retry_delays_secs = []",
                "breaker_failures = 3",
                "breaker_cooldown_secs = 1.0",
            ],
        ),
        "breaker.event",
    )
    .await;
    p.ep.set_post_status(&p.sub.endpoint, 500);
    for _ in 0..3 {
        let tid = p.trigger().await;
        p.wait_counts(&tid, &[("failed", 1)]).await;
    }
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "webhookd_delivery_breakers_open"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "webhookd_delivery_breaker_trips_total"),
        Some(1.0)
    );

    // While open: deliveries wait, deferred without a POST.
    let mut deferred = Vec::new();
    for _ in 0..3 {
        deferred.push(p.trigger().await);
    }
    for tid in &deferred {
        let rows = p
            .node
            .wait_deliveries(
                &p.owner,
                tid,
                "the delivery to be deferred",
                DELIVERY_DEADLINE,
                |rows| {
                    rows.len() == 1
                        && rows[0]["state"] == "pending"
                        && rows[0]["next_attempt"].is_number()
                        && rows[0]["attempts"] == json!([])
                },
            )
            .await;
        assert_eq!(rows[0]["state"], "pending");
    }
    assert_eq!(
        p.ep.posts_to(&p.sub.endpoint).len(),
        3,
        "no POST while open"
    );
    let metrics = p.node.metrics().await;
    assert!(
        metric_value(&metrics, "webhookd_delivery_deferred_total").is_some_and(|n| n >= 3.0),
        "{metrics}"
    );

    // The endpoint recovers: after the cooldown a probe succeeds and the rest follow.
    p.ep.set_post_status(&p.sub.endpoint, 200);
    for tid in &deferred {
        p.wait_counts(tid, &[("succeeded", 1)]).await;
    }
    let metrics = p.node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "webhookd_delivery_breakers_open"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 6);
}
