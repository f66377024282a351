//! The attempt log keeps each attempt's duration and the start of the endpoint's answer.

use super::*;

#[tokio::test]
async fn attempts_record_duration_and_the_start_of_the_response_body() {
    let p = Pair::new(
        &format!("{FAST}\n[delivery]\nresponse_capture_bytes = 100\n"),
        "capture.event",
    )
    .await;
    let long = "x".repeat(5000);
    p.ep.script_post_answers(
        &p.sub.endpoint,
        [PostAnswer::status(500).body(&long)].into(),
        PostAnswer::status(200).body("thanks, got it"),
    );
    let tid = p.trigger().await;
    let row = p
        .wait_single_row(&tid, "succeeded", "the retry to succeed")
        .await;
    let attempts = attempts_of(&row);
    assert_eq!(attempts.len(), 2, "{row}");
    assert_attempt(&attempts[0], Some(500), true);
    assert_attempt(&attempts[1], Some(200), false);
    assert_eq!(
        attempts[0]["response_body"],
        "x".repeat(100),
        "capped at response_capture_bytes"
    );
    assert_eq!(attempts[1]["response_body"], "thanks, got it");
    for a in &attempts {
        assert!(a["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{a}");
    }
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_has_no_response_body() {
    let p = Pair::new(
        &format!("{FAST}\n[delivery]\nretry_delays_secs = []\n"),
        "capture.event",
    )
    .await;
    p.ep.shutdown();
    let tid = p.trigger().await;
    let row = p
        .wait_single_row(&tid, "failed", "the delivery to fail")
        .await;
    let attempt = &attempts_of(&row)[0];
    assert_attempt(attempt, None, true);
    assert_eq!(attempt["response_body"], Value::Null);
}
