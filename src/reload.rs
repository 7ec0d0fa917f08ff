//! Reloading the config of a running proxy (SIGHUP or `POST /v1/reload`): read the file
//! again, validate it exactly as `switchyard check` does, refuse it whole when it changes a
//! key only a restart can apply, else apply it without dropping a session — users and
//! passwords and limits through the session context, readers and weights through the
//! topology, discovery and health settings by restarting those tasks, the log level
//! through a hook. One task owns the discovery and health-check tasks and applies one
//! reload at a time.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::{self, ConfigError, Problem, Validated};
use crate::session::Context;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::topology::{self, MonitorError, TopologyHandle};

/// Applies a log filter (`server.log_level`) to the running subscriber.
pub type LogLevelHook = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this proxy was started without a config file: nothing to reload")]
    NoFile,
    #[error("reload refused")]
    Load(#[source] ConfigError),
    #[error("reload refused, the running config is kept:\n{}", list(.0))]
    Fixed(Vec<Problem>),
    #[error("reload refused: discovery settings")]
    Monitors(#[source] MonitorError),
    #[error("the reload task has stopped (the proxy is shutting down)")]
    Stopped,
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a successful reload applied.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub file: PathBuf,
    pub users: usize,
    pub readers: usize,
    pub log_level: String,
}

struct Request {
    reply: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

/// Asks the reload task to reload; cheap to clone (the admin API and the SIGHUP handler
/// each hold one).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Request>);

impl ReloadHandle {
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Request { reply })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// The requests' receiving end, handed to [`Reloader::run`].
pub struct Requests(mpsc::Receiver<Request>);

pub fn channel() -> (ReloadHandle, Requests) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadHandle(tx), Requests(rx))
}

/// The reload task's state: where the config comes from and what it reconfigures.
pub struct Reloader {
    pub file: Option<PathBuf>,
    pub ctx: Arc<Context>,
    pub topology: Arc<TopologyHandle>,
    pub log_level: Option<LogLevelHook>,
    /// Whether this proxy runs discovery and health checks (tests may run without).
    pub monitors: bool,
}

/// The discovery and health-check tasks of one config, stopped together at a reload or
/// at shutdown.
struct Monitors {
    stop: Trigger,
    tasks: JoinSet<()>,
}

/// Monitor tasks built but not started, with the trigger that ends them.
struct Prepared {
    stop: Trigger,
    tasks: Vec<topology::Task>,
}

impl Prepared {
    fn start(self) -> Monitors {
        let mut tasks = JoinSet::new();
        for task in self.tasks {
            tasks.spawn(task);
        }
        Monitors {
            stop: self.stop,
            tasks,
        }
    }
}

impl Monitors {
    async fn stop(mut self) {
        self.stop.trigger();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Reloader {
    /// Builds (does not start) the discovery and health-check tasks for `config`.
    fn monitor_tasks(&self, config: &Validated) -> Result<Prepared, MonitorError> {
        let (stop, shutdown) = shutdown::channel();
        let tasks = if self.monitors {
            topology::monitors(config, &self.topology, &shutdown)?
        } else {
            Vec::new()
        };
        Ok(Prepared { stop, tasks })
    }

    /// Builds the current config's monitors, and returns the task that runs them and serves
    /// reload requests until `shutdown`.
    pub fn start(
        self,
        requests: Requests,
        shutdown: Shutdown,
    ) -> Result<impl Future<Output = ()> + Send + 'static, MonitorError> {
        let first = self.monitor_tasks(&self.ctx.config())?;
        Ok(self.run(first, requests, shutdown))
    }

    async fn run(self, first: Prepared, mut requests: Requests, mut shutdown: Shutdown) {
        let mut monitors = first.start();
        loop {
            let request = tokio::select! {
                _ = shutdown.recv() => break,
                request = requests.0.recv() => match request {
                    Some(r) => r,
                    None => break,
                },
            };
            let result = match self.prepare() {
                Ok((config, next)) => {
                    monitors.stop().await;
                    let applied = self.apply(config);
                    monitors = next.start();
                    Ok(applied)
                }
                Err(e) => Err(e),
            };
            crate::metrics::config_reload(match &result {
                Ok(_) => "ok",
                Err(_) => "refused",
            });
            match &result {
                Ok(r) => {
                    tracing::info!(file = %r.file.display(), users = r.users, readers = r.readers, "config reloaded")
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(e), "config reload refused")
                }
            }
            // The caller may have gone (a closed HTTP connection); the reload happened anyway.
            let _ = request.reply.send(result);
        }
        monitors.stop().await;
    }

    /// Everything that can fail, with nothing changed yet: read and validate the file,
    /// compare it with the running config, build the new monitors.
    fn prepare(&self) -> Result<(Validated, Prepared), ReloadError> {
        let file = self.file.as_ref().ok_or(ReloadError::NoFile)?;
        let next = config::load(file).map_err(ReloadError::Load)?;
        let fixed = config::fixed_changes(&self.ctx.config().raw, &next.raw);
        if !fixed.is_empty() {
            return Err(ReloadError::Fixed(fixed));
        }
        let monitors = self.monitor_tasks(&next).map_err(ReloadError::Monitors)?;
        Ok((next, monitors))
    }

    /// Makes `config` current everywhere; cannot fail.
    fn apply(&self, config: Validated) -> Reloaded {
        let config = Arc::new(config);
        self.topology.reconfigure(&config);
        self.ctx.reconfigure(Arc::clone(&config));
        crate::metrics::publish_settings(&settings(&config));
        let level = config.raw.server.log_level.clone();
        if let Some(hook) = &self.log_level
            && let Err(e) = hook(&level)
        {
            tracing::warn!(error = %e, "log level not changed");
        }
        let topology = self.topology.load();
        Reloaded {
            file: self.file.clone().unwrap_or_default(),
            users: config.users.len(),
            readers: topology.clusters.values().map(|c| c.readers.len()).sum(),
            log_level: level,
        }
    }
}

/// The limits of `config` that metrics publish.
pub fn settings(config: &Validated) -> crate::metrics::Settings<'_> {
    crate::metrics::Settings {
        max_client_connections: config.raw.server.max_client_connections,
        max_lag: config
            .raw
            .clusters
            .iter()
            .map(|(name, c)| (name.as_str(), c.max_lag))
            .collect(),
    }
}
