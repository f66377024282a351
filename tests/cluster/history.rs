//! The history test: replicated registrations stay linearizable through faults.
//!
//! Three nodes with `replication_factor = 3`, six accounts with one registration each (one
//! account per shard group, as far as the usernames' shards allow). For each registration
//! one writer PATCHes its description `w1, w2, ...` (one write in flight at a time) and two
//! readers read it from the owner's listing, each operation through a random node. Meanwhile
//! a nemesis SIGSTOPs a group leader for 10 s, SIGKILLs another node and restarts it on its
//! data, and SIGKILLs and restarts the third. Every operation goes into a history (see
//! `tests/common/history.rs`); after the run and a final read of every registration through
//! every node, the history must be linearizable, no valid request may be refused, writes
//! must have been acknowledged during the faults, and every registration must have been
//! served (a write acknowledged or a read answered) while a node was stopped and while one
//! was dead: with three replicas, one lost node costs a failover, never the data or the
//! service.
//!
//! A client shuns a node it could not reach (refused connection, timeout) for one request
//! timeout, as a real client would: a stopped node would otherwise hold one client for the
//! whole timeout again and again. A 503 comes from a node that is up, which is not shunned.
//! `HISTORY_NEMESIS=0` runs the clients without faults.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::replicated::{admin_creds, groups, wait_settled, GROUPS};
use super::*;
use crate::common::history::{check, Kind, Observed, Op, Outcome};

const ELECTION_TIMEOUT_MS: u64 = 600;
const FAILOVER_WAIT_MS: u64 = 3000;
const REGISTERS: usize = 6;
const READERS_PER_REGISTER: usize = 2;
/// A client's request timeout: an unanswered write is indeterminate.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause of a writer, and of a reader, between two operations.
const WRITE_PAUSE: Duration = Duration::from_millis(20);
const READ_PAUSE: Duration = Duration::from_millis(40);
/// The run without faults, and the run's tail after the nemesis.
const QUIET_RUN: Duration = Duration::from_secs(20);
const TAIL: Duration = Duration::from_secs(2);
/// Time to heal: every group led again, a restarted node ready.
const HEAL_DEADLINE: Duration = Duration::from_secs(30);
/// Time for the final reads to be answered.
const FINAL_READS_DEADLINE: Duration = Duration::from_secs(10);

fn options() -> NodeOptions {
    NodeOptions {
        cluster_toml: Some(format!(
            "replication_factor = 3\ngroups = {GROUPS}\nelection_timeout_ms = {ELECTION_TIMEOUT_MS}\nfailover_wait_ms = {FAILOVER_WAIT_MS}"
        )),
        ..NodeOptions::default()
    }
}

/// A registration under test and its owner.
struct Register {
    index: usize,
    id: String,
    owner: Account,
}

/// What every client shares: the nodes' addresses (unchanged by restarts) and ids, an
/// HTTP client with the operation timeout, and the history's origin.
#[derive(Clone)]
struct Clients {
    urls: Arc<Vec<String>>,
    ids: Arc<Vec<String>>,
    http: reqwest::Client,
    origin: Instant,
}

impl Clients {
    fn req(&self, method: &str, node: usize, path: &str) -> Req {
        let url = format!("{}{path}", self.urls[node]);
        Req::new(self.http.clone(), method, path, url)
    }

    /// A random node among those not shunned now (among all when every one is).
    fn pick(&self, rng: &mut SeededRng, shunned: &[Option<Instant>]) -> usize {
        let now = Instant::now();
        let open: Vec<usize> = (0..self.urls.len())
            .filter(|n| shunned[*n].is_none_or(|until| until <= now))
            .collect();
        match open.as_slice() {
            [] => rng.below(self.urls.len()),
            open => open[rng.below(open.len())],
        }
    }

    fn op(&self, client: &str, reg: &Register, node: usize, kind: Kind, invoke: Duration) -> Op {
        Op {
            client: client.into(),
            register: reg.index,
            node: self.ids[node].clone(),
            kind,
            invoke,
            complete: self.origin.elapsed(),
            outcome: Outcome::Unknown,
            note: String::new(),
        }
    }

    /// PATCHes the registration's description to `w<seq>` through `node`.
    async fn write(&self, client: &str, reg: &Register, node: usize, seq: u64) -> Op {
        let invoke = self.origin.elapsed();
        let answer = self
            .req(
                "PATCH",
                node,
                &format!("/v1/webhook/registration/{}", reg.id),
            )
            .auth(&reg.owner)
            .json(&json!({ "description": format!("w{seq}") }))
            .try_send()
            .await;
        let mut op = self.op(client, reg, node, Kind::Write(seq), invoke);
        (op.outcome, op.note) = match answer {
            Ok(r) if r.status == 200 && r.json.as_ref().is_some_and(|b| b["replaced"] == 1) => {
                (Outcome::Ok, "200".into())
            }
            Ok(r) => (status_outcome(r.status), r.to_string()),
            Err(e) => (Outcome::Unknown, transport_note(&e)),
        };
        op
    }

