//! The load of the trigger failover test: trigger loops, a write loop and the probes of
//! the survivors, through whichever nodes are up, and what each call was answered. Only
//! the calls answered with their success status are acknowledged and checked afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::common::api::Api;

/// The pause of a trigger loop, and of the write loop, between two calls.
const TRIGGER_PAUSE: Duration = Duration::from_millis(40);
const WRITE_PAUSE: Duration = Duration::from_millis(40);
/// Bounds on the load, far above what a run sends.
const MAX_TRIGGERS: u64 = 2000;
const MAX_WRITES: u64 = 2000;
/// How long the survivors are probed (beyond the bound, to report the actual time).
const PROBE_DEADLINE: Duration = Duration::from_secs(15);
/// Time for the load to acknowledge the triggers a test waits for.
const LOAD_DEADLINE: Duration = Duration::from_secs(20);

/// An owner with its triggered registration and its quiet one.
pub(super) struct Owner {
    pub(super) account: Account,
    pub(super) triggered: String,
    pub(super) quiet: String,
    /// The triggered registration's description as created.
    pub(super) description: String,
}

/// A trigger answered 201.
#[derive(Clone)]
pub(super) struct Fired {
    pub(super) n: u64,
    pub(super) id: String,
    pub(super) owner: usize,
    pub(super) via: usize,
    /// The node that was down when it was sent.
    pub(super) down: Option<usize>,
    /// When it was answered, from the load's start.
    pub(super) at: Duration,
}

/// The PATCHes of one triggered registration's description: the last acknowledged one,
/// and those sent after it without an acknowledgement (any of them may have taken effect).
#[derive(Default)]
pub(super) struct Patches {
    pub(super) acked: Option<String>,
    pub(super) since: Vec<String>,
}

/// What a survivor must serve after a SIGKILL: a trigger of an owner's registration (by
/// owner), a read of an account and a subscribe by it (by index in [`Load::accounts`]).
#[derive(Clone, Copy, Debug)]
enum Call {
    Trigger(usize),
    Read(usize),
    Subscribe(usize),
}

/// The load and what it was answered, shared by the load tasks and the probes. The nodes'
/// addresses survive their restarts, so each node's [`Api`] is made once.
pub(super) struct Load {
    pub(super) apis: Vec<Api>,
    pub(super) names: Vec<String>,
    /// Cleared once a node is killed, set again once it is restarted.
    pub(super) alive: Vec<AtomicBool>,
    pub(super) owners: Vec<Owner>,
    /// Every account: the owners, the subscribers and [`Self::extra`].
    pub(super) accounts: Vec<Account>,
    /// The account the write loop subscribes.
    pub(super) extra: Account,
    pub(super) origin: Instant,
    pub(super) stop: AtomicBool,
    /// The next trigger's payload.
    pub(super) next: AtomicU64,
    /// The calls of the load and of the probes answered so far (or given up on).
    pub(super) calls: AtomicU64,
    pub(super) fired: Mutex<Vec<Fired>>,
    pub(super) patches: Mutex<Vec<Patches>>,
    /// Acknowledged subscriptions' ids, per username.
    pub(super) subscribed: Mutex<BTreeMap<String, Vec<String>>>,
    /// Answers that acknowledged nothing, counted by call and status.
    pub(super) unacknowledged: Mutex<BTreeMap<String, usize>>,
    /// Wrong answers to valid calls (a 4xx, a new description that replaced nothing): each
    /// fails the test.
    pub(super) refused: Mutex<Vec<String>>,
}

impl Load {
    /// A random node among those up.
    fn pick(&self, rng: &mut SeededRng) -> usize {
        let up: Vec<usize> = (0..self.apis.len())
            .filter(|i| self.alive[*i].load(Ordering::SeqCst))
            .collect();
        up[rng.below(up.len())]
    }

    fn down(&self) -> Option<usize> {
        (0..self.apis.len()).find(|i| !self.alive[*i].load(Ordering::SeqCst))
    }

