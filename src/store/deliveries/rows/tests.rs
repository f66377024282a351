//! Tests of delivery rows as group data: two groups of subscribers (A: ids with an even
//! first byte, B: odd) share one store, each with rows of every kind.

use std::collections::HashMap;

use super::super::fixtures::{all_rows, attempt, in_a, item_in};
use super::super::types::{DeliveryState, DueEntry, FailedCountChange, NewDelivery, Outcome};
use super::*;
use crate::store::keys::{cursor_key, failed_count_key, handoff_key, CURSOR, HANDOFF};
use crate::store::tests::temp_store;

fn in_b(id: &Uuid) -> bool {
    !in_a(id)
}

/// The outcome of `due`'s attempt answered with `status`: a 200 succeeds, a 500 is retried
/// at 100, a 410 fails and stops the subscriber.
fn outcome(due: &DueEntry, status: u16) -> Outcome {
    Outcome {
        due: due.clone(),
        attempt: Some(attempt(status)),
        state: match status {
            200 => DeliveryState::Succeeded,
            500 => DeliveryState::Pending,
            _ => DeliveryState::Failed,
        },
        next_due_us: (status == 500).then_some(100),
        failed_count: if status == 200 {
            FailedCountChange::Reset
        } else {
            FailedCountChange::Increment
        },
        gone: status == 410,
    }
}

/// One trigger's deliveries to four subscribers of each group, in one pending batch per
/// group: the first succeeded (a settled row), the second is retried (record, due entry,
/// `failed_count`), the third answered 410 (record, `failed_count`, mark), the fourth
/// waits (the batch stays). And a fan-out cursor and handoff batch.
struct Populated {
    triggered: Uuid,
    a: Vec<NewDelivery>,
    b: Vec<NewDelivery>,
}

fn populate(s: &Store) -> Populated {
    let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
    let a: Vec<_> = (1..=4).map(|n| item_in(n, true)).collect();
    let b: Vec<_> = (5..=8).map(|n| item_in(n, false)).collect();
    for items in [&a, &b] {
        let items: Vec<_> = items.iter().map(|i| (i.clone(), false)).collect();
        let entries = s.accept_handed_over(&t, &r, &items, 10).unwrap();
        let outcomes: Vec<_> = entries[..3]
            .iter()
            .zip([200, 500, 410])
            .map(|(e, status)| outcome(e, status))
            .collect();
        s.record_outcomes(&outcomes, 20).unwrap();
    }
    let fanout = vec![
        (cursor_key(&t).to_vec(), Some(vec![1])),
        (handoff_key("node-b", &t, 5, 0), Some(vec![2])),
    ];
    s.apply_fanout_rows(&fanout).unwrap();
    Populated { triggered: t, a, b }
}

/// The rows of `s` with prefix `kind`.
fn rows_of_kind(s: &Store, kind: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    all_rows(s)
        .into_iter()
        .filter(|(k, _)| k[0] == kind)
        .collect()
}

#[test]
fn each_kind_of_row_is_its_subscribers() {
    let (_d, s) = temp_store();
    let p = populate(&s);
    let subscriber = |kind: u8| -> Vec<Option<Uuid>> {
        rows_of_kind(&s, kind)
            .iter()
            .map(|(k, v)| delivery_row_subscriber(k, v).unwrap())
            .collect()
    };
    let (a, b) = (&p.a, &p.b);
    let id = |items: &[&NewDelivery]| -> Vec<Option<Uuid>> {
        items.iter().map(|i| Some(i.account_id)).collect()
    };
    // Rows of one trigger sort by subscription: group A's first (epochs 1-4).
    assert_eq!(subscriber(RECORD), id(&[&a[1], &a[2], &b[1], &b[2]]));
    assert_eq!(subscriber(BATCH), id(&[&a[0], &b[0]]), "its first item's");
    assert_eq!(subscriber(SETTLED), id(&[&a[0], &b[0]]));
    assert_eq!(subscriber(DUE), id(&[&a[1], &b[1]]));
    let mut failed = subscriber(FAILED_COUNT);
    failed.sort();
    let mut expected = id(&[&a[1], &a[2], &b[1], &b[2]]);
    expected.sort();
    assert_eq!(failed, expected);
    let mut gone = subscriber(GONE);
    gone.sort();
    let mut expected = id(&[&a[2], &b[2]]);
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(subscriber(CURSOR), vec![None]);
    assert_eq!(subscriber(HANDOFF), vec![None]);
    // A due entry of an older release has no subscriber of its own.
    let (due, _) = rows_of_kind(&s, DUE).remove(0);
    assert_eq!(delivery_row_subscriber(&due, &[0; 16]).unwrap(), None);
}

