//! A history checker for single-writer registers. A run records every operation (client,
//! register, kind, invocation and completion instants, outcome); the history must be
//! linearizable: explainable by one total order of the operations that respects real time
//! (an operation that completed before another began comes first) and in which every read
//! returns the latest write before it.
//!
//! Each register has one sequential writer writing `w1, w2, ...` over the initial `w0`, so
//! a value names the one write that produced it, and the exact check is cheap: the zones of
//! Gibbons and Korach (for registers whose written values are unique). A write answered with
//! a transport error, a timeout or a 5xx is *indeterminate*: it may still take effect, even
//! long after its client gave up (a request queued in a stopped node), so its interval has no
//! end. A 4xx is a definite refusal: its value must never be read.
//!
//! Named checks come first, as they give readable diagnoses:
//! * **unwritten value**: a read returned a value no write wrote, the value of a refused
//!   write, a value whose write began only after the read completed, or no registration;
//! * **stale read**: a read returned `w<s>` although an acknowledged write `w<t>`, t > s,
//!   completed before the read began (and `w<s>` completed before `w<t>` began, so it cannot
//!   be an indeterminate write arriving late);
//! * **lost write**: the same for a final read (once the faults are over), or a final read
//!   that did not answer;
//! * **not linearizable**: for a register the named checks pass, two values' zones
//!   conflict, e.g. a read older than a read that completed before it began.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Writes `w<seq>`.
    Write(u64),
    /// Reads the register while the faults run.
    Read,
    /// Reads the register after the run, once the cluster healed.
    FinalRead,
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// `w<seq>`.
    Seq(u64),
    /// The register is not there at all.
    Missing,
    /// A value that is not of the form `w<seq>`.
    Other(String),
}

impl Observed {
    /// The value of a register holding `text`.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix('w').and_then(|n| n.parse().ok()) {
            Some(seq) => Self::Seq(seq),
            None => Self::Other(text.to_string()),
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged.
    Ok,
    /// A read answered with this value.
    Saw(Observed),
    /// A definite refusal (4xx): a write that was not applied.
    Refused,
    /// No answer, or an answer that does not say (transport error, timeout, 5xx): a write
    /// that may or may not take effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Op {
    /// The client that ran it.
    pub client: String,
    /// The register it touched.
    pub register: usize,
    /// The node it was sent to.
    pub node: String,
    pub kind: Kind,
    /// When the client sent it, from the history's origin.
    pub invoke: Duration,
    /// When the client had its answer, or gave up.
    pub complete: Duration,
    pub outcome: Outcome,
    /// The answer's status or the transport error, for the report.
    pub note: String,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Write(seq) => format!("write w{seq}"),
            Kind::Read => "read".into(),
            Kind::FinalRead => "final read".into(),
        };
        let outcome = match &self.outcome {
            Outcome::Ok => "ok".into(),
            Outcome::Saw(Observed::Seq(seq)) => format!("saw w{seq}"),
            Outcome::Saw(Observed::Missing) => "saw no registration".into(),
            Outcome::Saw(Observed::Other(text)) => format!("saw {text:?}"),
            Outcome::Refused => "refused".into(),
            Outcome::Unknown => "indeterminate".into(),
        };
        write!(
            f,
            "[{:.3}s .. {:.3}s] {} register {} via {}: {kind} -> {outcome} ({})",
            self.invoke.as_secs_f64(),
            self.complete.as_secs_f64(),
            self.client,
            self.register,
            self.node,
            self.note
        )
    }
}

/// The kinds of violation, named as in the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    UnwrittenValue,
    StaleRead,
    LostWrite,
    NotLinearizable,
}

/// One violation, with the operations that show it.
#[derive(Debug)]
pub struct Violation {
    pub kind: ViolationKind,
    pub register: usize,
    pub detail: String,
    pub ops: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?} on register {}: {}",
            self.kind, self.register, self.detail
        )?;
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// Most zone conflicts reported per register (the first ones show the problem).
const MAX_CONFLICTS: usize = 10;

/// Every violation of `history`, register by register.
pub fn check(history: &[Op]) -> Vec<Violation> {
    let mut registers: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in history {
        registers.entry(op.register).or_default().push(op);
    }
    registers
        .into_iter()
        .flat_map(|(register, ops)| check_register(register, &ops))
        .collect()
}

