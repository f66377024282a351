//! Typed requests between nodes: the transport's whole vocabulary.
//!
//! A subsystem declares each of its operations as a type implementing [`Rpc`]: the
//! request's fields, the type of its answer and a unique wire name. It registers the
//! handler that serves it on the receiving side with [`Endpoints::serve`], and asks a
//! peer with [`super::Cluster::call`]. The transport never looks inside a request: it
//! carries bytes tagged with the operation's name, so `cluster/` knows no domain type.
//!
//! Frames are bincode 2 (serde mode) behind a protocol version, so a node that receives a
//! frame of another version refuses it with a clear error instead of misreading it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the frame format and of every registered operation; bumped on any
/// incompatible change so that mixed versions refuse each other instead of misreading.
pub const PROTOCOL_VERSION: u16 = 7;

/// One operation a node can ask of another.
pub trait Rpc: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the serving node answers.
    type Answer: Serialize + DeserializeOwned + Send + 'static;
    /// The operation's name on the wire; unique among the registered operations.
    const NAME: &'static str;
}

/// Declares that `$request` is the operation named `$name`, answered with `$answer`.
macro_rules! rpc {
    ($request:ty => $answer:ty, $name:literal) => {
        impl $crate::cluster::Rpc for $request {
            type Answer = $answer;
            const NAME: &'static str = $name;
        }
    };
}
pub(crate) use rpc;

/// Why a call got no answer from its handler.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum CallError {
    /// The peer is not connected, or did not answer within `cluster.rpc_timeout_ms`.
    #[error("node {0} is unavailable")]
    Unavailable(String),
    /// The peer serves no operation of that name (another version, or a bug).
    #[error("node {node} does not serve {operation}")]
    NoHandler {
        /// The asked node.
        node: String,
        /// The operation's name.
        operation: String,
    },
    /// A frame could not be decoded (corruption, or a bug).
    #[error("{0}")]
    Protocol(String),
    /// The peer answered in another protocol version: it runs an incompatible release.
    #[error(
        "node {node} speaks protocol version {version}, this node speaks {PROTOCOL_VERSION}: \
         every node of a cluster must run a release of the same protocol version"
    )]
    Version {
        /// The peer.
        node: String,
        /// Its protocol version.
        version: u16,
    },
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Sent by a node speaking another protocol version.
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// Corrupt or unknown content.
    #[error("undecodable message: {0}")]
    Decode(String),
}

/// Encodes a value with the protocol version in front.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = PROTOCOL_VERSION.to_be_bytes().to_vec();
    // Encoding plain data into a Vec cannot fail; an empty body would be refused by the
    // receiver rather than misread.
    if let Ok(body) = bincode::serde::encode_to_vec(message, bincode::config::standard()) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a value, checking its protocol version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (version, body) = bytes
        .split_at_checked(2)
        .ok_or_else(|| FrameError::Decode("short message".into()))?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// A request on the wire: the operation's name and its encoded body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// [`Rpc::NAME`].
    pub operation: String,
    /// The bincode of the request (without a version: the envelope carries it).
    #[serde(with = "crate::byte_strings::bytes")]
    pub body: Vec<u8>,
}

/// An encoded answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnswerBody(#[serde(with = "crate::byte_strings::bytes")] pub Vec<u8>);

impl Envelope {
    /// Wraps a request.
    pub fn of<R: Rpc>(request: &R) -> Result<Self, CallError> {
        let body = bincode::serde::encode_to_vec(request, bincode::config::standard())
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        Ok(Self {
            operation: R::NAME.to_string(),
            body,
        })
    }
}

/// A boxed future returning an encoded answer.
type AnswerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, CallError>> + Send>>;
/// A type-erased handler: decodes the body, serves it, encodes the answer.
type ErasedHandler = Arc<dyn Fn(Vec<u8>) -> AnswerFuture + Send + Sync>;

/// Where a handler runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// On the node's main runtime, with the work it serves.
    Work,
    /// On the transport's own runtime: only for cheap handlers that must answer under load
    /// (the heartbeat).
    Inline,
}

/// The operations this node serves to its peers, by name.
#[derive(Default)]
pub struct Endpoints {
    handlers: RwLock<HashMap<&'static str, (ErasedHandler, Placement)>>,
    work: OnceLock<Handle>,
    /// Operations served with [`Endpoints::serve`] that have not answered yet.
    in_flight: AtomicUsize,
    /// Notified when `in_flight` falls to 0.
    idle: Notify,
}

/// Counts one operation in flight while it lives.
struct Serving<'a>(&'a Endpoints);

impl<'a> Serving<'a> {
    fn start(endpoints: &'a Endpoints) -> Self {
        endpoints.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(endpoints)
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Endpoints {
    /// Runs the handlers served with [`Endpoints::serve`] on `runtime` from now on (until
    /// then, and without it, they run where the request arrives).
    pub fn run_handlers_on(&self, runtime: Handle) {
        let _ = self.work.set(runtime);
    }

    /// Waits until every operation served with [`Endpoints::serve`] has answered, for
    /// `within` at most; answers how many have not. A stopping node calls it before it
    /// exits, so that a peer gets the answer to what this node took (a write it may have
    /// committed) rather than a closed connection.
    pub async fn answered_all(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            let left = self.in_flight.load(Ordering::Acquire);
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight.load(Ordering::Acquire);
            }
        }
    }

