//! Raft's rows: each shard group's log, its hard state and its replicated state.
//!
//! Two trees hold every group of the node. `raft_log` maps `group (u16) ‖ index (u64)`,
//! big-endian so a group's entries are one ordered range, to an encoded log entry.
//! `raft_state` maps `group ‖ name` to a value: the vote, the purge point, the state
//! machine's applied position and membership, and the state machine's own rows under the
//! `sm/` names, so that a group's snapshot is one prefix scan and installing one is one
//! prefix replace. The bytes are opaque here: the replication layer encodes them.
//!
//! Durability is the caller's: writes land in sled's log, and [`Store::flush`] makes
//! them durable (Raft waits for it before it counts a vote or an appended entry).

use super::row_writes::write_rows;
use super::{Result, Store};

/// Prefix of a group's state-machine rows in `raft_state`.
const SM_PREFIX: &[u8] = b"sm/";

fn log_key(group: u16, index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(&group.to_be_bytes());
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

fn state_key(group: u16, name: &[u8]) -> Vec<u8> {
    let mut key = group.to_be_bytes().to_vec();
    key.extend_from_slice(name);
    key
}

/// One change to a group's state: `(name, Some(value))` sets, `(name, None)` removes.
pub type StateChange = (Vec<u8>, Option<Vec<u8>>);

impl Store {
    /// Appends (or overwrites) entries of `group`'s log, atomically.
    pub fn raft_append(&self, group: u16, entries: &[(u64, Vec<u8>)]) -> Result<()> {
        let rows: Vec<_> = entries
            .iter()
            .map(|(index, bytes)| (log_key(group, *index), Some(bytes.as_slice())))
            .collect();
        write_rows(&self.t().raft_log, &rows)?;
        Ok(())
    }

    /// `group`'s entries with index in `from..to`, in order.
    pub fn raft_entries(&self, group: u16, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.t()
            .raft_log
            .range(log_key(group, from)..log_key(group, to))
            .map(|row| Ok(row?.1.to_vec()))
            .collect()
    }

    /// The first index missing from `group`'s log after `after` (the purge point, if
    /// any) while a later entry is present: a gap left by a crash among writes no flush
    /// had covered yet (see `replication::log_store`).
    pub fn raft_first_gap(&self, group: u16, after: Option<u64>) -> Result<Option<u64>> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut expected = after.map(|a| a.saturating_add(1));
        for row in self
            .t()
            .raft_log
            .range(log_key(group, from)..=log_key(group, u64::MAX))
        {
            let (key, _) = row?;
            let index = super::keys::read_u64(&key, 2)?;
            match expected {
                Some(e) if index != e => return Ok(Some(e)),
                _ => expected = Some(index.saturating_add(1)),
            }
        }
        Ok(None)
    }

    /// `group`'s last log entry.
    pub fn raft_last_entry(&self, group: u16) -> Result<Option<Vec<u8>>> {
        let last = self
            .t()
            .raft_log
            .range(log_key(group, 0)..=log_key(group, u64::MAX))
            .next_back()
            .transpose()?;
        Ok(last.map(|(_, v)| v.to_vec()))
    }

    /// Removes `group`'s entries with index `from` and above (a conflicting suffix).
    pub fn raft_truncate(&self, group: u16, from: u64) -> Result<()> {
        self.remove_log_range(group, from, u64::MAX)
    }

    /// Removes `group`'s entries up to and including `upto` (covered by a snapshot).
    pub fn raft_purge(&self, group: u16, upto: u64) -> Result<()> {
        self.remove_log_range(group, 0, upto)
    }

    fn remove_log_range(&self, group: u16, from: u64, to_inclusive: u64) -> Result<()> {
        let rows = self
            .t()
            .raft_log
            .range(log_key(group, from)..=log_key(group, to_inclusive))
            .map(|row| Ok((row?.0, None::<&[u8]>)))
            .collect::<Result<Vec<_>>>()?;
        write_rows(&self.t().raft_log, &rows)?;
        Ok(())
    }

    /// A value of `group`'s state.
    pub fn raft_state(&self, group: u16, name: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .t()
            .raft_state
            .get(state_key(group, name))?
            .map(|v| v.to_vec()))
    }

    /// Applies `changes` to `group`'s state atomically.
    pub fn raft_change_state(&self, group: u16, changes: &[StateChange]) -> Result<()> {
        let rows: Vec<_> = changes
            .iter()
            .map(|(name, value)| (state_key(group, name), value.as_deref()))
            .collect();
        write_rows(&self.t().raft_state, &rows)?;
        Ok(())
    }

    /// The state machine rows of `group` (names without the `sm/` prefix).
    pub fn raft_machine_rows(&self, group: u16) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = state_key(group, SM_PREFIX);
        self.t()
            .raft_state
            .scan_prefix(&prefix)
            .map(|row| {
                let (k, v) = row?;
                Ok((k[prefix.len()..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Replaces the state machine rows of `group` with `rows` and applies `changes`, in
    /// one atomic batch (installing a snapshot).
    pub fn raft_replace_machine(
        &self,
        group: u16,
        rows: &[(Vec<u8>, Vec<u8>)],
        changes: &[StateChange],
    ) -> Result<()> {
        let prefix = state_key(group, SM_PREFIX);
        let mut batch = sled::Batch::default();
        for row in self.t().raft_state.scan_prefix(&prefix) {
            batch.remove(row?.0);
        }
        for (name, value) in rows {
            let mut key = prefix.clone();
            key.extend_from_slice(name);
            batch.insert(key, value.as_slice());
        }
        add_changes(&mut batch, group, changes);
        self.t().raft_state.apply_batch(batch)?;
        Ok(())
    }
}

fn add_changes(batch: &mut sled::Batch, group: u16, changes: &[StateChange]) {
    for (name, value) in changes {
        match value {
            Some(value) => batch.insert(state_key(group, name), value.as_slice()),
            None => batch.remove(state_key(group, name)),
        }
    }
}

/// The `raft_state` name of a state machine row.
pub fn machine_row(name: &[u8]) -> Vec<u8> {
    let mut key = SM_PREFIX.to_vec();
    key.extend_from_slice(name);
    key
}

#[cfg(test)]
mod tests {
    use crate::store::tests::temp_store;

    #[test]
    fn groups_keep_their_own_log_and_state() {
        let (_d, s) = temp_store();
        s.raft_append(
            1,
            &[(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())],
        )
        .unwrap();
        s.raft_append(2, &[(1, b"x".to_vec())]).unwrap();
        assert_eq!(
            s.raft_entries(1, 2, 4).unwrap(),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(s.raft_last_entry(1).unwrap(), Some(b"c".to_vec()));
        s.raft_truncate(1, 3).unwrap();
        assert_eq!(s.raft_last_entry(1).unwrap(), Some(b"b".to_vec()));
        s.raft_purge(1, 1).unwrap();
        assert_eq!(s.raft_entries(1, 0, 10).unwrap(), vec![b"b".to_vec()]);
        assert_eq!(s.raft_first_gap(1, Some(1)).unwrap(), None);
        assert_eq!(s.raft_first_gap(1, None).unwrap(), None);
        s.raft_append(1, &[(5, b"e".to_vec()), (6, b"f".to_vec())])
            .unwrap();
        assert_eq!(s.raft_first_gap(1, Some(1)).unwrap(), Some(3));
        assert_eq!(s.raft_first_gap(1, Some(0)).unwrap(), Some(1));
        s.raft_truncate(1, 3).unwrap();
        assert_eq!(s.raft_entries(2, 0, 10).unwrap(), vec![b"x".to_vec()]);
        assert_eq!(s.raft_last_entry(3).unwrap(), None);
    }

    #[test]
    fn a_snapshot_install_replaces_only_its_groups_rows() {
        let (_d, s) = temp_store();
        s.raft_change_state(
            1,
            &[
                (super::machine_row(b"old"), Some(b"1".to_vec())),
                (b"vote".to_vec(), Some(b"v".to_vec())),
            ],
        )
        .unwrap();
        s.raft_change_state(2, &[(super::machine_row(b"other"), Some(b"2".to_vec()))])
            .unwrap();
        s.raft_replace_machine(
            1,
            &[(b"new".to_vec(), b"3".to_vec())],
            &[(b"applied".to_vec(), Some(b"a".to_vec()))],
        )
        .unwrap();
        assert_eq!(
            s.raft_machine_rows(1).unwrap(),
            vec![(b"new".to_vec(), b"3".to_vec())]
        );
        assert_eq!(s.raft_machine_rows(2).unwrap().len(), 1);
        assert_eq!(s.raft_state(1, b"vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.raft_state(1, b"applied").unwrap(), Some(b"a".to_vec()));
    }
}
