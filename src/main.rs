//! The `webhookd` command line: run a node, bootstrap or reset the admin, show the config,
//! benchmark a node, show a cluster's state.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use webhookd::config::{Config, LogFormat};
use webhookd::daemon;

/// mimalloc rather than glibc's malloc: sled's page rewrites and the per-request buffers
/// of the delivery path spent about a third of the node's CPU in glibc's allocator. Built
/// without transparent huge pages (`no_thp`): with them, every touched 4 KiB page of its
/// arena brought in 2 MiB, and the node's RSS was 2-3x its heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A clustered, PyWebhooks-compatible webhooks daemon.
#[derive(Parser)]
#[command(name = "webhookd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (defaults: 127.0.0.1:8081, storage in ./data).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Wipe the storage and create a fresh admin account (PyWebhooks' --initdb).
    Init {
        /// Required: this deletes every record.
        #[arg(long)]
        reset: bool,
        /// Confirm the wipe.
        #[arg(long)]
        yes: bool,
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Offline administration (the node must be stopped).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the effective configuration and where each value comes from.
    Config {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Benchmark a running node: fan-out deliveries/s and trigger-to-delivery latency.
    Bench(webhookd::bench::cli::BenchArgs),
    /// Ask a running node about its cluster (admin keys, as for the API).
    Cluster {
        #[command(subcommand)]
        command: webhookd::cluster_cli::ClusterCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print a fresh API key for the admin account (the old one stops working).
    ResetKey {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Loads the configuration or explains why not.
fn load(path: Option<&PathBuf>) -> Result<webhookd::config::Loaded, String> {
    Config::load(path.map(PathBuf::as_path)).map_err(|e| e.to_string())
}

fn init_logging(config: &Config) {
    // While a follower is down, openraft's core logs an ERROR for every read index and its
    // replication an ERROR and a WARN for every attempt to reach it, in every group; the
    // cluster already logs the peer going down and coming back, and openraft's failures
    // that matter reach webhookd as errors of the calls, which it logs.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},ractor=warn,openraft=warn,openraft::core::raft_core=off,openraft::replication=off",
            config.log.level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in log files or journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How long the runtime waits for its blocking tasks once a node has stopped.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is fan-out steps, outcome batches, key hashing and DNS lookups
        // (flushes have their own thread). Each thread keeps its own allocator heap, so a
        // burst that grew the pool to 64 left that memory held, for no extra speed on a few
        // cores.
        .max_blocking_threads(16)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config } => {
            let loaded = load(config.as_ref())?;
            init_logging(&loaded.config);
            let runtime = runtime()?;
            let served = runtime.block_on(daemon::serve(loaded.config));
            // The storage is flushed by now: a blocking task still running (a DNS lookup, an
            // endpoint's slow reply) must not hold the exit.
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
            served.map_err(|e| e.to_string())
        }
        Command::Init { reset, yes, config } => {
            if !reset || !yes {
                return Err("init wipes every record: run `webhookd init --reset --yes`".into());
            }
            let loaded = load(config.as_ref())?;
            // Offline: this thread may block on storage (the wipe runs before the runtime).
            webhookd::store::allow_sync_calls();
            let store = daemon::open_store(&loaded.config).map_err(|e| e.to_string())?;
            store.wipe().map_err(|e| e.to_string())?;
            println!("Storage wiped.");
            if loaded.config.cluster.is_replicated() {
                // The admin exists once per cluster, through the metadata group: one made
                // here, outside Raft, would be a second one.
                println!(
                    "Shard groups are replicated: the cluster's admin account is created \
                     once, by the admin group's preferred leader when a new cluster starts \
                     (every node wiped), and a node wiped alone gets it back from its peers."
                );
                return Ok(());
            }
            runtime()?.block_on(async {
                let service =
                    daemon::build_service(&loaded.config, store).map_err(|e| e.to_string())?;
                match service.bootstrap_admin().await.map_err(|e| e.to_string())? {
                    Some(admin) => daemon::print_admin_keys(&admin),
                    None => println!(
                        "This node does not own the admin account's shard: the member that \
                         owns it creates the admin when it starts."
                    ),
                }
                println!("Complete.");
                Ok(())
            })
        }
        Command::Admin {
            command: AdminCommand::ResetKey { config },
        } => {
            let loaded = load(config.as_ref())?;
            if loaded.config.cluster.is_replicated() {
                return Err("admin reset-key would change one node's copy of the admin \
                            account, which its shard group replicates \
                            (cluster.replication_factor > 1): refused, nothing changed"
                    .into());
            }
            webhookd::store::allow_sync_calls();
            let store = daemon::open_store(&loaded.config).map_err(|e| e.to_string())?;
            let key = webhookd::service::reset_admin_key_offline(
                &store,
                loaded.config.security.pbkdf2_iterations,
            )
            .map_err(|e| e.to_string())?;
            println!("admin api_key: {key}");
            Ok(())
        }
        Command::Config { config } => {
            let loaded = load(config.as_ref())?;
            for (key, value, source) in loaded.describe() {
                println!("{key} = {value}  # {source}");
            }
            Ok(())
        }
        Command::Bench(args) => runtime()?
            .block_on(webhookd::bench::cli::run(args))
            .map_err(|e| e.to_string()),
        Command::Cluster { command } => runtime()?.block_on(webhookd::cluster_cli::run(command)),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}
