//! PostgreSQL for the demo: an old and a new cluster, each a primary and a streaming replica
//! (`pg_basebackup -R`), and logical replication from the old primary to the new one
//! (publication and subscription `switchyard`, whose slot the cutover's catch-up watches).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio_postgres::{Client, Config, NoTls};

use super::process::{self, Account, Processes, Signals, StopSignal, log_tail};
use super::{APP_DATABASE, APP_PASSWORD, APP_USER, Instance, SLOT};

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long replication may take to start or to catch up.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo's own loopback connections only: the superuser (monitor, replication) without
/// a password, the application's role with SCRAM.
const HBA: &str = "\
# TYPE  DATABASE     USER       ADDRESS       METHOD
local   all          all                      trust
host    replication  postgres   127.0.0.1/32  trust
host    all          postgres   127.0.0.1/32  trust
host    all          all        127.0.0.1/32  scram-sha-256
";

/// The application's tables. `seq` is a sequence the new primary must continue after the
/// cutover; `id` is the demo's own unique id, recorded once a write is acknowledged.
const SCHEMA: &str = "
CREATE TABLE ledger (
    seq bigserial PRIMARY KEY,
    id bigint NOT NULL UNIQUE,
    session int NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE counters (session int PRIMARY KEY, n bigint NOT NULL);
";

/// One running server.
pub struct PgServer {
    pub name: String,
    pub port: u16,
    log: PathBuf,
}

pub struct PgCluster {
    pub writer: PgServer,
    pub replica: PgServer,
}

/// Both clusters, replicating old → new.
pub struct PgClusters {
    pub old: PgCluster,
    pub new: PgCluster,
    pub version: String,
}

/// Checks that the programs exist before anything starts.
pub fn check_installed() -> Result<()> {
    for program in ["initdb", "postgres", "pg_basebackup"] {
        testkit::programs::postgres_program(program)?;
    }
    Ok(())
}

/// Starts both clusters side by side, then replication from old to new; returns once every
/// replica streams and the new primary has copied the old one's tables. `sessions` rows
/// are seeded in `counters`.
pub async fn start(dir: &Path, processes: &Processes, sessions: usize) -> Result<PgClusters> {
    let owner = Account::named("postgres").await?;
    let (old, new) = tokio::try_join!(
        start_cluster("old", dir, owner, processes),
        start_cluster("new", dir, owner, processes),
    )?;
    let clusters = PgClusters {
        version: server_version(&old.writer).await?,
        old,
        new,
    };
    clusters.replicate(sessions).await?;
    Ok(clusters)
}

async fn start_cluster(
    name: &str,
    dir: &Path,
    owner: Account,
    processes: &Processes,
) -> Result<PgCluster> {
    let writer_name = format!("{name}-writer");
    let data = dir.join(&writer_name);
    let (os, work) = (owner.os(), dir.to_owned());
    let writer_data = data.clone();
    process::blocking(move || testkit::postgres::init(os, &writer_data, &work, HBA))
        .await
        .with_context(|| format!("set up {writer_name}"))?;
    let writer = launch(&writer_name, &data, dir, owner, processes).await?;
    create_app(&writer).await?;

    let replica_name = format!("{name}-replica");
    let replica_data = dir.join(&replica_name);
    let (backup_data, work, port) = (replica_data.clone(), dir.to_owned(), writer.port);
    process::blocking(move || {
        let source = testkit::postgres::Source {
            host: "127.0.0.1",
            port,
            slot: "replica",
            create_slot: true,
        };
        testkit::postgres::base_backup(os, &backup_data, &work, &source)
    })
    .await
    .with_context(|| format!("set up {replica_name}"))?;
    let replica = launch(&replica_name, &replica_data, dir, owner, processes).await?;
    Ok(PgCluster { writer, replica })
}

/// Starts postgres on `data` and waits until it accepts connections.
async fn launch(
    name: &str,
    data: &Path,
    dir: &Path,
    owner: Account,
    processes: &Processes,
) -> Result<PgServer> {
    let log = dir.join(format!("{name}.log"));
    let spawn = |[port]: [u16; 1]| {
        let listen = testkit::postgres::Listen {
            host: "127.0.0.1",
            port,
            socket_dir: dir,
        };
        let command = testkit::postgres::server(owner.os(), data, name, &listen)?;
        let signals = Signals {
            stop: StopSignal::Int,
            on_demo_death: testkit::postgres::DEATH_SIGNAL,
        };
        processes.spawn(name, command.into(), &log, owner, signals)
    };
    // The server that answers must be this one: while it starts, another process (a test's
    // server, on a machine running both) may have taken the port it was given, and answer.
    let probe = |[port]: [u16; 1]| async move {
        let client = connect(port, "postgres").await.map_err(|e| e.to_string())?;
        let answered: String = client
            .query_one("SHOW data_directory", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let ours = Path::new(&answered) == data
            || std::fs::canonicalize(&answered)
                .is_ok_and(|a| std::fs::canonicalize(data).is_ok_and(|d| a == d));
        match ours {
            true => Ok(()),
            false => Err(format!(
                "port {port} is answered by the server of {answered}"
            )),
        }
    };
    let [port] = processes
        .launch(name, &log, READY_TIMEOUT, spawn, probe)
        .await?;
    Ok(PgServer {
        name: name.to_owned(),
        port,
        log,
    })
}

/// A superuser connection over TCP; its connection task ends with the client.
async fn connect(port: u16, database: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(database)
        .application_name("switchyard-demo")
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        // Ends with an error when the server stops first; nothing is waiting for it then.
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "demo connection ended");
        }
    });
    Ok(client)
}

