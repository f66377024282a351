//! The HTTP front end: the hyper server, routing, request guards and the mapping of every
//! error to its response.

mod connection;
pub mod error;
pub mod metrics;
pub mod request;
pub mod response;
pub mod router;
mod server;

pub use error::ApiError;
pub use server::{serve, App, Limits};
