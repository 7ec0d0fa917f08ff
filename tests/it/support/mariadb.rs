//! MariaDB for integration tests: a primary and its binlog (GTID) replicas, each server in a
//! temp directory of its own.
//!
//! Every server listens on 127.0.0.1 on a free port, with its socket, data directory, temp dir
//! and `error.log` (quoted in every start-up panic) in its directory. Every data directory,
//! the primary's and each replica's, starts fresh from `mariadb-install-db`; replicas
//! replicate the primary's binlog from its very first GTID, so they get the accounts [`APP`]
//! and [`REPL`] as they get everything else. The harness logs in as `root` from 127.0.0.1
//! without a password, an account that `mariadb-install-db` (with
//! `--auth-root-authentication-method=normal`) creates on every server.
//! [`cross_cluster`] makes one cluster's primary a replica of another's; [`failover`] replicates
//! semi-synchronously and promotes a replica.

mod cross_cluster;
mod failover;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use testkit::mariadb;

use super::pki::ServerCert;
use super::{
    Backoff, Login, RunAs, ScratchDir, ServerProcess, block_on, create_log, free_port, log_tail,
    unique_database_name,
};

const HOST: &str = "127.0.0.1";
/// How long a server may take to accept connections after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one readiness probe may take: a stranger on our port may accept and never answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replica may take to start replicating or to apply something.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Start-up attempts, each on a fresh port, when another process takes the port first.
const START_ATTEMPTS: usize = 5;
/// Every server's directory, and the installed template's, is a `switchyard-maria.<pid>.*`.
const DIR_KIND: &str = "switchyard-maria";
const LOG_FILE: &str = "error.log";
/// A server's TLS certificate and key, in its directory.
const TLS_CERT: &str = "server.crt";
const TLS_KEY: &str = "server.key";
/// What mariadbd logs when another process took its port.
const PORT_TAKEN: &str = "Address already in use";

/// Password stored and checked with `mysql_native_password`; every privilege on every database
/// except the ones that would let it write on a read-only replica (see [`create_accounts`]).
pub const APP: Login = Login {
    user: "app",
    password: "app-secret",
};
/// `REPLICATION SLAVE`: what the replicas log in to the primary with.
pub const REPL: Login = Login {
    user: "repl",
    password: "repl-secret",
};
/// The harness's own login, over TCP from 127.0.0.1.
const ROOT: Login = Login {
    user: "root",
    password: "",
};

/// A primary and its replicas; dropping it stops them and removes their directories.
pub struct MariaCluster {
    pub primary: MariaServer,
    pub replicas: Vec<MariaServer>,
}

/// The ids that a cluster's servers write into the binlog events they originate.
///
/// A replica skips events that carry its own server id (it takes them for its own writes come
/// back around a ring), so two clusters, one replicating the other, need distinct server ids;
/// and each writes its own transactions in a GTID domain of its own (see [`cross_cluster`]).
#[derive(Clone, Copy, Debug)]
pub struct ClusterIds {
    /// The primary's server id; replica `n` has `first_server_id + n`.
    pub first_server_id: u32,
    pub gtid_domain_id: u32,
}

impl ClusterIds {
    /// What [`MariaCluster::start`] uses: primary 1, replicas 2, 3, …, GTID domain 0.
    pub const OLD: ClusterIds = ClusterIds {
        first_server_id: 1,
        gtid_domain_id: 0,
    };
    /// For a cluster that replicates from one with [`ClusterIds::OLD`]: primary 101, replicas
    /// 102, 103, …, GTID domain 1.
    pub const NEW: ClusterIds = ClusterIds {
        first_server_id: 101,
        gtid_domain_id: 1,
    };
}

/// One running MariaDB server.
pub struct MariaServer {
    pub host: String,
    pub port: u16,
    /// `primary`, `replica1`, …
    pub name: String,
    /// Declared before `dir`: fields drop in order, and the server must stop before its
    /// directory goes.
    process: ServerProcess,
    dir: ScratchDir,
}

impl MariaCluster {
    /// Starts a freshly installed primary (binlog with GTIDs) and `replicas` replicas side by
    /// side, creates the accounts on the primary, and points every replica at the primary's
    /// binlog from its start. Returns once every server accepts connections and every replica
    /// has applied all of the primary's binlog (the accounts included). The servers use
    /// [`ClusterIds::OLD`].
    pub fn start(replicas: usize) -> MariaCluster {
        MariaCluster::start_with_ids(ClusterIds::OLD, replicas)
    }

