//! The `switchyard` command: serve, check a config, drive a running proxy, and the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod client;
mod demo;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use switchyard::app::{App, Listeners};
use switchyard::config::{self, ConfigError};
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
    fn resolve(self) -> Result<client::Admin> {
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
        Ok(client::Admin { url, token })
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
        Command::Serve { config } => {
            init_tracing();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("switchyard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
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
        client::cutover(targets, to, dry_run)
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn serve(path: PathBuf) -> Result<()> {
    let config = Arc::new(config::load(&path)?);
    let app = App::start(Arc::clone(&config)).await?;
    let listen = config.raw.server.listen;
    let listeners = Listeners {
        clients: bind(listen).await?,
        admin: match &config.raw.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        },
    };
    tracing::info!(%listen, protocol = ?config.raw.server.protocol, active = %app.routing.load().active, "listening for clients");
    if let Some(admin) = &config.raw.admin {
        tracing::info!(listen = %admin.listen, "admin API listening");
    }
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    app.spawn(listeners, true, &shutdown, &mut tasks)?;

    wait_for_signal().await;
    tracing::info!("shutting down");
    trigger.trigger();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
