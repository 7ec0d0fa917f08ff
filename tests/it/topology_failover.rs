//! Writer failover within a cluster, under load, for both engines. A primary on 127.0.0.1
//! and a replica on 127.0.0.2, on one port as Aurora's instances are, with synchronous
//! replication (PostgreSQL `synchronous_standby_names`, MariaDB semi-sync `AFTER_SYNC`): as
//! with Aurora's shared storage, every acknowledged commit is on the replica. A table with
//! Aurora's topology columns names the writer. Writes (ledgered) and reads run through the
//! proxy from several sessions the whole time; the primary is killed with SIGKILL, the
//! replica promoted, and the table updated on it. Then: writes resume on the new writer,
//! every acknowledged write is there, the only errors clients saw are the documented
//! failover errors (for work in flight, or a transaction open on the dead writer), and a
//! session that was idle all along goes on with no error.
//!
//! Each test has its own cluster (it kills a server).

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::TxOpts;
use mysql_async::prelude::Queryable;
use tokio::task::JoinSet;

use support::ledger::Ledger;
use support::mariadb::MariaCluster;
use support::postgres::PgCluster;
use support::proxy::{Proxy, config_header};
use support::topology::status;

const HOSTS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
/// What the README documents a failover answers with. PostgreSQL: 08007 (the writer died
/// while the statement ran: outcome unknown), 40001 (the transaction was rolled back),
/// 57P03 (no writer within failover_timeout). MySQL: 1053, 1213, 1927, the same three.
const POSTGRES_FAILOVER_CODES: [&str; 4] = ["08007", "40001", "25P02", "57P03"];
const MYSQL_FAILOVER_CODES: [u16; 3] = [1053, 1213, 1927];
/// A statement with no answer for this long hung (failover_timeout is 30 s).
const HANG: Duration = Duration::from_secs(60);
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
const WRITERS: usize = 4;
const READERS: usize = 2;

/// The proxy's config: cluster `main` with `aurora` discovery by `query` (on a table with
/// Aurora's columns), fast health checks, and `monitor` (the monitor account's keys).
fn config(protocol: &str, port: u16, monitor: &str, query: &str) -> String {
    let header = config_header(protocol);
    format!(
        r#"{header}
[clusters.main]
writer = "{}:{port}"
{monitor}
health_interval = "100ms"
fail_after = 2
recover_after = 1
failover_timeout = "30s"

[clusters.main.discovery]
kind = "aurora"
query = "{query}"
instance_pattern = "127.0.0.?:{port}"
interval = "100ms"
drain_after = 2

[routing]
active = "main"
"#,
        HOSTS[0]
    )
}

/// One client session of the load.
enum Worker {
    Postgres {
        client: tokio_postgres::Client,
        writes: bool,
    },
    Mysql {
        conn: mysql_async::Conn,
        writes: bool,
    },
}

/// Why a piece of work failed.
enum Failure {
    /// A documented failover error, by its code.
    Failover(String),
    Other(String),
}

fn postgres_failure(e: tokio_postgres::Error) -> Failure {
    match e.code().map(|c| c.code()) {
        Some(code) if POSTGRES_FAILOVER_CODES.contains(&code) => Failure::Failover(code.into()),
        _ => Failure::Other(match e.as_db_error() {
            Some(db) => format!("{} {}", db.code().code(), db.message()),
            None => format!("{e:?}"),
        }),
    }
}

fn mysql_failure(e: mysql_async::Error) -> Failure {
    match &e {
        mysql_async::Error::Server(s) if MYSQL_FAILOVER_CODES.contains(&s.code) => {
            Failure::Failover(s.code.to_string())
        }
        _ => Failure::Other(e.to_string()),
    }
}

impl Worker {
    async fn postgres(proxy: SocketAddr, db: &str, writes: bool) -> Worker {
        Worker::Postgres {
            client: postgres_client(proxy, db).await,
            writes,
        }
    }

    async fn mysql(proxy: SocketAddr, db: &str, writes: bool) -> Worker {
        Worker::Mysql {
            conn: mysql_conn(proxy, db).await,
            writes,
        }
    }