    /// Like [`MariaCluster::start`], with the servers' ids taken from `ids`.
    pub fn start_with_ids(ids: ClusterIds, replicas: usize) -> MariaCluster {
        let mut servers = start_side_by_side(ids, 0, &vec![(HOST, None, None); replicas + 1]);
        let primary = servers.remove(0);
        MariaCluster::replicating(primary, servers)
    }

    /// Like [`MariaCluster::start`], but each server listens on its own address (`hosts[0]`
    /// the primary, one replica per further host, e.g. `127.0.0.2`), all on one port, as
    /// Aurora's instances do.
    pub fn start_on(hosts: &[&str]) -> MariaCluster {
        let (primary, replicas) = hosts.split_first().expect("at least the primary's host");
        let ids = ClusterIds::OLD;
        let primary = start_side_by_side(ids, 0, &[(primary, None, None)]).remove(0);
        let binds: Vec<_> = replicas
            .iter()
            .map(|h| (*h, Some(primary.port), None))
            .collect();
        let replicas = start_side_by_side(ids, 1, &binds);
        MariaCluster::replicating(primary, replicas)
    }

    /// Like [`MariaCluster::start`], with TLS: the primary with `certs[0]`, one replica with
    /// each further certificate.
    pub fn start_with_tls(certs: &[ServerCert]) -> MariaCluster {
        let binds: Vec<_> = certs.iter().map(|c| (HOST, None, Some(c))).collect();
        let mut servers = start_side_by_side(ClusterIds::OLD, 0, &binds);
        let primary = servers.remove(0);
        MariaCluster::replicating(primary, servers)
    }

    /// Creates the accounts on `primary`, points every replica at its binlog from the start
    /// and waits until they have applied all of it.
    fn replicating(primary: MariaServer, replicas: Vec<MariaServer>) -> MariaCluster {
        let cluster = MariaCluster { primary, replicas };
        block_on(async {
            create_accounts(&cluster.primary).await;
            for replica in &cluster.replicas {
                replicate(replica, &cluster.primary).await;
            }
            cluster.wait_replicated().await;
        });
        cluster
    }

    /// The cluster, with 2 replicas, that the tests share (those that change a
    /// server's settings or stop one start their own).
    pub fn shared() -> &'static MariaCluster {
        static SHARED: OnceLock<MariaCluster> = OnceLock::new();
        SHARED.get_or_init(|| MariaCluster::start(2))
    }

    /// Creates a database named after `prefix` and unique in this process ([`APP`] may do
    /// anything in it); returns its name once every replica has it.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = unique_database_name(prefix);
        let create = format!("CREATE DATABASE `{name}`");
        let mut primary = self.admin(&self.primary).await;
        primary
            .query_drop(&create)
            .await
            .unwrap_or_else(|e| panic!("{create}: {e}"));
        close(primary).await;
        self.wait_replicated().await;
        name
    }

    /// The replicas' `host:port`, as the proxy's metrics label them.
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| format!("{}:{}", r.host, r.port))
            .collect()
    }

    /// Waits until every replica has applied the primary's binlog up to its current GTID
    /// position.
    pub async fn wait_replicated(&self) {
        let position = binlog_position(&self.primary).await;
        for replica in &self.replicas {
            wait_applied(replica, &position).await;
        }
    }

    /// A connection to `server` as `root`, over TCP.
    pub async fn admin(&self, server: &MariaServer) -> Conn {
        admin(server).await
    }

    fn servers_mut(&mut self) -> impl Iterator<Item = &mut MariaServer> {
        std::iter::once(&mut self.primary).chain(&mut self.replicas)
    }
}

impl Drop for MariaCluster {
    fn drop(&mut self) {
        // Every server is asked first, so they shut down in parallel.
        self.servers_mut()
            .for_each(|server| server.process.request_stop());
        self.servers_mut()
            .for_each(|server| server.process.wait_stopped());
        // Then each server's `dir` removes its directory.
    }
}

impl MariaServer {
    /// Connection options for `login` over TCP (never the socket), to database `db` if given.
    pub fn opts(&self, login: Login, db: Option<&str>) -> OptsBuilder {
        tcp_opts(&self.host, self.port, login, db)
    }

