//! Atomic writes of rows to one tree, without a batch where one row is all there is.
//!
//! sled 0.34 seals and writes its log buffer (a `pwrite` and a `sync_file_range`, handed
//! to one of its IO threads) before and after every batch and transaction, whatever its
//! size, so that the batch is recovered whole or not at all. A single insert or remove is
//! atomic by itself: written as such it skips those writes and becomes durable with the
//! next group commit, like any other write. A Raft entry's append and its applied
//! position are single rows on every voter, so this halves the disk writes per entry.

/// Sets (`Some`) or removes (`None`) each row of `rows` in `tree`, atomically; nothing to
/// write writes nothing.
pub(super) fn write_rows<K, V>(tree: &sled::Tree, rows: &[(K, Option<V>)]) -> sled::Result<()>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    match rows {
        [] => Ok(()),
        [(key, Some(value))] => tree.insert(key.as_ref(), value.as_ref()).map(drop),
        [(key, None)] => tree.remove(key.as_ref()).map(drop),
        _ => tree.apply_batch(batch_of(rows)),
    }
}

/// `rows` as one batch, for a tree's `apply_batch` (also inside a transaction).
pub(super) fn batch_of<K, V>(rows: &[(K, Option<V>)]) -> sled::Batch
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut batch = sled::Batch::default();
    for (key, value) in rows {
        match value {
            Some(value) => batch.insert(key.as_ref(), value.as_ref()),
            None => batch.remove(key.as_ref()),
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        (dir, tree)
    }

    fn contents(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    #[test]
    fn one_row_or_many_set_and_remove_alike() {
        let (_d, t) = tree();
        write_rows::<&[u8], &[u8]>(&t, &[]).unwrap();
        assert!(contents(&t).is_empty());
        write_rows(&t, &[(b"a", Some(b"1"))]).unwrap();
        write_rows(&t, &[(b"b", Some(b"2")), (b"c", Some(b"3"))]).unwrap();
        assert_eq!(contents(&t).len(), 3);
        write_rows::<_, &[u8]>(&t, &[(b"b", None)]).unwrap();
        write_rows(&t, &[(b"a", None), (b"c", Some(b"4"))]).unwrap();
        assert_eq!(contents(&t), vec![(b"c".to_vec(), b"4".to_vec())]);
    }
}
