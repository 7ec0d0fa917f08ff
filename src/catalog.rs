//! The function catalog cache: whether a function a read calls, which the classifier does
//! not know, only reads (PostgreSQL `IMMUTABLE`/`STABLE`; MySQL `NO SQL`/`READS SQL DATA`),
//! so that `SELECT my_func()` runs on a replica only when `my_func` cannot write.
//!
//! One snapshot of every function name per (cluster, database, backend user), loaded in
//! the background from the cluster's writer with the session's backend login (the same
//! account and database its queries run as, so it sees the functions they can call). The
//! data path never waits for it: a read calling a function the cache cannot judge yet goes
//! to the writer at once and starts the load; later calls route by the snapshot. A snapshot
//! is dropped when DDL passes through the proxy (after the session's transaction ends, so
//! the new definition is visible) and reloaded after [`REFRESH_AFTER`] in any case, which
//! bounds how long a function changed by another path is judged by its old definition.
//!
//! Layering: above `sql` (function ids), `topology` (instances, control-plane connections)
//! and `config`; below `session`, whose two protocols call [`SessionFunctions::resolve`]
//! once per statement. The router stays pure: it sees the resolved statement only.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use mysql_async::prelude::Queryable;

use crate::config::{BackendTlsMode, Protocol, Validated};
use crate::shutdown::Shutdown;
use crate::sql::{Class, FunctionId, Statement};
use crate::topology::Cluster;
use crate::topology::probe::{self, MonitorLogin, MonitorTls, ProbeError, Target};

/// A snapshot older than this is reloaded (in the background; it is used meanwhile).
pub const REFRESH_AFTER: Duration = Duration::from_secs(60);
/// After a failed load, the next one waits this long (calls go to the writer meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("function catalog of database {database:?} on cluster {cluster:?}")]
    Load {
        cluster: String,
        database: String,
        #[source]
        source: ProbeError,
    },
}

/// Every cached catalog of the process, shared by all sessions.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
}

/// Whose functions: a cluster's database as one backend user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    cluster: String,
    database: String,
    user: String,
}

/// The cache of one key.
#[derive(Debug)]
struct Entry {
    key: Key,
    snapshot: ArcSwapOption<Snapshot>,
    loading: AtomicBool,
    /// Bumped by each invalidation: a load begun before it does not install its answer.
    generation: AtomicU64,
    failed_at: Mutex<Option<Instant>>,
}

/// Every function name of one database and whether all its definitions only read.
#[derive(Debug)]
struct Snapshot {
    reads: HashMap<FunctionId, bool, BuildHasherDefault<IdHasher>>,
    loaded: Instant,
}

/// Function ids are hashes already: hashing them again would be wasted work.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What the cache says of the calls of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Every call only reads (or names no function at all).
    Reads,
    /// Some call may write.
    Writes,
    /// Nothing known yet.
    Unknown,
}

impl Snapshot {
    fn judge(&self, stmt: &Statement) -> Answer {
        if stmt.functions.overflow {
            return Answer::Writes;
        }
        // A name with no function at all is no call (an alias, a CTE's column list).
        let writes = stmt
            .functions
            .calls()
            .iter()
            .any(|id| self.reads.get(id) == Some(&false));
        if writes {
            Answer::Writes
        } else {
            Answer::Reads
        }
    }

    fn from_rows(rows: impl IntoIterator<Item = (Vec<u8>, bool)>, loaded: Instant) -> Snapshot {
        let mut reads: HashMap<FunctionId, bool, BuildHasherDefault<IdHasher>> = HashMap::default();
        for (name, only_reads) in rows {
            *reads.entry(FunctionId::of(&name)).or_insert(true) &= only_reads;
        }
        Snapshot { reads, loaded }
    }
}

impl Entry {
    fn new(key: Key) -> Entry {
        Entry {
            key,
            snapshot: ArcSwapOption::empty(),
            loading: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            failed_at: Mutex::new(None),
        }
    }

    /// The cached answer, and whether a load should start now.
    fn answer(&self, stmt: &Statement, now: Instant) -> (Answer, bool) {
        let snapshot = self.snapshot.load();
        let (answer, stale) = match snapshot.as_deref() {
            Some(s) => (s.judge(stmt), now.duration_since(s.loaded) >= REFRESH_AFTER),
            None => (Answer::Unknown, true),
        };
        (answer, stale && self.may_load(now))
    }

