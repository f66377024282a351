//! Assembling a node from its configuration, and the daemon's life cycle (how it stops:
//! [`stop`]).

mod stop;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::actors::{
    ActorSettings, DeliveryContext, DeliverySupervisor, Directory, NodeState, Records,
};
use crate::api::Api;
use crate::auth_throttle::AuthThrottle;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::crypto::AuthCache;
use crate::delivery::metrics::DeliveryMetrics;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::{EndpointClient, EndpointPolicy};
use crate::domain::{NewAccount, ServiceError};
use crate::http::metrics::Metrics;
use crate::http::Limits;
use crate::replication::Replication;
use crate::service::Service;
use crate::store::{StorageState, Store, StoreError};

/// Usernames remembered by the verification cache at most.
const AUTH_CACHE_CAPACITY: usize = 100_000;

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The outbound HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// A start-up task failed.
    #[error("{0}")]
    Service(#[from] ServiceError),
    /// Installing a signal handler failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Opens the storage configured in `config`.
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open(
        &config.storage.path,
        config.storage.cache_capacity_bytes,
        config.cluster.shards,
    )
}

/// Builds the node's shared context and its service over an open store.
pub fn build_service(config: &Config, store: Store) -> Result<Service, DaemonError> {
    let policy = EndpointPolicy::new(
        config.security.endpoint_deny_cidrs.clone(),
        config.security.endpoint_allow_cidrs.clone(),
    );
    let ctx = NodeState {
        records: Records::new(store.clone(), config.cluster.is_replicated()),
        store,
        // Up to 4 idle connections per attempt in flight: enough to keep one to each
        // endpoint of a fan-out's busy workers, bounded whatever the number of endpoints.
        client: EndpointClient::new(
            &config.http_client,
            policy,
            config.delivery.max_in_flight.saturating_mul(4),
            config.delivery.response_capture_bytes,
        )?,
        cluster: Arc::new(Cluster::new(&config.cluster)),
        auth_cache: AuthCache::new(
            Duration::from_secs_f64(config.security.auth_cache_ttl_secs),
            AUTH_CACHE_CAPACITY,
        ),
        auth_throttle: AuthThrottle::new(config.security.auth_failures_per_minute),
        settings: ActorSettings {
            pbkdf2_iterations: config.security.pbkdf2_iterations,
            key_resets_per_hour: config.security.key_resets_per_hour,
            idle_stop: Duration::from_secs_f64(config.actors.idle_stop_secs),
            secret_rotation_grace: Duration::from_secs_f64(
                config.security.secret_rotation_grace_secs,
            ),
        },
        accounts: Directory::new("account"),
        registrations: Directory::new("registration"),
        subscribes: Default::default(),
        delivery: DeliveryContext {
            supervisor: OnceLock::new(),
            retry: RetryPolicy::new(
                &config.delivery.retry_delays_secs,
                config.delivery.retry_jitter,
                config.delivery.max_retry_after_secs,
            ),
            max_failed_count: config.delivery.max_failed_count,
            max_in_flight: config.delivery.max_in_flight,
            max_in_flight_per_endpoint: config.delivery.max_in_flight_per_endpoint,
            breaker_failures: config.delivery.breaker_failures,
            breaker_cooldown: Duration::from_secs_f64(config.delivery.breaker_cooldown_secs),
            commit_window: config.delivery.commit_window,
            attempt_timeout: Duration::from_secs_f64(config.http_client.timeout_secs),
            retention: Duration::from_secs_f64(config.delivery.log_retention_hours * 3600.0),
            sweep_interval: Duration::from_secs_f64(config.delivery.sweep_interval_secs),
            metrics: DeliveryMetrics::default(),
            bodies: Mutex::default(),
            handoff_wake: tokio::sync::Notify::new(),
            unattempted: std::sync::atomic::AtomicI64::new(0),
            drained: tokio::sync::Notify::new(),
            fanout_steps: Default::default(),
            replicated_fanouts: Default::default(),
            accepting: Default::default(),
            releases: Default::default(),
            resume_epochs: Default::default(),
        },
    };
    Ok(Service::new(Arc::new(ctx)))
}

/// Prints the admin keys on stdout, the one time they exist in plaintext.
pub fn print_admin_keys(admin: &NewAccount) {
    println!("Admin account created. Record these keys now: they are never shown again.");
    println!("admin api_key: {}", admin.api_key);
    println!("admin secret_key: {}", admin.account.secret_key);
}

/// Bootstraps the admin account of a replicated cluster, once its metadata group has a
/// majority.
async fn bootstrap_replicated_admin(service: Service) {
    match service.bootstrap_admin().await {
        Ok(Some(admin)) => print_admin_keys(&admin),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "bootstrapping the admin account failed"),
    }
}

