//! PostgreSQL for integration tests: a primary and its streaming replicas in one temp directory.
//!
//! Every server listens on 127.0.0.1 on a free port, with its Unix socket in the cluster's
//! directory and its log in `<data dir>/server.log` (quoted in every start-up panic).
//! [`PgCluster::start_on`] instead puts each server on its own loopback address and all on
//! one port, as Aurora's instances are. The
//! primary has the roles in [`APP`], [`MD5_USER`], [`PLAIN_USER`] and [`TRUST_USER`]; replicas
//! are `pg_basebackup -R` copies of it, so they have the same roles and `pg_hba.conf`.
//! [`cross_cluster`] subscribes one cluster to another with logical replication; [`ssl`]
//! turns SSL on in a running server; [`failover`] replicates synchronously and promotes a
//! replica.

mod cross_cluster;
mod failover;
mod ssl;

pub use cross_cluster::{PgPair, pair};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use testkit::postgres;
use tokio_postgres::{Client, Config, NoTls};

use super::{
    Backoff, Login, RunAs, ScratchDir, ServerProcess, block_on, create_log, free_port, log_tail,
    retry, unique_database_name,
};

const HOST: &str = "127.0.0.1";
/// How long a server may take to accept connections after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one readiness probe may take: a stranger on our port may accept and never answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replica may take to start streaming or to replay something.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Start-up attempts, each on a fresh port, when another process takes the port first.
const START_ATTEMPTS: usize = 5;
const LOG_FILE: &str = "server.log";

/// Password stored as SCRAM-SHA-256 and checked with `scram-sha-256`; `CREATEDB`; owns the
/// databases [`PgCluster::create_database`] makes.
pub const APP: Login = Login {
    user: "app",
    password: "app-secret",
};
/// Password stored as MD5 and checked with `md5`.
pub const MD5_USER: Login = Login {
    user: "md5user",
    password: "md5-secret",
};
/// Password checked with `password`: sent in clear text.
pub const PLAIN_USER: Login = Login {
    user: "plainuser",
    password: "plain-secret",
};
/// Trusted from 127.0.0.1: no password.
pub const TRUST_USER: Login = Login {
    user: "trustuser",
    password: "",
};

const HBA: &str = "\
# TYPE  DATABASE     USER       ADDRESS       METHOD
local   all          all                      trust
host    replication  all        127.0.0.1/32  trust
host    all          postgres   127.0.0.1/32  trust
host    all          trustuser  127.0.0.1/32  trust
host    all          md5user    127.0.0.1/32  md5
host    all          plainuser  127.0.0.1/32  password
host    all          all        127.0.0.1/32  scram-sha-256
";

/// Log lines that mean another process took our port (TCP, or its Unix socket lock file).
const PORT_TAKEN: [&str; 2] = ["Address already in use", ".lock\" already exists"];

/// A primary and its streaming replicas; dropping it stops them and removes their directory.
pub struct PgCluster {
    pub primary: PgServer,
    pub replicas: Vec<PgServer>,
    /// Removed when the cluster drops, after its servers have stopped.
    _dir: ScratchDir,
}

/// One running PostgreSQL server.
pub struct PgServer {
    pub host: String,
    pub port: u16,
    /// `primary`, `replica1`, …: also its `cluster_name` and its replication slot's name.
    pub name: String,
    pub data_dir: PathBuf,
    process: ServerProcess,
}

impl PgCluster {
    /// initdb a primary, start it, then `pg_basebackup -R` `replicas` streaming replicas and
    /// start them. Returns once every server accepts connections and every replica streams.
    pub fn start(replicas: usize) -> PgCluster {
        let owner = postgres_account();
        let dir = ScratchDir::new("switchyard-pg", owner);
        let primary = start_primary(dir.path(), owner, Bind::shared());
        let replicas = start_replicas(dir.path(), owner, &primary, &vec![Bind::shared(); replicas]);
        let cluster = PgCluster {
            primary,
            replicas,
            _dir: dir,
        };
        block_on(cluster.wait_streaming());
        cluster
    }