    fn may_load(&self, now: Instant) -> bool {
        if self.loading.load(Ordering::Acquire) {
            return false;
        }
        let failed = self.failed_at.lock().map(|f| *f).unwrap_or(None);
        failed.is_none_or(|at| now.duration_since(at) >= RETRY_AFTER)
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.snapshot.store(None);
    }

    fn set_failed(&self, at: Option<Instant>) {
        if let Ok(mut failed) = self.failed_at.lock() {
            *failed = at;
        }
    }
}

impl Catalog {
    /// Installs `rows` (function name, whether that definition only reads) as the loaded
    /// catalog of `database` on `cluster` as `user` sees it, as a load from the writer
    /// would: for benchmarks and tests of the cached path.
    pub fn install(
        &self,
        cluster: &str,
        database: &str,
        user: &str,
        rows: impl IntoIterator<Item = (Vec<u8>, bool)>,
    ) -> CachedFunctions {
        let entry = self.entry(&Key {
            cluster: cluster.to_owned(),
            database: database.to_owned(),
            user: user.to_owned(),
        });
        let snapshot = Snapshot::from_rows(rows, Instant::now());
        entry.snapshot.store(Some(Arc::new(snapshot)));
        CachedFunctions(entry)
    }

    fn entry(&self, key: &Key) -> Arc<Entry> {
        // A poisoned lock only means another session panicked mid-insert: the map is intact.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get(key) {
            return Arc::clone(entry);
        }
        let entry = Arc::new(Entry::new(key.clone()));
        entries.insert(key.clone(), Arc::clone(&entry));
        entry
    }
}

/// One key's cache, as [`Catalog::install`] returns it.
#[derive(Debug, Clone)]
pub struct CachedFunctions(Arc<Entry>);

impl CachedFunctions {
    /// `stmt` as routing should see it by this cache alone, starting no load: what
    /// [`SessionFunctions::resolve`] does when the cache has the answer.
    pub fn resolve(&self, stmt: &Statement) -> Statement {
        if stmt.class != Class::Read || stmt.functions.is_empty() {
            return *stmt;
        }
        let (answer, _) = self.0.answer(stmt, Instant::now());
        routed_as(stmt, answer)
    }
}

/// `stmt` with the cache's answer applied: a read only when every call reads.
fn routed_as(stmt: &Statement, answer: Answer) -> Statement {
    match answer {
        Answer::Reads => *stmt,
        Answer::Writes | Answer::Unknown => Statement {
            class: Class::Write,
            ..*stmt
        },
    }
}

/// How a session reaches its catalog: its backend login, and the config for each cluster's
/// TLS settings.
#[derive(Debug, Clone)]
pub struct Login {
    pub config: Arc<Validated>,
    pub user: String,
    pub password: Option<String>,
    /// The database the session's queries run in (MySQL: its login database, if any; the
    /// lookup covers every schema the account can see).
    pub database: Option<String>,
}

impl Login {
    /// The control-plane login for `cluster`, with its TLS settings.
    fn monitor(&self, cluster: &Cluster) -> MonitorLogin {
        let ca_file = self
            .config
            .raw
            .clusters
            .get(&cluster.name)
            .and_then(|c| c.ca_file.clone());
        MonitorLogin {
            user: self.user.clone(),
            password: self.password.clone(),
            database: self.database.clone(),
            tls: cluster
                .tls
                .clone()
                .filter(|_| cluster.tls_mode != BackendTlsMode::Disable)
                .map(|config| MonitorTls {
                    mode: cluster.tls_mode,
                    ca_file,
                    config,
                }),
        }
    }
}

/// One session's view of the cache: the entry of its current cluster, database and backend
/// user, and whether it ran DDL that the cache must forget once its transaction ends.
#[derive(Debug)]
pub struct SessionFunctions {
    catalog: Arc<Catalog>,
    login: Login,
    entry: Option<Arc<Entry>>,
    ran_ddl: bool,
    shutdown: Shutdown,
}

