//! The one owner of a cutover's database connections: a writer connection per cluster
//! (opened with the cluster's monitor account, kept between the steps inside the pause),
//! the errors of talking to a writer, and the state one cutover keeps about the databases
//! (the record it wrote, the epoch it saw, whether it fenced, the lock it holds). The steps
//! themselves live in `catch_up`, `record`, `lock` and `fleet`, which all use this module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{CutoverConfig, Protocol, Validated};
use crate::topology::probe::{self, MonitorLogin, ProbeError, Target};
use crate::topology::{TopologyHandle, monitor_login};

/// How long connecting to a writer for a check may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cluster {0:?} is not in the topology")]
    UnknownCluster(String),
    #[error("cluster {0:?} has no monitor_user: the cutover checks need one")]
    NoLogin(String),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{writer}: {what}")]
    Query {
        writer: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("preflight: {0}")]
    Refused(String),
    #[error("the new writer did not reach the old writer's position {mark} within {waited:?}")]
    CatchUpTimeout { mark: String, waited: Duration },
}

/// A connection to one cluster's writer.
pub(super) enum Conn {
    Postgres(tokio_postgres::Client),
    Mysql(Box<mysql_async::Conn>),
}

pub(super) struct Writer {
    pub(super) addr: String,
    pub(super) conn: Conn,
    opened: Instant,
}

/// A kept connection older than this is not reused (the server may have closed it).
const KEEP_FOR: Duration = Duration::from_secs(60);

/// The database side of a cutover from one cluster to another.
pub struct Databases {
    pub(super) config: Arc<Validated>,
    topology: Arc<TopologyHandle>,
    /// Writer connections opened by preflight and kept for the steps inside the pause, so
    /// the pause does not pay for connecting and authenticating again.
    kept: Mutex<BTreeMap<String, Writer>>,
    /// The record this cutover wrote, until it switched or aborted.
    pub(super) written: Mutex<Option<Written>>,
    /// The newest record's epoch that preflight saw; the record this cutover writes has the
    /// next one.
    pub(super) seen_epoch: Mutex<u64>,
    /// Whether this cutover fenced the old writer in the database (an abort undoes it).
    pub(super) fenced: Mutex<bool>,
    pub(super) lock: CutoverLock,
}

impl Databases {
    pub fn new(config: Arc<Validated>, topology: Arc<TopologyHandle>) -> Databases {
        Databases {
            config,
            topology,
            kept: Mutex::new(BTreeMap::new()),
            written: Mutex::new(None),
            seen_epoch: Mutex::new(0),
            fenced: Mutex::new(false),
            lock: CutoverLock::default(),
        }
    }

    pub(super) fn cutover(&self) -> Option<&CutoverConfig> {
        self.config.raw.cutover.as_ref()
    }

    pub(super) fn protocol(&self) -> Protocol {
        self.config.raw.server.protocol
    }

    fn kept_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Writer>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer connection kept for `cluster`, else a new one. Give it back with
    /// [`Databases::keep`] once the step using it succeeded; one that failed is dropped.
    pub(super) async fn writer(&self, cluster: &str) -> Result<Writer, DbError> {
        let kept = self.kept_lock().remove(cluster);
        match kept {
            Some(w) if w.opened.elapsed() < KEEP_FOR => Ok(w),
            _ => self.connect(cluster).await,
        }
    }

    pub(super) fn keep(&self, cluster: &str, writer: Writer) {
        self.kept_lock().insert(cluster.to_owned(), writer);
    }