#[test]
fn applying_rows_twice_is_applying_them_once() {
    let (_d, s) = temp_store();
    let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
    let items: Vec<_> = (1..=2).map(|n| (item_in(n, true), false)).collect();
    let entries = s.accept_handed_over(&t, &r, &items, 10).unwrap();
    let outcomes = [outcome(&entries[0], 500), outcome(&entries[1], 410)];
    let prepared = s.prepare_outcomes(&outcomes, 20).unwrap();
    let before = all_rows(&s);
    s.apply_delivery_rows(prepared.rows()).unwrap();
    let once = all_rows(&s);
    assert_ne!(once, before);
    s.apply_delivery_rows(prepared.rows()).unwrap();
    assert_eq!(all_rows(&s), once);
    s.outcomes_written(prepared);
    assert_eq!(s.failed_count(&items[0].0.account_id).unwrap(), 1);
    assert!(s
        .deliveries_stopped_us(&items[1].0.account_id)
        .unwrap()
        .is_some());
}

#[test]
fn rows_that_are_not_a_subscribers_are_refused_unwritten() {
    let (_d, s) = temp_store();
    let p = populate(&s);
    let before = all_rows(&s);
    let good = (
        failed_count_key(&p.a[0].account_id).to_vec(),
        Some(vec![0, 0, 0, 0, 0, 0, 0, 9]),
    );
    let t = p.triggered;
    for bad in [
        cursor_key(&t).to_vec(),
        handoff_key("node-b", &t, 6, 0),
        b"x-unknown".to_vec(),
        Vec::new(),
    ] {
        let rows = [good.clone(), (bad.clone(), None)];
        assert!(
            matches!(s.apply_delivery_rows(&rows), Err(StoreError::Corrupt(_))),
            "{bad:?}"
        );
        assert_eq!(all_rows(&s), before, "{bad:?}");
    }
}

#[test]
fn a_groups_rows_move_to_another_store_and_the_other_groups_stay() {
    let (_d1, src) = temp_store();
    let (_d2, tgt) = temp_store();
    let from = populate(&src);
    let here = populate(&tgt);
    let dump = src.export_delivery_rows(&in_a).unwrap();
    assert_eq!(dump.len(), 8, "r 2, b, s, d, f 2, g: {dump:?}");
    assert!(dump.iter().all(|(k, v)| delivery_row_subscriber(k, v)
        .unwrap()
        .is_some_and(|s| in_a(&s))));
    let others = tgt.export_delivery_rows(&in_b).unwrap();
    let fanout: Vec<_> = [CURSOR, HANDOFF]
        .iter()
        .flat_map(|kind| rows_of_kind(&tgt, *kind))
        .collect();
    // This node's open batch of group A (one delivery waits) is replaced.
    let open = |s: &Store, key: &[u8]| {
        !(s.inner.open_batches)
            .completed_by(&HashMap::from([(key.to_vec(), 1)]))
            .is_empty()
    };
    let (batch, _) = rows_of_kind(&tgt, BATCH).remove(0);
    assert!(open(&tgt, &batch));

    for _ in 0..2 {
        tgt.replace_delivery_rows(&in_a, &dump).unwrap();
        assert_eq!(tgt.export_delivery_rows(&in_a).unwrap(), dump);
        assert_eq!(tgt.export_delivery_rows(&in_b).unwrap(), others);
        let fanout_now: Vec<_> = [CURSOR, HANDOFF]
            .iter()
            .flat_map(|kind| rows_of_kind(&tgt, *kind))
            .collect();
        assert_eq!(fanout_now, fanout, "fan-out rows are the trigger's group's");
    }
    assert!(!open(&tgt, &batch), "a replaced batch is forgotten");
    // The moved deliveries read as on their origin.
    let t = from.triggered;
    assert_eq!(
        tgt.delivery_counts(&t, &in_a).unwrap(),
        src.delivery_counts(&t, &in_a).unwrap()
    );
    assert_eq!(
        tgt.delivery_counts(&here.triggered, &in_a).unwrap().pending,
        0
    );
    assert_eq!(tgt.failed_count(&from.a[1].account_id).unwrap(), 1);
    assert!(tgt
        .deliveries_stopped_us(&from.a[2].account_id)
        .unwrap()
        .is_some());
    assert!(tgt
        .deliveries_stopped_us(&here.a[2].account_id)
        .unwrap()
        .is_none());
    assert!(tgt
        .deliveries_stopped_us(&here.b[2].account_id)
        .unwrap()
        .is_some());
}

