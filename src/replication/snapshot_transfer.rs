//! A group's snapshot sent to a lagging voter in bounded chunks.
//!
//! A snapshot holds every record of its group, so it grows with the group: sent as one
//! message it would hold the peer's one cluster connection (and every group's heartbeats
//! behind it) for as long as it takes, and past the transport's frame limit (16 MiB in
//! `ractor_cluster`) the receiving side drops the whole connection. So the leader encodes
//! the snapshot once and sends it as `raft/snapshot-chunk` messages of at most
//! `cluster.snapshot_chunk_bytes` each, one at a time, each within openraft's per-RPC
//! deadline; openraft's cancel ends the transfer between two chunks.
//!
//! The receiver ([`Assembler`]) keeps one transfer per group in memory and installs the
//! snapshot when its last chunk arrives, with the vote that chunk carries: Raft's vote
//! check is the install's, as for any snapshot. Each transfer has a random id, so chunks of
//! two transfers never mix: a first chunk (offset 0) starts a new transfer and drops the
//! partial one, unless that one is under a newer vote (a deposed leader must not abort its
//! successor's transfer); any other chunk must continue the current transfer exactly where
//! it ends. A refused chunk fails the transfer, and openraft starts it again from the
//! beginning.

use std::collections::HashMap;
use std::future::Future;

use openraft::error::{
    Fatal, NetworkError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::SnapshotResponse;
use openraft::{BasicNode, Snapshot, SnapshotMeta, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::network::PeerClient;
use super::types::{GroupId, GroupSnapshot, SnapshotData, TypeConfig};
use crate::cluster::rpc;
use crate::config::MAX_SNAPSHOT_CHUNK_BYTES;

/// One piece of a group's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunkRpc {
    /// The group.
    pub group: GroupId,
    /// The sending leader's vote.
    pub vote: Vote<u64>,
    /// What the snapshot covers (the same on every chunk of a transfer).
    pub meta: SnapshotMeta<u64, BasicNode>,
    /// Chosen at random per transfer, so that chunks of two transfers never mix.
    pub transfer: Uuid,
    /// Where `data` starts in the encoded snapshot.
    pub offset: u64,
    /// The bytes.
    #[serde(with = "crate::byte_strings::bytes")]
    pub data: Vec<u8>,
    /// True on the last chunk.
    pub done: bool,
}
rpc!(SnapshotChunkRpc => Result<Result<ChunkAnswer, Fatal<u64>>, ChunkRefused>, "raft/snapshot-chunk");

/// What the receiver did with a chunk it took.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAnswer {
    /// Kept: send the next one.
    Accepted,
    /// The last chunk: the snapshot was handed to Raft, which answered this.
    Installed(SnapshotResponse<u64>),
}

/// Why a chunk was refused; the leader sends the snapshot again from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChunkRefused {
    /// The receiver does not run the group.
    #[error("node does not run group {0}")]
    NoGroup(String),
    /// A transfer under a newer vote is in progress for the group.
    #[error("group {group}: a snapshot chunk under vote {vote} is older than the transfer in progress (vote {current})")]
    StaleVote {
        /// The group.
        group: String,
        /// The chunk's vote.
        vote: String,
        /// The vote of the transfer in progress.
        current: String,
    },
    /// The chunk does not continue the transfer in progress.
    #[error("group {group}: snapshot chunk at offset {got} out of order (expected offset {expected}); start the transfer again")]
    OutOfOrder {
        /// The group.
        group: String,
        /// Where the transfer in progress ends (0 when none is in progress).
        expected: u64,
        /// The chunk's offset.
        got: u64,
    },
    /// The assembled bytes are not a snapshot.
    #[error("group {group}: snapshot {snapshot_id} does not decode: {reason}")]
    Undecodable {
        /// The group.
        group: String,
        /// The snapshot's id.
        snapshot_id: String,
        /// The decoder's complaint.
        reason: String,
    },
}

/// A snapshot whose last chunk arrived, ready to install.
#[derive(Debug)]
pub struct Assembled {
    /// The vote the last chunk carried.
    pub vote: Vote<u64>,
    /// The snapshot.
    pub snapshot: Snapshot<TypeConfig>,
    /// Its encoded size.
    pub bytes: usize,
    /// How many chunks it came in.
    pub chunks: u32,
}

