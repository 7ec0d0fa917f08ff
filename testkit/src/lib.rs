//! testkit: the one harness that starts real PostgreSQL and MariaDB servers (and the proxy)
//! as child processes, shared by switchyard's integration tests and `switchyard demo`.
//!
//! What both need lives here: free ports, scratch directories and the sweeping of those that
//! killed runs left, where the servers' programs are, the OS account a server runs as,
//! signals, tying a child to this process's life, log tails, and how a server is set up
//! ([`postgres`]: initdb, settings, base backup, command line; [`mariadb`]: install, command
//! line, replication). [`server`] holds the synchronous process registry the tests use
//! (stop on drop, at exit, or by the kernel). The project's only `unsafe` blocks are in
//! [`os`], each with its SAFETY comment; the proxy itself has none.

pub mod mariadb;
pub mod os;
pub mod postgres;
pub mod programs;
pub mod server;

pub use os::{Account, at_exit, process_exists, reap, signal, tie_to_this_thread};
pub use rustix::process::Signal;
pub use server::{STOP_GRACE, ScratchDir, ServerProcess};

use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read the port, let go.
///
/// Someone else may take it before it is used, so whoever binds it must retry on failure.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs a set-up program (initdb, pg_basebackup, mariadb-install-db, ...) to completion; when
/// it fails, the error holds its output.
pub fn run(mut command: Command, what: &str) -> io::Result<()> {
    command.stdin(Stdio::null());
    let output = command
        .output()
        .map_err(|e| context(e, format!("{what}: could not run {command:?}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {command:?}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// `e` with `what` was being done in front of its message.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The last `lines` lines of a log, with a header naming the file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            format!(
                "--- last lines of {} ---\n{}",
                path.display(),
                tail.join("\n")
            )
        }
        Err(e) => format!("--- no log at {}: {e} ---", path.display()),
    }
}

/// The pid in a scratch directory's name `<prefix><pid>.<anything>`.
pub fn run_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}

/// Removes the `<prefix><pid>.*` directories under `base` whose process is gone (a run
/// that was killed), except those `spare` keeps. Best effort: another run may be sweeping
/// the same directory at the same moment.
pub fn sweep_killed_runs(base: &Path, prefix: &str, spare: impl Fn(&Path) -> bool) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| run_pid(n, prefix)) else {
            continue;
        };
        if !process_exists(pid) && !spare(&entry.path()) {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_name_their_run() {
        let demo = "switchyard-demo.";
        assert_eq!(
            run_pid("switchyard-demo.4242.postgres.0a1b2c3d", demo),
            Some(4242)
        );
        assert_eq!(run_pid("switchyard-demo.x.mysql.00000000", demo), None);
        assert_eq!(run_pid("switchyard-pg.4242.abc", demo), None);
        assert_eq!(run_pid("pg.17.Xy12", "pg."), Some(17));
    }

    #[test]
    fn this_process_exists_and_a_free_port_binds() {
        assert!(process_exists(std::process::id()));
        let port = free_port().unwrap();
        assert_ne!(port, 0);
    }
}