impl SessionFunctions {
    pub fn new(catalog: Arc<Catalog>, login: Login, shutdown: Shutdown) -> SessionFunctions {
        SessionFunctions {
            catalog,
            login,
            entry: None,
            ran_ddl: false,
            shutdown,
        }
    }

    fn entry(&mut self, cluster: &str) -> &Arc<Entry> {
        let current = self.entry.take().filter(|e| e.key.cluster == cluster);
        self.entry.insert(current.unwrap_or_else(|| {
            self.catalog.entry(&Key {
                cluster: cluster.to_owned(),
                database: self.login.database.clone().unwrap_or_default(),
                user: self.login.user.clone(),
            })
        }))
    }

    /// `stmt` as routing should see it: a `Read` calling functions the classifier does not
    /// know stays a read only when the cached catalog of `cluster` says that each of them
    /// only reads; else it is a `Write`. When the cache has no answer, or an old one, this
    /// starts a background load from the cluster's writer.
    pub fn resolve(&mut self, stmt: &Statement, cluster: &Arc<Cluster>) -> Statement {
        if stmt.class != Class::Read || stmt.functions.is_empty() {
            return *stmt;
        }
        let now = Instant::now();
        let entry = Arc::clone(self.entry(&cluster.name));
        let (answer, load) = entry.answer(stmt, now);
        if load {
            self.start_load(entry, Arc::clone(cluster));
        }
        routed_as(stmt, answer)
    }

    /// Notes a statement that ran; once the session is outside a transaction after DDL,
    /// the cached catalog of `cluster` is dropped (the next call of an unknown function
    /// reloads it, seeing the committed definitions).
    pub fn ran(&mut self, stmt: &Statement, in_transaction: bool, cluster: &str) {
        self.ran_ddl |= stmt.functions.ddl;
        if self.ran_ddl && !in_transaction {
            self.ran_ddl = false;
            self.entry(cluster).invalidate();
        }
    }

    fn start_load(&self, entry: Arc<Entry>, cluster: Arc<Cluster>) {
        if entry.loading.swap(true, Ordering::AcqRel) {
            return;
        }
        let login = self.login.monitor(&cluster);
        let protocol = self.login.config.raw.server.protocol;
        let timeout = self.login.config.raw.server.connect_timeout;
        let mut shutdown = self.shutdown.clone();
        // Bounded by the login's timeout, and ends at shutdown.
        tokio::spawn(async move {
            let generation = entry.generation.load(Ordering::Acquire);
            let result = tokio::select! {
                _ = shutdown.recv() => None,
                r = load(protocol, &login, &cluster, timeout) => Some(r),
            };
            match result {
                Some(Ok(rows)) => {
                    let snapshot = Snapshot::from_rows(rows, Instant::now());
                    tracing::debug!(cluster = %entry.key.cluster, database = %entry.key.database,
                        functions = snapshot.reads.len(), "function catalog loaded");
                    if entry.generation.load(Ordering::Acquire) == generation {
                        entry.snapshot.store(Some(Arc::new(snapshot)));
                    }
                    entry.set_failed(None);
                }
                Some(Err(source)) => {
                    let e = CatalogError::Load {
                        cluster: entry.key.cluster.clone(),
                        database: entry.key.database.clone(),
                        source,
                    };
                    tracing::warn!(error = %crate::error::chain(&e),
                        "calls of unknown functions go to the writer until the catalog loads");
                    entry.set_failed(Some(Instant::now()));
                }
                None => {}
            }
            entry.loading.store(false, Ordering::Release);
        });
    }
}

/// PostgreSQL: every function name and whether it is `IMMUTABLE` or `STABLE` (such a
/// function cannot write: PostgreSQL refuses INSERT, UPDATE, DELETE in it).
const POSTGRES_FUNCTIONS: &str = "SELECT proname::text, provolatile <> 'v' FROM pg_catalog.pg_proc";

/// MySQL and MariaDB: every stored function the account can see, and whether it declares
/// `NO SQL` or `READS SQL DATA`. The default (`CONTAINS SQL`) and `MODIFIES SQL DATA` count
/// as writing; `DETERMINISTIC` says nothing about writing, so it is not used.
const MYSQL_FUNCTIONS: &str = "SELECT ROUTINE_NAME, \
    SQL_DATA_ACCESS IN ('NO SQL', 'READS SQL DATA') \
    FROM information_schema.ROUTINES WHERE ROUTINE_TYPE = 'FUNCTION'";