/// A transfer in progress.
struct Partial {
    transfer: Uuid,
    vote: Vote<u64>,
    meta: SnapshotMeta<u64, BasicNode>,
    bytes: Vec<u8>,
    chunks: u32,
}

/// The receiving side: at most one transfer in progress per group.
#[derive(Default)]
pub struct Assembler {
    partial: HashMap<GroupId, Partial>,
}

impl Assembler {
    /// Takes one chunk: the whole snapshot once its last chunk arrived, `None` before.
    pub fn accept(&mut self, chunk: SnapshotChunkRpc) -> Result<Option<Assembled>, ChunkRefused> {
        let group = chunk.group;
        // Leaders' votes are committed and totally ordered, so `<` is exact here.
        if let Some(p) = self.partial.get(&group).filter(|p| chunk.vote < p.vote) {
            return Err(ChunkRefused::StaleVote {
                group: group.to_string(),
                vote: chunk.vote.to_string(),
                current: p.vote.to_string(),
            });
        }
        let out_of_order = |expected| ChunkRefused::OutOfOrder {
            group: group.to_string(),
            expected,
            got: chunk.offset,
        };
        if chunk.offset == 0 {
            self.partial.insert(
                group,
                Partial {
                    transfer: chunk.transfer,
                    vote: chunk.vote,
                    meta: chunk.meta,
                    bytes: Vec::new(),
                    chunks: 0,
                },
            );
        }
        let Some(mut partial) = self.partial.remove(&group) else {
            return Err(out_of_order(0));
        };
        if partial.transfer != chunk.transfer {
            // Another transfer's chunk: this one is not in progress (any more).
            self.partial.insert(group, partial);
            return Err(out_of_order(0));
        }
        let ends = partial.bytes.len() as u64;
        if chunk.offset != ends {
            // A lost or repeated chunk: the partial transfer is useless now.
            return Err(out_of_order(ends));
        }
        partial.bytes.extend_from_slice(&chunk.data);
        partial.chunks = partial.chunks.saturating_add(1);
        if !chunk.done {
            self.partial.insert(group, partial);
            return Ok(None);
        }
        let Partial {
            meta,
            bytes,
            chunks,
            ..
        } = partial;
        let undecodable = |reason: String| ChunkRefused::Undecodable {
            group: group.to_string(),
            snapshot_id: meta.snapshot_id.clone(),
            reason,
        };
        let (data, read) = bincode::serde::decode_from_slice::<GroupSnapshot, _>(
            &bytes,
            bincode::config::standard(),
        )
        .map_err(|e| undecodable(e.to_string()))?;
        if read != bytes.len() {
            return Err(undecodable(format!(
                "{} bytes left over after the snapshot",
                bytes.len() - read
            )));
        }
        Ok(Some(Assembled {
            vote: chunk.vote,
            snapshot: Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::Read(data)),
            },
            bytes: bytes.len(),
            chunks,
        }))
    }
}

/// Sends `snapshot` to `client`'s peer chunk by chunk, as openraft's `full_snapshot`:
/// the peer's answer to installing it, or why the transfer ended.
pub async fn send(
    client: &PeerClient,
    vote: Vote<u64>,
    snapshot: Snapshot<TypeConfig>,
    cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
    option: RPCOption,
) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
    let Snapshot { meta, snapshot } = snapshot;
    let data = snapshot
        .read()
        .await
        .map_err(|e| StreamingError::StorageError(StorageIOError::read_state_machine(&e).into()))?;
    let bytes = bincode::serde::encode_to_vec(&data, bincode::config::standard())
        .map_err(|e| network(&e))?;
    // openraft passes `cluster.snapshot_chunk_bytes` (see `raft_config`).
    let chunk_bytes = option
        .snapshot_chunk_size()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(MAX_SNAPSHOT_CHUNK_BYTES)
        .clamp(1, MAX_SNAPSHOT_CHUNK_BYTES) as usize;
    let transfer = Uuid::new_v4();
    let mut cancel = std::pin::pin!(cancel);
    let mut start = 0;
    loop {
        let end = bytes.len().min(start + chunk_bytes);
        let done = end == bytes.len();
        let chunk = SnapshotChunkRpc {
            group: client.group(),
            vote,
            meta: meta.clone(),
            transfer,
            offset: start as u64,
            data: bytes[start..end].to_vec(),
            done,
        };
        let sent = tokio::select! {
            sent = client.send(chunk, option.hard_ttl()) => sent,
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
        };
        match sent {
            Ok(Ok(Ok(ChunkAnswer::Installed(answer)))) if done => return Ok(answer),
            Ok(Ok(Ok(ChunkAnswer::Accepted))) if !done => start = end,
            Ok(Ok(Ok(answer))) => {
                let e = OutOfStep { done, answer };
                return Err(network(&e));
            }
            Ok(Ok(Err(fatal))) => {
                return Err(StreamingError::RemoteError(RemoteError::new(
                    client.target(),
                    fatal,
                )))
            }
            Ok(Err(refused @ ChunkRefused::NoGroup(_))) => {
                return Err(StreamingError::Unreachable(Unreachable::new(&refused)))
            }
            Ok(Err(refused)) => return Err(network(&refused)),
            Err(e) => return Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}

/// A transfer that failed on the way, to be started again.
fn network<E: std::error::Error + 'static>(e: &E) -> StreamingError<TypeConfig, Fatal<u64>> {
    StreamingError::Network(NetworkError::new(e))
}

