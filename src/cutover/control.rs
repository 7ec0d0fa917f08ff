//! One proxy's side of a cutover: runs the steps the driver asks for against this
//! proxy's routing state (and, on the first proxy, the databases), and keeps the progress
//! that `GET /v1/cutover` shows.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::driver::{self, Participant, Plan, Report, StepOutcome, StepRecord, StepRequest};
use super::fleet::Fleet;
use super::plan::{ALL, Phase};
use super::{ControlError, Databases, DbError, Mode, Routing};
use crate::config::{Fence, Validated};
use crate::topology::TopologyHandle;

/// Why this proxy refused or failed one step of a cutover. A routing or database error
/// keeps its own message (and its causes): the coordinator reports it as it is.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("this proxy serves cluster {serving:?}, not {from:?}")]
    ServesOther { serving: String, from: String },
    #[error("no other cluster named {0:?}")]
    NoOtherCluster(String),
    #[error("cluster {0:?} is paused")]
    Paused(String),
    #[error("{left} transactions still open on {from} after {timeout_ms} ms (drain_timeout)")]
    NotDrained {
        left: usize,
        from: String,
        timeout_ms: u64,
    },
    #[error(transparent)]
    Routing(#[from] ControlError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What `GET /v1/cutover` shows: the run in progress or the last one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub running: bool,
    pub phase: Option<Phase>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub steps: Vec<StepRecord>,
    pub report: Option<Report>,
}

/// The cutover timing settings, for a CLI that coordinates proxies.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Settings {
    pub drain_timeout_ms: u64,
    pub catch_up_timeout_ms: u64,
    pub max_pause_ms: u64,
    /// `[cutover] fence` as configured (unset: `database` in a fleet, else `proxy`).
    #[serde(default)]
    pub fence: Option<Fence>,
    /// The proxy has a `[cutover]` section: it can fence in the database and take the lock.
    #[serde(default)]
    pub database_steps: bool,
}

/// This cutover's pause on this proxy: the mode to restore on abort, and the held
/// transactions counted when it started.
struct Hold {
    cluster: String,
    restore: Mode,
    held_before: u64,
    refused_before: u64,
    paused_at: Instant,
}

/// Opens, ahead of a switch, the backend connections this proxy's sessions will take on the
/// new cluster, so that the first statements after the switch pay for no login (the
/// session layer's pools; set with [`Controller::set_warm`]).
pub trait Warm: Send + Sync {
    /// Opens them on cluster `to`; how many were opened.
    fn warm<'a>(
        &'a self,
        to: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = usize> + Send + 'a>>;
}

pub struct Controller {
    /// What opens the new cluster's connections during the check (preflight).
    warm: std::sync::OnceLock<Arc<dyn Warm>>,
    routing: Arc<Routing>,
    databases: Arc<Databases>,
    fleet: Option<Arc<Fleet>>,
    config: Arc<Validated>,
    progress: Mutex<Progress>,
    hold: Mutex<Option<Hold>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a cutover is already running")]
    Running,
    #[error("cluster {0:?} is already the active cluster")]
    AlreadyActive(String),
    #[error("no cluster named {0:?}")]
    UnknownCluster(String),
}

impl Controller {
    pub fn new(
        config: Arc<Validated>,
        topology: Arc<TopologyHandle>,
        routing: Arc<Routing>,
    ) -> Controller {
        crate::metrics::cutover_phase("idle", &phase_names());
        let databases = Arc::new(Databases::new(Arc::clone(&config), topology));
        let fleet = config
            .raw
            .fleet
            .as_ref()
            .map(|f| Arc::new(Fleet::new(f.clone(), Arc::clone(&databases))));
        Controller {
            warm: std::sync::OnceLock::new(),
            databases,
            fleet,
            routing,
            config,
            progress: Mutex::new(Progress::default()),
            hold: Mutex::new(None),
        }
    }