    /// Reads the registration's description from its owner's listing through `node`.
    async fn read(&self, client: &str, reg: &Register, node: usize, kind: Kind) -> Op {
        let invoke = self.origin.elapsed();
        let answer = self
            .req("GET", node, "/v1/webhook/registration?start=0&limit=10")
            .auth(&reg.owner)
            .try_send()
            .await;
        let mut op = self.op(client, reg, node, kind, invoke);
        (op.outcome, op.note) = match answer {
            Ok(r) if r.status == 200 => match r.json.as_ref().and_then(|b| observed(b, &reg.id)) {
                Some(seen) => (Outcome::Saw(seen), "200".into()),
                None => (Outcome::Unknown, r.to_string()),
            },
            Ok(r) if r.status == 204 => (Outcome::Saw(Observed::Missing), "204".into()),
            Ok(r) => (status_outcome(r.status), r.to_string()),
            Err(e) => (Outcome::Unknown, transport_note(&e)),
        };
        op
    }

    /// One client, until `stop`: the writer (its name starts with `w`) or a reader.
    async fn run(
        self,
        reg: Arc<Register>,
        client: String,
        seed: u64,
        stop: Arc<AtomicBool>,
    ) -> Vec<Op> {
        let writer = client.starts_with('w');
        let mut rng = SeededRng::new(seed);
        let (mut ops, mut seq) = (Vec::new(), 0);
        let mut shunned = vec![None; self.urls.len()];
        while !stop.load(Ordering::SeqCst) {
            let node = self.pick(&mut rng, &shunned);
            let op = if writer {
                seq += 1;
                self.write(&client, &reg, node, seq).await
            } else {
                self.read(&client, &reg, node, Kind::Read).await
            };
            if TRANSPORT_NOTES.contains(&op.note.as_str()) {
                shunned[node] = Some(Instant::now() + OP_TIMEOUT);
            }
            ops.push(op);
            tokio::time::sleep(if writer { WRITE_PAUSE } else { READ_PAUSE }).await;
        }
        ops
    }
}

/// What a listing says of the registration `id` (`None`: not a listing).
fn observed(listing: &Value, id: &str) -> Option<Observed> {
    let rows = listing["registrations"].as_array()?;
    Some(match rows.iter().find(|row| row["id"] == id) {
        Some(row) => match row["description"].as_str() {
            Some(text) => Observed::parse(text),
            None => Observed::Other(row.to_string()),
        },
        None => Observed::Missing,
    })
}

/// A 4xx is a definite refusal; anything else unexplained may have taken effect.
fn status_outcome(status: u16) -> Outcome {
    if (400..500).contains(&status) {
        Outcome::Refused
    } else {
        Outcome::Unknown
    }
}

/// The notes of an operation that reached no node.
const TRANSPORT_NOTES: [&str; 3] = ["timeout", "connection refused", "transport error"];

/// A short name for a transport error (one of [`TRANSPORT_NOTES`]).
fn transport_note(error: &str) -> String {
    let kind = if error.contains("TimedOut") || error.contains("timed out") {
        TRANSPORT_NOTES[0]
    } else if error.contains("ConnectionRefused") {
        TRANSPORT_NOTES[1]
    } else {
        TRANSPORT_NOTES[2]
    };
    kind.into()
}

/// One fault of the nemesis, from the history's origin.
struct Fault {
    what: String,
    start: Duration,
    end: Duration,
    /// Every registration must be served during it (a long enough fault).
    all_served: bool,
}