    /// The answer when it has `status`; otherwise counts it as unacknowledged (and a 4xx
    /// as refused) and gives `None`.
    fn answered(
        &self,
        call: &str,
        via: usize,
        answer: Result<Resp, String>,
        status: u16,
    ) -> Option<Resp> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let kind = match answer {
            Ok(r) if r.status == status => return Some(r),
            Ok(r) => {
                // Printed with the time, so that a failure can be matched with the nodes' logs.
                println!(
                    "{:?} {call} through {} answered {r}",
                    std::time::SystemTime::now(),
                    self.names[via]
                );
                if (400..500).contains(&r.status) {
                    let mut refused = self.refused.lock().unwrap();
                    refused.push(format!("through {}: {r}", self.names[via]));
                }
                r.status.to_string()
            }
            Err(_) => "no answer".into(),
        };
        let mut counts = self.unacknowledged.lock().unwrap();
        *counts.entry(format!("{call} {kind}")).or_default() += 1;
        None
    }

    /// Triggers `owner`'s registration through `via` with the next payload.
    async fn fire(&self, via: usize, owner: usize) -> bool {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let down = self.down();
        let o = &self.owners[owner];
        let answer = self.apis[via]
            .post(&format!("/v1/webhook/triggered/{}", o.triggered))
            .auth(&o.account)
            .json(&json!({"event_data": {"n": n}}))
            .try_send()
            .await;
        let Some(r) = self.answered("trigger", via, answer, 201) else {
            return false;
        };
        let at = self.origin.elapsed();
        let (id, mut fired) = (id_of(r.json()), self.fired.lock().unwrap());
        fired.push(Fired {
            n,
            id,
            owner,
            via,
            down,
            at,
        });
        true
    }

    /// PATCHes the description of `owner`'s triggered registration to `text` through `via`.
    async fn patch(&self, via: usize, owner: usize, text: String) {
        let o = &self.owners[owner];
        let answer = self.apis[via]
            .patch(&format!("/v1/webhook/registration/{}", o.triggered))
            .auth(&o.account)
            .json(&json!({ "description": text }))
            .try_send()
            .await;
        let answer = self.answered("patch", via, answer, 200);
        if let Some(r) = &answer {
            if r.json.as_ref().map(|b| &b["replaced"]) != Some(&json!(1)) {
                let mut refused = self.refused.lock().unwrap();
                refused.push(format!("a new description replaced nothing: {r}"));
            }
        }
        let mut patches = self.patches.lock().unwrap();
        let p = &mut patches[owner];
        if answer.is_some() {
            p.acked = Some(text);
            p.since.clear();
        } else {
            p.since.push(text);
        }
    }

    /// Subscribes `who` to `owner`'s quiet registration through `via`.
    async fn subscribe(&self, via: usize, who: &Account, owner: usize) -> bool {
        let answer = self.apis[via]
            .post(&format!(
                "/v1/webhook/subscription/{}",
                self.owners[owner].quiet
            ))
            .auth(who)
            .try_send()
            .await;
        let Some(r) = self.answered("subscribe", via, answer, 201) else {
            return false;
        };
        let (id, mut subscribed) = (id_of(r.json()), self.subscribed.lock().unwrap());
        subscribed.entry(who.username.clone()).or_default().push(id);
        true
    }

    /// Reads `who`'s account through `via`.
    async fn read(&self, via: usize, who: &Account) -> bool {
        let answer = self.apis[via]
            .get(&format!("/v1/account/{}", who.id))
            .auth(who)
            .try_send()
            .await;
        self.answered("read", via, answer, 200)
            .is_some_and(|r| r.json()["id"] == who.id.as_str())
    }

    /// Triggers a random registration through a random node that is up, until stopped.
    pub(super) async fn trigger_loop(self: Arc<Self>, seed: u64) {
        let mut rng = SeededRng::new(seed);
        while !self.stop.load(Ordering::SeqCst) && self.next.load(Ordering::SeqCst) < MAX_TRIGGERS {
            let via = self.pick(&mut rng);
            self.fire(via, rng.below(self.owners.len())).await;
            tokio::time::sleep(TRIGGER_PAUSE).await;
        }
    }

    /// In turn, PATCHes a random triggered registration's description and subscribes the
    /// extra account to a random quiet registration, through random nodes that are up,
    /// until stopped.
    pub(super) async fn write_loop(self: Arc<Self>, seed: u64) {
        let mut rng = SeededRng::new(seed);
        for seq in 0..MAX_WRITES {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let (via, owner) = (self.pick(&mut rng), rng.below(self.owners.len()));
            if seq % 2 == 0 {
                self.patch(via, owner, format!("d{seq}")).await;
            } else {
                self.subscribe(via, &self.extra, owner).await;
            }
            tokio::time::sleep(WRITE_PAUSE).await;
        }
    }

    /// One call of a probe through `via`.
    async fn call(&self, via: usize, call: Call) -> bool {
        match call {
            Call::Trigger(owner) => self.fire(via, owner).await,
            Call::Read(k) => self.read(via, &self.accounts[k]).await,
            Call::Subscribe(k) => {
                let owner = k % self.owners.len();
                self.subscribe(via, &self.accounts[k], owner).await
            }
        }
    }

    /// Through `via`, every call at once, each repeated until it succeeds: a trigger of
    /// every owner's registration, and for every account a read of it and a subscribe.
    /// Returns how long after `killed` the last of them first succeeded.
    pub(super) async fn probe(self: Arc<Self>, via: usize, killed: Instant) -> Duration {
        let calls = (0..self.owners.len())
            .map(Call::Trigger)
            .chain((0..self.accounts.len()).flat_map(|k| [Call::Read(k), Call::Subscribe(k)]));
        let mut tasks = tokio::task::JoinSet::new();
        for call in calls {
            let load = self.clone();
            tasks.spawn(async move {
                let what = format!("{call:?} through {}", load.names[via]);
                let left = PROBE_DEADLINE.saturating_sub(killed.elapsed());
                eventually(&what, left, || async {
                    load.call(via, call).await.then_some(())
                })
                .await;
                killed.elapsed()
            });
        }
        let mut last = Duration::ZERO;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(took) => last = last.max(took),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("probe task failed: {e}"),
            }
        }
        last
    }

    /// Polls until `more` triggers were acknowledged after this call.
    pub(super) async fn wait_fired(&self, more: usize, when: &str) {
        let target = self.fired.lock().unwrap().len() + more;
        let what = format!("{more} triggers acknowledged {when}");
        eventually(&what, LOAD_DEADLINE, || async {
            let count = self.fired.lock().unwrap().len();
            (count >= target).then_some(())
        })
        .await
    }
}