    /// One piece of work: a write of `key` (every other one in a transaction), `true` once
    /// acknowledged; or a read.
    async fn step(&mut self, key: &str, i: u64) -> Result<bool, Failure> {
        match self {
            Worker::Postgres { client, writes } => {
                let insert = "INSERT INTO ledger (client_key) VALUES ($1)";
                let failed = postgres_failure;
                if !*writes {
                    let read = "SELECT count(*) FROM ledger";
                    return client
                        .query_one(read, &[])
                        .await
                        .map_err(failed)
                        .map(|_| false);
                }
                if i.is_multiple_of(2) {
                    let tx = client.transaction().await.map_err(failed)?;
                    tx.execute(insert, &[&key]).await.map_err(failed)?;
                    tx.commit().await.map_err(failed)?;
                } else {
                    client.execute(insert, &[&key]).await.map_err(failed)?;
                }
                Ok(true)
            }
            Worker::Mysql { conn, writes } => {
                let insert = "INSERT INTO ledger (client_key) VALUES (?)";
                let failed = mysql_failure;
                if !*writes {
                    let read = "SELECT count(*) FROM ledger";
                    let _: Option<i64> = conn.query_first(read).await.map_err(failed)?;
                    return Ok(false);
                }
                if i.is_multiple_of(2) {
                    let mut tx = conn
                        .start_transaction(TxOpts::default())
                        .await
                        .map_err(failed)?;
                    tx.exec_drop(insert, (key,)).await.map_err(failed)?;
                    tx.commit().await.map_err(failed)?;
                } else {
                    conn.exec_drop(insert, (key,)).await.map_err(failed)?;
                }
                Ok(true)
            }
        }
    }

    /// Works until the ledger stops: acknowledged writes go in the ledger, failover errors
    /// are counted by code, and anything else (or no answer within [`HANG`]) ends the
    /// worker with an error in the ledger.
    async fn run(mut self, name: String, ledger: Arc<Ledger>, failovers: Arc<FailoverErrors>) {
        let mut i = 0;
        while !ledger.stopped() {
            i += 1;
            let key = format!("{name}-{i}");
            match tokio::time::timeout(HANG, self.step(&key, i)).await {
                Ok(Ok(true)) => ledger.ack(key),
                Ok(Ok(false)) => {}
                Ok(Err(Failure::Failover(code))) => failovers.count(code),
                Ok(Err(Failure::Other(e))) => return ledger.error(format!("{key}: {e}")),
                Err(_) => return ledger.error(format!("{key}: no answer within {HANG:?}")),
            }
        }
    }
}

/// The failover errors the load saw, by code.
#[derive(Default)]
struct FailoverErrors(Mutex<BTreeMap<String, usize>>);

impl FailoverErrors {
    fn count(&self, code: String) {
        *self.0.lock().unwrap().entry(code).or_default() += 1;
    }

    fn seen(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }
}

async fn postgres_client(proxy: SocketAddr, db: &str) -> tokio_postgres::Client {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={db}",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect through the proxy");
    tokio::spawn(connection);
    client
}

async fn mysql_conn(proxy: SocketAddr, db: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .expect("connect through the proxy")
}

/// The load: [`WRITERS`] writing and [`READERS`] reading sessions made by `connect`.
struct Load {
    ledger: Arc<Ledger>,
    failovers: Arc<FailoverErrors>,
    workers: JoinSet<()>,
}

impl Load {
    async fn start<F: Future<Output = Worker>>(connect: impl Fn(bool) -> F) -> Load {
        let ledger = Arc::new(Ledger::default());
        let failovers = Arc::new(FailoverErrors::default());
        let mut workers = JoinSet::new();
        for n in 0..WRITERS + READERS {
            let worker = connect(n < WRITERS).await;
            let (ledger, failovers) = (Arc::clone(&ledger), Arc::clone(&failovers));
            workers.spawn(worker.run(format!("w{n}"), ledger, failovers));
        }
        Load {
            ledger,
            failovers,
            workers,
        }
    }

