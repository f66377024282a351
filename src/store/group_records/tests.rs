//! Tests of group exports and replaces: two groups (A: ids with an even first byte, B:
//! odd) share one store, with subscriptions across them, tombstones and stray rows.

use std::collections::BTreeMap;

use super::*;
use crate::store::pagination::PageRequest;
use crate::store::tests::temp_store;

fn in_a(id: &Uuid) -> bool {
    id.as_bytes()[0].is_multiple_of(2)
}

fn in_b(id: &Uuid) -> bool {
    !in_a(id)
}

/// A fresh id in group A (`a`) or B.
fn id_in(a: bool) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if in_a(&id) == a {
            return id;
        }
    }
}

fn account(s: &Store, a: bool, name: &str) -> Account {
    Account {
        id: id_in(a),
        endpoint: format!("http://127.0.0.1:1/{name}"),
        ..crate::store::accounts::tests::account(s, name)
    }
}

fn registration(s: &Store, owner: &Account, event: &str) -> Registration {
    Registration {
        id: id_in(in_a(&owner.id)),
        epoch_us: s.next_epoch_us(),
        account_id: owner.id,
        event: event.into(),
        description: "d".into(),
        event_data: "{}".into(),
        deleting: false,
    }
}

fn subscription(s: &Store, to: &Registration, subscriber: &Account) -> Subscription {
    Subscription {
        id: id_in(in_a(&to.id)),
        epoch_us: s.next_epoch_us(),
        account_id: subscriber.id,
        registration_id: to.id,
    }
}

fn subscribe(s: &Store, sub: &Subscription) {
    let outcome = s.insert_subscriptions(&[(sub.clone(), true)]).unwrap();
    assert_eq!(outcome, vec![Ok(())]);
}

/// Every row of the record trees that belongs to a record answering to `pred`.
fn rows_of(s: &Store, pred: fn(&Uuid) -> bool) -> BTreeMap<(usize, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for (pos, tree) in s.record_trees().iter().enumerate().take(DELIVERIES) {
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            if pred(&indexed_id(pos, &k, &v).unwrap()) {
                out.insert((pos, k.to_vec()), v.to_vec());
            }
        }
    }
    out
}

const ALL: PageRequest = PageRequest {
    start: 0,
    limit: 100,
};

/// The source node: group A has alice (stored with a stale `failed_count` field, her
/// `failed_count` row says 2), amy and the tombstoned ann; alice's registration (subscribed to by amy and by B's bob) and
/// amy's tombstoned one. Group B has bob and his registration, to which alice and bob
/// subscribe.
struct Source {
    store: Store,
    _dir: tempfile::TempDir,
    alice: Account,
    amy: Account,
    bob: Account,
    ra1: Registration,
}

fn source() -> Source {
    let (dir, s) = temp_store();
    let mut alice = account(&s, true, "alice");
    let amy = account(&s, true, "amy");
    let ann = account(&s, true, "ann");
    let bob = account(&s, false, "bob");
    for a in [&alice, &amy, &ann, &bob] {
        s.insert_account(a).unwrap();
    }
    alice.failed_count = 5;
    s.update_account(&alice).unwrap();
    let t = s.t();
    t.deliveries
        .insert(failed_count_key(&alice.id), &2u64.to_be_bytes())
        .unwrap();
    t.deliveries
        .insert(failed_count_key(&bob.id), &4u64.to_be_bytes())
        .unwrap();
    assert!(s.begin_account_delete(&ann.id).unwrap().is_some());
    let ra1 = registration(&s, &alice, "ra1");
    let ra2 = registration(&s, &amy, "ra2");
    let rb1 = registration(&s, &bob, "rb1");
    for r in [&ra1, &ra2, &rb1] {
        assert!(s.insert_registration(r).unwrap());
    }
    subscribe(&s, &subscription(&s, &ra1, &amy));
    subscribe(&s, &subscription(&s, &ra1, &bob));
    subscribe(&s, &subscription(&s, &rb1, &alice));
    subscribe(&s, &subscription(&s, &rb1, &bob));
    assert!(s.begin_registration_delete(&ra2.id).unwrap().is_some());
    Source {
        store: s,
        _dir: dir,
        alice,
        amy,
        bob,
        ra1,
    }
}

/// The receiving node: group A holds alice under another username and endpoint and a
/// later epoch, and xavier (to be removed) with a registration that bob, xavier, and a
/// subscription under one of the source's subscription ids subscribe to; alice's
/// `failed_count` is 7, xavier's 3, bob's 9. Group B holds bob (the same id as the source's),
/// his registration, and xavier's subscription to it. Stray rows: a username and a
/// `subscriptions_by_subscriber` row of group A, and one of group B filed under alice.
struct Target {
    store: Store,
    _dir: tempfile::TempDir,
    xavier: Account,
}

