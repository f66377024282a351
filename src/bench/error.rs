//! The benchmark harness's error type.

use std::time::Duration;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A local I/O operation (bind, file write, process spawn) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An HTTP request could not be sent or its answer not read.
    #[error("{what}: {reason}")]
    Http {
        /// The request, e.g. `POST /v1/account`.
        what: String,
        /// The transport error.
        reason: String,
    },
    /// The node answered with an unexpected status.
    #[error("{what}: unexpected status {status}: {body}")]
    Status {
        /// The request, e.g. `POST /v1/account`.
        what: String,
        /// The status received.
        status: u16,
        /// The start of the answer body.
        body: String,
    },
    /// A bounded wait ran out.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Bad arguments, or an answer that does not have the expected shape.
    #[error("{0}")]
    Invalid(String),
    /// The node process under test misbehaved (exited, printed no address).
    #[error("node: {0}")]
    Node(String),
}

impl BenchError {
    /// An [`BenchError::Io`] with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type BenchResult<T> = Result<T, BenchError>;
