//! The operations the workers pick at random, each checking that the answer is the one it
//! calls for, and the worker loop.

use super::load::{Call, Load, Rng, Trigger};
use super::*;

async fn op_trigger(load: &Load, rng: &mut Rng) {
    let (owner, reg) = load.registrations[rng.below(load.registrations.len())].clone();
    let who = &load.owners[owner];
    let path = format!("/v1/webhook/triggered/{reg}");
    let mut call = Call::new("trigger", "POST", path.clone()).auth(who);
    let variant = rng.below(3);
    if variant == 1 {
        call = call.json(&json!({"event_data": {"n": load.next(), "text": "soak ✓ 😀", "f": 0.5}}));
    }
    let key = (variant == 2).then(|| format!("soak-{}", load.next()));
    if let Some(key) = &key {
        call = call.header("idempotency-key", key.clone());
    }
    let Some((201, record)) = load.send(call, &[201]).await else {
        return;
    };
    let id = id_of(&record);
    load.triggers.lock().unwrap().push(Trigger {
        id: id.clone(),
        owner,
        registration: reg,
    });
    // Now and then the client retries with the same Idempotency-Key: same trigger, 200.
    if let Some(key) = key {
        if rng.below(4) == 0 {
            let call = Call::new("trigger replay", "POST", path)
                .auth(who)
                .header("idempotency-key", key);
            if let Some((_, again)) = load.send(call, &[200]).await {
                if again["id"] != id.as_str() {
                    load.tally
                        .lock()
                        .unwrap()
                        .problem(format!("idempotent replay of {id} answered {again}"));
                }
            }
        }
    }
}

fn random_trigger(load: &Load, rng: &mut Rng) -> Option<Trigger> {
    let triggers = load.triggers.lock().unwrap();
    (!triggers.is_empty()).then(|| triggers[rng.below(triggers.len())].clone())
}

async fn op_read(load: &Load, rng: &mut Rng) {
    match rng.below(4) {
        0 | 1 => {
            if let Some(t) = random_trigger(load, rng) {
                let who = &load.owners[t.owner];
                let path = if rng.below(2) == 0 {
                    format!("/v1/webhook/triggered/{}", t.id)
                } else {
                    format!(
                        "/v1/webhook/triggered/{}/deliveries?start=0&limit=100",
                        t.id
                    )
                };
                load.send(
                    Call::new("trigger read", "GET", path).auth(who),
                    &[200, 204],
                )
                .await;
            }
        }
        _ => {
            let who = if rng.below(2) == 0 {
                &load.owners[rng.below(load.owners.len())]
            } else {
                &load.subscribers[rng.below(load.subscribers.len())]
            };
            let path = format!("/v1/account/{}", who.id);
            load.send(Call::new("account read", "GET", path).auth(who), &[200])
                .await;
        }
    }
}

async fn op_list(load: &Load, rng: &mut Rng) {
    let start = rng.below(3) * 20;
    let page = format!("start={start}&limit={}", 1 + rng.below(100));
    let owner = &load.owners[rng.below(load.owners.len())];
    let sub = &load.subscribers[rng.below(load.subscribers.len())];
    let call = match rng.below(7) {
        0 => Call::new("list", "GET", format!("/v1/accounts?{page}")).auth(&load.admin),
        1 => {
            Call::new("list", "GET", format!("/v1/webhook/registrations?{page}")).auth(&load.admin)
        }
        2 => {
            Call::new("list", "GET", format!("/v1/webhook/subscriptions?{page}")).auth(&load.admin)
        }
        3 => Call::new("list", "GET", format!("/v1/webhook/triggered?{page}")).auth(&load.admin),
        4 => Call::new("list", "GET", format!("/v1/webhook/registration?{page}")).auth(owner),
        5 => Call::new("list", "GET", format!("/v1/webhook/subscription?{page}")).auth(sub),
        _ => Call::new("list", "GET", format!("/v1/webhook/triggered?{page}")).auth(owner),
    };
    load.send(call, &[200, 204]).await;
}

/// Creates a temporary account subscribed to a triggered registration, or deletes the
/// oldest one (its subscription goes with it).
async fn op_account_churn(load: &Load, rng: &mut Rng) {
    let victim = {
        let mut temps = load.temp_accounts.lock().unwrap();
        (temps.len() >= 3).then(|| temps.remove(0))
    };
    if let Some((account, sub)) = victim {
        // Marked before the delete: a delivery may be cancelled from now on.
        load.deleted_subs.lock().unwrap().insert(sub);
        let path = format!("/v1/account/{}", account.id);
        load.send(
            Call::new("account delete", "DELETE", path).auth(&account),
            &[200],
        )
        .await;
        return;
    }
    let name = format!("temp-{}", load.next());
    let body = json!({"username": name, "endpoint": load.receiver_url.replace("NAME", &name)});
    let Some((201, record)) = load
        .send(
            Call::new("account create", "POST", "/v1/account").json(&body),
            &[201],
        )
        .await
    else {
        return;
    };
    let account = Account::from_record(record);
    let (_, reg) = &load.registrations[rng.below(load.registrations.len())];
    let path = format!("/v1/webhook/subscription/{reg}");
    if let Some((201, sub)) = load
        .send(Call::new("subscribe", "POST", path).auth(&account), &[201])
        .await
    {
        load.temp_accounts
            .lock()
            .unwrap()
            .push((account, id_of(&sub)));
    }
}