fn target(src: &Source) -> Target {
    let (dir, s) = temp_store();
    let mut alice = account(&s, true, "alice2");
    alice.id = src.alice.id;
    let xavier = account(&s, true, "xavier");
    let bob = src.bob.clone();
    for a in [&alice, &xavier, &bob] {
        s.insert_account(a).unwrap();
    }
    let rx1 = registration(&s, &xavier, "rx1");
    let rb1 = registration(&s, &bob, "rb1-target");
    for r in [&rx1, &rb1] {
        assert!(s.insert_registration(r).unwrap());
    }
    let src_subs = src.store.export_records(&in_a).unwrap().subscriptions;
    let mut moved = subscription(&s, &rx1, &xavier);
    moved.id = src_subs[0].id;
    for sub in [
        moved,
        subscription(&s, &rx1, &bob),
        subscription(&s, &rx1, &xavier),
        subscription(&s, &rb1, &xavier),
        subscription(&s, &rb1, &bob),
    ] {
        subscribe(&s, &sub);
    }
    let t = s.t();
    t.deliveries
        .insert(failed_count_key(&alice.id), &7u64.to_be_bytes())
        .unwrap();
    t.deliveries
        .insert(failed_count_key(&xavier.id), &3u64.to_be_bytes())
        .unwrap();
    t.deliveries
        .insert(failed_count_key(&bob.id), &9u64.to_be_bytes())
        .unwrap();
    t.usernames.insert("ghost", id_in(true).as_bytes()).unwrap();
    let stray_a = owned_key(&bob.id, 1, &id_in(true));
    t.subscriptions_by_subscriber
        .insert(stray_a, rb1.id.as_bytes())
        .unwrap();
    let stray_b = owned_key(&alice.id, 2, &id_in(false));
    t.subscriptions_by_subscriber
        .insert(stray_b, rb1.id.as_bytes())
        .unwrap();
    Target {
        store: s,
        _dir: dir,
        xavier,
    }
}

#[test]
fn export_holds_the_group_as_stored() {
    let src = source();
    let dump = src.store.export_records(&in_a).unwrap();
    let names: Vec<_> = dump.accounts.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names.len(), 3);
    for name in ["alice", "amy", "ann"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(dump.accounts.iter().any(|a| a.deleting));
    let alice = dump.accounts.iter().find(|a| a.id == src.alice.id).unwrap();
    assert_eq!(alice, &src.alice);
    assert_eq!(alice.failed_count, 5);
    assert_eq!(dump.registrations.len(), 2);
    assert!(dump.registrations.iter().any(|r| r.deleting));
    assert_eq!(dump.subscriptions.len(), 2);
    assert!(dump
        .subscriptions
        .iter()
        .all(|s| s.registration_id == src.ra1.id));
    let other = src.store.export_records(&in_b).unwrap();
    assert_eq!(other.accounts, vec![src.bob.clone()]);
    assert_eq!(other.subscriptions.len(), 2);
}

