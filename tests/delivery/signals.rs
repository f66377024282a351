//! Receivers' signals: `Retry-After` on 429 and 503 delays the next attempt (seconds or an
//! HTTP date, clamped), `410 Gone` stops deliveries until the endpoint is re-verified, and
//! jitter spreads the retries of deliveries that failed together. Timing is measured where
//! it matters: at the receiver.

use std::time::SystemTime;

use super::*;

/// Retries 50 ms apart without jitter, so a longer gap is the receiver's doing. The
/// breaker is off: these endpoints fail on purpose.
const SIGNALS: &str = r#"
[delivery]
retry_delays_secs = [0.05, 0.05, 0.05]
retry_jitter = 0.0
breaker_failures = 0
[http_client]
timeout_secs = 1.0
"#;

/// The gap between the first two POSTs the receiver got.
fn first_gap(posts: &[RecordedPost]) -> Duration {
    posts[1].at.duration_since(posts[0].at)
}

/// The HTTP date `secs` seconds from now, as a receiver writes it.
fn http_date_in(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let (days, rest) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[tokio::test]
async fn retry_after_in_seconds_and_as_a_date_holds_the_next_attempt_back() {
    let p = Pair::new(SIGNALS, "throttled.event").await;
    let throttled = PostAnswer::status(429).retry_after("1");
    p.ep.script_post_answers(&p.sub.endpoint, [throttled].into(), PostAnswer::status(200));
    let tid = p.trigger().await;
    p.wait_counts(&tid, &[("succeeded", 1)]).await;
    let gap = first_gap(&p.ep.posts_to(&p.sub.endpoint));
    assert!(
        gap >= Duration::from_millis(990) && gap < Duration::from_secs(3),
        "Retry-After: 1 should hold the 50 ms retry back ~1 s, got {gap:?}"
    );

    // An HTTP date two seconds ahead (whole seconds: at least one second away).
    let busy = PostAnswer::status(503).retry_after(&http_date_in(2));
    p.ep.script_post_answers(&p.sub.endpoint, [busy].into(), PostAnswer::status(200));
    let tid = p.trigger().await;
    p.wait_counts(&tid, &[("succeeded", 1)]).await;
    let posts = p.ep.posts_to(&p.sub.endpoint);
    let gap = first_gap(&posts[2..]);
    assert!(
        gap >= Duration::from_millis(990) && gap < Duration::from_secs(4),
        "Retry-After with an HTTP date should hold the retry until then, got {gap:?}"
    );
    let rows = p.node.deliveries(&p.owner, &tid).await;
    assert_attempt(&attempts_of(&rows[0])[0], Some(503), true);
}

#[tokio::test]
async fn retry_after_is_clamped_and_ignored_on_other_statuses() {
    let p = Pair::new(
        &format!("{SIGNALS}\n[delivery]\nmax_retry_after_secs = 0.3\n"),
        "clamped.event",
    )
    .await;
    let answers = [
        PostAnswer::status(429).retry_after("3600"),
        PostAnswer::status(500).retry_after("3600"),
    ];
    p.ep.script_post_answers(&p.sub.endpoint, answers.into(), PostAnswer::status(200));
    let tid = p.trigger().await;
    p.wait_counts(&tid, &[("succeeded", 1)]).await;
    let posts = p.ep.posts_to(&p.sub.endpoint);
    assert_eq!(posts.len(), 3, "{posts:?}");
    let clamped = first_gap(&posts);
    assert!(
        clamped >= Duration::from_millis(290) && clamped < Duration::from_secs(2),
        "an hour asked, 0.3 s allowed: {clamped:?}"
    );
    let ignored = first_gap(&posts[1..]);
    assert!(
        ignored < Duration::from_millis(290),
        "Retry-After on a 500 is not honoured: {ignored:?}"
    );
}

#[tokio::test]
async fn gone_stops_deliveries_until_the_endpoint_is_reverified() {
    let p = Pair::new(SIGNALS, "gone.event").await;
    p.ep.script_post_answers(
        &p.sub.endpoint,
        [PostAnswer::status(410).body("unsubscribed")].into(),
        PostAnswer::status(200),
    );
    let first = p.trigger().await;
    let attempt = p
        .wait_failed_once(&first, Some(410), "the 410 to fail the delivery")
        .await;
    assert_eq!(attempt["response_body"], "unsubscribed");
    assert!(
        attempt["error"].as_str().unwrap().contains("410 Gone"),
        "{attempt}"
    );
    let account = p.node.read_account(&p.sub).await;
    let stopped = &account["deliveries_stopped"];
    assert_eq!(stopped["reason"], "endpoint answered 410 Gone", "{account}");
    assert!(stopped["at"].as_f64().is_some(), "{account}");

    // Stopped: a new trigger sends nothing and says why in the attempt log.
    let second = p.trigger().await;
    let attempt = p
        .wait_failed_once(&second, None, "the stopped delivery to fail")
        .await;
    let why = attempt["error"].as_str().unwrap();
    assert!(
        why.starts_with("not sent") && why.contains("PATCH /v1/account"),
        "{why}"
    );
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 1, "nothing sent");

    // Re-verifying the same endpoint resumes deliveries.
    p.reverify().await;
    let account = p.node.read_account(&p.sub).await;
    assert_eq!(account["deliveries_stopped"], Value::Null, "{account}");
    let third = p.trigger().await;
    p.wait_counts(&third, &[("succeeded", 1)]).await;
    assert_eq!(p.ep.posts_to(&p.sub.endpoint).len(), 2);
}