/// Every function name and whether that definition only reads, from the cluster's writer.
async fn load(
    protocol: Protocol,
    login: &MonitorLogin,
    cluster: &Cluster,
    timeout: Duration,
) -> Result<Vec<(Vec<u8>, bool)>, ProbeError> {
    let t = Target::of(&cluster.writer);
    probe::bounded(t.addr, timeout, async {
        match protocol {
            Protocol::Postgres => {
                let rows = probe::postgres_rows(t, login, POSTGRES_FUNCTIONS).await?;
                Ok(rows
                    .iter()
                    .filter_map(|row| {
                        let name: &str = row.try_get(0).ok()?;
                        let reads: bool = row.try_get(1).ok()?;
                        Some((name.as_bytes().to_vec(), reads))
                    })
                    .collect())
            }
            Protocol::Mysql => {
                let mut conn = probe::mysql(t, login).await?;
                let rows: Result<Vec<(Vec<u8>, bool)>, _> = conn.query(MYSQL_FUNCTIONS).await;
                if let Err(e) = conn.disconnect().await {
                    tracing::debug!(error = %e, "catalog connection disconnect");
                }
                rows.map_err(|source| ProbeError::Mysql {
                    addr: t.addr.to_owned(),
                    source,
                })
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, classify};

    fn snapshot(rows: &[(&str, bool)]) -> Snapshot {
        let rows = rows.iter().map(|(n, r)| (n.as_bytes().to_vec(), *r));
        Snapshot::from_rows(rows, Instant::now())
    }

    #[test]
    fn a_call_is_a_read_only_when_every_definition_of_the_name_reads() {
        let s = snapshot(&[
            ("stable_f", true),
            ("volatile_f", false),
            ("overloaded", true),
            ("overloaded", false),
            ("MixedCase", true),
        ]);
        let judge = |sql| s.judge(&classify(sql, Dialect::Postgres));
        assert_eq!(judge("SELECT stable_f(1)"), Answer::Reads);
        assert_eq!(judge("SELECT STABLE_F(1), mixedcase()"), Answer::Reads);
        assert_eq!(judge("SELECT volatile_f()"), Answer::Writes);
        assert_eq!(judge("SELECT stable_f(), volatile_f()"), Answer::Writes);
        assert_eq!(judge("SELECT overloaded('x')"), Answer::Writes);
        // No function of that name: not a call (an alias, a CTE column list).
        assert_eq!(
            judge("WITH w(a) AS (SELECT 1) SELECT * FROM w"),
            Answer::Reads
        );
        assert_eq!(
            judge("SELECT a(), b(), c(), d(), e(), f(), g()"),
            Answer::Writes
        );
    }

    #[test]
    fn entries_answer_unknown_until_loaded_and_after_invalidation() {
        let entry = Entry::new(Key {
            cluster: "old".into(),
            database: "db".into(),
            user: "app".into(),
        });
        let now = Instant::now();
        let stmt = classify("SELECT stable_f()", Dialect::Postgres);
        assert_eq!(entry.answer(&stmt, now), (Answer::Unknown, true));
        entry.loading.store(true, Ordering::Release);
        assert_eq!(
            entry.answer(&stmt, now),
            (Answer::Unknown, false),
            "one load at a time"
        );
        entry.loading.store(false, Ordering::Release);
        let loaded = Snapshot::from_rows([(b"stable_f".to_vec(), true)], now);
        entry.snapshot.store(Some(Arc::new(loaded)));
        assert_eq!(entry.answer(&stmt, now), (Answer::Reads, false));
        let later = now + REFRESH_AFTER;
        assert_eq!(
            entry.answer(&stmt, later),
            (Answer::Reads, true),
            "stale: reload, use meanwhile"
        );
        entry.invalidate();
        assert_eq!(entry.answer(&stmt, now), (Answer::Unknown, true));
        entry.set_failed(Some(now));
        assert_eq!(
            entry.answer(&stmt, now),
            (Answer::Unknown, false),
            "no retry at once"
        );
        assert_eq!(
            entry.answer(&stmt, now + RETRY_AFTER),
            (Answer::Unknown, true)
        );
    }
}
