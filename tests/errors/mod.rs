//! Error paths of every route, with the guard order path id → Content-Type → authentication
//! → admin → paging → body → records.
//!
//! [`auth_matrix`] walks the gates of every route from one table; the other modules check
//! what is particular to one route (its body, its ids, its ownership rules) and the
//! cross-route behaviour ([`misc`]).

mod accounts;
mod auth_matrix;
mod create_account;
mod guards;
mod key_resets;
mod misc;
mod registrations;
mod subscriptions;
mod triggers;

/// `/v1/account/<id>`.
fn account_path(id: &str) -> String {
    format!("/v1/account/{id}")
}