#[tokio::test]
async fn jitter_spreads_the_retries_of_deliveries_that_failed_together() {
    const N: usize = 40;
    let p = Pair::new(
        &delivery_config(
            1.0,
            &[
                "retry_delays_secs = [1.0]",
                "retry_jitter = 0.2",
                "breaker_failures = 0",
                "max_in_flight_per_endpoint = 64",
            ],
        ),
        "jitter.event",
    )
    .await;
    p.ep.script_posts(&p.sub.endpoint, &[500; N], 200);
    let path = format!("/v1/webhook/triggered/{}", p.reg);
    let reqs = (0..N).map(|_| p.node.post(&path).auth(&p.owner)).collect();
    for r in send_all(reqs, 8).await {
        r.expect(201);
    }
    let posts =
        p.ep.wait_for_posts(&p.sub.endpoint, 2 * N, Duration::from_secs(30))
            .await;
    // Per delivery (webhook-id): the gap between its failed attempt and its retry.
    let mut first_seen: std::collections::HashMap<String, std::time::Instant> = Default::default();
    let mut gaps = Vec::new();
    for post in &posts {
        let id = post.header("webhook-id").unwrap();
        match first_seen.get(&id) {
            Some(at) => gaps.push(post.at.duration_since(*at).as_secs_f64()),
            None => {
                first_seen.insert(id, post.at);
            }
        }
    }
    assert_eq!(gaps.len(), N, "one retry each");
    let mean = gaps.iter().sum::<f64>() / N as f64;
    let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / N as f64).sqrt();
    let (min, max) = gaps
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), g| (lo.min(*g), hi.max(*g)));
    eprintln!("retry gaps: min {min:.3} s, mean {mean:.3} s, max {max:.3} s, sd {sd:.3} s");
    assert!(min >= 0.79, "no retry before 1 s - 20 %: {gaps:?}");
    assert!(max <= 1.4, "no retry long after 1 s + 20 %: {gaps:?}");
    // Uniform over ±0.2 s has a standard deviation of 0.115 s; without jitter it is ~0.
    assert!(
        max - min >= 0.2,
        "retries spread over the jitter range: {gaps:?}"
    );
    assert!(
        sd >= 0.06,
        "spread like a uniform distribution: sd {sd:.3}, {gaps:?}"
    );
}
