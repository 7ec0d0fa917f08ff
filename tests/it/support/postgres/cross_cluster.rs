//! Logical replication from one PostgreSQL cluster to another, as a migration fills a new
//! cluster from an old one: a publication on the old primary, a subscription on the new.
//!
//! What logical replication does not do, and the tests must do themselves:
//!
//! - **Schema.** It copies rows, never DDL: every table must exist on both primaries before
//!   [`PgCluster::subscribe_to`] (which looks each published table up here), and later DDL
//!   must be run on both too. [`PgCluster::execute_on_both`] does that.
//! - **Sequences.** A row copied with `id = 42` leaves the new cluster's sequence where it was,
//!   so the new primary's next `bigserial` would collide; [`PgCluster::copy_sequences`] moves
//!   each sequence up to the old one's value, as a cutover must before writes go to the new.
//!
//! The subscription connects to the old primary as the trusted superuser `postgres`: a logical
//! replication connection is matched in `pg_hba.conf` as an ordinary connection to its
//! database (the `replication` keyword there is for physical replication only), so the
//! `host all postgres 127.0.0.1/32 trust` line admits it. The new cluster's replicas stream
//! from its primary, so what the subscription applies reaches them as any write does.

use super::{APP, HOST, PgCluster, REPLICATION_TIMEOUT, connect, retry};

/// The launcher starts a subscription's worker at most once per `wal_retrieve_retry_interval`
/// (5 s by default), so an `ENABLE` soon after a start would wait that long. Set on the
/// subscribing primary only, where nothing else uses it (a standby retries its WAL sources by it).
const WORKER_RETRY_INTERVAL: &str = "100ms";