#[test]
fn a_replace_with_another_groups_rows_is_refused_unwritten() {
    let (_d1, src) = temp_store();
    let (_d2, tgt) = temp_store();
    let from = populate(&src);
    populate(&tgt);
    let before = all_rows(&tgt);
    let theirs = src.export_delivery_rows(&in_b).unwrap();
    assert!(matches!(
        tgt.replace_delivery_rows(&in_a, &theirs),
        Err(StoreError::Corrupt(_))
    ));
    let mut with_cursor = src.export_delivery_rows(&in_a).unwrap();
    with_cursor.push((cursor_key(&from.triggered).to_vec(), vec![1]));
    assert!(matches!(
        tgt.replace_delivery_rows(&in_a, &with_cursor),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(all_rows(&tgt), before);
}

#[test]
fn an_older_releases_due_entry_is_exported_in_the_current_form() {
    let (_d, s) = temp_store();
    populate(&s);
    let (due, current) = rows_of_kind(&s, DUE).remove(0);
    s.t().deliveries.insert(&due, &current[..16]).unwrap();
    assert_eq!(delivery_row_subscriber(&due, &current[..16]).unwrap(), None);
    let dump = s.export_delivery_rows(&in_a).unwrap();
    assert!(dump.contains(&(due.clone(), current.clone())));
    // Replaced by the same rows, it takes the current form.
    s.replace_delivery_rows(&in_a, &dump).unwrap();
    assert_eq!(s.t().deliveries.get(&due).unwrap().unwrap(), current);
    assert_eq!(s.export_delivery_rows(&in_a).unwrap(), dump);
}

/// Two batches of one trigger redirected to the same peer in the same microsecond (one
/// handoff round redirects many at once) are both kept: neither key overwrites the other.
#[test]
fn redirects_of_one_trigger_in_the_same_microsecond_keep_both_batches() {
    let (_dir, s) = temp_store();
    let t = Uuid::new_v4();
    let (first, second) = (item_in(1, true), item_in(2, true));
    let old = [
        handoff_key("node-b", &t, 5, 0),
        handoff_key("node-c", &t, 5, 1),
    ];
    let mut rows = Vec::new();
    for (key, item) in old.iter().zip([&first, &second]) {
        let to = vec![("node-d".to_string(), vec![item.clone()])];
        rows.extend(s.redirected_handoff(key, &t, &to, 99).unwrap());
    }
    s.apply_fanout_rows(&rows).unwrap();
    let mut moved: Vec<Uuid> = s
        .handoffs_for("node-d", 10, &|_| true)
        .unwrap()
        .into_iter()
        .flat_map(|h| h.items)
        .map(|i| i.account_id)
        .collect();
    moved.sort();
    let mut want = vec![first.account_id, second.account_id];
    want.sort();
    assert_eq!(moved, want);
}