#[test]
fn replace_makes_the_group_the_dump_and_leaves_the_other_alone() {
    let src = source();
    let dump = src.store.export_records(&in_a).unwrap();
    let tgt = target(&src);
    let s = &tgt.store;
    let b_before = rows_of(s, in_b);
    let b_dump = s.export_records(&in_b).unwrap();
    let deletions = s.subscription_deletions();

    s.replace_records(&in_a, &dump).unwrap();

    assert_eq!(s.export_records(&in_a).unwrap(), dump);
    assert_eq!(rows_of(s, in_a), rows_of(&src.store, in_a));
    assert_eq!(rows_of(s, in_b), b_before);
    assert_eq!(s.export_records(&in_b).unwrap(), b_dump);
    assert!(s.subscription_deletions() > deletions);

    // Usernames: the dump's resolve, the replaced and removed ones are gone; the
    // tombstoned account's name stays taken.
    assert_eq!(
        s.account_by_username("alice").unwrap().unwrap().endpoint,
        src.alice.endpoint
    );
    assert_eq!(
        s.account_by_username("amy").unwrap().unwrap().id,
        src.amy.id
    );
    for gone in ["alice2", "xavier", "ghost"] {
        assert!(!s.username_taken(gone).unwrap(), "{gone}");
    }
    assert!(s.account_by_username("ann").unwrap().is_none());
    assert!(s.username_taken("ann").unwrap());
    assert_eq!(s.accounts_being_deleted().unwrap().len(), 1);
    assert_eq!(s.registrations_being_deleted().unwrap().len(), 1);

    // Delivery data: the group's is the dump's, the other group's stays.
    assert_eq!(s.failed_count(&src.alice.id).unwrap(), 2);
    assert_eq!(s.failed_count(&tgt.xavier.id).unwrap(), 0);
    assert_eq!(s.failed_count(&src.bob.id).unwrap(), 9);

    // Listings and owner indexes.
    let listed: Vec<_> = s.list_accounts(ALL).unwrap().items;
    let listed: Vec<_> = listed.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(listed.len(), 3);
    for name in ["alice", "amy", "bob"] {
        assert!(listed.contains(&name), "{listed:?}");
    }
    assert_eq!(
        s.registration_ids_of(&src.alice.id).unwrap(),
        vec![src.ra1.id]
    );
    assert!(s.registration_ids_of(&src.amy.id).unwrap().is_empty());
    assert!(s.registration_ids_of(&tgt.xavier.id).unwrap().is_empty());
    let regs = s.list_registrations(ALL).unwrap().items;
    let events: Vec<_> = regs.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events.len(), 2);
    assert!(events.contains(&"ra1") && events.contains(&"rb1-target"));

    let mut subscribers: Vec<_> = s.subscribers_of(&src.ra1.id).unwrap();
    subscribers.sort();
    let mut expected: Vec<_> = dump
        .subscriptions
        .iter()
        .map(|x| (x.id, x.account_id))
        .collect();
    expected.sort();
    assert_eq!(subscribers, expected);
    for sub in &dump.subscriptions {
        assert_eq!(s.subscription(&sub.id).unwrap().as_ref(), Some(sub));
    }
    let all_subs = s.list_subscriptions(ALL).unwrap().items;
    assert_eq!(all_subs.len(), 4);
    assert!(all_subs
        .iter()
        .all(|x| in_b(&x.id) || x.registration_id == src.ra1.id));
    // Xavier's subscription in group B survives him (its group's cascade removes it).
    let xavier_subs = s
        .list_subscriber_subscriptions(&tgt.xavier.id, ALL)
        .unwrap();
    assert_eq!(xavier_subs.items.len(), 1);
    assert!(in_b(&xavier_subs.items[0].id));
    let bob_subs = s
        .list_subscriber_subscriptions(&src.bob.id, ALL)
        .unwrap()
        .items;
    assert_eq!(bob_subs.len(), 2);
    assert!(bob_subs.iter().any(|x| x.registration_id == src.ra1.id));
}

#[test]
fn replace_is_idempotent_and_finishes_an_interrupted_run() {
    let src = source();
    let dump = src.store.export_records(&in_a).unwrap();
    let tgt = target(&src);
    let s = &tgt.store;
    let b_before = rows_of(s, in_b);
    // An interrupted run: pass 1 and the accounts of pass 2.
    s.remove_absent(&in_a, &dump.subscriptions).unwrap();
    s.remove_absent(&in_a, &dump.registrations).unwrap();
    s.remove_absent(&in_a, &dump.accounts).unwrap();
    s.upsert(&dump.accounts).unwrap();
    for _ in 0..2 {
        s.replace_records(&in_a, &dump).unwrap();
        assert_eq!(rows_of(s, in_a), rows_of(&src.store, in_a));
        assert_eq!(rows_of(s, in_b), b_before);
    }
}

#[test]
fn an_empty_dump_clears_the_group_only() {
    let src = source();
    let tgt = target(&src);
    let s = &tgt.store;
    let b_before = rows_of(s, in_b);
    s.replace_records(&in_a, &RecordsDump::default()).unwrap();
    assert!(rows_of(s, in_a).is_empty());
    assert_eq!(rows_of(s, in_b), b_before);
    assert_eq!(s.export_records(&in_a).unwrap(), RecordsDump::default());
    assert!(s.account_by_username("alice2").unwrap().is_none());
    let listed = s.list_accounts(ALL).unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, src.bob.id);
    assert_eq!(
        listed[0].failed_count, 9,
        "the other group's delivery data stays"
    );
    assert_eq!(s.list_subscriptions(ALL).unwrap().items.len(), 2);
}

#[test]
fn a_dump_record_outside_the_group_is_refused_untouched() {
    let src = source();
    let tgt = target(&src);
    let s = &tgt.store;
    let before = rows_of(s, |_| true);
    let dump = src.store.export_records(&in_b).unwrap();
    assert!(matches!(
        s.replace_records(&in_a, &dump),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(rows_of(s, |_| true), before);
}

#[test]
fn replace_keeps_epochs_increasing() {
    let src = source();
    let (_d, s) = temp_store();
    let mut dump = src.store.export_records(&in_a).unwrap();
    dump.accounts[0].epoch_us = u64::MAX / 2;
    s.replace_records(&in_a, &dump).unwrap();
    assert!(s.next_epoch_us() > u64::MAX / 2);
}