    /// Closes the kept connections and forgets the record written: the cutover ended.
    pub(super) fn release(&self) {
        self.kept_lock().clear();
        *self.fenced.lock().unwrap_or_else(|p| p.into_inner()) = false;
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Opens a connection to `cluster`'s writer with its monitor account.
    pub(super) async fn connect(&self, cluster: &str) -> Result<Writer, DbError> {
        let c = self
            .topology
            .cluster(cluster)
            .ok_or_else(|| DbError::UnknownCluster(cluster.to_owned()))?;
        let raw = self
            .config
            .raw
            .clusters
            .get(cluster)
            .ok_or_else(|| DbError::UnknownCluster(cluster.to_owned()))?;
        let mut login: MonitorLogin = monitor_login(raw, c.tls.clone())
            .ok_or_else(|| DbError::NoLogin(cluster.to_owned()))?;
        if let Some(db) = self.cutover().and_then(|c| c.database.clone()) {
            login.database = Some(db);
        }
        let w = &c.writer;
        let target = Target::of(w);
        let conn = match self.protocol() {
            Protocol::Postgres => Conn::Postgres(
                probe::bounded(&w.addr, CONNECT_TIMEOUT, probe::postgres(target, &login)).await?,
            ),
            Protocol::Mysql => Conn::Mysql(Box::new(
                probe::bounded(&w.addr, CONNECT_TIMEOUT, probe::mysql(target, &login)).await?,
            )),
        };
        Ok(Writer {
            addr: w.addr.clone(),
            conn,
            opened: Instant::now(),
        })
    }
}

/// The record this proxy wrote during the current cutover, to erase on abort.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) cluster: String,
    pub(super) at_ms: u64,
}

/// The lock while this proxy holds it.
pub(super) struct Held {
    pub(super) holder: String,
    pub(super) lease: Duration,
    pub(super) renew: watch::Sender<Instant>,
    pub(super) release: Option<oneshot::Sender<()>>,
    pub(super) task: JoinHandle<()>,
}

#[derive(Default)]
pub(super) struct CutoverLock(Mutex<Option<Held>>);

impl CutoverLock {
    pub(super) fn slot(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Writer {
    pub(super) fn error(
        &self,
        what: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> DbError {
        DbError::Query {
            writer: self.addr.clone(),
            what: what.to_owned(),
            source: Box::new(source),
        }
    }

    /// The first column of the first row, as text ("" when there is no row or it is NULL).
    pub(super) async fn one(&mut self, sql: &str) -> Result<String, DbError> {
        match &mut self.conn {
            Conn::Postgres(c) => {
                let rows = c.simple_query(sql).await;
                let rows = rows.map_err(|e| self.error(sql, e))?;
                Ok(rows
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            Some(r.get(0).unwrap_or_default().to_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default())
            }
            Conn::Mysql(c) => {
                let row: Result<Option<Option<String>>, _> = c.query_first(sql).await;
                Ok(row
                    .map_err(|e| self.error(sql, e))?
                    .flatten()
                    .unwrap_or_default())
            }
        }
    }

    pub(super) async fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        let result = match &mut self.conn {
            Conn::Postgres(c) => c.batch_execute(sql).await.map_err(|e| e.to_string()),
            Conn::Mysql(c) => c.query_drop(sql).await.map_err(|e| e.to_string()),
        };
        result.map_err(|e| self.error(sql, std::io::Error::other(e)))
    }

    /// The first row's columns as text (empty when there is no row; NULL as "").
    pub(super) async fn row(&mut self, sql: &str) -> Result<Vec<String>, DbError> {
        Ok(self.rows(sql).await?.into_iter().next().unwrap_or_default())
    }

    /// Every row's columns as text (NULL as "").
    pub(super) async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<String>>, DbError> {
        match &mut self.conn {
            Conn::Postgres(c) => {
                let messages = c.simple_query(sql).await;
                let messages = messages.map_err(|e| self.error(sql, e))?;
                Ok(messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or_default().to_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect())
            }
            Conn::Mysql(c) => {
                use mysql_async::prelude::Queryable;
                let rows: Result<Vec<mysql_async::Row>, _> = c.query(sql).await;
                let rows = rows.map_err(|e| self.error(sql, e))?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                r.get_opt::<Option<String>, _>(i)
                                    .and_then(Result::ok)
                                    .flatten()
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }
}
