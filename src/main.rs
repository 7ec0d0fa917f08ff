//! The `switchyard` command: serve, check a config, drive a running proxy, and the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod demo;
mod operator;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use switchyard::app::{App, Listeners};
use switchyard::config::{self, ConfigError, Validated};
use switchyard::reload::LogLevelHook;
use switchyard::shutdown;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Zero-downtime database migration proxy for PostgreSQL and MySQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (TOML).
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and print every problem with its key.
    Check {
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Show the routing state and every instance of a running proxy.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hold new transactions on a cluster (the active one by default) until resumed.
    Pause {
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a running proxy re-read its config file and apply what can change live (as
    /// SIGHUP does); a config with a problem or a change that needs a restart is refused
    /// whole.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Release held transactions.
    Resume {
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a live migration on local servers, under load, with a report.
    ///
    /// Starts an old and a new cluster (writer + replica each) with replication from old to
    /// new, switchyard in front, and an application's load through it; cuts over midway
    /// through the admin API; then checks every acknowledged write on the new writer. Exit
    /// status 0 when nothing failed and nothing was lost.
    Demo {
        /// The database to migrate.
        #[arg(long, value_enum, default_value = "postgres")]
        engine: demo::Engine,
        /// How long the application runs (the cutover starts halfway), e.g. 30s or 2m.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Leave the servers and switchyard running at the end, and print how to reach them.
        #[arg(long)]
        keep: bool,
    },
    /// Refuse (on) or allow (off) writes to a cluster, e.g. the old one of a migration.
    /// Moves every client to another cluster: pause, drain, fence, catch up, switch.
    /// Reaches every live member of the proxy's [fleet]; --admin adds proxies (repeatable).
    Cutover {
        /// The cluster to make active.
        #[arg(long)]
        to: String,
        /// Run the preflight checks only.
        #[arg(long)]
        dry_run: bool,
        /// Admin URL of a proxy; repeat for each proxy (default: from --config).
        #[arg(long = "admin", env = "SWITCHYARD_ADMIN_URL", value_delimiter = ',')]
        admins: Vec<String>,
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    ReadOnly {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        cluster: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How to reach a running proxy's admin API: a URL and token, or its config file.
#[derive(clap::Args)]
struct AdminArgs {
    /// Admin API base URL, e.g. http://127.0.0.1:9187 (default: from --config, else that).
    #[arg(long, env = "SWITCHYARD_ADMIN_URL")]
    admin: Option<String>,
    /// Bearer token for state changes (default: from --config).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The proxy's config file, to read the admin address and token from.
    #[arg(short, long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn resolve(self) -> Result<operator::Admin> {
        let loaded = match &self.config {
            Some(path) => Some(config::load(path)?),
            None => None,
        };
        let from_config = loaded
            .as_ref()
            .and_then(|c| c.raw.admin.as_ref().map(|a| a.listen));
        let url = match (self.admin, from_config) {
            (Some(url), _) => url,
            (None, Some(listen)) => format!("http://{listen}"),
            (None, None) => "http://127.0.0.1:9187".to_owned(),
        };
        let token = self.token.or_else(|| loaded.and_then(|c| c.admin_token));
        Ok(operator::Admin { url, token })
    }
}

/// Runs one admin command and prints its answer; exit 1 with the error otherwise.
fn admin_command(run: impl FnOnce() -> Result<String>) -> ExitCode {
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Status { admin } => admin_command(|| admin.resolve()?.status()),
        Command::Demo {
            engine,
            duration,
            keep,
        } => demo::run(demo::Options {
            engine,
            duration,
            keep,
        }),
        Command::Pause { cluster, admin } => {
            admin_command(|| admin.resolve()?.pause(cluster.as_deref()))
        }
        Command::Reload { admin } => admin_command(|| admin.resolve()?.reload()),
        Command::Resume { cluster, admin } => {
            admin_command(|| admin.resolve()?.resume(cluster.as_deref()))
        }
        Command::Cutover {
            to,
            dry_run,
            admins,
            token,
            config,
        } => cutover(&to, dry_run, admins, token, config),
        Command::ReadOnly {
            state,
            cluster,
            admin,
        } => admin_command(|| admin.resolve()?.read_only(&cluster, state == "on")),
        Command::Serve { config: path } => {
            let config = match config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("switchyard: {}", switchyard::error::chain(&e));
                    return ExitCode::from(2);
                }
            };
            let log_level = init_tracing(&config.raw.server);
            let runtime = match runtime(config.raw.server.worker_threads) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("switchyard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(path, config, log_level)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The runtime sessions run on: `worker_threads` threads (unset: tokio's default, one per
/// CPU or `TOKIO_WORKER_THREADS`); one thread is the current-thread scheduler, with nothing
/// handed between threads.
fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

fn cutover(
    to: &str,
    dry_run: bool,
    admins: Vec<String>,
    token: Option<String>,
    config: Option<PathBuf>,
) -> ExitCode {
    let run = || -> Result<bool> {
        let targets = if admins.is_empty() {
            vec![
                AdminArgs {
                    admin: None,
                    token: token.clone(),
                    config: config.clone(),
                }
                .resolve()?,
            ]
        } else {
            admins
                .iter()
                .map(|url| {
                    AdminArgs {
                        admin: Some(url.clone()),
                        token: token.clone(),
                        config: config.clone(),
                    }
                    .resolve()
                })
                .collect::<Result<Vec<_>>>()?
        };
        operator::cutover(targets, to, dry_run)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            let readers: usize = c.raw.clusters.values().map(|c| c.readers.len()).sum();
            println!(
                "{}: ok ({} user(s), {} cluster(s), {} reader(s), active cluster {:?})",
                path.display(),
                c.users.len(),
                c.raw.clusters.len(),
                readers,
                c.raw.routing.active
            );
            let server = &c.raw.server;
            let routes = c.raw.routing.routes.iter();
            let per_route = routes.filter(|r| r.pool_mode.is_some()).count();
            println!(
                "  pools: {} mode{}, pool_size {} per instance, backend user and database, min_idle {}, checkout_timeout {}, max_prepared_statements {}, max_backend_connections {}",
                server.pool_mode.as_str(),
                match per_route {
                    0 => String::new(),
                    n => format!(" ({n} route(s) choose their own)"),
                },
                server.pool_size(server.pool_mode),
                server.min_idle,
                humantime::format_duration(server.checkout_timeout),
                server.max_prepared_statements,
                server
                    .max_backend_connections
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
            );
            if let Some(f) = &c.raw.fleet {
                println!(
                    "  fleet: {}, re-read every {}",
                    if f.register {
                        format!("members register in {}", f.table)
                    } else {
                        "no registration".to_owned()
                    },
                    humantime::format_duration(f.poll_interval)
                );
            }
            for warning in config::warnings(&c.raw) {
                println!("  warning: {warning}");
            }
            for (name, cluster) in &c.raw.clusters {
                let discovery = cluster
                    .discovery
                    .as_ref()
                    .map_or("static", |d| d.kind.as_str());
                println!(
                    "  cluster {name}: writer {}, discovery {discovery}, failover_timeout {}",
                    cluster.writer,
                    humantime::format_duration(cluster.failover_timeout)
                );
            }
            if let Some(a) = &c.auth_query {
                println!(
                    "  auth: other users looked up as {:?} on the active writer, cached {} (misses {})",
                    a.user,
                    humantime::format_duration(a.cache_ttl),
                    humantime::format_duration(a.negative_cache_ttl)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ ConfigError::Read { .. }) => {
            eprintln!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Installs the log subscriber: `server.log_format`, and `SWITCHYARD_LOG` or else
/// `server.log_level` as the filter ([`switchyard::logging::Levels`], or `EnvFilter` for
/// directives by span or field). Returns the hook a reload changes the level with (a no-op
/// while `SWITCHYARD_LOG` is set, which wins).
fn init_tracing(server: &config::ServerConfig) -> LogLevelHook {
    use switchyard::logging::Levels;
    use tracing_subscriber::{EnvFilter, reload};

    let from_env = std::env::var("SWITCHYARD_LOG").ok();
    let directives = from_env.clone().unwrap_or_else(|| server.log_level.clone());
    let fixed = from_env.is_some();
    if let Some(levels) = Levels::parse(&directives) {
        install(levels.clone(), server.log_format);
        return Arc::new(move |level: &str| if fixed { Ok(()) } else { levels.set(level) });
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    install(filter, server.log_format);
    Arc::new(move |level: &str| {
        if fixed {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Installs the global subscriber: `filter`, then the log lines in `format`.
fn install<F>(filter: F, format: config::LogFormat)
where
    F: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    // Sessions' spans are entered only for what they log (`logging::InSpan`).
    use switchyard::logging::Deferred;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        config::LogFormat::Text => Deferred(registry.with(fmt::layer().with_target(false))).init(),
        config::LogFormat::Json => Deferred(
            registry.with(
                fmt::layer()
                    .json()
                    .with_target(false)
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        )
        .init(),
    }
}

async fn serve(path: PathBuf, config: Validated, log_level: LogLevelHook) -> Result<()> {
    let config = Arc::new(config);
    let mut app = App::start(Arc::clone(&config)).await?;
    app.config_file = Some(path);
    app.log_level = Some(log_level);
    let listen = config.raw.server.listen;
    let listeners = Listeners {
        clients: bind(listen).await?,
        admin: match &config.raw.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        },
    };
    let mut signals = Signals::new()?;
    tracing::info!(%listen, protocol = ?config.raw.server.protocol, active = %app.routing.load().active, "listening for clients");
    if let Some(admin) = &config.raw.admin {
        tracing::info!(listen = %admin.listen, "admin API listening");
    }
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    app.spawn(listeners, true, &shutdown, &mut tasks)?;

    while let Signal::Reload = signals.next().await {
        tracing::info!("SIGHUP: reloading the config");
        // The reload task logs the outcome and counts it.
        let _ = app.reload.reload().await;
    }
    // Stop accepting, fail readiness, and let each session end at its next transaction
    // boundary; up to shutdown_timeout, or until a second signal.
    let timeout = app.ctx.config().raw.server.shutdown_timeout;
    tracing::info!(sessions = app.lifecycle.open_sessions(), timeout = %humantime::format_duration(timeout), "draining: no new clients; sessions close at their next transaction boundary");
    app.lifecycle.drain();
    let drained = tokio::select! {
        _ = app.lifecycle.drained() => true,
        _ = tokio::time::sleep(timeout) => {
            tracing::warn!(sessions = app.lifecycle.open_sessions(), "shutdown_timeout reached: closing the remaining sessions");
            false
        }
        _ = signals.stop() => {
            tracing::warn!(sessions = app.lifecycle.open_sessions(), "second signal: exiting now");
            return Ok(());
        }
    };
    if drained {
        tracing::info!("every session closed");
    }
    trigger.trigger();
    // Background tasks end promptly; an admin client holding a connection open does not
    // keep the process alive.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))
}

/// What a signal asks of the process.
enum Signal {
    /// SIGTERM or SIGINT: drain and stop (a second one: stop now).
    Stop,
    /// SIGHUP: reload the config.
    Reload,
}

/// The signals `serve` listens to, registered once so none is missed between waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
            hup: signal(SignalKind::hangup()).context("listen for SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }

    /// Completes at the next SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