    /// Serves `R` with `handler` (replacing an earlier handler of the same operation).
    pub fn serve<R, F, Fut>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R::Answer> + Send + 'static,
    {
        self.register(handler, Placement::Work);
    }

    /// Serves `R` with a cheap `handler` on the transport's own runtime.
    pub fn serve_inline<R, F, Fut>(&self, handler: F)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R::Answer> + Send + 'static,
    {
        self.register(handler, Placement::Inline);
    }

    fn register<R, F, Fut>(&self, handler: F, placement: Placement)
    where
        R: Rpc,
        F: Fn(R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R::Answer> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |body: Vec<u8>| {
            let handler = handler.clone();
            Box::pin(async move {
                let (request, _) =
                    bincode::serde::decode_from_slice::<R, _>(&body, bincode::config::standard())
                        .map_err(|e| CallError::Protocol(format!("{}: {e}", R::NAME)))?;
                let answer = handler(request).await;
                bincode::serde::encode_to_vec(&answer, bincode::config::standard())
                    .map_err(|e| CallError::Protocol(format!("{}: {e}", R::NAME)))
            })
        });
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.insert(R::NAME, (erased, placement));
        }
    }

    /// Serves one envelope: the encoded answer, or why there is none.
    pub async fn dispatch(&self, node: &str, envelope: Envelope) -> Result<Vec<u8>, CallError> {
        let handler = self
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(envelope.operation.as_str()).cloned());
        match handler {
            Some((handler, placement)) => {
                let _counted = (placement == Placement::Work).then(|| Serving::start(self));
                let serving = handler(envelope.body);
                match (placement, self.work.get()) {
                    (Placement::Work, Some(work)) => match work.spawn(serving).await {
                        Ok(answer) => answer,
                        // The node is stopping: its runtime cancels what still runs.
                        Err(e) if e.is_cancelled() => Err(CallError::Unavailable(node.into())),
                        Err(e) => Err(CallError::Protocol(format!("handler failed: {e}"))),
                    },
                    _ => serving.await,
                }
            }
            None => Err(CallError::NoHandler {
                node: node.to_string(),
                operation: envelope.operation,
            }),
        }
    }
}

/// Decodes the answer to `R` from what [`Endpoints::dispatch`] produced.
pub fn decode_answer<R: Rpc>(bytes: &[u8]) -> Result<R::Answer, CallError> {
    bincode::serde::decode_from_slice::<R::Answer, _>(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| CallError::Protocol(format!("answer to {}: {e}", R::NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Double(u32);

    impl Rpc for Double {
        type Answer = Result<u64, String>;
        const NAME: &'static str = "test/double";
    }

    #[tokio::test]
    async fn a_served_operation_round_trips() {
        let endpoints = Endpoints::default();
        endpoints.serve(|Double(n)| async move { Ok::<_, String>(u64::from(n) * 2) });
        let envelope: Envelope = decode(&encode(&Envelope::of(&Double(21)).unwrap())).unwrap();
        let bytes = endpoints.dispatch("n1", envelope).await.unwrap();
        assert_eq!(decode_answer::<Double>(&bytes).unwrap(), Ok(42));
    }

    #[tokio::test]
    async fn a_stopping_node_can_wait_for_the_answers_it_owes() {
        let endpoints = Arc::new(Endpoints::default());
        let (release, released) = tokio::sync::watch::channel(false);
        endpoints.serve(move |Double(n)| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, String>(u64::from(n))
            }
        });
        assert_eq!(endpoints.answered_all(Duration::from_millis(1)).await, 0);
        let serving = endpoints.clone();
        let call = tokio::spawn(async move {
            let envelope = Envelope::of(&Double(7)).unwrap();
            serving.dispatch("n1", envelope).await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while endpoints.in_flight.load(Ordering::Acquire) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never dispatched");
            tokio::task::yield_now().await;
        }
        assert_eq!(endpoints.answered_all(Duration::from_millis(20)).await, 1);
        release.send(true).unwrap();
        assert_eq!(endpoints.answered_all(Duration::from_secs(5)).await, 0);
        let bytes = call.await.unwrap().unwrap();
        assert_eq!(decode_answer::<Double>(&bytes).unwrap(), Ok(7));
    }

    #[tokio::test]
    async fn an_unknown_operation_is_refused_by_name() {
        let endpoints = Endpoints::default();
        let envelope = Envelope::of(&Double(1)).unwrap();
        let err = endpoints.dispatch("n1", envelope).await.unwrap_err();
        assert!(
            matches!(err, CallError::NoHandler { operation, .. } if operation == "test/double")
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut bytes = encode(&Envelope::of(&Double(1)).unwrap());
        bytes[1] ^= 0xff;
        assert!(matches!(
            decode::<Envelope>(&bytes),
            Err(FrameError::Version(_))
        ));
        assert!(decode::<Envelope>(&[0]).is_err());
        assert!(decode::<Envelope>(&[0, 2, 200, 200, 200]).is_err());
    }
}
