//! PostgreSQL servers as the tests and the demo set them up: one `initdb` with one set of
//! settings, a streaming replica by `pg_basebackup -R`, and the `postgres` command line.
//! Spawning, waiting until a server accepts connections and stopping it are the caller's
//! (the tests through [`crate::ServerProcess`], the demo through its own processes).

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::process::Command;

use rustix::process::Signal;

use crate::os::Account;
use crate::programs::postgres_program;

/// Fast shutdown.
pub const STOP_SIGNAL: Signal = Signal::INT;
/// What the kernel sends a server when the process that started it dies: an immediate
/// shutdown, in which the postmaster also ends its children.
pub const DEATH_SIGNAL: Signal = Signal::QUIT;

/// Appended to the `postgresql.conf` that initdb writes (replicas copy it): logical and
/// streaming replication, and no syncing to disk (the data is thrown away at the end).
const SETTINGS: &str = "
# switchyard testkit
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_logical_replication_workers = 16
max_worker_processes = 32
hot_standby = on
fsync = off
shared_buffers = 32MB
max_connections = 200
max_prepared_transactions = 10
logging_collector = off
";

/// `initdb`s `data` as `owner` (working in `dir`), with the superuser `postgres` trusted,
/// [`SETTINGS`] appended to `postgresql.conf`, and `hba` as `pg_hba.conf`.
pub fn init(owner: Account, data: &Path, dir: &Path, hba: &str) -> io::Result<()> {
    let mut initdb = owner.command(&postgres_program("initdb")?, dir);
    initdb.arg("--pgdata").arg(data).args([
        "--username=postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    crate::run(initdb, "initdb")?;
    let conf = data.join("postgresql.conf");
    OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut file| file.write_all(SETTINGS.as_bytes()))
        .map_err(|e| crate::context(e, format!("append to {}", conf.display())))?;
    let hba_path = data.join("pg_hba.conf");
    fs::write(&hba_path, hba)
        .map_err(|e| crate::context(e, format!("write {}", hba_path.display())))
}

/// Where a replica streams from, and through which physical slot.
pub struct Source<'a> {
    pub host: &'a str,
    pub port: u16,
    pub slot: &'a str,
    /// Whether `pg_basebackup` creates the slot (else it must exist: a slot created before
    /// the backup reserves the WAL that a concurrent backup's checkpoint could remove).
    pub create_slot: bool,
}

/// Copies the primary `source` into `data` with `pg_basebackup -R` (as `owner`, working in
/// `dir`): a replica that streams from it once started.
pub fn base_backup(owner: Account, data: &Path, dir: &Path, source: &Source) -> io::Result<()> {
    let mut backup = owner.command(&postgres_program("pg_basebackup")?, dir);
    backup.arg("--pgdata").arg(data).args([
        format!("--host={}", source.host),
        format!("--port={}", source.port),
        format!("--slot={}", source.slot),
    ]);
    backup.args([
        "--username=postgres",
        "--write-recovery-conf",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-sync",
    ]);
    if source.create_slot {
        backup.arg("--create-slot");
    }
    crate::run(backup, &format!("pg_basebackup for slot {}", source.slot))
}

/// Where one server listens.
pub struct Listen<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Its Unix socket's directory (servers that share a port cannot share one).
    pub socket_dir: &'a Path,
}

/// The command that runs `postgres` on `data` as `owner`, named `name` (its
/// `cluster_name`), listening on `listen`. Its output is the caller's to direct.
pub fn server(owner: Account, data: &Path, name: &str, listen: &Listen) -> io::Result<Command> {
    let mut command = owner.command(&postgres_program("postgres")?, listen.socket_dir);
    command.arg("-D").arg(data);
    command.args([
        "-p".to_string(),
        listen.port.to_string(),
        "-c".to_string(),
        format!("unix_socket_directories={}", listen.socket_dir.display()),
        "-c".to_string(),
        format!("cluster_name={name}"),
        "-c".to_string(),
        format!("listen_addresses={}", listen.host),
    ]);
    Ok(command)
}
