//! MariaDB for the demo: an old and a new cluster, each a primary and a replica, chained by
//! binlog replication with GTIDs: old-writer → old-replica, old-writer → new-writer →
//! new-replica. Every server has its own `server_id`; the new cluster writes in GTID domain 1,
//! so its own writes after the cutover never collide with the old cluster's sequence numbers,
//! and `log_slave_updates` passes the old cluster's rows on to the new replica.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::process::{self, Account, Processes, Signals, StopSignal, log_tail};
use super::{APP_DATABASE, APP_PASSWORD, APP_USER, Instance};

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a replica may take to start replicating or to apply something.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The account replicas log in with.
const REPL_USER: &str = "repl";
const REPL_PASSWORD: &str = "repl-secret";

/// `seq` is an AUTO_INCREMENT the new primary must continue after the cutover; `id` is the
/// demo's own unique id, recorded once a write is acknowledged.
const SCHEMA: [&str; 2] = [
    "CREATE TABLE ledger (
        seq BIGINT AUTO_INCREMENT PRIMARY KEY,
        id BIGINT NOT NULL UNIQUE,
        session INT NOT NULL,
        written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
    ) ENGINE = InnoDB",
    "CREATE TABLE counters (session INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE = InnoDB",
];

/// One running server.
pub struct MariaServer {
    pub name: String,
    pub port: u16,
    log: PathBuf,
}

pub struct MariaCluster {
    pub writer: MariaServer,
    pub replica: MariaServer,
}

pub struct MariaClusters {
    pub old: MariaCluster,
    pub new: MariaCluster,
    pub version: String,
}

/// Checks that the programs exist before anything starts.
pub fn check_installed() -> Result<()> {
    for program in ["mariadbd", "mariadb-install-db"] {
        testkit::programs::mariadb_program(program)?;
    }
    Ok(())
}

/// How each of the four servers is set up: name, server_id, GTID domain, read-only.
const SERVERS: [(&str, u32, u32, bool); 4] = [
    ("old-writer", 1, 0, false),
    ("old-replica", 2, 0, true),
    ("new-writer", 3, 1, false),
    ("new-replica", 4, 1, true),
];

/// Installs one data directory, starts the four servers on copies of it side by side, creates
/// the accounts and tables on the old primary, and chains the replication; returns once every
/// replica has applied everything.
pub async fn start(dir: &Path, processes: &Processes, sessions: usize) -> Result<MariaClusters> {
    let owner = Account::named("mysql").await?;
    let template = dir.join("installed");
    owner.create_dir(&template)?;
    let (os, installed) = (owner.os(), template.clone());
    process::blocking(move || testkit::mariadb::install(os, &installed)).await?;
    let start = |(name, id, domain, read_only)| {
        start_server(
            name, id, domain, read_only, dir, &template, owner, processes,
        )
    };
    let (old_writer, old_replica, new_writer, new_replica) = tokio::try_join!(
        start(SERVERS[0]),
        start(SERVERS[1]),
        start(SERVERS[2]),
        start(SERVERS[3]),
    )?;
    if let Err(e) = std::fs::remove_dir_all(&template) {
        eprintln!("note: could not remove {}: {e}", template.display());
    }
    let clusters = MariaClusters {
        version: old_writer.version().await?,
        old: MariaCluster {
            writer: old_writer,
            replica: old_replica,
        },
        new: MariaCluster {
            writer: new_writer,
            replica: new_replica,
        },
    };
    clusters.create_app(sessions).await?;
    replicate(&clusters.old.writer, &clusters.old.replica).await?;
    replicate(&clusters.old.writer, &clusters.new.writer).await?;
    replicate(&clusters.new.writer, &clusters.new.replica).await?;
    clusters.wait_caught_up().await?;
    Ok(clusters)
}

