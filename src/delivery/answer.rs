//! What an endpoint answered a delivery: the facts the delivery engine acts on (the status,
//! a `Retry-After`) and the start of the body, kept in the attempt log.

use bytes::Bytes;

/// An endpoint's answer to a delivery POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, when present and visible ASCII.
    pub retry_after: Option<String>,
    /// The first bytes of the body, as many as the capture allows (possibly fewer when the
    /// body was slow to arrive).
    pub body: Bytes,
}

impl Answer {
    /// The answer with `head`'s status and `Retry-After`, and no body yet.
    pub(super) fn from_head(status: u16, headers: &hyper::HeaderMap) -> Self {
        Answer {
            status,
            retry_after: headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: Bytes::new(),
        }
    }
}

/// Appends `data` to `captured` up to `capture` bytes in all.
pub(super) fn capture_into(captured: &mut Vec<u8>, data: &[u8], capture: usize) {
    let room = capture.saturating_sub(captured.len());
    captured.extend_from_slice(&data[..data.len().min(room)]);
}
