//! Secret rotation: after a secret-key reset, `webhook-signature` carries a signature made
//! with the new secret and one made with the old, until the grace period ends; the legacy
//! `pywebhooks-signature` uses the new secret only. Checked with the test's own reading of
//! the Standard Webhooks rules and with the reference Python library, `standardwebhooks`.

use crate::common::python::{python_with, run_python};

use super::*;

/// The reference library's version.
const STANDARDWEBHOOKS: &str = "1.1.0";

/// For each delivery (`[{"body", "headers"}]` in the file named by argv[1]) and each
/// secret (argv[2:]), whether `Webhook(secret).verify` accepts it.
const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
out = []
for post in json.load(open(sys.argv[1])):
    row = []
    for secret in sys.argv[2:]:
        try:
            Webhook(secret).verify(post["body"].encode(), post["headers"])
            row.append(True)
        except Exception:
            row.append(False)
    out.append(row)
print(json.dumps(out))
"#;

/// What the reference library says of `posts` with each of `secret_keys` (as the
/// `whsec_` secrets subscribers are given).
async fn reference_verdicts(posts: &[&RecordedPost], secret_keys: &[&str]) -> Vec<Vec<bool>> {
    let python = python_with("standardwebhooks", STANDARDWEBHOOKS).await;
    let cases: Vec<Value> = posts
        .iter()
        .map(|p| {
            let header = |name: &str| p.header(name).unwrap_or_default();
            json!({
                "body": String::from_utf8_lossy(&p.body),
                "headers": {
                    "webhook-id": header("webhook-id"),
                    "webhook-timestamp": header("webhook-timestamp"),
                    "webhook-signature": header("webhook-signature"),
                },
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("posts.json");
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let secrets: Vec<String> = secret_keys
        .iter()
        .map(|k| format!("whsec_{}", base64(k.as_bytes())))
        .collect();
    let mut args = vec![file.to_str().unwrap()];
    args.extend(secrets.iter().map(String::as_str));
    let out = run_python(&python, VERIFY, &args).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

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

    // The reference library agrees: [new, old] verify during the grace period, only the
    // new one after it.
    let verdicts = reference_verdicts(&[during, &after], &[&new, &old]).await;
    assert_eq!(verdicts, [[true, true], [true, false]]);
}
