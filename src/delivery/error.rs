//! Why an outbound call failed. Its own module so that the client and the delivery
//! connections both depend on it and neither on the other.

use crate::crypto;

/// Why an outbound call failed (logged; clients only see the API's fixed messages).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL is not an absolute http(s) URL.
    #[error("invalid endpoint URL")]
    InvalidUrl,
    /// The endpoint's address is refused by the endpoint policy.
    #[error("endpoint address refused by the endpoint policy")]
    Refused,
    /// Transport failure, timeout or refused resolution, with its causes (but without the
    /// URL: its query may carry a new key).
    #[error("request failed: {0}")]
    Transport(String),
    /// The endpoint answered, but not as required.
    #[error("unexpected answer: {0}")]
    Answer(String),
    /// No randomness for the challenge.
    #[error(transparent)]
    Random(#[from] crypto::RandomError),
}

impl From<reqwest::Error> for OutboundError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return OutboundError::Transport("timed out".into());
        }
        // reqwest's own message ("error sending request") hides the cause: walk the chain.
        OutboundError::Transport(with_causes(&e.without_url()))
    }
}

/// A transport failure described by `e` and its causes.
pub(super) fn transport(e: impl std::error::Error) -> OutboundError {
    OutboundError::Transport(with_causes(&e))
}

/// `e`'s message followed by those of its causes that it does not already contain.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