/// How long a stopping node tries to hand its groups' leads over, in election timeouts.
const HANDOVER_TIMEOUTS: u64 = 2;

/// Runs a node until SIGTERM/SIGINT: storage, admin bootstrap, HTTP server, clean stop.
///
/// Returns only after a clean stop (storage flushed). A failed storage, a final flush that
/// fails or does not finish in time, and a stop that overruns its deadline end the process
/// from inside (see [`stop`]).
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let store = open_store(&config)?;
    stop::watch_storage(&store, config.flush_stall())?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.http.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.http.listen,
        source,
    })?;
    let service = build_service(&config, store.clone())?;
    // Replicated, the group leaders finish them (`Service::attach_replication`).
    if !config.cluster.is_replicated() {
        service.context().resume_cascades().await?;
    }
    let supervisor = DeliverySupervisor::start(service.context().clone())
        .await
        .map_err(|e| ServiceError::Internal(format!("starting the delivery engine: {e}")))?;
    // Replicated, the group leaders resume them (`Service::attach_replication`).
    if !config.cluster.is_replicated() {
        service.context().resume_fanouts().await?;
    }
    service
        .context()
        .cluster
        .start()
        .await
        .map_err(ServiceError::Internal)?;
    tokio::spawn(crate::actors::run_peer_handoffs(service.context().clone()));
    if config.cluster.is_replicated() {
        tokio::spawn(crate::actors::run_handoff(service.context().clone(), None));
    }
    let mut replicated = None;
    if config.cluster.is_replicated() {
        let replication = Replication::start(
            &config.cluster,
            service.context().cluster.clone(),
            store.clone(),
        )
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        replicated = Some(replication.clone());
        service.attach_replication(replication);
        // The metadata group needs a majority of the members, which may still be starting:
        // the API serves meanwhile. A joining node's cluster has its admin already.
        if !config.cluster.join {
            tokio::spawn(bootstrap_replicated_admin(service.clone()));
        }
    } else if let Some(admin) = service.bootstrap_admin().await? {
        print_admin_keys(&admin);
    }
    let handover = Duration::from_millis(config.cluster.election_timeout_ms * HANDOVER_TIMEOUTS);
    let before_drain = match replicated {
        Some(_) => stop::ENGINE_STOP + handover,
        None => Duration::ZERO,
    };
    let signalled = stop::stop_signal(config.shutdown_grace() + before_drain)?;
    let engine = supervisor.clone();
    let stop = async move {
        signalled.await;
        if let Some(replication) = replicated {
            stop::hand_over(&replication, &engine, handover).await;
        }
    };
    let cluster = service.context().cluster.clone();
    let metrics = Arc::new(Metrics::default());
    let api = Arc::new(Api {
        service,
        metrics: metrics.clone(),
        max_event_data: config.security.max_event_data_bytes,
        node_id: config.cluster.node_id.clone(),
        routes: crate::api::table(),
    });
    tracing::info!(%addr, node = %config.cluster.node_id, "webhookd listening");
    println!("listening on http://{addr}");
    let limits = Limits {
        max_connections: config.http.max_connections,
        max_connections_per_ip: config.http.max_connections_per_ip,
        header_read_timeout: Duration::from_secs_f64(config.http.header_read_timeout_secs),
        request_timeout: Duration::from_secs_f64(config.http.request_timeout_secs),
        keepalive_idle: Duration::from_secs_f64(config.http.keepalive_idle_secs),
        max_header_bytes: config.http.max_header_bytes,
        max_headers: config.http.max_headers,
        max_body: config.http.max_body_bytes,
    };
    crate::http::serve(
        listener,
        api,
        metrics,
        limits,
        stop,
        config.shutdown_grace(),
    )
    .await;
    let tail_end = Instant::now() + stop::STOP_TAIL;
    if let StorageState::Failed(reason) = store.state() {
        stop::exit_storage_failed(&reason);
    }
    // Replicated, the engine stopped before the leads were handed over; what peers asked
    // of this node is answered before it exits.
    if config.cluster.is_replicated() {
        stop::answer_peers(&cluster).await;
    } else {
        stop::stop_engine(&supervisor).await;
    }
    let left = tail_end.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, store.flush()).await {
        Ok(Ok(())) => {
            tracing::info!("storage flushed, bye");
            Ok(())
        }
        Ok(Err(e)) => stop::exit_storage_failed(&e.to_string()),
        Err(_) => stop::exit_storage_failed(&format!(
            "the final flush did not finish within {:.1} s",
            left.as_secs_f64()
        )),
    }
}
