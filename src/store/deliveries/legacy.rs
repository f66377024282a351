//! Delivery records as releases before the response capture wrote them (record version 2):
//! their attempts had no `response_body`. Read through these types and upgraded, so
//! existing data needs no migration (see [`crate::store::records`]).

use serde::Deserialize;
use uuid::Uuid;

use super::types::{Attempt, Delivery, DeliveryState};
use crate::store::records::decode_evolved;
use crate::store::Result;

/// An attempt without response fields.
#[derive(Deserialize)]
struct AttemptV2 {
    at_us: u64,
    status: Option<u16>,
    error: Option<String>,
    duration_us: u64,
}

/// A delivery whose attempts have no response fields (same field order as [`Delivery`]).
#[derive(Deserialize)]
struct DeliveryV2 {
    id: Uuid,
    triggered_id: Uuid,
    registration_id: Uuid,
    subscription_id: Uuid,
    subscription_epoch_us: u64,
    account_id: Uuid,
    state: DeliveryState,
    attempts: Vec<AttemptV2>,
    next_attempt_us: Option<u64>,
    finished_us: Option<u64>,
}

impl From<DeliveryV2> for Delivery {
    fn from(d: DeliveryV2) -> Self {
        Delivery {
            id: d.id,
            triggered_id: d.triggered_id,
            registration_id: d.registration_id,
            subscription_id: d.subscription_id,
            subscription_epoch_us: d.subscription_epoch_us,
            account_id: d.account_id,
            state: d.state,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    at_us: a.at_us,
                    status: a.status,
                    error: a.error,
                    duration_us: a.duration_us,
                    response_body: None,
                })
                .collect(),
            next_attempt_us: d.next_attempt_us,
            finished_us: d.finished_us,
        }
    }
}

/// A delivery record, of any version.
pub(super) fn decode_delivery(bytes: &[u8]) -> Result<Delivery> {
    decode_evolved(bytes, |old: DeliveryV2| Delivery::from(old))
}

/// A settled row (deliveries), of any version.
pub(super) fn decode_deliveries(bytes: &[u8]) -> Result<Vec<Delivery>> {
    decode_evolved(bytes, |old: Vec<DeliveryV2>| {
        old.into_iter().map(Delivery::from).collect()
    })
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    /// The version-2 layout, written as an earlier release did.
    #[derive(Serialize)]
    struct OldAttempt {
        at_us: u64,
        status: Option<u16>,
        error: Option<String>,
        duration_us: u64,
    }

    #[test]
    fn version_2_records_read_as_deliveries_without_responses() {
        let id = Uuid::new_v4();
        let old = (
            id,
            id,
            id,
            id,
            7u64,
            id,
            DeliveryState::Failed,
            vec![OldAttempt {
                at_us: 1,
                status: Some(500),
                error: Some("endpoint answered 500".into()),
                duration_us: 2,
            }],
            None::<u64>,
            Some(9u64),
        );
        let mut bytes = vec![2u8];
        bytes.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        let d = decode_delivery(&bytes).unwrap();
        assert_eq!(d.state, DeliveryState::Failed);
        assert_eq!(d.attempts[0].status, Some(500));
        assert_eq!(d.attempts[0].response_body, None);
        assert_eq!(d.finished_us, Some(9));
        let mut row = vec![2u8];
        row.extend(bincode::serde::encode_to_vec(vec![&old], bincode::config::standard()).unwrap());
        assert_eq!(decode_deliveries(&row).unwrap(), vec![d.clone()]);
        // The current layout round-trips.
        let now = crate::store::records::encode_compact(&d).unwrap();
        assert_eq!(decode_delivery(&now).unwrap(), d);
    }
}