fn signal(node: &TestNode, signal: libc::c_int) {
    let pid = node.pid() as libc::pid_t;
    // SAFETY: kill(2) on our own, not yet reaped, child.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// Polls until every group reported by a running node has a leader (followers may lag:
/// the clients keep writing); returns the groups.
async fn wait_led(nodes: &[TestNode], ids: &[&str], admin: &Creds) -> Vec<Value> {
    eventually("every group to have a leader", HEAL_DEADLINE, || async {
        for node in nodes.iter().filter(|n| n.is_running()) {
            if let Some(gs) = groups(node, admin).await {
                let led = gs
                    .iter()
                    .all(|g| g["leader"].as_str().is_some_and(|l| ids.contains(&l)));
                if gs.len() == GROUPS + 1 && led {
                    return Some(gs);
                }
            }
        }
        None
    })
    .await
}

async fn wait_ready(node: &TestNode) {
    eventually("the restarted node to be ready", HEAL_DEADLINE, || async {
        (ready_of(node).await.0 == 200).then_some(())
    })
    .await
}

/// SIGKILLs `victim`, restarts it on its data after `down`, waits until it is ready.
async fn kill_and_restart(
    nodes: &mut [TestNode],
    victim: usize,
    down: Duration,
    origin: Instant,
) -> (Duration, Duration) {
    let start = origin.elapsed();
    nodes[victim].kill().await;
    tokio::time::sleep(down).await;
    nodes[victim].restart().await;
    wait_ready(&nodes[victim]).await;
    (start, origin.elapsed())
}

/// The faults, one after the other, with fixed pauses in between (a schedule; each step
/// waits for the cluster with a deadline).
async fn nemesis(
    nodes: &mut [TestNode],
    ids: &[&str],
    admin: &Creds,
    origin: Instant,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // (a) A group leader stops: to its peers, a partition; its queued requests run later.
    let gs = wait_led(nodes, ids, admin).await;
    let led = gs
        .iter()
        .find(|g| g["group"] != "meta")
        .expect("a shard group");
    let leader = ids
        .iter()
        .position(|id| led["leader"] == *id)
        .expect("leader id");
    let start = origin.elapsed();
    signal(&nodes[leader], libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal(&nodes[leader], libc::SIGCONT);
    faults.push(Fault {
        what: format!(
            "SIGSTOP {} (leader of group {})",
            ids[leader],
            led["group"].as_str().unwrap_or("?")
        ),
        start,
        end: origin.elapsed(),
        all_served: true,
    });
    wait_led(nodes, ids, admin).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // (b) Another node dies and comes back on its data.
    let victim = (leader + 1) % nodes.len();
    let (start, end) = kill_and_restart(nodes, victim, Duration::from_secs(4), origin).await;
    faults.push(Fault {
        what: format!("SIGKILL {}, restarted 4 s later", ids[victim]),
        start,
        end,
        all_served: true,
    });
    wait_led(nodes, ids, admin).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // (c) The third node dies and restarts at once.
    let third = (leader + 2) % nodes.len();
    let (start, end) = kill_and_restart(nodes, third, Duration::ZERO, origin).await;
    faults.push(Fault {
        what: format!("SIGKILL {}, restarted at once", ids[third]),
        start,
        end,
        all_served: false,
    });
    faults
}

/// Accounts (one per shard group, as the usernames' shards allow) with one registration
/// each, described `w0`.
async fn registers(nodes: &[TestNode], ep: &EndpointServer) -> Vec<Arc<Register>> {
    let mut out = Vec::new();
    for index in 0..REGISTERS {
        let username = (0..10_000)
            .map(|j| format!("hist{index}x{j}"))
            .find(|u| shard_of(u, SHARDS) % GROUPS == index % GROUPS)
            .expect("a username in the group");
        let node = &nodes[index % nodes.len()];
        let owner = node
            .create_account(&username, &ep.endpoint_url(&format!("hist/{index}")))
            .await;
        let body =
            json!({"event": "history.event", "description": "w0", "event_data": event_data()});
        let r = node
            .post("/v1/webhook/registration")
            .auth(&owner)
            .json(&body)
            .send()
            .await
            .expect(201);
        let id = id_of(r.json());
        out.push(Arc::new(Register { index, id, owner }));
    }
    out
}

/// Reads every registration through every node, each until it answers, all within
/// [`FINAL_READS_DEADLINE`] (then once each).
async fn final_reads(clients: &Clients, regs: &[Arc<Register>]) -> Vec<Op> {
    let mut out = Vec::new();
    let deadline = Instant::now() + FINAL_READS_DEADLINE;
    for reg in regs {
        for node in 0..clients.urls.len() {
            loop {
                let op = clients.read("final", reg, node, Kind::FinalRead).await;
                if matches!(op.outcome, Outcome::Saw(_)) || Instant::now() > deadline {
                    out.push(op);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    out
}

/// Prints what the run did: faults, operations by kind and outcome, answers that were not
/// acknowledgements, reads per node, acknowledged writes per fault and register.
fn report(history: &[Op], faults: &[Fault]) {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut notes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut reads_per_node: BTreeMap<String, usize> = BTreeMap::new();
    for op in history {
        let kind = match op.kind {
            Kind::Write(_) => "write",
            Kind::Read => "read",
            Kind::FinalRead => "final read",
        };
        let outcome = match op.outcome {
            Outcome::Ok | Outcome::Saw(_) => "ok",
            Outcome::Refused => "refused",
            Outcome::Unknown => "indeterminate",
        };
        *counts.entry((kind.into(), outcome.into())).or_default() += 1;
        if outcome != "ok" {
            let note: String = op.note.chars().take(120).collect();
            *notes.entry((kind.into(), note)).or_default() += 1;
        } else if op.kind == Kind::Read {
            *reads_per_node.entry(op.node.clone()).or_default() += 1;
        }
    }
    for f in faults {
        println!(
            "fault {:.3}s .. {:.3}s: {}",
            f.start.as_secs_f64(),
            f.end.as_secs_f64(),
            f.what
        );
    }
    println!("operations: {counts:?}");
    println!("answered reads per node: {reads_per_node:?}");
    for ((kind, note), n) in &notes {
        println!("  {n} x {kind}: {note}");
    }
    for f in faults {
        println!(
            "during {}, per registration: acknowledged writes {:?}, answered reads {:?}",
            f.what,
            served_during(history, f, true),
            served_during(history, f, false)
        );
    }
}

/// Per registration, the acknowledged writes (`writes`) or answered reads that began and
/// completed within `fault`.
fn served_during(history: &[Op], fault: &Fault, writes: bool) -> Vec<usize> {
    (0..REGISTERS)
        .map(|r| {
            history
                .iter()
                .filter(|op| op.register == r && matches!(op.kind, Kind::Write(_)) == writes)
                .filter(|op| matches!(op.outcome, Outcome::Ok | Outcome::Saw(_)))
                .filter(|op| op.invoke >= fault.start && op.complete <= fault.end)
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_stay_linearizable_while_nodes_stop_die_and_restart() {
    let _serial = SERIAL.lock().await;
    let with_nemesis = std::env::var("HISTORY_NEMESIS").map_or(true, |v| v != "0");
    let seed = test_seed("registrations_stay_linearizable_while_nodes_stop_die_and_restart");
    let (spec, mut nodes) = ClusterSpec::launch_fresh(3, |_| options()).await;
    let ids: Vec<&str> = spec.ids.iter().map(String::as_str).collect();
    let admin = admin_creds(&nodes).await;
    wait_settled(&nodes[0], &admin, &ids, true, READY_DEADLINE).await;
    for node in &nodes {
        wait_ready(node).await;
    }
    let ep = EndpointServer::start().await;
    let regs = registers(&nodes, &ep).await;

    let clients = Clients {
        urls: Arc::new(nodes.iter().map(|n| n.base_url.clone()).collect()),
        ids: Arc::new(spec.ids.clone()),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(OP_TIMEOUT)
            .build()
            .expect("build reqwest client"),
        origin: Instant::now(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for reg in &regs {
        let names = std::iter::once(format!("w{}", reg.index))
            .chain((0..READERS_PER_REGISTER).map(|k| format!("r{}.{k}", reg.index)));
        for (k, name) in names.enumerate() {
            let run = clients.clone().run(
                reg.clone(),
                name,
                seed ^ (reg.index * 8 + k) as u64,
                stop.clone(),
            );
            tasks.spawn(run);
        }
    }
    let faults = if with_nemesis {
        nemesis(&mut nodes, &ids, &admin, clients.origin).await
    } else {
        tokio::time::sleep(QUIET_RUN).await;
        Vec::new()
    };
    tokio::time::sleep(TAIL).await;
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    let joined = tokio::time::timeout(OP_TIMEOUT * 3, async {
        while let Some(ops) = tasks.join_next().await {
            history.extend(ops.expect("client task"));
        }
    })
    .await;
    assert!(joined.is_ok(), "the clients did not stop");
    println!("clients ran {:?}", clients.origin.elapsed());

    // Healed: every group led, every follower caught up; then the final reads.
    wait_settled(&nodes[0], &admin, &ids, false, HEAL_DEADLINE).await;
    history.extend(final_reads(&clients, &regs).await);
    report(&history, &faults);

    let violations = check(&history);
    for v in violations.iter().take(20) {
        println!("{v}");
    }
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for v in &violations {
        *by_kind.entry(format!("{:?}", v.kind)).or_default() += 1;
    }
    assert!(
        violations.is_empty(),
        "the history is not linearizable: {by_kind:?} (the first 20 printed above)"
    );
    let refused: Vec<&Op> = history
        .iter()
        .filter(|op| op.outcome == Outcome::Refused)
        .collect();
    assert!(
        refused.is_empty(),
        "valid requests were refused, e.g. {}",
        refused[0]
    );
    if with_nemesis {
        let total: usize = faults
            .iter()
            .map(|f| served_during(&history, f, true).iter().sum::<usize>())
            .sum();
        assert!(total > 0, "no write was acknowledged during the faults");
        // A write acknowledged or a read answered: either needs the group's leader.
        for f in faults.iter().filter(|f| f.all_served) {
            let (writes, reads) = (
                served_during(&history, f, true),
                served_during(&history, f, false),
            );
            assert!(
                writes.iter().zip(&reads).all(|(w, r)| w + r > 0),
                "registrations were not served during {}: acknowledged writes {writes:?}, \
                 answered reads {reads:?} per registration",
                f.what
            );
        }
    }
}