fn check_register(register: usize, ops: &[&Op]) -> Vec<Violation> {
    let writes: BTreeMap<u64, &Op> = ops
        .iter()
        .filter_map(|op| match op.kind {
            Kind::Write(seq) => Some((seq, *op)),
            _ => None,
        })
        .collect();
    let acked: Vec<&Op> = writes
        .values()
        .copied()
        .filter(|w| w.outcome == Outcome::Ok)
        .collect();
    let mut out = Vec::new();
    let mut violation = |kind, detail: String, ops: Vec<&Op>| {
        out.push(Violation {
            kind,
            register,
            detail,
            ops: ops.into_iter().cloned().collect(),
        })
    };
    for read in ops.iter().filter(|op| !matches!(op.kind, Kind::Write(_))) {
        let is_final = read.kind == Kind::FinalRead;
        let seen = match &read.outcome {
            Outcome::Saw(seen) => seen,
            _ if is_final => {
                violation(
                    ViolationKind::LostWrite,
                    "the final read did not answer".into(),
                    vec![read],
                );
                continue;
            }
            _ => continue,
        };
        let seq = match seen {
            Observed::Seq(seq) => *seq,
            Observed::Missing => {
                let detail = "the register is missing".into();
                violation(ViolationKind::UnwrittenValue, detail, vec![read]);
                continue;
            }
            Observed::Other(text) => {
                let detail = format!("read {text:?}, which no write wrote");
                violation(ViolationKind::UnwrittenValue, detail, vec![read]);
                continue;
            }
        };
        let write = writes.get(&seq).copied();
        if seq != 0 {
            let unwritten = match write {
                None => Some(format!("read w{seq}, which was never written")),
                Some(w) if w.outcome == Outcome::Refused => {
                    Some(format!("read w{seq}, whose write was refused"))
                }
                Some(w) if w.invoke > read.complete => Some(format!(
                    "read w{seq}, whose write began only after the read completed"
                )),
                _ => None,
            };
            if let Some(detail) = unwritten {
                let shown = write.into_iter().chain([*read]).collect();
                violation(ViolationKind::UnwrittenValue, detail, shown);
                continue;
            }
        }
        // Only a value whose write completed can be stale: an indeterminate one may arrive
        // at any time.
        let completed = write.is_none_or(|w| w.outcome == Outcome::Ok);
        let newer = acked
            .iter()
            .filter(|t| matches!(t.kind, Kind::Write(t_seq) if t_seq > seq))
            .rfind(|t| t.complete < read.invoke);
        if let (true, Some(newer)) = (completed, newer) {
            let (kind, what) = if is_final {
                (ViolationKind::LostWrite, "a final read")
            } else {
                (ViolationKind::StaleRead, "a read")
            };
            let detail = format!(
                "{what} returned w{seq} after a newer write was acknowledged (the newest: {})",
                describe_write(newer)
            );
            violation(
                kind,
                detail,
                write.into_iter().chain([*newer, *read]).collect(),
            );
        }
    }
    if out.is_empty() {
        out.extend(zone_conflicts(register, ops, &writes));
    }
    out
}

fn describe_write(op: &Op) -> String {
    match op.kind {
        Kind::Write(seq) => format!("w{seq}"),
        _ => "?".into(),
    }
}

/// A value's zone: from the earliest completion to the latest invocation among its write
/// and its reads. Forward (the first completion comes before the last invocation): the
/// value must be the register's throughout; backward: at some point within.
struct Zone<'a> {
    seq: u64,
    first_done: (Duration, Option<&'a Op>),
    last_begun: (Duration, Option<&'a Op>),
}

impl Zone<'_> {
    fn forward(&self) -> bool {
        self.first_done.0 < self.last_begun.0
    }

    fn span(&self) -> (Duration, Duration) {
        let (a, b) = (self.first_done.0, self.last_begun.0);
        (a.min(b), a.max(b))
    }

    /// Two forward zones overlap, or a backward zone lies within a forward one.
    fn conflicts(&self, other: &Zone) -> bool {
        let ((a_lo, a_hi), (b_lo, b_hi)) = (self.span(), other.span());
        match (self.forward(), other.forward()) {
            (true, true) => a_lo.max(b_lo) < a_hi.min(b_hi),
            (true, false) => a_lo < b_lo && b_hi < a_hi,
            (false, true) => b_lo < a_lo && a_hi < b_hi,
            (false, false) => false,
        }
    }

    fn ops(&self) -> impl Iterator<Item = &Op> {
        self.first_done.1.into_iter().chain(self.last_begun.1)
    }
}