    /// The server's process id (for fault tests that kill it).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The last lines of the server's error log, with a header naming the file.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join(LOG_FILE))
    }

    /// Server `number` 0 is the primary, the rest are read-only replicas: copies a freshly
    /// installed data directory and starts mariadbd on it at `host` and `port`, or on a free
    /// port, retrying on a fresh one when another process took the one it was given; with
    /// TLS when it has a certificate.
    fn start(
        number: usize,
        ids: ClusterIds,
        owner: RunAs,
        (host, port, cert): Bind<'_>,
    ) -> MariaServer {
        let name = match number {
            0 => "primary".to_string(),
            n => format!("replica{n}"),
        };
        let server_id = ids.first_server_id + number as u32;
        let dir = ScratchDir::new(DIR_KIND, owner);
        copy_installed(dir.path(), owner);
        if let Some(cert) = cert {
            for (from, to) in [(&cert.cert, TLS_CERT), (&cert.key, TLS_KEY)] {
                let to = dir.path().join(to);
                fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
                super::chown(owner, &to);
            }
        }
        for attempt in 1..=START_ATTEMPTS {
            let port = port.unwrap_or_else(free_port);
            let server = Spawn {
                host,
                port,
                server_id,
                gtid_domain_id: ids.gtid_domain_id,
                read_only: number > 0,
                tls: cert.is_some(),
            };
            let mut process = spawn(dir.path(), &server, owner);
            let log = dir.path().join(LOG_FILE);
            match block_on(wait_accepting(&mut process, host, port, dir.path())) {
                Ok(()) => {
                    return MariaServer {
                        host: host.to_string(),
                        port,
                        name,
                        process,
                        dir,
                    };
                }
                Err(_) if attempt < START_ATTEMPTS && lost_port(&mut process, &log) => {
                    eprintln!("{name}: port {port} was taken; retrying on another");
                }
                Err(why) => panic!(
                    "{name} did not start on port {port}: {why}\n{}",
                    log_tail(&log)
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// mariadbd refuses to run as root without `--user`, and `--user=mysql` would make it switch
/// accounts itself after exec, which clears the parent-death signal (see
/// `support::tie_to_this_process`). So, like PostgreSQL, it runs as its own account from the
/// moment it is spawned, and gets no `--user`.
fn mysql_account() -> RunAs {
    static ACCOUNT: OnceLock<RunAs> = OnceLock::new();
    *ACCOUNT.get_or_init(|| super::account("mysql"))
}

/// Gives the server in `dir` a data directory fresh from `mariadb-install-db`: a copy of one
/// installed once per process, since installing takes a second or more.
fn copy_installed(dir: &Path, owner: RunAs) {
    static INSTALLED: OnceLock<ScratchDir> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let installed = ScratchDir::new(DIR_KIND, owner);
        mariadb::install(owner, installed.path()).unwrap_or_else(|e| panic!("{e}"));
        installed
    });
    mariadb::copy_installed(owner, installed.path(), dir).unwrap_or_else(|e| panic!("{e}"));
}

/// Where one server listens (a free port when `None`) and the certificate it serves, if any.
type Bind<'a> = (&'a str, Option<u16>, Option<&'a ServerCert>);

/// Starts servers `first`, `first + 1` … (0 is the primary) side by side, one per bind.
fn start_side_by_side(ids: ClusterIds, first: usize, binds: &[Bind<'_>]) -> Vec<MariaServer> {
    let owner = mysql_account();
    thread::scope(|scope| {
        let starting: Vec<_> = binds
            .iter()
            .enumerate()
            .map(|(i, &bind)| scope.spawn(move || MariaServer::start(first + i, ids, owner, bind)))
            .collect();
        let join = |handle: thread::ScopedJoinHandle<'_, MariaServer>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        starting.into_iter().map(join).collect()
    })
}

/// What one mariadbd is started with, beyond what every server gets.
struct Spawn<'a> {
    host: &'a str,
    port: u16,
    server_id: u32,
    gtid_domain_id: u32,
    read_only: bool,
    /// Serve TLS with the [`TLS_CERT`] and [`TLS_KEY`] in the server's directory.
    tls: bool,
}

fn spawn(dir: &Path, server: &Spawn, owner: RunAs) -> ServerProcess {
    let log = dir.join(LOG_FILE);
    let options = mariadb::Server {
        host: server.host,
        port: server.port,
        server_id: server.server_id,
        gtid_domain_id: server.gtid_domain_id,
        read_only: server.read_only,
        log: &log,
        tls: server.tls.then(|| (dir.join(TLS_CERT), dir.join(TLS_KEY))),
    };
    let mut command = mariadb::server(owner, dir, &options).unwrap_or_else(|e| panic!("{e}"));
    // What mariadbd prints before it opens --log-error (bad options, say) goes to the same file.
    let log = create_log(&log, owner);
    let log_err = log
        .try_clone()
        .expect("duplicate the server log's file handle");
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    ServerProcess::spawn(command, mariadb::STOP_SIGNAL, mariadb::DEATH_SIGNAL)
        .unwrap_or_else(|e| panic!("spawn mariadbd: {e}"))
}

fn tcp_opts(host: &str, port: u16, login: Login, db: Option<&str>) -> OptsBuilder {
    let password = (!login.password.is_empty()).then_some(login.password);
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(login.user))
        .pass(password)
        .db_name(db)
        // Else mysql_async, seeing a loopback address, reconnects through the server's socket.
        .prefer_socket(false)
}

/// Polls by connecting until the server accepts connections, exits, or [`READY_TIMEOUT`] passes.
/// The server that answers must be the one whose data lies in `dir`: while it starts, another
/// process may have taken its port, and answer.
async fn wait_accepting(
    process: &mut ServerProcess,
    host: &str,
    port: u16,
    dir: &Path,
) -> Result<(), String> {
    let opts = tcp_opts(host, port, ROOT, None);
    // MariaDB reports its datadir with the links resolved.
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut backoff = Backoff::new(READY_TIMEOUT);
    loop {
        if !process.is_running() {
            return Err(format!("mariadbd exited ({})", process.describe_exit()));
        }
        let probe = match tokio::time::timeout(PROBE_TIMEOUT, Conn::new(opts.clone())).await {
            Ok(Ok(mut conn)) => {
                let datadir: Result<Option<String>, _> = conn.query_first("SELECT @@datadir").await;
                close(conn).await;
                match datadir {
                    Ok(Some(d)) if Path::new(d.trim_end_matches('/')).starts_with(&dir) => {
                        return Ok(());
                    }
                    Ok(d) => format!("port {port} is answered by the server of {d:?}"),
                    Err(e) => e.to_string(),
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        if !backoff.wait().await {
            return Err(format!(
                "not accepting connections after {READY_TIMEOUT:?}: {probe}"
            ));
        }
    }
}

fn lost_port(process: &mut ServerProcess, log: &Path) -> bool {
    // Exited first, so that the log is complete when read.
    !process.is_running() && fs::read_to_string(log).is_ok_and(|log| log.contains(PORT_TAKEN))
}

/// Creates [`APP`] and [`REPL`] on the primary; its binlog carries them to the replicas.
///
/// `IF NOT EXISTS`, and grants that may be repeated: a new cluster replicating an old one (see
/// [`cross_cluster`]) gets the old primary's binlog from its start, these statements included,
/// and already has both accounts.
///
/// `ALL` includes `SUPER`, and in MariaDB 10.11 `SUPER` includes `READ_ONLY ADMIN`, which lets
/// an account write on a `read_only` server; both are revoked so that [`APP`], like an
/// application's account, cannot write on a replica.
async fn create_accounts(primary: &MariaServer) {
    let mut conn = Conn::new(primary.opts(ROOT, None))
        .await
        .unwrap_or_else(|e| panic!("connect to the new primary: {e}\n{}", primary.log_tail()));
    let statements = [
        format!(
            "CREATE USER IF NOT EXISTS '{}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{}')",
            APP.user, APP.password
        ),
        format!("GRANT ALL ON *.* TO '{}'@'%'", APP.user),
        format!(
            "REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM '{}'@'%'",
            APP.user
        ),
        format!(
            "CREATE USER IF NOT EXISTS '{}'@'{HOST}' IDENTIFIED BY '{}'",
            REPL.user, REPL.password
        ),
        format!("GRANT REPLICATION SLAVE ON *.* TO '{}'@'{HOST}'", REPL.user),
    ];
    for statement in &statements {
        conn.query_drop(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    close(conn).await;
}

/// Says goodbye to the server: a `Conn` merely dropped at the end of a [`block_on`] never does,
/// and the server logs an "Aborted connection" warning for each.
async fn close(conn: Conn) {
    conn.disconnect().await.ok(); // nothing to do if the server went first
}

/// Makes `replica` replicate `source` from its `gtid_slave_pos` (empty on a fresh server: from
/// the start of the source's binlog) and waits until both replication threads run.
async fn replicate(replica: &MariaServer, source: &MariaServer) {
    let mut conn = admin(replica).await;
    let change = mariadb::change_master(&source.host, source.port, REPL.user, REPL.password);
    conn.query_drop(&change)
        .await
        .unwrap_or_else(|e| panic!("{change} on {}: {e}", replica.name));
    close(conn).await;
    start_replicating(replica, source).await;
}

/// `START SLAVE` on `replica`; waits until both replication threads run.
async fn start_replicating(replica: &MariaServer, source: &MariaServer) {
    let mut conn = admin(replica).await;
    conn.query_drop("START SLAVE")
        .await
        .unwrap_or_else(|e| panic!("START SLAVE on {}: {e}", replica.name));
    let mut backoff = Backoff::new(REPLICATION_TIMEOUT);
    loop {
        let why = match replication_threads(&mut conn).await {
            Threads::Running => break,
            Threads::Starting(_) if backoff.wait().await => continue,
            Threads::Starting(state) => format!("not within {REPLICATION_TIMEOUT:?}: {state}"),
            Threads::Stopped(state) => state,
        };
        panic!(
            "{} did not start replicating: {why}\n{}\n{}",
            replica.name,
            replica.log_tail(),
            source.log_tail()
        );
    }
    close(conn).await;
}

/// `server`'s `@@gtid_binlog_pos`: the last GTID of each domain in its binlog.
async fn binlog_position(server: &MariaServer) -> String {
    let mut conn = admin(server).await;
    let position: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap_or_else(|e| panic!("read the GTID position of {}: {e}", server.name))
        .unwrap_or_default();
    close(conn).await;
    position
}

/// Waits until `replica` has applied every GTID up to `position` (`MASTER_GTID_WAIT`).
async fn wait_applied(replica: &MariaServer, position: &str) {
    let mut conn = admin(replica).await;
    let wait = "SELECT MASTER_GTID_WAIT(?, ?)";
    let timeout = REPLICATION_TIMEOUT.as_secs();
    let outcome: Option<i32> = conn
        .exec_first(wait, (position, timeout))
        .await
        .unwrap_or_else(|e| panic!("{wait} on {}: {e}", replica.name));
    if outcome != Some(0) {
        let state = match replication_threads(&mut conn).await {
            Threads::Running => "both replication threads run".to_string(),
            Threads::Starting(state) | Threads::Stopped(state) => state,
        };
        panic!(
            "{} did not apply up to GTID {position} within {REPLICATION_TIMEOUT:?}: {state}\n{}",
            replica.name,
            replica.log_tail()
        );
    }
    close(conn).await;
}

/// A connection to `server` as `root`, over TCP.
async fn admin(server: &MariaServer) -> Conn {
    Conn::new(server.opts(ROOT, None))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to {} as root: {e}\n{}",
                server.name,
                server.log_tail()
            )
        })
}

/// A replica's two replication threads, as `SHOW SLAVE STATUS` tells of them.
enum Threads {
    Running,
    /// Not both running (yet: the IO thread may be connecting); what the status says.
    Starting(String),
    /// A thread has stopped on an error and will not start again by itself.
    Stopped(String),
}

async fn replication_threads(conn: &mut Conn) -> Threads {
    let row: Option<Row> = match conn.query_first("SHOW SLAVE STATUS").await {
        Ok(row) => row,
        Err(e) => return Threads::Starting(format!("SHOW SLAVE STATUS failed: {e}")),
    };
    let Some(row) = row else {
        return Threads::Stopped("not a replica (SHOW SLAVE STATUS is empty)".to_string());
    };
    let field = |name: &str| {
        row.get_opt::<String, _>(name)
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (io, sql) = (field("Slave_IO_Running"), field("Slave_SQL_Running"));
    let (io_error, sql_error) = (field("Last_IO_Error"), field("Last_SQL_Error"));
    let state = format!(
        "IO thread {io}, SQL thread {sql}; last IO error: {io_error:?}; last SQL error: {sql_error:?}"
    );
    if io == "Yes" && sql == "Yes" {
        Threads::Running
    } else if (io == "No" && !io_error.is_empty()) || (sql == "No" && !sql_error.is_empty()) {
        Threads::Stopped(state)
    } else {
        Threads::Starting(state)
    }
}
