//! Secret rotation: after a secret-key reset, `webhook-signature` carries a signature made
//! with the new secret and one made with the old, until the grace period ends; the legacy
//! `pywebhooks-signature` uses the new secret only.

use super::*;

#[tokio::test]
async fn during_the_grace_period_both_secrets_verify_and_only_the_new_one_after() {
    let p = Pair::new(
        &format!("{FAST}\n[security]\nsecret_rotation_grace_secs = 3.0\n"),
        "rotate.event",
    )
    .await;
    let old = p.sub.secret_key.clone();
    p.node
        .post("/v1/account/reset/secretkey")
        .auth(&p.sub)
        .send()
        .await
        .expect(200);
    let new =
        p.ep.last_key(&p.sub.endpoint, "secret_key")
            .expect("the new secret reached the endpoint");
    assert_ne!(new, old);

    p.trigger().await;
    let posts =
        p.ep.wait_for_posts(&p.sub.endpoint, 1, DELIVERY_DEADLINE)
            .await;
    let during = &posts[0];
    let signatures = during.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(standard_webhooks_verifies(during, &new), "{during:?}");
    assert!(standard_webhooks_verifies(during, &old), "{during:?}");
    assert_eq!(
        during.header("pywebhooks-signature").unwrap(),
        expected_pywebhooks_signature(&new, &during.body),
        "the legacy signature uses the new secret"
    );

    // Once the grace period passed, the old secret signs nothing.
    let after = eventually(
        "a delivery after the grace period",
        Duration::from_secs(15),
        || {
            let p = &p;
            async move {
                let n = p.ep.posts_to(&p.sub.endpoint).len();
                p.trigger().await;
                let post =
                    p.ep.wait_for_posts(&p.sub.endpoint, n + 1, DELIVERY_DEADLINE)
                        .await;
                let last = post.last().cloned()?;
                let single = last.header("webhook-signature")?.split(' ').count() == 1;
                single.then_some(last)
            }
        },
    )
    .await;
    assert!(standard_webhooks_verifies(&after, &new), "{after:?}");
    assert!(!standard_webhooks_verifies(&after, &old), "{after:?}");
    assert_signed_delivery(&after, &new, "rotate.event");
}