/// The exact check: a history of unique values, each read of a value written, is
/// linearizable if and only if no two zones conflict.
fn zone_conflicts(register: usize, ops: &[&Op], writes: &BTreeMap<u64, &Op>) -> Vec<Violation> {
    // The initial value was written before the history began.
    let mut zones: BTreeMap<u64, Zone> = BTreeMap::new();
    zones.insert(
        0,
        Zone {
            seq: 0,
            first_done: (Duration::ZERO, None),
            last_begun: (Duration::ZERO, None),
        },
    );
    for (seq, w) in writes {
        let done = match w.outcome {
            Outcome::Ok => w.complete,
            Outcome::Refused => continue,
            _ => Duration::MAX,
        };
        let zone = Zone {
            seq: *seq,
            first_done: (done, Some(*w)),
            last_begun: (w.invoke, Some(*w)),
        };
        zones.insert(*seq, zone);
    }
    for read in ops {
        let Outcome::Saw(Observed::Seq(seq)) = read.outcome else {
            continue;
        };
        if let Some(zone) = zones.get_mut(&seq) {
            if read.complete < zone.first_done.0 {
                zone.first_done = (read.complete, Some(*read));
            }
            if read.invoke > zone.last_begun.0 {
                zone.last_begun = (read.invoke, Some(*read));
            }
        }
    }
    let zones: Vec<Zone> = zones.into_values().collect();
    let mut out = Vec::new();
    for (i, a) in zones.iter().enumerate() {
        for b in &zones[i + 1..] {
            if out.len() < MAX_CONFLICTS && a.conflicts(b) {
                out.push(Violation {
                    kind: ViolationKind::NotLinearizable,
                    register,
                    detail: format!(
                        "w{} and w{} cannot both be the register's value as read",
                        a.seq, b.seq
                    ),
                    ops: a.ops().chain(b.ops()).cloned().collect(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, at: (u64, u64), outcome: Outcome) -> Op {
        Op {
            client: "c".into(),
            register: 0,
            node: "node1".into(),
            kind,
            invoke: Duration::from_millis(at.0),
            complete: Duration::from_millis(at.1),
            outcome,
            note: String::new(),
        }
    }
    fn write(seq: u64, at: (u64, u64), outcome: Outcome) -> Op {
        op(Kind::Write(seq), at, outcome)
    }
    fn read(seen: Observed, at: (u64, u64)) -> Op {
        op(Kind::Read, at, Outcome::Saw(seen))
    }
    fn final_read(seq: u64) -> Op {
        op(
            Kind::FinalRead,
            (1000, 1010),
            Outcome::Saw(Observed::Seq(seq)),
        )
    }
    fn kinds(history: &[Op]) -> Vec<ViolationKind> {
        let found = check(history);
        for v in &found {
            println!("{v}");
        }
        found.into_iter().map(|v| v.kind).collect()
    }
    use Observed::Seq;

    /// Two acknowledged writes, reads concurrent with them (old or new value), an
    /// indeterminate write never read and one that was refused.
    fn clean() -> Vec<Op> {
        vec![
            read(Seq(0), (0, 5)),
            write(1, (10, 20), Outcome::Ok),
            read(Seq(0), (15, 25)),
            read(Seq(1), (15, 25)),
            write(2, (30, 40), Outcome::Ok),
            read(Seq(1), (35, 45)),
            read(Seq(2), (36, 44)),
            write(3, (50, 60), Outcome::Unknown),
            write(4, (60, 70), Outcome::Refused),
            read(Seq(2), (80, 90)),
            final_read(2),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        assert_eq!(kinds(&clean()), vec![]);
        // The indeterminate write took effect after all.
        let mut late = clean();
        late.pop();
        late.push(final_read(3));
        assert_eq!(kinds(&late), vec![]);
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_late() {
        let history = vec![
            write(1, (10, 20), Outcome::Unknown),
            write(2, (30, 40), Outcome::Ok),
            read(Seq(1), (50, 60)),
            final_read(1),
        ];
        assert_eq!(kinds(&history), vec![]);
    }

    #[test]
    fn a_stale_read_fails() {
        let mut history = clean();
        history.push(read(Seq(1), (50, 55)));
        assert_eq!(kinds(&history), vec![ViolationKind::StaleRead]);
        // The initial value too.
        let mut history = clean();
        history.push(read(Seq(0), (41, 42)));
        assert_eq!(kinds(&history), vec![ViolationKind::StaleRead]);
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let mut history = clean();
        history.pop();
        history.push(final_read(1));
        assert_eq!(kinds(&history), vec![ViolationKind::LostWrite]);
        history.pop();
        history.push(op(Kind::FinalRead, (1000, 1010), Outcome::Unknown));
        assert_eq!(kinds(&history), vec![ViolationKind::LostWrite]);
    }

    #[test]
    fn a_read_of_a_value_never_written_fails() {
        for seen in [
            read(Seq(9), (50, 55)),
            read(Seq(4), (80, 85)),
            read(Seq(2), (25, 29)),
            read(Observed::parse("cluster test"), (50, 55)),
            read(Observed::Missing, (50, 55)),
        ] {
            let mut history = clean();
            history.push(seen);
            assert_eq!(kinds(&history), vec![ViolationKind::UnwrittenValue]);
        }
    }

    #[test]
    fn a_read_older_than_an_earlier_read_is_not_linearizable() {
        let history = vec![
            write(1, (10, 20), Outcome::Ok),
            write(2, (30, 100), Outcome::Ok),
            read(Seq(2), (40, 50)),
            read(Seq(1), (60, 70)),
        ];
        assert_eq!(kinds(&history), vec![ViolationKind::NotLinearizable]);
        // An indeterminate write read, then older again: it took effect, so it stays.
        let history = vec![
            write(1, (10, 20), Outcome::Ok),
            write(2, (30, 40), Outcome::Unknown),
            read(Seq(2), (50, 60)),
            read(Seq(1), (70, 80)),
        ];
        assert_eq!(kinds(&history), vec![ViolationKind::NotLinearizable]);
    }
}
