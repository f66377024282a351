//! Fan-out cursors (prefix `c`): a fan-out not finished yet, with the last subscription
//! index key already handed to delivery, so a restart resumes there. A fan-out step moves
//! its cursor in the batch that writes its deliveries (see [`super::create`]).

use uuid::Uuid;

use super::types::FanoutCursor;
use crate::store::keys::{cursor_key, read_uuid, CURSOR};
use crate::store::records::{decode, encode_compact};
use crate::store::{Result, Store};

impl Store {
    /// Records the fan-out of a new trigger (with the triggered row, atomically).
    pub fn start_fanout(&self, triggered: &Uuid, cursor: &FanoutCursor) -> Result<()> {
        self.t()
            .deliveries
            .insert(cursor_key(triggered), encode_compact(cursor)?)?;
        Ok(())
    }

    /// Every unfinished fan-out (resumed at start-up).
    pub fn fanouts(&self) -> Result<Vec<(Uuid, FanoutCursor)>> {
        self.t()
            .deliveries
            .scan_prefix([CURSOR])
            .map(|item| {
                let (k, v) = item?;
                Ok((read_uuid(&k, 1)?, decode(&v)?))
            })
            .collect()
    }

    /// The cursor of `triggered`'s fan-out, if unfinished.
    pub fn fanout(&self, triggered: &Uuid) -> Result<Option<FanoutCursor>> {
        self.t()
            .deliveries
            .get(cursor_key(triggered))?
            .map(|v| decode(&v))
            .transpose()
    }
}