#[allow(clippy::too_many_arguments)]
async fn start_server(
    name: &str,
    server_id: u32,
    domain: u32,
    read_only: bool,
    dir: &Path,
    template: &Path,
    owner: Account,
    processes: &Processes,
) -> Result<MariaServer> {
    let own = dir.join(name);
    owner.create_dir(&own)?;
    let (os, installed, copy) = (owner.os(), template.to_owned(), own.clone());
    process::blocking(move || testkit::mariadb::copy_installed(os, &installed, &copy)).await?;
    let log = dir.join(format!("{name}.log"));
    let spawn = |[port]: [u16; 1]| {
        let server = testkit::mariadb::Server {
            host: "127.0.0.1",
            port,
            server_id,
            gtid_domain_id: domain,
            read_only,
            log: &log,
            tls: None,
        };
        let command = testkit::mariadb::server(owner.os(), &own, &server)?;
        let signals = Signals {
            stop: StopSignal::Term,
            on_demo_death: testkit::mariadb::DEATH_SIGNAL,
        };
        processes.spawn(name, command.into(), &log, owner, signals)
    };
    // The server that answers must be this one: while it starts, another process (a test's
    // server, on a machine running both) may have taken the port it was given, and answer.
    // MariaDB reports its datadir with the links resolved.
    let own_dir = std::fs::canonicalize(&own).unwrap_or_else(|_| own.clone());
    let probe = |[port]: [u16; 1]| {
        let datadir = own_dir.clone();
        async move {
            let mut conn = Conn::new(opts(port, None))
                .await
                .map_err(|e| e.to_string())?;
            let answered: Result<Option<String>, _> = conn.query_first("SELECT @@datadir").await;
            close(conn).await;
            let answered = answered.map_err(|e| e.to_string())?.unwrap_or_default();
            // Its data directory lies in the server's own directory.
            match Path::new(answered.trim_end_matches('/')).starts_with(&datadir) {
                true => Ok(()),
                false => Err(format!(
                    "port {port} is answered by the server of {answered}"
                )),
            }
        }
    };
    let [port] = processes
        .launch(name, &log, READY_TIMEOUT, spawn, probe)
        .await?;
    Ok(MariaServer {
        name: name.to_owned(),
        port,
        log,
    })
}

/// Connection options for `root` over TCP (root may log in from 127.0.0.1 without a
/// password on a freshly installed server).
fn opts(port: u16, db: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .db_name(db)
        // Else mysql_async, seeing a loopback address, reconnects through the server's socket.
        .prefer_socket(false)
}

/// Says goodbye, so that the server logs no "Aborted connection" warning.
async fn close(conn: Conn) {
    if let Err(e) = conn.disconnect().await {
        tracing::debug!(error = %e, "demo disconnect");
    }
}

impl MariaServer {
    async fn conn(&self, db: Option<&str>) -> Result<Conn> {
        Conn::new(opts(self.port, db))
            .await
            .with_context(|| format!("connect to {} (port {})", self.name, self.port))
    }

    async fn execute(&self, statements: &[&str]) -> Result<()> {
        let mut conn = self.conn(None).await?;
        for statement in statements {
            conn.query_drop(*statement)
                .await
                .with_context(|| format!("on {}: {statement}", self.name))?;
        }
        close(conn).await;
        Ok(())
    }

    async fn version(&self) -> Result<String> {
        let mut conn = self.conn(None).await?;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .context("SELECT VERSION()")?;
        close(conn).await;
        Ok(format!("MariaDB {}", version.unwrap_or_default()))
    }

    async fn gtid_position(&self) -> Result<String> {
        let mut conn = self.conn(None).await?;
        let position: Option<String> = conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .with_context(|| format!("read the GTID position of {}", self.name))?;
        close(conn).await;
        Ok(position.unwrap_or_default())
    }

    pub fn instance(&self) -> Instance {
        Instance {
            name: self.name.clone(),
            addr: format!("127.0.0.1:{}", self.port),
        }
    }
}

impl MariaClusters {
    /// The accounts, database and tables, on the old primary: the binlog carries them to
    /// every other server. `app` cannot write on a read-only server (no SUPER).
    async fn create_app(&self, sessions: usize) -> Result<()> {
        let create_app = format!(
            "CREATE USER '{APP_USER}'@'%' IDENTIFIED VIA mysql_native_password \
             USING PASSWORD('{APP_PASSWORD}')"
        );
        let grant_app = format!("GRANT ALL ON {APP_DATABASE}.* TO '{APP_USER}'@'%'");
        let create_repl =
            format!("CREATE USER '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY '{REPL_PASSWORD}'");
        let grant_repl = format!("GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'127.0.0.1'");
        let create_db = format!("CREATE DATABASE {APP_DATABASE}");
        let use_db = format!("USE {APP_DATABASE}");
        let seed = format!(
            "INSERT INTO counters (session, n) SELECT seq, 0 FROM seq_0_to_{}",
            sessions.saturating_sub(1)
        );
        self.old
            .writer
            .execute(&[
                &create_app,
                &grant_app,
                &create_repl,
                &grant_repl,
                &create_db,
                &use_db,
                SCHEMA[0],
                SCHEMA[1],
                &seed,
            ])
            .await
    }