impl PgCluster {
    /// Runs `sql` (any number of statements) as [`APP`] in database `db` on `old`'s primary,
    /// then on this cluster's, creating `db` here first if it is missing: for the schema, which
    /// logical replication does not copy.
    pub async fn execute_on_both(&self, old: &PgCluster, db: &str, sql: &str) {
        self.ensure_database(db).await;
        for server in [&old.primary, &self.primary] {
            let client = connect(&server.login(APP, db))
                .await
                .unwrap_or_else(|e| panic!("connect to {} as {}: {e}", server.name, APP.user));
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("on {}, database {db}: {sql}: {e}", server.name));
        }
    }

    /// Publishes every table of database `db` on `old`'s primary (`CREATE PUBLICATION name FOR
    /// ALL TABLES`) and subscribes this cluster's primary to it (`CREATE SUBSCRIPTION name`,
    /// whose replication slot on `old` is also `name`), creating `db` here first if it is
    /// missing (owned by [`APP`]).
    ///
    /// The tables must already exist on both primaries (see the module docs). Returns once the
    /// subscription exists; [`PgCluster::wait_subscribed`] waits for the initial copy.
    pub async fn subscribe_to(&self, old: &PgCluster, db: &str, name: &str) {
        self.ensure_database(db).await;
        let publisher = old.superuser(&old.primary, db).await;
        let publish = format!("CREATE PUBLICATION \"{name}\" FOR ALL TABLES");
        publisher
            .batch_execute(&publish)
            .await
            .unwrap_or_else(|e| panic!("{publish} on the old primary: {e}"));

        let admin = self.superuser(&self.primary, "postgres").await;
        for statement in [
            format!("ALTER SYSTEM SET wal_retrieve_retry_interval = '{WORKER_RETRY_INTERVAL}'"),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement} on the new primary: {e}"));
        }
        // Not in one batch with anything else: CREATE SUBSCRIPTION refuses to run in a
        // transaction block, which a multi-statement query is. `synchronous_commit` (off by
        // default for a subscription) so that what it applies is written out at commit: else
        // it may sit in WAL buffers past `pg_current_wal_lsn()`, the write position that
        // `wait_replicated` waits for the replicas to reach.
        let subscribe = format!(
            "CREATE SUBSCRIPTION \"{name}\" CONNECTION 'host={HOST} port={port} user=postgres \
             dbname={db}' PUBLICATION \"{name}\" WITH (synchronous_commit = on)",
            port = old.primary.port,
        );
        let subscriber = self.superuser(&self.primary, db).await;
        subscriber
            .batch_execute(&subscribe)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{subscribe} on the new primary: {e}\n{}\n{}",
                    self.primary.log_tail(),
                    old.primary.log_tail()
                )
            });
    }

    /// Waits until subscription `name` (in database `db`) has copied every table's initial
    /// rows: each is in state `r` (ready) or `s` (copied; the apply worker is taking over).
    pub async fn wait_subscribed(&self, db: &str, name: &str) {
        let client = &self.superuser(&self.primary, db).await;
        let synced = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT count(*) FILTER (WHERE r.srsubstate NOT IN ('r', 's')), count(*)
                         FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                         WHERE s.subname = $1";
            let row = client
                .query_one(query, &[&name])
                .await
                .map_err(|e| e.to_string())?;
            match (row.get::<_, i64>(0), row.get::<_, i64>(1)) {
                (0, _) => Ok(()),
                (copying, all) => Err(format!("{copying} of {all} tables still copying")),
            }
        });
        if let Err(why) = synced.await {
            panic!(
                "subscription {name} did not copy its tables within {REPLICATION_TIMEOUT:?}: \
                 {why}\n{}",
                self.primary.log_tail()
            );
        }
    }

    /// Waits until subscription `name` has applied everything `old`'s primary has committed so
    /// far, and this cluster's replicas have replayed it: then every table here has every row
    /// the old primary has.
    ///
    /// Polls, on `old`, the position that the subscription's walsender (whose
    /// `application_name` is the subscription's name) reports as applied, as PostgreSQL's own
    /// tests do; so the subscription must be enabled, and its initial copy done
    /// ([`PgCluster::wait_subscribed`]: until then a table's changes are applied by its copy
    /// worker, not counted here).
    pub async fn wait_caught_up(&self, old: &PgCluster, name: &str) {
        let publisher = &old.superuser(&old.primary, "postgres").await;
        let target: String = publisher
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap_or_else(|e| panic!("read the old primary's WAL position: {e}"))
            .get(0);
        let applied = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT replay_lsn::text, replay_lsn >= $2::text::pg_lsn
                         FROM pg_stat_replication WHERE application_name = $1";
            let rows = publisher
                .query(query, &[&name, &target])
                .await
                .map_err(|e| e.to_string())?;
            let Some(row) = rows.first() else {
                return Err("no walsender for it on the old primary".to_string());
            };
            match (
                row.get::<_, Option<String>>(0),
                row.get::<_, Option<bool>>(1),
            ) {
                (_, Some(true)) => Ok(()),
                (at, _) => Err(format!(
                    "applied up to {}",
                    at.as_deref().unwrap_or("nothing")
                )),
            }
        });
        if let Err(why) = applied.await {
            panic!(
                "subscription {name} did not apply up to {target} within {REPLICATION_TIMEOUT:?}: \
                 {why}\n{}\n{}",
                self.primary.log_tail(),
                old.primary.log_tail()
            );
        }
        self.wait_replicated().await;
    }

    /// `ALTER SUBSCRIPTION name DISABLE`, then waits until its workers here have stopped and
    /// its slot on `old` is released: from then on nothing flows until
    /// [`PgCluster::enable_subscription`], and enabling it finds the slot free.
    pub async fn disable_subscription(&self, old: &PgCluster, db: &str, name: &str) {
        self.alter_subscription(db, name, "DISABLE").await;
        let subscriber = &self.superuser(&self.primary, db).await;
        let publisher = &old.superuser(&old.primary, db).await;
        let stopped = retry(REPLICATION_TIMEOUT, async || {
            let workers = "SELECT count(*) FROM pg_stat_subscription
                           WHERE subname = $1 AND pid IS NOT NULL";
            let running: i64 = subscriber
                .query_one(workers, &[&name])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            let slot = "SELECT active FROM pg_replication_slots WHERE slot_name = $1";
            let active: bool = publisher
                .query_one(slot, &[&name])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            match (running, active) {
                (0, false) => Ok(()),
                _ => Err(format!("{running} workers running, slot active: {active}")),
            }
        });
        if let Err(why) = stopped.await {
            panic!(
                "subscription {name} did not stop within {REPLICATION_TIMEOUT:?}: {why}\n{}",
                self.primary.log_tail()
            );
        }
    }

    /// `ALTER SUBSCRIPTION name ENABLE`: it resumes from where it stopped, in the background
    /// ([`PgCluster::wait_caught_up`] waits for it).
    pub async fn enable_subscription(&self, db: &str, name: &str) {
        self.alter_subscription(db, name, "ENABLE").await;
    }

    /// Sets each sequence of database `db` here to the value it has on `old`'s primary (those
    /// never used there are left alone), so that the next value drawn here is one `old` has not
    /// handed out.
    pub async fn copy_sequences(&self, old: &PgCluster, db: &str) {
        let publisher = old.superuser(&old.primary, db).await;
        let query = "SELECT format('%I.%I', schemaname, sequencename), last_value
                     FROM pg_sequences WHERE last_value IS NOT NULL";
        let sequences = publisher
            .query(query, &[])
            .await
            .unwrap_or_else(|e| panic!("read the old primary's sequences: {e}"));
        let subscriber = self.superuser(&self.primary, db).await;
        for row in sequences {
            let (sequence, value): (String, i64) = (row.get(0), row.get(1));
            subscriber
                .execute(
                    "SELECT setval($1::text::regclass, $2)",
                    &[&sequence, &value],
                )
                .await
                .unwrap_or_else(|e| panic!("setval {sequence} to {value} on the new primary: {e}"));
        }
    }

    async fn alter_subscription(&self, db: &str, name: &str, action: &str) {
        let alter = format!("ALTER SUBSCRIPTION \"{name}\" {action}");
        self.superuser(&self.primary, db)
            .await
            .batch_execute(&alter)
            .await
            .unwrap_or_else(|e| panic!("{alter} on the new primary: {e}"));
    }

    /// Creates database `name`, owned by [`APP`], unless it exists; waits for the replicas.
    async fn ensure_database(&self, name: &str) {
        let primary = self.superuser(&self.primary, "postgres").await;
        let exists = "SELECT 1 FROM pg_database WHERE datname = $1";
        let found = primary
            .query_opt(exists, &[&name])
            .await
            .unwrap_or_else(|e| panic!("look for database {name}: {e}"));
        if found.is_some() {
            return;
        }
        let create = format!("CREATE DATABASE \"{name}\" OWNER {}", APP.user);
        primary
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("{create}: {e}"));
        for replica in &self.replicas {
            self.wait_for_database(replica, name).await;
        }
    }
}

/// An old and a new cluster (a primary each), started together and shared by the tests of
/// a module; each test has its own database and subscription.
pub struct PgPair {
    pub old: PgCluster,
    pub new: PgCluster,
}

/// The cutover tests' old/new pair, started on first use.
pub fn pair() -> &'static PgPair {
    static PAIR: std::sync::OnceLock<PgPair> = std::sync::OnceLock::new();
    PAIR.get_or_init(PgPair::start)
}

impl PgPair {
    /// Starts both clusters side by side, with a replica each.
    pub fn start() -> PgPair {
        std::thread::scope(|s| {
            let old = s.spawn(|| PgCluster::start(1));
            let new = s.spawn(|| PgCluster::start(1));
            let join = |h: std::thread::ScopedJoinHandle<'_, PgCluster>| {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            };
            PgPair {
                old: join(old),
                new: join(new),
            }
        })
    }
}
