//! MariaDB servers as the tests and the demo set them up: a data directory installed once by
//! `mariadb-install-db` and copied for each server, the `mariadbd` command line for a server
//! with binlog replication by GTID, and the statement that makes a server a replica.
//! Spawning, waiting until a server accepts connections and stopping it are the caller's.
//!
//! A server's directory holds `data/`, `tmp/` and its socket `sock`. The temp dir must be the
//! server's own: at start-up mariadbd deletes every `#sql*` file in its temp dir, which are
//! other servers' temporary tables when they share one.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::Signal;

use crate::os::Account;
use crate::programs::mariadb_program;

/// Clean shutdown.
pub const STOP_SIGNAL: Signal = Signal::TERM;
/// What the kernel sends a server when the process that started it dies: mariadbd is one
/// process with no children to orphan, and its data is thrown away, so nothing is lost.
pub const DEATH_SIGNAL: Signal = Signal::KILL;

/// Settings that both `mariadb-install-db` and the server get: small, and no fsync per commit
/// (the data is thrown away).
const STORAGE: [&str; 3] = [
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
];

/// `--datadir` and `--tmpdir` for the server in `dir`.
fn directories(dir: &Path) -> [String; 2] {
    [
        format!("--datadir={}", dir.join("data").display()),
        format!("--tmpdir={}", dir.join("tmp").display()),
    ]
}

/// Creates `path`, owned by `owner`.
fn create_dir(owner: Account, path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
        .map_err(|e| crate::context(e, format!("create {}", path.display())))?;
    owner.chown(path)
}

/// Installs a data directory in `dir` (an existing directory of `owner`'s) with
/// `mariadb-install-db`: `root` may log in from 127.0.0.1 without a password.
pub fn install(owner: Account, dir: &Path) -> io::Result<()> {
    create_dir(owner, &dir.join("tmp"))?;
    let mut command = owner.command(&mariadb_program("mariadb-install-db")?, dir);
    command.arg("--no-defaults").args(directories(dir));
    command.args([
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
    ]);
    command.args(STORAGE);
    crate::run(command, "mariadb-install-db")
}

/// Gives the server in `dir` (an existing directory of `owner`'s) a copy of the data
/// directory [`install`]ed in `installed`: copying takes a tenth of installing, and MariaDB
/// keeps no server identity in its data directory, so copies may replicate each other.
pub fn copy_installed(owner: Account, installed: &Path, dir: &Path) -> io::Result<()> {
    let mut copy = owner.command(Path::new("cp"), dir);
    copy.arg("-a")
        .arg(installed.join("data"))
        .arg(dir.join("data"));
    crate::run(copy, "copy the installed data directory")?;
    create_dir(owner, &dir.join("tmp"))
}

/// What one server is started with.
pub struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Distinct for every server that replicates with another (a replica skips events that
    /// carry its own id).
    pub server_id: u32,
    /// The GTID domain the server writes its own transactions in.
    pub gtid_domain_id: u32,
    pub read_only: bool,
    /// Its error log.
    pub log: &'a Path,
    /// A certificate and key to serve TLS with.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The command that runs mariadbd in `dir` as `owner`: binlog in row format with GTIDs in
/// strict mode, updates from its own source passed on. It runs as its account from the
/// start: `--user` would switch accounts after exec, which clears the parent-death signal.
pub fn server(owner: Account, dir: &Path, server: &Server) -> io::Result<Command> {
    let mut command = owner.command(&mariadb_program("mariadbd")?, dir);
    command.arg("--no-defaults").args(directories(dir)); // --no-defaults must come first
    command.args([
        format!("--socket={}", dir.join("sock").display()),
        format!("--log-error={}", server.log.display()),
        format!("--port={}", server.port),
        format!("--server-id={}", server.server_id),
        format!("--gtid-domain-id={}", server.gtid_domain_id),
        format!("--read-only={}", u8::from(server.read_only)),
        format!("--bind-address={}", server.host),
    ]);
    command.args([
        "--skip-name-resolve",
        "--max-connections=300",
        "--log-bin=mariadb-bin",
        "--relay-log=relay-bin",
        "--binlog-format=ROW",
        "--log-slave-updates",
        "--gtid-strict-mode=1",
        // Lets an account without SUPER create stored functions with binlogging on.
        "--log-bin-trust-function-creators=1",
    ]);
    command.args(STORAGE);
    if let Some((cert, key)) = &server.tls {
        command.arg(format!("--ssl-cert={}", cert.display()));
        command.arg(format!("--ssl-key={}", key.display()));
    }
    Ok(command)
}

/// The statement that makes a server replicate `host:port` by GTID from its own position
/// (`slave_pos`), logging in as `user`, retrying a lost connection every second.
pub fn change_master(host: &str, port: u16, user: &str, password: &str) -> String {
    format!(
        "CHANGE MASTER TO MASTER_HOST = '{host}', MASTER_PORT = {port},
            MASTER_USER = '{user}', MASTER_PASSWORD = '{password}',
            MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
    )
}