    /// Like [`PgCluster::start`], but each server listens on its own address (`hosts[0]` the
    /// primary, one replica per further host, e.g. `127.0.0.2`), all on one port, with its
    /// Unix socket in its own directory.
    pub fn start_on(hosts: &[&str]) -> PgCluster {
        let owner = postgres_account();
        let dir = ScratchDir::new("switchyard-pg", owner);
        let (primary_host, replica_hosts) =
            hosts.split_first().expect("at least the primary's host");
        let primary = start_primary(dir.path(), owner, Bind::own(primary_host, None));
        let binds: Vec<Bind> = replica_hosts
            .iter()
            .map(|host| Bind::own(host, Some(primary.port)))
            .collect();
        let replicas = start_replicas(dir.path(), owner, &primary, &binds);
        let cluster = PgCluster {
            primary,
            replicas,
            _dir: dir,
        };
        block_on(cluster.wait_streaming());
        cluster
    }

    /// The cluster, with 2 replicas, that the tests share (those that change a
    /// server's settings or stop one start their own).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| PgCluster::start(2))
    }

    /// Creates a database named after `prefix` and unique in this cluster, owned by [`APP`];
    /// returns its name once every replica has it.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = unique_database_name(prefix);
        let primary = self.superuser(&self.primary, "postgres").await;
        let create = format!("CREATE DATABASE \"{name}\" OWNER {}", APP.user);
        primary
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("{create}: {e}"));
        for replica in &self.replicas {
            self.wait_for_database(replica, &name).await;
        }
        name
    }

    /// The replicas' `host:port`, as the proxy's metrics label them.
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| format!("{}:{}", r.host, r.port))
            .collect()
    }

    /// Waits until every replica has replayed the primary's current WAL position.
    pub async fn wait_replicated(&self) {
        let primary = self.superuser(&self.primary, "postgres").await;
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap_or_else(|e| panic!("read the primary's WAL position: {e}"))
            .get(0);
        for replica in &self.replicas {
            self.wait_replayed(replica, &target).await;
        }
    }

    /// A client connected to `server` as the trusted superuser `postgres`, to database `db`.
    pub async fn superuser(&self, server: &PgServer, db: &str) -> Client {
        connect(&server.config("postgres", db))
            .await
            .unwrap_or_else(|e| {
                panic!("connect to {} as postgres, database {db}: {e}", server.name)
            })
    }

    async fn wait_streaming(&self) {
        let want = self.replicas.len() as i64;
        let primary = &self.superuser(&self.primary, "postgres").await;
        let streaming = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'";
            let count: i64 = primary
                .query_one(query, &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if count == want {
                Ok(())
            } else {
                Err(format!("{count} of {want} replicas streaming"))
            }
        });
        if let Err(why) = streaming.await {
            panic!(
                "replication did not start within {REPLICATION_TIMEOUT:?}: {why}\n{}",
                self.log_tails()
            );
        }
    }

    async fn wait_for_database(&self, replica: &PgServer, name: &str) {
        let client = &self.superuser(replica, "postgres").await;
        let found = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT 1 FROM pg_database WHERE datname = $1";
            let rows = client
                .query(query, &[&name])
                .await
                .map_err(|e| e.to_string())?;
            if rows.is_empty() {
                Err("not replayed yet".to_string())
            } else {
                Ok(())
            }
        });
        if let Err(why) = found.await {
            panic!(
                "database {name} did not reach {}: {why}\n{}",
                replica.name,
                replica.log_tail()
            );
        }
    }

    async fn wait_replayed(&self, replica: &PgServer, target: &str) {
        let client = &self.superuser(replica, "postgres").await;
        let replayed = retry(REPLICATION_TIMEOUT, async || {
            let query = "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= $1::text::pg_lsn";
            let row = client
                .query_one(query, &[&target])
                .await
                .map_err(|e| e.to_string())?;
            match (
                row.get::<_, Option<String>>(0),
                row.get::<_, Option<bool>>(1),
            ) {
                (_, Some(true)) => Ok(()),
                (at, _) => Err(format!(
                    "replayed up to {}",
                    at.as_deref().unwrap_or("nothing")
                )),
            }
        });
        if let Err(why) = replayed.await {
            panic!(
                "{} did not replay up to {target}: {why}\n{}",
                replica.name,
                replica.log_tail()
            );
        }
    }

    fn servers_mut(&mut self) -> impl Iterator<Item = &mut PgServer> {
        std::iter::once(&mut self.primary).chain(&mut self.replicas)
    }

    fn log_tails(&self) -> String {
        let servers = std::iter::once(&self.primary).chain(&self.replicas);
        servers
            .map(PgServer::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Every server is asked first, so they shut down in parallel.
        self.servers_mut()
            .for_each(|server| server.process.request_stop());
        self.servers_mut()
            .for_each(|server| server.process.wait_stopped());
        // Then `_dir` removes the directory.
    }
}

