//! Test fixtures shared by the delivery store's tests.

use uuid::Uuid;

use super::types::{
    Attempt, Delivery, DeliveryState, DueEntry, FailedCountChange, NewDelivery, Outcome,
};
use crate::store::{PageRequest, Store, Triggered};

pub(super) fn item(n: u64) -> NewDelivery {
    NewDelivery {
        subscription_id: Uuid::new_v4(),
        subscription_epoch_us: n,
        account_id: Uuid::new_v4(),
    }
}

/// Group A of the group tests: ids with an even first byte (group B: odd).
pub(super) fn in_a(id: &Uuid) -> bool {
    id.as_bytes()[0].is_multiple_of(2)
}

/// A delivery to create for a fresh subscriber of group A (`a`) or B.
pub(super) fn item_in(n: u64, a: bool) -> NewDelivery {
    loop {
        let it = item(n);
        if in_a(&it.account_id) == a {
            return it;
        }
    }
}

/// Every row of the `deliveries` tree.
pub(super) fn all_rows(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.t()
        .deliveries
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

pub(super) fn attempt(status: u16) -> Attempt {
    Attempt {
        at_us: 5,
        status: Some(status),
        error: None,
        duration_us: 1,
        response_body: Some("{}".into()),
    }
}

/// The outcome of `due`'s final attempt answered with `status`: succeeded on a 200,
/// failed otherwise, with no retry and `failed_count` left alone.
pub(super) fn settled(due: &DueEntry, status: u16) -> Outcome {
    Outcome {
        due: due.clone(),
        attempt: Some(attempt(status)),
        state: if status == 200 {
            DeliveryState::Succeeded
        } else {
            DeliveryState::Failed
        },
        next_due_us: None,
        failed_count: FailedCountChange::Keep,
        gone: false,
    }
}

pub(super) fn page(s: &Store, t: &Uuid, start: u64, limit: u64) -> Vec<Delivery> {
    s.list_deliveries(t, PageRequest { start, limit }, &|_| true)
        .unwrap()
        .items
}

pub(super) fn triggered(registration: Uuid) -> Triggered {
    Triggered {
        id: Uuid::new_v4(),
        epoch_us: 7,
        registration_id: registration,
        account_id: Uuid::new_v4(),
        event: "e".into(),
        body: "{}".into(),
    }
}
