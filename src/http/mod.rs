//! The HTTP front end: the hyper server, route matching, request guards and the mapping
//! of every error to its response. It knows no route: the API hands it a [`Handler`].

mod connection;
pub mod error;
pub mod metrics;
pub mod request;
pub mod response;
pub mod router;
mod server;

pub use error::ApiError;
pub use server::{serve, Handler, Limits};