impl PgServer {
    /// Connection settings for `user` to database `db` (no password; see [`PgServer::login`]).
    pub fn config(&self, user: &str, db: &str) -> Config {
        let mut config = Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(user)
            .dbname(db);
        config
            .connect_timeout(Duration::from_secs(10))
            .application_name("switchyard-tests");
        config
    }

    /// Connection settings for one of the cluster's roles, with its password.
    pub fn login(&self, login: Login, db: &str) -> Config {
        let mut config = self.config(login.user, db);
        if !login.password.is_empty() {
            config.password(login.password);
        }
        config
    }

    /// The postmaster's process id (for fault tests that kill it).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills the postmaster as `kill -9` does and waits until it is gone; its backends see
    /// it die and end too.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        testkit::signal(self.pid(), testkit::Signal::KILL);
        self.process.wait_stopped();
    }

    /// The last lines of the server's log, with a header naming the file.
    pub fn log_tail(&self) -> String {
        log_tail(&self.data_dir.join(LOG_FILE))
    }

    /// Starts postgres on `data_dir` and waits until it accepts connections, retrying on a
    /// fresh port when another process took the one it was given.
    fn launch(name: &str, data_dir: PathBuf, dir: &Path, owner: RunAs, bind: &Bind) -> PgServer {
        let socket_dir = if bind.own_socket_dir {
            let socket_dir = dir.join(format!("{name}.sockets"));
            fs::create_dir(&socket_dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", socket_dir.display()));
            super::chown(owner, &socket_dir);
            socket_dir
        } else {
            dir.to_owned()
        };
        for attempt in 1..=START_ATTEMPTS {
            let mut server = PgServer::spawn(name, data_dir.clone(), &socket_dir, owner, bind);
            match block_on(server.wait_accepting()) {
                Ok(()) => return server,
                Err(_) if attempt < START_ATTEMPTS && bind.port.is_none() && server.lost_port() => {
                    eprintln!(
                        "{name}: port {} was taken; retrying on another",
                        server.port
                    );
                }
                Err(why) => panic!(
                    "{name} did not start on port {}: {why}\n{}",
                    server.port,
                    server.log_tail()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(
        name: &str,
        data_dir: PathBuf,
        socket_dir: &Path,
        owner: RunAs,
        bind: &Bind,
    ) -> PgServer {
        let port = bind.port.unwrap_or_else(free_port);
        // Truncated: a replica's data directory holds a copy of the primary's log.
        let log = create_log(&data_dir.join(LOG_FILE), owner);
        let listen = postgres::Listen {
            host: &bind.host,
            port,
            socket_dir,
        };
        let mut command =
            postgres::server(owner, &data_dir, name, &listen).unwrap_or_else(|e| panic!("{e}"));
        let log_err = log
            .try_clone()
            .expect("duplicate the server log's file handle");
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let process = ServerProcess::spawn(command, postgres::STOP_SIGNAL, postgres::DEATH_SIGNAL)
            .unwrap_or_else(|e| panic!("spawn postgres for {name}: {e}"));
        PgServer {
            host: bind.host.to_string(),
            port,
            name: name.to_string(),
            data_dir,
            process,
        }
    }

    /// Polls by connecting until the server accepts connections, exits, or [`READY_TIMEOUT`] passes.
    async fn wait_accepting(&mut self) -> Result<(), String> {
        let config = self.config("postgres", "postgres");
        let mut backoff = Backoff::new(READY_TIMEOUT);
        loop {
            if !self.process.is_running() {
                return Err(format!(
                    "postgres exited ({})",
                    self.process.describe_exit()
                ));
            }
            let probe = match tokio::time::timeout(PROBE_TIMEOUT, connect(&config)).await {
                // The server that answers must be this one: while it starts, another process
                // may have taken its port, and answer.
                Ok(Ok(client)) => match client.query_one("SHOW data_directory", &[]).await {
                    Ok(row) if self.is_data_dir(row.get(0)) => return Ok(()),
                    Ok(row) => format!(
                        "port {} is answered by the server of {}",
                        self.port,
                        row.get::<_, String>(0)
                    ),
                    Err(e) => e.to_string(),
                },
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

    /// Whether `answered` (a server's `data_directory`) is this server's data directory.
    fn is_data_dir(&self, answered: String) -> bool {
        let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Path::new(&answered) == self.data_dir
            || canonical(Path::new(&answered)) == canonical(&self.data_dir)
    }

    fn lost_port(&mut self) -> bool {
        let log = fs::read_to_string(self.data_dir.join(LOG_FILE)).unwrap_or_default();
        !self.process.is_running() && PORT_TAKEN.iter().any(|sign| log.contains(sign))
    }
}

/// Connects and drives the connection on the current runtime; dropping the client closes it.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test connection ended with an error: {e}");
        }
    });
    Ok(client)
}

fn postgres_account() -> RunAs {
    static ACCOUNT: OnceLock<RunAs> = OnceLock::new();
    *ACCOUNT.get_or_init(|| super::account("postgres"))
}

/// Where one server listens.
#[derive(Clone, Debug)]
struct Bind {
    host: String,
    /// `None`: a free port.
    port: Option<u16>,
    /// A Unix socket directory of its own (servers sharing a port cannot share one).
    own_socket_dir: bool,
}

impl Bind {
    fn shared() -> Bind {
        Bind {
            host: HOST.to_owned(),
            port: None,
            own_socket_dir: false,
        }
    }

    fn own(host: &str, port: Option<u16>) -> Bind {
        Bind {
            host: host.to_owned(),
            port,
            own_socket_dir: true,
        }
    }
}

fn start_primary(dir: &Path, owner: RunAs, bind: Bind) -> PgServer {
    let data_dir = dir.join("primary");
    postgres::init(owner, &data_dir, dir, HBA).unwrap_or_else(|e| panic!("{e}"));
    let primary = PgServer::launch("primary", data_dir, dir, owner, &bind);
    block_on(create_roles(&primary));
    primary
}

/// Base-backs-up and starts the replicas side by side (each takes a checkpoint and a start-up).
fn start_replicas(dir: &Path, owner: RunAs, primary: &PgServer, binds: &[Bind]) -> Vec<PgServer> {
    let names: Vec<String> = (1..=binds.len())
        .map(|number| format!("replica{number}"))
        .collect();
    block_on(reserve_slots(primary, &names));
    let start_one = |name: &str, bind: &Bind| {
        let data_dir = dir.join(name);
        let source = postgres::Source {
            host: &primary.host,
            port: primary.port,
            slot: name,
            create_slot: false,
        };
        postgres::base_backup(owner, &data_dir, dir, &source).unwrap_or_else(|e| panic!("{e}"));
        PgServer::launch(name, data_dir, dir, owner, bind)
    };
    thread::scope(|scope| {
        let starting: Vec<_> = names
            .iter()
            .zip(binds)
            .map(|(name, bind)| scope.spawn(move || start_one(name, bind)))
            .collect();
        let join = |handle: thread::ScopedJoinHandle<'_, PgServer>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        starting.into_iter().map(join).collect()
    })
}

async fn create_roles(primary: &PgServer) {
    let client = connect(&primary.config("postgres", "postgres"))
        .await
        .unwrap_or_else(|e| panic!("connect to the new primary: {e}\n{}", primary.log_tail()));
    let roles = format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE {app} LOGIN CREATEDB PASSWORD '{app_password}';
         SET password_encryption = 'md5';
         CREATE ROLE {md5} LOGIN PASSWORD '{md5_password}';
         RESET password_encryption;
         CREATE ROLE {plain} LOGIN PASSWORD '{plain_password}';
         CREATE ROLE {trust} LOGIN;",
        app = APP.user,
        app_password = APP.password,
        md5 = MD5_USER.user,
        md5_password = MD5_USER.password,
        plain = PLAIN_USER.user,
        plain_password = PLAIN_USER.password,
        trust = TRUST_USER.user,
    );
    client
        .batch_execute(&roles)
        .await
        .unwrap_or_else(|e| panic!("create the test roles: {e}"));
}

/// Creates each replica's physical slot with its WAL reserved now: with `pg_basebackup
/// --create-slot` the slot comes later, and the checkpoint of a concurrent backup can remove
/// WAL that the first one still needs.
async fn reserve_slots(primary: &PgServer, names: &[String]) {
    let client = connect(&primary.config("postgres", "postgres"))
        .await
        .unwrap_or_else(|e| panic!("connect to the primary: {e}\n{}", primary.log_tail()));
    for name in names {
        let create = "SELECT pg_create_physical_replication_slot($1, true)";
        client
            .execute(create, &[name])
            .await
            .unwrap_or_else(|e| panic!("create replication slot {name}: {e}"));
    }
}