impl PgServer {
    async fn client(&self, database: &str) -> Result<Client> {
        connect(self.port, database)
            .await
            .with_context(|| format!("connect to {} (port {})", self.name, self.port))
    }

    async fn execute(&self, database: &str, sql: &str) -> Result<()> {
        self.client(database)
            .await?
            .batch_execute(sql)
            .await
            .with_context(|| format!("on {}: {sql}", self.name))
    }

    pub fn instance(&self) -> Instance {
        Instance {
            name: self.name.clone(),
            addr: format!("127.0.0.1:{}", self.port),
        }
    }
}

/// The application's role, database and tables on a new primary (roles and DDL are not
/// carried by logical replication, so both primaries get them).
async fn create_app(writer: &PgServer) -> Result<()> {
    writer
        .execute(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}';"
            ),
        )
        .await?;
    // On its own: CREATE DATABASE cannot run in the implicit transaction of a batch.
    writer
        .execute(
            "postgres",
            &format!("CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}"),
        )
        .await?;
    writer
        .execute(APP_DATABASE, &format!("SET ROLE {APP_USER}; {SCHEMA}"))
        .await
}

async fn server_version(server: &PgServer) -> Result<String> {
    let row = server
        .client("postgres")
        .await?
        .query_one("SHOW server_version", &[])
        .await
        .context("SHOW server_version")?;
    Ok(format!("PostgreSQL {}", row.get::<_, String>(0)))
}

impl PgClusters {
    /// Publication on old, subscription (slot `switchyard`) on new; waits until the new
    /// primary has copied every table and both replicas stream.
    async fn replicate(&self, sessions: usize) -> Result<()> {
        let (old, new) = (&self.old.writer, &self.new.writer);
        old.execute(
            APP_DATABASE,
            &format!(
                "INSERT INTO counters SELECT g, 0 FROM generate_series(0, {}) g;
                 CREATE PUBLICATION {SLOT} FOR ALL TABLES;",
                sessions.saturating_sub(1)
            ),
        )
        .await?;
        new.execute(
            APP_DATABASE,
            &format!(
                "CREATE SUBSCRIPTION {SLOT}
                   CONNECTION 'host=127.0.0.1 port={} user=postgres dbname={APP_DATABASE}'
                   PUBLICATION {SLOT}",
                old.port
            ),
        )
        .await?;
        let copied = "SELECT count(*) FILTER (WHERE srsubstate <> 'r') FROM pg_subscription_rel";
        self.poll(new, copied, "the initial table copy").await?;
        let streaming = "SELECT 1 - count(*) FROM pg_replication_slots s
             JOIN pg_stat_replication r ON r.pid = s.active_pid
             WHERE s.slot_name = 'replica' AND r.state = 'streaming'";
        self.poll(&self.old.writer, streaming, "old-replica streaming")
            .await?;
        self.poll(new, streaming, "new-replica streaming").await
    }

    /// Runs `query` (one bigint: what is left to wait for) on `server` until it says 0.
    async fn poll(&self, server: &PgServer, query: &str, what: &str) -> Result<()> {
        let client = server.client(APP_DATABASE).await?;
        let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
        let mut delay = Duration::from_millis(10);
        loop {
            let left: i64 = client
                .query_one(query, &[])
                .await
                .with_context(|| format!("on {}: {query}", server.name))?
                .get(0);
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{what} did not finish within {REPLICATION_TIMEOUT:?}\n{}\n{}",
                    self.old.writer.log_tail(),
                    self.new.writer.log_tail()
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Waits until the new primary has applied everything the old one wrote (used when no
    /// cutover happened, to check the writes on the new primary all the same).
    pub async fn wait_caught_up(&self) -> Result<()> {
        let old = self.old.writer.client(APP_DATABASE).await?;
        let lsn: String = old
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .context("read the old primary's WAL position")?
            .get(0);
        let behind = format!(
            "SELECT count(*) FROM pg_replication_slots
             WHERE slot_name = '{SLOT}' AND confirmed_flush_lsn < '{lsn}'::pg_lsn"
        );
        self.poll(&self.old.writer, &behind, "logical replication catch-up")
            .await
    }

    /// Every ledger id and every counter on the new primary.
    pub async fn ledger(&self) -> Result<(HashSet<i64>, BTreeMap<i32, i64>)> {
        let client = self.new.writer.client(APP_DATABASE).await?;
        let ids = client
            .query("SELECT id FROM ledger", &[])
            .await
            .context("read the ledger on new-writer")?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let counters = client
            .query("SELECT session, n FROM counters", &[])
            .await
            .context("read the counters on new-writer")?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        Ok((ids, counters))
    }
}

impl PgServer {
    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}