    /// Stops the load once every session has finished its work, and returns the
    /// acknowledged writes; every error must have been a documented failover error.
    async fn stop(mut self) -> Vec<String> {
        self.ledger.stop();
        while let Some(ended) = self.workers.join_next().await {
            ended.expect("a load session ends without panicking");
        }
        assert_eq!(
            self.ledger.errors(),
            Vec::<String>::new(),
            "errors other than failover errors"
        );
        println!("failover errors by code: {:?}", self.failovers.seen());
        self.ledger.acknowledged()
    }
}

/// Waits until `/status` shows `writer` as cluster `main`'s writer and `reader` (if any) as
/// its reader, both healthy.
async fn until_topology(proxy: &Proxy, writer: &str, reader: Option<&str>) {
    let seen = support::retry(FOLLOW_TIMEOUT, async || {
        let main = status(proxy, "main").await;
        let healthy =
            |i: &serde_json::Value, addr: &str| i["addr"] == addr && i["state"] == "healthy";
        let readers = main["readers"].as_array().cloned().unwrap_or_default();
        let reader_ok = match reader {
            Some(r) => readers.iter().any(|i| healthy(i, r)),
            None => true,
        };
        if healthy(&main["writer"], writer) && reader_ok {
            Ok(())
        } else {
            Err(format!("{main}"))
        }
    });
    if let Err(why) = seen.await {
        panic!(
            "writer {writer} and reader {reader:?} not healthy within {FOLLOW_TIMEOUT:?}: {why}"
        );
    }
}

/// The metrics show the failover seen and sessions moved by it.
async fn assert_failover_metrics(proxy: &Proxy) {
    let metrics = proxy.admin_get("/metrics").await;
    let has = |needle: &str| metrics.lines().any(|l| l.starts_with(needle));
    assert!(
        has("switchyard_failovers_total{cluster=\"main\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_sessions_moved_total")
                && l.contains("cause=\"failover\"")
                && l.contains("result=\"moved\"")),
        "{metrics}"
    );
}

