//! Global pages: every node's epoch-ordered rows merged into one order, so `start`,
//! `limit`, `next_start` and 204 behave exactly as on one node.
//!
//! Each node returns its first `start + limit` rows of the table; the merge of those holds
//! the global rows `start..start + limit`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Op, Service};
use crate::cluster::rpc;
use crate::domain::ServiceError;
use crate::replication::Replication;
use crate::store::{
    Account, Delivery, Page, PageRequest, Registration, Store, StoreError, Subscription, Triggered,
};

pub(super) fn serve(service: &Service) {
    service.serve::<LocalRows>();
}

/// Rows a global listing merges from every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// Accounts.
    Accounts,
    /// Registrations.
    Registrations,
    /// Subscriptions, optionally only those of one subscriber.
    Subscriptions(Option<Uuid>),
    /// Triggered records.
    Triggered,
    /// Deliveries of one trigger.
    Deliveries(Uuid),
}

/// Rows of one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rows {
    /// Accounts.
    Accounts(Vec<Account>),
    /// Registrations.
    Registrations(Vec<Registration>),
    /// Subscriptions.
    Subscriptions(Vec<Subscription>),
    /// Triggered records.
    Triggered(Vec<Triggered>),
    /// Deliveries.
    Deliveries(Vec<Delivery>),
}

/// The node's first `limit` rows of a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalRows {
    table: Table,
    limit: u64,
}

rpc!(LocalRows => Result<Rows, ServiceError>, "service/local_rows");

impl Op for LocalRows {
    async fn run(self, service: Service) -> Self::Answer {
        service
            .local_rows(
                self.table,
                PageRequest {
                    start: 0,
                    limit: self.limit,
                },
            )
            .await
    }
}

/// A row of a global listing: how it sorts, and how to pick it out of [`Rows`].
pub trait Listed: Sized {
    /// The global order: creation time, then id.
    fn order(&self) -> (u64, Uuid);
    /// The rows of this type, if `rows` holds them.
    fn from_rows(rows: Rows) -> Option<Vec<Self>>;
}

impl Listed for Account {
    fn order(&self) -> (u64, Uuid) {
        (self.epoch_us, self.id)
    }
    fn from_rows(rows: Rows) -> Option<Vec<Self>> {
        match rows {
            Rows::Accounts(v) => Some(v),
            _ => None,
        }
    }
}

impl Listed for Registration {
    fn order(&self) -> (u64, Uuid) {
        (self.epoch_us, self.id)
    }
    fn from_rows(rows: Rows) -> Option<Vec<Self>> {
        match rows {
            Rows::Registrations(v) => Some(v),
            _ => None,
        }
    }
}

impl Listed for Subscription {
    fn order(&self) -> (u64, Uuid) {
        (self.epoch_us, self.id)
    }
    fn from_rows(rows: Rows) -> Option<Vec<Self>> {
        match rows {
            Rows::Subscriptions(v) => Some(v),
            _ => None,
        }
    }
}

impl Listed for Triggered {
    fn order(&self) -> (u64, Uuid) {
        (self.epoch_us, self.id)
    }
    fn from_rows(rows: Rows) -> Option<Vec<Self>> {
        match rows {
            Rows::Triggered(v) => Some(v),
            _ => None,
        }
    }
}

impl Listed for Delivery {
    fn order(&self) -> (u64, Uuid) {
        (self.subscription_epoch_us, self.subscription_id)
    }
    fn from_rows(rows: Rows) -> Option<Vec<Self>> {
        match rows {
            Rows::Deliveries(v) => Some(v),
            _ => None,
        }
    }
}

impl Service {
    /// This node's page of `table` for `req`.
    async fn local_rows(&self, table: Table, req: PageRequest) -> Result<Rows, ServiceError> {
        let ctx = self.ctx.clone();
        let mine = move |a: &Uuid| ctx.delivers_to(a);
        Ok(self
            .ctx
            .store
            .run(move |s| rows(s, table, req, &mine))
            .await?)
    }

    /// The page `req` of `table` across the whole cluster (503 if a node is down).
    pub async fn list<T: Listed>(
        &self,
        table: Table,
        req: PageRequest,
    ) -> Result<Page<T>, ServiceError> {
        let wrong = || ServiceError::Internal("rows of another table".into());
        if self.ctx.cluster.peers().is_empty() {
            let rows = T::from_rows(self.local_rows(table, req).await?).ok_or_else(wrong)?;
            return Ok(Page::new(req, rows));
        }
        let limit = req.start.saturating_add(req.limit);
        let asked = LocalRows { table, limit };
        let answers = match (self.replication(), table) {
            // A delivery changes at each attempt: its group's leader, which makes them,
            // lists it, not a follower's copy that may trail it.
            (Some(replication), Table::Deliveries(_)) => {
                self.ask_up_leaders(replication, asked).await?
            }
            (Some(replication), _) => self.ask_copies(replication, asked).await?,
            (None, _) => self.ask_everywhere(asked).await?,
        };
        let mut all = Vec::new();
        for rows in answers {
            all.extend(T::from_rows(rows).ok_or_else(wrong)?);
        }
        all.sort_by_key(Listed::order);
        // Replicated, a record is on each of its group's voters: list it once.
        all.dedup_by_key(|row| row.order());
        let skip = usize::try_from(req.start).unwrap_or(usize::MAX);
        let take = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let items = all.into_iter().skip(skip).take(take).collect();
        Ok(Page::new(req, items))
    }
}

impl Service {
    /// Replicated: the rows of every node that answers, as long as together they hold a
    /// copy of every group (a group's voters all hold its records), else 503.
    async fn ask_copies(
        &self,
        replication: &Replication,
        asked: LocalRows,
    ) -> Result<Vec<Rows>, ServiceError> {
        let cluster = &self.ctx.cluster;
        let mut answered = vec![cluster.node_id().to_owned()];
        let mut answers = vec![asked.clone().run(self.clone()).await?];
        for peer in cluster.up_peers() {
            if let Ok(Ok(rows)) = cluster.call(&peer, &asked).await {
                answered.push(peer.member.id.clone());
                answers.push(rows);
            }
        }
        match replication.uncovered_group(&answered) {
            None => Ok(answers),
            Some(group) => Err(ServiceError::Unavailable {
                message: format!("No node holding shard group {group} answers, try again later"),
                retry_after_secs: 1,
            }),
        }
    }
}

/// The first rows of `table` on this node (deliveries: those to the subscribers `mine`
/// accepts).
fn rows(
    store: &Store,
    table: Table,
    req: PageRequest,
    mine: &dyn Fn(&Uuid) -> bool,
) -> Result<Rows, StoreError> {
    Ok(match table {
        Table::Accounts => Rows::Accounts(store.list_accounts(req)?.items),
        Table::Registrations => Rows::Registrations(store.list_registrations(req)?.items),
        Table::Subscriptions(None) => Rows::Subscriptions(store.list_subscriptions(req)?.items),
        Table::Subscriptions(Some(account)) => {
            Rows::Subscriptions(store.list_subscriber_subscriptions(&account, req)?.items)
        }
        Table::Triggered => Rows::Triggered(store.list_triggered(req)?.items),
        Table::Deliveries(triggered) => {
            Rows::Deliveries(store.list_deliveries(&triggered, req, mine)?.items)
        }
    })
}
