//! An actor's answer travels with the group commit of its writes, and is given to the caller
//! only once that commit succeeded.
//!
//! An actor orders the changes of its record: each write is applied to sled before the actor
//! takes its next message, so a read after an acknowledged write sees it. Waiting for the
//! flush is another matter: inside the actor it would make every write of the record wait
//! for the disk one after another, so the actor takes a commit ticket ([`Written`]) and the
//! caller waits for it ([`Reply::committed`]), many writes of one record sharing a flush.
//! The promise is unchanged: nothing is acknowledged before it is on disk, and a failed
//! flush answers its error.

use crate::domain::ServiceError;
use crate::store::{Commit, Store};

/// What an actor sends back: its result, and the commit it waits for if it wrote.
pub struct Reply<T> {
    result: Result<T, ServiceError>,
    commit: Option<Commit>,
}

impl<T> Reply<T> {
    /// A failure that wrote nothing.
    pub fn failed(error: ServiceError) -> Self {
        Self {
            result: Err(error),
            commit: None,
        }
    }

    /// The result, once the writes it answers for are on disk (the flush's error if not).
    pub async fn committed(self) -> Result<T, ServiceError> {
        if let Some(commit) = self.commit {
            commit.wait().await?;
        }
        self.result
    }
}

/// The writes of the message an actor is handling: whether it wrote, and the ticket of the
/// commit that covers them.
#[derive(Default)]
pub struct Written(Option<Commit>);

impl Written {
    /// Notes that writes were applied: the reply waits for their commit.
    pub fn wrote(&mut self, store: &Store) {
        self.0 = Some(store.commit());
    }

    /// The commit of the writes so far, if any.
    pub fn commit(&self) -> Option<Commit> {
        self.0.clone()
    }

    /// The reply for `result`.
    pub fn reply<T>(self, result: Result<T, ServiceError>) -> Reply<T> {
        Reply {
            result,
            commit: self.0,
        }
    }

    /// A reply for `result`, one of several the writes so far answer (a batch's).
    pub fn shared_reply<T>(&self, result: Result<T, ServiceError>) -> Reply<T> {
        Reply {
            result,
            commit: self.commit(),
        }
    }
}