fn assert_all_present(acknowledged: &[String], present: &HashSet<String>) {
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|k| !present.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new writer: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_follow_a_promoted_replica_and_nothing_acknowledged_is_lost() {
    let mut cluster = PgCluster::start_on(&HOSTS);
    let port = cluster.primary.port;
    let db = cluster.create_database("failover").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute(
            "CREATE TABLE ledger (id bigserial PRIMARY KEY, client_key text UNIQUE NOT NULL);
             GRANT ALL ON ledger, ledger_id_seq TO app;
             CREATE TABLE aurora_topology (
                 server_id text, session_id text,
                 last_update_timestamp timestamptz, replica_lag_in_msec float);
             INSERT INTO aurora_topology VALUES
                 ('1', 'MASTER_SESSION_ID', now(), 0),
                 ('2', 'b7c1e2f0-0000-4000-8000-000000000002', now(), 0);",
        )
        .await
        .expect("create the tables");
    cluster.replicate_synchronously().await;
    let monitor = format!("monitor_user = \"postgres\"\nmonitor_database = \"{db}\"");
    let query = "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_msec FROM aurora_topology";
    let text = config("postgres", port, &monitor, query);
    let proxy = Proxy::with_monitors(&text).await;
    let [first, second] = HOSTS.map(|h| format!("{h}:{port}"));
    until_topology(&proxy, &first, Some(&second)).await;

    // A session that writes once, then stays idle through the failover.
    let idle = postgres_client(proxy.addr, &db).await;
    let insert = "INSERT INTO ledger (client_key) VALUES ($1)";
    idle.execute(insert, &[&"idle-before"])
        .await
        .expect("idle session writes");

    let load = Load::start(|writes| Worker::postgres(proxy.addr, &db, writes)).await;
    load.ledger.wait_for_writes(40).await;

    cluster.primary.kill();
    cluster.promote(0).await;
    let promoted = cluster.superuser(&cluster.replicas[0], &db).await;
    promoted
        .batch_execute(
            "UPDATE aurora_topology SET session_id = 'MASTER_SESSION_ID', last_update_timestamp = now()
                 WHERE server_id = '2';
             DELETE FROM aurora_topology WHERE server_id = '1';",
        )
        .await
        .expect("name the promoted replica the writer");
    until_topology(&proxy, &second, None).await;
    load.ledger.wait_for_writes(40).await;

    idle.execute(insert, &[&"idle-after"])
        .await
        .expect("the idle session goes on, on the new writer, with no error");
    let mut acknowledged = load.stop().await;
    acknowledged.extend(["idle-before".to_owned(), "idle-after".to_owned()]);

    let rows = promoted
        .query("SELECT client_key FROM ledger", &[])
        .await
        .expect("read the ledger on the new writer");
    let present: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_all_present(&acknowledged, &present);
    assert_failover_metrics(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_writes_follow_a_promoted_replica_and_nothing_acknowledged_is_lost() {
    let mut cluster = MariaCluster::start_on(&HOSTS);
    let port = cluster.primary.port;
    let db = cluster.create_database("failover").await;
    let mut primary = cluster.admin(&cluster.primary).await;
    primary
        .query_drop(format!(
            "CREATE TABLE `{db}`.ledger (
                 id bigint AUTO_INCREMENT PRIMARY KEY, client_key varchar(64) UNIQUE NOT NULL);
             CREATE TABLE `{db}`.replica_host_status (
                 server_id varchar(100), session_id varchar(100),
                 last_update_timestamp datetime(6), replica_lag_in_milliseconds double);
             INSERT INTO `{db}`.replica_host_status VALUES
                 ('1', 'MASTER_SESSION_ID', UTC_TIMESTAMP(6), 0),
                 ('2', 'b1d2c3e4-0002', UTC_TIMESTAMP(6), 0)"
        ))
        .await
        .expect("create the tables");
    primary.disconnect().await.ok();
    cluster.wait_replicated().await;
    cluster.replicate_semi_synchronously(0).await;
    let monitor = "monitor_user = \"app\"\nmonitor_password = \"app-secret\"";
    let query = format!(
        "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_milliseconds FROM `{db}`.replica_host_status"
    );
    let text = config("mysql", port, monitor, &query);
    let proxy = Proxy::with_monitors(&text).await;
    let [first, second] = HOSTS.map(|h| format!("{h}:{port}"));
    until_topology(&proxy, &first, Some(&second)).await;

    let mut idle = mysql_conn(proxy.addr, &db).await;
    let insert = "INSERT INTO ledger (client_key) VALUES (?)";
    idle.exec_drop(insert, ("idle-before",))
        .await
        .expect("idle session writes");

    let load = Load::start(|writes| Worker::mysql(proxy.addr, &db, writes)).await;
    load.ledger.wait_for_writes(40).await;

    cluster.primary.kill();
    cluster.promote(0).await;
    let mut promoted = cluster.admin(&cluster.replicas[0]).await;
    promoted
        .query_drop(format!(
            "UPDATE `{db}`.replica_host_status
                 SET session_id = 'MASTER_SESSION_ID', last_update_timestamp = UTC_TIMESTAMP(6)
                 WHERE server_id = '2';
             DELETE FROM `{db}`.replica_host_status WHERE server_id = '1'"
        ))
        .await
        .expect("name the promoted replica the writer");
    until_topology(&proxy, &second, None).await;
    load.ledger.wait_for_writes(40).await;

    idle.exec_drop(insert, ("idle-after",))
        .await
        .expect("the idle session goes on, on the new writer, with no error");
    let mut acknowledged = load.stop().await;
    acknowledged.extend(["idle-before".to_owned(), "idle-after".to_owned()]);

    let keys: Vec<String> = promoted
        .query(format!("SELECT client_key FROM `{db}`.ledger"))
        .await
        .expect("read the ledger on the new writer");
    let present: HashSet<String> = keys.into_iter().collect();
    assert_all_present(&acknowledged, &present);
    assert_failover_metrics(&proxy).await;
}