/// The peer answered a last chunk as a middle one, or the other way round.
#[derive(Debug, thiserror::Error)]
#[error("peer answered {answer:?} to a snapshot chunk with done = {done}")]
struct OutOfStep {
    done: bool,
    answer: ChunkAnswer,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: GroupId = GroupId(3);

    fn snapshot(tag: &str) -> GroupSnapshot {
        GroupSnapshot {
            rows: (0..20)
                .map(|i| (format!("{tag}-{i}").into_bytes(), vec![i; 7]))
                .collect(),
            ..GroupSnapshot::default()
        }
    }

    fn vote(term: u64) -> Vote<u64> {
        Vote::new_committed(term, 1)
    }

    /// `data` encoded and cut as the sender cuts it.
    fn chunks(group: GroupId, vote: Vote<u64>, data: &GroupSnapshot) -> Vec<SnapshotChunkRpc> {
        let bytes = bincode::serde::encode_to_vec(data, bincode::config::standard()).unwrap();
        let transfer = Uuid::new_v4();
        let pieces: Vec<&[u8]> = bytes.chunks(50).collect();
        assert!(
            pieces.len() > 3,
            "the test snapshot fits in {} chunks",
            pieces.len()
        );
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| SnapshotChunkRpc {
                group,
                vote,
                meta: SnapshotMeta {
                    snapshot_id: format!("{group}-{transfer}"),
                    ..SnapshotMeta::default()
                },
                transfer,
                offset: (i * 50) as u64,
                data: piece.to_vec(),
                done: i + 1 == pieces.len(),
            })
            .collect()
    }

    /// Feeds every chunk but the last, which must not complete anything.
    fn feed_all_but_last(a: &mut Assembler, chunks: &[SnapshotChunkRpc]) {
        for c in &chunks[..chunks.len() - 1] {
            assert!(a.accept(c.clone()).unwrap().is_none());
        }
    }

    /// The data of an assembled snapshot, which is read already.
    fn received(done: &Assembled) -> &GroupSnapshot {
        match &*done.snapshot.snapshot {
            SnapshotData::Read(data) => data,
            SnapshotData::Unread(source) => panic!("an assembled snapshot is unread: {source}"),
        }
    }

    fn finish(a: &mut Assembler, chunks: &[SnapshotChunkRpc]) -> Assembled {
        let last = chunks.last().unwrap().clone();
        a.accept(last)
            .unwrap()
            .expect("the last chunk completes the snapshot")
    }

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let data = snapshot("a");
        let chunks = chunks(GROUP, vote(2), &data);
        let mut a = Assembler::default();
        feed_all_but_last(&mut a, &chunks);
        let done = finish(&mut a, &chunks);
        assert_eq!(received(&done), &data);
        assert_eq!(done.snapshot.meta, chunks[0].meta);
        assert_eq!(done.vote, vote(2));
        assert_eq!(done.chunks as usize, chunks.len());
        assert!(a.partial.is_empty(), "an installed transfer is forgotten");
    }

    #[test]
    fn a_chunk_out_of_order_is_refused_and_the_transfer_dropped() {
        let chunks = chunks(GROUP, vote(2), &snapshot("a"));
        let mut a = Assembler::default();
        a.accept(chunks[0].clone()).unwrap();
        let err = a.accept(chunks[2].clone()).unwrap_err();
        assert_eq!(
            err,
            ChunkRefused::OutOfOrder {
                group: "3".into(),
                expected: 50,
                got: 100
            }
        );
        assert!(err.to_string().contains("out of order"), "{err}");
        // The leader starts again; the rest of the old transfer is refused meanwhile.
        let err = a.accept(chunks[1].clone()).unwrap_err();
        assert!(
            matches!(err, ChunkRefused::OutOfOrder { expected: 0, .. }),
            "{err}"
        );
        // A repeated chunk is out of order too.
        a.accept(chunks[0].clone()).unwrap();
        a.accept(chunks[1].clone()).unwrap();
        let err = a.accept(chunks[1].clone()).unwrap_err();
        assert!(
            matches!(err, ChunkRefused::OutOfOrder { expected: 100, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_new_transfer_replaces_the_partial_one_whose_chunks_are_refused_after() {
        let (old, new) = (snapshot("old"), snapshot("new"));
        let (old_chunks, new_chunks) = (chunks(GROUP, vote(2), &old), chunks(GROUP, vote(2), &new));
        let mut a = Assembler::default();
        a.accept(old_chunks[0].clone()).unwrap();
        a.accept(old_chunks[1].clone()).unwrap();
        a.accept(new_chunks[0].clone()).unwrap();
        // The old transfer's next chunk sits exactly where the new one ends: still refused.
        assert_eq!(old_chunks[1].offset, 50);
        let err = a.accept(old_chunks[1].clone()).unwrap_err();
        assert!(
            matches!(err, ChunkRefused::OutOfOrder { expected: 0, .. }),
            "{err}"
        );
        feed_all_but_last(&mut a, &new_chunks[1..]);
        assert_eq!(received(&finish(&mut a, &new_chunks)), &new);
    }

    #[test]
    fn a_deposed_leaders_chunks_leave_the_newer_transfer_alone() {
        let (old, new) = (snapshot("old"), snapshot("new"));
        let (stale, fresh) = (chunks(GROUP, vote(2), &old), chunks(GROUP, vote(3), &new));
        let mut a = Assembler::default();
        a.accept(stale[0].clone()).unwrap();
        a.accept(fresh[0].clone()).unwrap();
        for c in [&stale[0], &stale[1]] {
            let err = a.accept(c.clone()).unwrap_err();
            assert!(matches!(err, ChunkRefused::StaleVote { .. }), "{err}");
        }
        feed_all_but_last(&mut a, &fresh[1..]);
        let done = finish(&mut a, &fresh);
        assert_eq!((received(&done), done.vote), (&new, vote(3)));
    }

    #[test]
    fn groups_transfer_independently() {
        let (one, two) = (snapshot("one"), snapshot("two"));
        let (c1, c2) = (
            chunks(GroupId(1), vote(2), &one),
            chunks(GroupId(2), vote(9), &two),
        );
        let mut a = Assembler::default();
        for (x, y) in c1.iter().zip(&c2).take(c1.len().min(c2.len()) - 1) {
            assert!(a.accept(x.clone()).unwrap().is_none());
            assert!(a.accept(y.clone()).unwrap().is_none());
        }
        assert_eq!(received(&finish(&mut a, &c1)), &one);
        assert_eq!(received(&finish(&mut a, &c2)), &two);
    }

    #[test]
    fn a_payload_that_is_no_snapshot_is_an_error_not_a_panic() {
        let chunks = chunks(GROUP, vote(2), &snapshot("a"));
        let mut a = Assembler::default();
        // Cut short: the last chunk marked done too early.
        a.accept(chunks[0].clone()).unwrap();
        let mut early = chunks[1].clone();
        early.done = true;
        let err = a.accept(early).unwrap_err();
        assert!(matches!(err, ChunkRefused::Undecodable { .. }), "{err}");
        assert!(a.partial.is_empty(), "a failed transfer is forgotten");
        // Garbage.
        let mut garbage = chunks[0].clone();
        garbage.data = vec![0xff; 40];
        garbage.done = true;
        let err = a.accept(garbage).unwrap_err();
        assert!(matches!(err, ChunkRefused::Undecodable { .. }), "{err}");
        // The whole snapshot and then some.
        feed_all_but_last(&mut a, &chunks);
        let mut longer = chunks.last().unwrap().clone();
        longer.data.extend_from_slice(&[0, 0, 0]);
        let err = a.accept(longer).unwrap_err();
        assert!(err.to_string().contains("left over"), "{err}");
    }
}