/// A stable subscriber adds a subscription to a triggered registration, or deletes one it
/// added earlier.
async fn op_subscription_churn(load: &Load, rng: &mut Rng) {
    let victim = {
        let mut subs = load.churn_subs.lock().unwrap();
        let n = subs.len();
        (n >= 4).then(|| subs.remove(rng.below(n)))
    };
    if let Some((who, sub)) = victim {
        load.deleted_subs.lock().unwrap().insert(sub.clone());
        let path = format!("/v1/webhook/subscription/{sub}");
        load.send(
            Call::new("subscription delete", "DELETE", path).auth(&load.subscribers[who]),
            &[200],
        )
        .await;
        return;
    }
    let who = rng.below(load.subscribers.len());
    let (_, reg) = &load.registrations[rng.below(load.registrations.len())];
    let path = format!("/v1/webhook/subscription/{reg}");
    if let Some((201, sub)) = load
        .send(
            Call::new("subscribe", "POST", path).auth(&load.subscribers[who]),
            &[201],
        )
        .await
    {
        load.churn_subs.lock().unwrap().push((who, id_of(&sub)));
    }
}

/// A registration that lives for three calls: create, update, delete.
async fn op_registration_churn(load: &Load, rng: &mut Rng) {
    let who = &load.owners[rng.below(load.owners.len())];
    let body = json!({"event": "soak.churn", "description": "short-lived", "event_data": {"k": [1, 2, 3]}});
    let Some((201, record)) = load
        .send(
            Call::new("registration create", "POST", "/v1/webhook/registration")
                .auth(who)
                .json(&body),
            &[201],
        )
        .await
    else {
        return;
    };
    let path = format!("/v1/webhook/registration/{}", id_of(&record));
    load.send(
        Call::new("registration update", "PATCH", path.clone())
            .auth(who)
            .json(&json!({"description": "updated"})),
        &[200],
    )
    .await;
    load.send(
        Call::new("registration delete", "DELETE", path).auth(who),
        &[200],
    )
    .await;
}

/// Requests a misbehaving client sends: each must get its 4xx, never a 5xx.
async fn op_bad_request(load: &Load, rng: &mut Rng) {
    let owner = &load.owners[rng.below(load.owners.len())];
    let sub = &load.subscribers[rng.below(load.subscribers.len())];
    let (_, reg) = &load.registrations[rng.below(load.registrations.len())];
    let unknown = uuid::Uuid::new_v4().to_string();
    let wrong_key = Creds::new(&owner.username, &"0".repeat(40));
    let (call, expected): (Call<'_>, &[u16]) = match rng.below(12) {
        0 => (
            Call::new("bad", "POST", "/v1/webhook/registration")
                .auth(owner)
                .content_type(Some("text/plain"))
                .raw("{}"),
            &[415],
        ),
        1 => (
            Call::new("bad", "GET", format!("/v1/account/{}", owner.id)).content_type(None),
            &[415],
        ),
        2 => (
            Call::new("bad", "GET", format!("/v1/account/{}", owner.id)),
            &[401],
        ),
        3 => (
            Call::new("bad", "GET", "/v1/webhook/registration?start=0&limit=10").auth(&wrong_key),
            &[401],
        ),
        4 => (
            Call::new("bad", "POST", "/v1/webhook/registration")
                .auth(owner)
                .raw("{\"event\": "),
            &[400],
        ),
        5 => (
            Call::new("bad", "GET", "/v1/accounts?start=-1&limit=1000").auth(&load.admin),
            &[400],
        ),
        6 => (Call::new("bad", "GET", "/v1/nothing/here"), &[404]),
        7 => (Call::new("bad", "PUT", "/v1/account").auth(owner), &[405]),
        // Not the owner of the registration.
        8 => (
            Call::new("bad", "POST", format!("/v1/webhook/triggered/{reg}")).auth(sub),
            &[],
        ),
        9 => (
            Call::new("bad", "POST", format!("/v1/webhook/subscription/{unknown}")).auth(sub),
            &[],
        ),
        // The default policy denies link-local addresses: refused before any connection.
        10 => (
            Call::new("bad", "POST", "/v1/account").json(&json!({
                "username": format!("denied-{}", load.next()),
                "endpoint": "http://169.254.169.254/latest/meta-data/",
            })),
            &[400],
        ),
        _ => (
            Call::new("bad", "POST", "/v1/account").json(&json!({"username": 42})),
            &[400],
        ),
    };
    load.send(call, expected).await;
}

pub(super) async fn worker(load: Arc<Load>, until: Instant) {
    let mut rng = Rng::new();
    while Instant::now() < until {
        match rng.below(100) {
            0..=24 => op_trigger(&load, &mut rng).await,
            25..=44 => op_read(&load, &mut rng).await,
            45..=59 => op_list(&load, &mut rng).await,
            60..=66 => op_account_churn(&load, &mut rng).await,
            67..=74 => op_subscription_churn(&load, &mut rng).await,
            75..=81 => op_registration_churn(&load, &mut rng).await,
            _ => op_bad_request(&load, &mut rng).await,
        }
        tokio::time::sleep(THINK).await;
    }
}
