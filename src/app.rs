//! Wires a running proxy together: topology, routing state, the session context, the admin
//! API and every background task. `switchyard serve` and the tests start exactly this.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState};
use crate::config::Validated;
use crate::cutover::{self, Controller, Databases, Routing, StoreError};
use crate::lifecycle::Lifecycle;
use crate::reload::{self, LogLevelHook, ReloadHandle, Reloader, Requests};
use crate::session::Context;
use crate::shutdown::Shutdown;
use crate::tls::{self, TlsError};
use crate::topology::{MonitorError, Topology, TopologyHandle};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("backend TLS settings")]
    BackendTls(#[source] TlsError),
    #[error("client TLS certificate")]
    ClientTls(#[source] TlsError),
    #[error("routing state")]
    Routing(#[source] StoreError),
    #[error("discovery and health checks")]
    Monitors(#[source] MonitorError),
}

/// The shared parts of one proxy process.
pub struct App {
    pub config: Arc<Validated>,
    pub topology: Arc<TopologyHandle>,
    pub routing: Arc<Routing>,
    pub cutover: Arc<Controller>,
    pub ctx: Arc<Context>,
    /// Serving or draining, and the open sessions.
    pub lifecycle: Arc<Lifecycle>,
    /// Asks for a reload (SIGHUP); the admin API holds one too.
    pub reload: ReloadHandle,
    reload_requests: Mutex<Option<Requests>>,
    /// The file a reload reads; `None` (tests) makes a reload fail with a clear message.
    pub config_file: Option<PathBuf>,
    /// Applies `server.log_level` after a reload.
    pub log_level: Option<LogLevelHook>,
}

/// The sockets a proxy serves, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub clients: TcpListener,
    pub admin: Option<TcpListener>,
}

impl App {
    /// Builds the parts. The routing state comes from the config, the state file, and the
    /// newest cutover record in the clusters' databases (read here, each cluster bounded by
    /// `connect_timeout`), whichever is newest.
    pub async fn start(config: Arc<Validated>) -> Result<App, StartError> {
        // Before anything records a metric (the cutover controller sets its phase gauge).
        crate::metrics::install();
        let topology = Arc::new(TopologyHandle::new(
            Topology::from_config(&config).map_err(StartError::BackendTls)?,
        ));
        let server_tls = match (&config.raw.server.tls_cert, &config.raw.server.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls::server_config(cert, key).map_err(StartError::ClientTls)?)
            }
            _ => None,
        };
        let databases = Arc::new(Databases::new(Arc::clone(&config), Arc::clone(&topology)));
        let record = databases
            .newest_record(config.raw.server.connect_timeout)
            .await;
        let routing =
            Arc::new(Routing::from_config(&config, record.as_ref()).map_err(StartError::Routing)?);
        let ctx = Arc::new(Context::new(
            Arc::clone(&config),
            Arc::clone(&topology),
            Arc::clone(&routing),
            server_tls,
        ));
        let cutover = Arc::new(Controller::new(
            Arc::clone(&config),
            Arc::clone(&topology),
            Arc::clone(&routing),
        ));
        cutover.set_warm(Arc::clone(&ctx) as Arc<dyn crate::cutover::Warm>);
        let (reload, requests) = reload::channel();
        Ok(App {
            config,
            topology,
            routing,
            cutover,
            ctx,
            lifecycle: Arc::default(),
            reload,
            reload_requests: Mutex::new(Some(requests)),
            config_file: None,
            log_level: None,
        })
    }

    /// Spawns the accept loop, the admin API (when it has a listener), the pause watchdog,
    /// metrics upkeep, and the reload task with (given `monitors`) discovery and health
    /// checks. Every task ends on `shutdown`, which also starts the drain. Once only.
    pub fn spawn(
        &self,
        listeners: Listeners,
        monitors: bool,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), StartError> {
        let metrics = crate::metrics::install();
        let names: Vec<&str> = self
            .config
            .raw
            .clusters
            .keys()
            .map(String::as_str)
            .collect();
        crate::metrics::register(&names, &reload::settings(&self.config));
        let requests = self
            .reload_requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(requests) = requests {
            let reloader = Reloader {
                file: self.config_file.clone(),
                ctx: Arc::clone(&self.ctx),
                topology: Arc::clone(&self.topology),
                log_level: self.log_level.clone(),
                monitors,
            };
            let task = reloader
                .start(requests, shutdown.clone())
                .map_err(StartError::Monitors)?;
            tasks.spawn(task);
        }
        let life = Arc::clone(&self.lifecycle);
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            stop.recv().await;
            life.drain();
        });
        tasks.spawn(crate::server::run(
            listeners.clients,
            Arc::clone(&self.ctx),
            Arc::clone(&self.lifecycle),
        ));
        tasks.spawn(cutover::pause_watchdog(
            Arc::clone(&self.routing),
            shutdown.clone(),
        ));
        if let Some(fleet) = self.cutover.fleet() {
            if let Some(addr) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
                fleet.set_admin(addr);
            }
            tasks.spawn(Arc::clone(fleet).run(Arc::clone(&self.routing), shutdown.clone()));
        }
        if let Some(listener) = listeners.admin {
            let state = Arc::new(AdminState {
                metrics: metrics.clone(),
                topology: Arc::clone(&self.topology),
                routing: Arc::clone(&self.routing),
                cutover: Arc::clone(&self.cutover),
                token: self.config.admin_token.clone(),
                lifecycle: Arc::clone(&self.lifecycle),
                reload: Some(self.reload.clone()),
                sessions: Some(Arc::clone(&self.ctx)),
            });
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = admin::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
        tasks.spawn(metrics_upkeep(metrics, shutdown.clone()));
        Ok(())
    }
}

/// Drains the histogram buckets regularly, as metrics-exporter-prometheus requires.
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
