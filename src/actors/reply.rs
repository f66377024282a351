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
//!
//! With replicated shards a reply also says whether its writes were committed through
//! their group's log. Such a commit proves that this node led the group from the start of
//! its term until the commit, so whatever the actor read first was current; a caller
//! learns this with [`noting_log_commits`].

use std::cell::Cell;
use std::future::Future;

use crate::domain::ServiceError;
use crate::store::{Commit, Store};

tokio::task_local! {
    /// Set when a reply awaited in the task rests on a commit through a group's log.
    static LOG_COMMITTED: Cell<bool>;
}

/// Runs `work`, answering its output and whether a reply it awaited rested on writes
/// committed through a group's log.
pub async fn noting_log_commits<F: Future>(work: F) -> (F::Output, bool) {
    LOG_COMMITTED
        .scope(Cell::new(false), async {
            let output = work.await;
            (output, LOG_COMMITTED.with(Cell::get))
        })
        .await
}

/// What an actor sends back: its result, the commit it waits for if it wrote, and whether
/// its writes went through a group's log.
pub struct Reply<T> {
    result: Result<T, ServiceError>,
    commit: Option<Commit>,
    logged: bool,
}

impl<T> Reply<T> {
    /// A failure that wrote nothing.
    pub fn failed(error: ServiceError) -> Self {
        Self {
            result: Err(error),
            commit: None,
            logged: false,
        }
    }

    /// The result, once the writes it answers for are on disk (the flush's error if not).
    pub async fn committed(self) -> Result<T, ServiceError> {
        if let Some(commit) = self.commit {
            commit.wait().await?;
        }
        if self.logged {
            // Outside `noting_log_commits` nobody asks.
            let _ = LOG_COMMITTED.try_with(|c| c.set(true));
        }
        self.result
    }
}

/// The writes of the message an actor is handling: the ticket of the commit that covers
/// them, and whether some were committed through a group's log.
#[derive(Default)]
pub struct Written {
    commit: Option<Commit>,
    logged: bool,
}

impl Written {
    /// Notes that writes were applied: the reply waits for their commit.
    pub fn wrote(&mut self, store: &Store) {
        self.commit = Some(store.commit());
    }

    /// Notes that writes were committed through a group's log (already durable).
    pub fn logged(&mut self) {
        self.logged = true;
    }

    /// The commit of the writes so far, if any.
    pub fn commit(&self) -> Option<Commit> {
        self.commit.clone()
    }

    /// The reply for `result`.
    pub fn reply<T>(self, result: Result<T, ServiceError>) -> Reply<T> {
        Reply {
            result,
            commit: self.commit,
            logged: self.logged,
        }
    }

    /// A reply for `result`, one of several the writes so far answer (a batch's).
    pub fn shared_reply<T>(&self, result: Result<T, ServiceError>) -> Reply<T> {
        Reply {
            result,
            commit: self.commit(),
            logged: self.logged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged_reply(result: Result<u8, ServiceError>) -> Reply<u8> {
        let mut written = Written::default();
        written.logged();
        written.reply(result)
    }

    #[tokio::test]
    async fn a_reply_resting_on_a_log_commit_is_noted() {
        let (answer, logged) = noting_log_commits(logged_reply(Ok(7)).committed()).await;
        assert_eq!(answer.ok(), Some(7));
        assert!(logged);
        let err = ServiceError::NotFound("gone".into());
        let (answer, logged) = noting_log_commits(logged_reply(Err(err)).committed()).await;
        assert!(answer.is_err());
        assert!(logged, "an error after a commit still rests on it");
    }

    #[tokio::test]
    async fn a_reply_without_a_log_commit_is_not() {
        let unlogged = Written::default().reply(Ok(1u8));
        let (_, logged) = noting_log_commits(unlogged.committed()).await;
        assert!(!logged);
        let failed = Reply::<u8>::failed(ServiceError::NotFound("none".into()));
        let (_, logged) = noting_log_commits(failed.committed()).await;
        assert!(!logged);
        // Awaited outside a scope, nothing is noted and nothing fails.
        assert_eq!(logged_reply(Ok(3)).committed().await.ok(), Some(3));
    }
}