    /// Waits until every replica has applied everything its primary wrote.
    pub async fn wait_caught_up(&self) -> Result<()> {
        let old = self.old.writer.gtid_position().await?;
        wait_applied(&self.old.replica, &old).await?;
        wait_applied(&self.new.writer, &old).await?;
        let new = self.new.writer.gtid_position().await?;
        wait_applied(&self.new.replica, &new).await
    }

    /// Every ledger id and every counter on the new primary.
    pub async fn ledger(&self) -> Result<(HashSet<i64>, BTreeMap<i32, i64>)> {
        let mut conn = self.new.writer.conn(Some(APP_DATABASE)).await?;
        let ids: Vec<i64> = conn
            .query("SELECT id FROM ledger")
            .await
            .context("read the ledger on new-writer")?;
        let counters: Vec<(i32, i64)> = conn
            .query("SELECT session, n FROM counters")
            .await
            .context("read the counters on new-writer")?;
        close(conn).await;
        Ok((ids.into_iter().collect(), counters.into_iter().collect()))
    }
}

/// Makes `replica` replicate `primary` from the start of its binlog and waits until both
/// replication threads run.
async fn replicate(primary: &MariaServer, replica: &MariaServer) -> Result<()> {
    let change =
        testkit::mariadb::change_master("127.0.0.1", primary.port, REPL_USER, REPL_PASSWORD);
    replica.execute(&[&change, "START SLAVE"]).await?;
    let mut conn = replica.conn(None).await?;
    let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
    let mut delay = Duration::from_millis(10);
    while let Err(state) = replication_threads(&mut conn).await {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} did not start replicating {} within {REPLICATION_TIMEOUT:?}: {state}\n{}\n{}",
                replica.name,
                primary.name,
                log_tail(&replica.log),
                log_tail(&primary.log)
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    close(conn).await;
    Ok(())
}

/// Waits until `replica` has applied up to GTID `position`.
async fn wait_applied(replica: &MariaServer, position: &str) -> Result<()> {
    let mut conn = replica.conn(None).await?;
    let outcome: Option<i32> = conn
        .exec_first(
            "SELECT MASTER_GTID_WAIT(?, ?)",
            (position, REPLICATION_TIMEOUT.as_secs()),
        )
        .await
        .with_context(|| format!("MASTER_GTID_WAIT on {}", replica.name))?;
    if outcome != Some(0) {
        let state = replication_threads(&mut conn)
            .await
            .err()
            .unwrap_or_else(|| "both replication threads run".into());
        bail!(
            "{} did not apply up to GTID {position} within {REPLICATION_TIMEOUT:?}: {state}\n{}",
            replica.name,
            log_tail(&replica.log)
        );
    }
    close(conn).await;
    Ok(())
}

/// `Ok` when a replica's IO and SQL threads both run; else what `SHOW SLAVE STATUS` says.
async fn replication_threads(conn: &mut Conn) -> Result<(), String> {
    let row: Option<Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| format!("SHOW SLAVE STATUS failed: {e}"))?;
    let row = row.ok_or("not a replica (SHOW SLAVE STATUS is empty)")?;
    let field = |name: &str| {
        row.get_opt::<String, _>(name)
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (io, sql) = (field("Slave_IO_Running"), field("Slave_SQL_Running"));
    if io == "Yes" && sql == "Yes" {
        return Ok(());
    }
    Err(format!(
        "IO thread {io}, SQL thread {sql}; last IO error: {:?}; last SQL error: {:?}",
        field("Last_IO_Error"),
        field("Last_SQL_Error"),
    ))
}
