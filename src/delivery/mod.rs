//! Everything that leaves the node towards account endpoints: the outbound HTTP client and
//! its endpoint policy, the Python-compatible JSON body and the signatures.

mod answer;
pub mod attempt;
pub mod client;
pub mod connections;
mod error;
pub mod metrics;
pub mod policy;
pub mod pyjson;
pub mod retry;
pub mod signing;

pub use answer::Answer;
pub use client::EndpointClient;
pub use error::OutboundError;
pub use policy::EndpointPolicy;