    /// Sets what opens the new cluster's backend connections during the check (once).
    pub fn set_warm(&self, warm: Arc<dyn Warm>) {
        if self.warm.set(warm).is_err() {
            tracing::warn!("the cutover's warm-up was set twice; keeping the first");
        }
    }

    fn progress_lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold_lock(&self) -> MutexGuard<'_, Option<Hold>> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn progress(&self) -> Progress {
        self.progress_lock().clone()
    }

    /// This proxy's view of its fleet, when `[fleet]` is configured.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    pub fn settings(&self) -> Settings {
        let c = self.config.raw.cutover.as_ref();
        let default =
            |d: Option<Duration>, fallback: u64| d.map_or(fallback, |d| d.as_millis() as u64);
        Settings {
            drain_timeout_ms: default(c.map(|c| c.drain_timeout), 2000),
            catch_up_timeout_ms: default(c.map(|c| c.catch_up_timeout), 5000),
            max_pause_ms: self.routing.max_pause().as_millis() as u64,
            fence: c.and_then(|c| c.fence),
            database_steps: c.is_some(),
        }
    }

    fn show(&self, phase: Phase) {
        self.progress_lock().phase = Some(phase);
        crate::metrics::cutover_phase(
            if phase.is_final() {
                "idle"
            } else {
                phase.as_str()
            },
            &phase_names(),
        );
    }

    /// Runs a whole cutover of this proxy to `to`, as `POST /v1/cutover` asks. The run
    /// goes on in its own task even if the caller goes away.
    pub async fn cutover(self: &Arc<Self>, to: &str, dry_run: bool) -> Result<Report, StartError> {
        let from = self.routing.load().active.clone();
        if from == to {
            return Err(StartError::AlreadyActive(to.to_owned()));
        }
        if !self.config.raw.clusters.contains_key(to) {
            return Err(StartError::UnknownCluster(to.to_owned()));
        }
        {
            let mut p = self.progress_lock();
            if p.running {
                return Err(StartError::Running);
            }
            *p = Progress {
                running: true,
                phase: Some(Phase::Preflight),
                from: Some(from.clone()),
                to: Some(to.to_owned()),
                steps: Vec::new(),
                report: None,
            };
        }
        let settings = self.settings();
        let plan = Plan {
            from,
            to: to.to_owned(),
            dry_run,
            drain_timeout: Duration::from_millis(settings.drain_timeout_ms),
            catch_up_timeout: Duration::from_millis(settings.catch_up_timeout_ms),
            max_pause: Duration::from_millis(settings.max_pause_ms),
            holder: format!(
                "POST /v1/cutover on {}",
                self.fleet.as_ref().map_or("this proxy".into(), |f| f.id())
            ),
            fence: self.config.raw.cutover.as_ref().map_or(Fence::Proxy, |c| {
                c.fence_for(self.fleet.as_ref().is_some_and(|f| f.known() > 1))
            }),
        };
        let this = Arc::clone(self);
        let run = tokio::spawn(async move {
            let local = [Local(Arc::clone(&this))];
            let report = driver::run(&local, &plan, |record, next| {
                tracing::info!(phase = record.phase.as_str(), ok = record.ok, ms = record.ms, detail = %record.detail, "cutover step");
                this.progress_lock().steps.push(record.clone());
                this.show(next);
            })
            .await;
            match report.outcome {
                Phase::DryRun => crate::metrics::cutover_ended("dry_run"),
                Phase::Failed => crate::metrics::cutover_ended("failed"),
                Phase::Aborted if report.pause_ms.is_none() => {
                    crate::metrics::cutover_ended("aborted")
                }
                _ => {}
            }
            let mut p = this.progress_lock();
            p.running = false;
            p.report = Some(report.clone());
            report
        });
        let report = run.await.expect("the cutover task does not panic");
        Ok(report)
    }

    /// Runs one step on this proxy.
    pub async fn step(&self, request: StepRequest) -> Result<StepOutcome, StepError> {
        // A step of the running cutover is its coordinator saying it is still there (a new
        // cutover's preflight is not: it must not keep a dead one's lock alive).
        if !matches!(request, StepRequest::DbPreflight { .. }) {
            self.databases.renew_lock();
        }
        match request {
            StepRequest::Check { from, to, warm } => self.check(from, to, warm).await,
            StepRequest::Pause { from } => self.pause(from).await,
            StepRequest::Drain { from, timeout_ms } => {
                self.show(Phase::Drain);
                let busy = self.routing.busy(&from);
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                match self.routing.drained(&from, deadline).await {
                    Ok(()) => Ok(outcome(format!("{busy} in flight finished"))),
                    Err(left) => Err(StepError::NotDrained {
                        left,
                        from,
                        timeout_ms,
                    }),
                }
            }
            StepRequest::Fence { from } => {
                self.show(Phase::Fence);
                self.routing.fence(&from)?;
                Ok(outcome(format!("{from} read-only at the proxy")))
            }
            StepRequest::Switch { from, to, epoch } => self.switch(from, to, epoch).await,
            StepRequest::Abort { from } => self.abort(from).await,
            StepRequest::DbPreflight {
                from,
                to,
                holder,
                lease_ms,
            } => self.db_preflight(from, to, holder, lease_ms).await,
            StepRequest::DbRelease => {
                self.databases.unlock().await;
                Ok(outcome("cutover lock given back".into()))
            }
            StepRequest::DbMark { from, fence } => self.db_mark(from, fence).await,
            StepRequest::DbCatchUp {
                from,
                to,
                mark,
                timeout_ms,
            } => self.db_catch_up(from, to, mark, timeout_ms).await,
            StepRequest::DbUnfence { from } => {
                self.databases.unfence(&from).await?;
                Ok(outcome(format!("{from} unfenced in the database")))
            }
        }
    }

    /// Check: this proxy serves `from`, `to` is another cluster, and nothing is paused.
    async fn check(&self, from: String, to: String, warm: bool) -> Result<StepOutcome, StepError> {
        let state = self.routing.load();
        if state.active != from {
            return Err(StepError::ServesOther {
                serving: state.active.clone(),
                from,
            });
        }
        if !state.modes.contains_key(&to) || to == from {
            return Err(StepError::NoOtherCluster(to));
        }
        if let Some((name, _)) = state.modes.iter().find(|(_, m)| **m == Mode::Paused) {
            return Err(StepError::Paused(name.clone()));
        }
        let Some(warming) = self.warm.get().filter(|_| warm) else {
            return Ok(outcome(format!("serving {from}")));
        };
        let opened = warming.warm(&to).await;
        Ok(outcome(format!(
            "serving {from}; {opened} backend connections opened on {to}"
        )))
    }

    /// Pause: new writer work on `from` waits; remembers what to restore on abort.
    async fn pause(&self, from: String) -> Result<StepOutcome, StepError> {
        self.show(Phase::Pause);
        let restore = self.routing.load().mode(&from);
        let held_before = self.routing.held_total();
        let refused_before = self.routing.refused_total();
        self.routing.pause(&from)?;
        *self.hold_lock() = Some(Hold {
            cluster: from.clone(),
            restore,
            held_before,
            refused_before,
            paused_at: Instant::now(),
        });
        Ok(outcome(format!("{from} paused")))
    }

    /// Switch: `to` becomes active (unless the fleet poller followed the record already); the cutover's connections and lock are given back.
    async fn switch(&self, from: String, to: String, epoch: u64) -> Result<StepOutcome, StepError> {
        self.show(Phase::Switch);
        // The fleet poller may have followed the record already.
        let state = self.routing.load();
        if !(state.active == to && state.epoch >= epoch && epoch > 0) {
            self.routing.switch(&from, &to, epoch)?;
        }
        // The record stays: the cutover is done. Its connections are not needed.
        self.databases.release();
        self.databases.unlock().await;
        let hold = self.hold_lock().take();
        if let Some(h) = &hold {
            crate::metrics::cutover_pause(h.paused_at.elapsed().as_secs_f64());
        }
        crate::metrics::cutover_ended("switched");
        let (held_before, refused_before) =
            hold.map_or((0, 0), |h| (h.held_before, h.refused_before));
        Ok(StepOutcome {
            detail: format!("{to} active"),
            held: self.routing.held_total() - held_before,
            aborted: self.routing.refused_total() - refused_before,
            ..StepOutcome::default()
        })
    }

    /// Abort: `from` goes back to the mode it had before the pause.
    async fn abort(&self, from: String) -> Result<StepOutcome, StepError> {
        self.show(Phase::Abort);
        self.databases.unlock().await;
        let hold = self.hold_lock().take();
        match hold {
            Some(h) if h.cluster == from => {
                self.routing.abort(&from, h.restore)?;
                crate::metrics::cutover_pause(h.paused_at.elapsed().as_secs_f64());
                crate::metrics::cutover_ended("aborted");
                Ok(StepOutcome {
                    detail: format!("{from} back to {}", h.restore.as_str()),
                    aborted: self.routing.refused_total() - h.refused_before,
                    ..StepOutcome::default()
                })
            }
            _ => Ok(outcome("nothing to undo".into())),
        }
    }

    /// DbPreflight: the cutover lock (with `[cutover]`), then the database checks.
    async fn db_preflight(
        &self,
        from: String,
        to: String,
        holder: Option<String>,
        lease_ms: u64,
    ) -> Result<StepOutcome, StepError> {
        let mut found = Vec::new();
        if let (Some(holder), true) = (holder, self.config.raw.cutover.is_some()) {
            let lease = Duration::from_millis(lease_ms.max(1000));
            match self.databases.lock(&to, &holder, lease).await {
                Ok(detail) => found.push(detail),
                Err(DbError::NoLogin(_)) => found.push("no cutover lock (no monitor_user)".into()),
                Err(e) => return Err(e.into()),
            }
        }
        match self.databases.preflight(&from, &to).await {
            Ok(detail) => {
                found.push(detail);
                Ok(outcome(found.join("; ")))
            }
            Err(e) => {
                self.databases.unlock().await;
                Err(e.into())
            }
        }
    }

    /// DbMark: the database fence as configured, then the old writer's last position.
    async fn db_mark(&self, from: String, fence: Option<Fence>) -> Result<StepOutcome, StepError> {
        let fence = fence.unwrap_or_else(|| {
            self.config
                .raw
                .cutover
                .as_ref()
                .map_or(Fence::Proxy, |c| c.fence_for(false))
        });
        let mark = self.databases.mark(&from, fence).await?;
        Ok(StepOutcome {
            detail: if mark.is_empty() {
                "no position to wait for".into()
            } else {
                format!("old writer at {mark}")
            },
            mark,
            ..StepOutcome::default()
        })
    }

    /// DbCatchUp: waits for the new writer to apply `mark`, then writes the record.
    async fn db_catch_up(
        &self,
        from: String,
        to: String,
        mark: String,
        timeout_ms: u64,
    ) -> Result<StepOutcome, StepError> {
        self.show(Phase::CatchUp);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let (detail, epoch) = self.databases.catch_up(&from, &to, &mark, deadline).await?;
        Ok(StepOutcome {
            detail,
            epoch,
            ..StepOutcome::default()
        })
    }
}

/// A step's outcome that only says what was done.
fn outcome(detail: String) -> StepOutcome {
    StepOutcome {
        detail,
        ..StepOutcome::default()
    }
}

fn phase_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALL
        .iter()
        .filter(|p| !p.is_final())
        .map(|p| p.as_str())
        .collect();
    names.push("idle");
    names
}

/// This proxy as a participant of a cutover it drives itself.
struct Local(Arc<Controller>);

impl Participant for Local {
    fn name(&self) -> String {
        "this proxy".into()
    }

    type Error = StepError;

    async fn step(&self, request: StepRequest) -> Result<StepOutcome, StepError> {
        self.0.step(request).await
    }
}
