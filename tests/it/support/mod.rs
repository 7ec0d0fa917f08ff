//! Test support: real database servers in temporary directories, tied to the test process's life.
//!
//! The integration tests' modules use it as `crate::support`. PostgreSQL lives in
//! [`postgres`], MariaDB in [`mariadb`]; what both need (ports, logs, waiting) lives here.
//!
//! How a server is set up (initdb, base backups, MariaDB installs, command lines), starting
//! and stopping the server processes, scratch directories, accounts and signals are
//! testkit's (the harness the tests share with `switchyard demo`); its `server` module says
//! why no server outlives the test binary.

pub mod dns;
pub mod fault;
pub mod ledger;
pub mod load;
pub mod mariadb;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod topology;

pub use mariadb::{MariaCluster, MariaServer};
pub use postgres::{PgCluster, PgServer};

pub use testkit::{ScratchDir, ServerProcess, Signal};
/// The account a server runs as (see [`testkit::Account`]).
pub type RunAs = testkit::Account;

use std::ffi::c_int;
use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How much of a server's log a start-up or replication panic quotes.
const LOG_TAIL_LINES: usize = 40;

/// A database account that every test cluster has, with its password ("" for none).
#[derive(Clone, Copy, Debug)]
pub struct Login {
    pub user: &'static str,
    pub password: &'static str,
}

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read the port, let go.
///
/// Someone else may take it before it is used, so whoever binds it must retry on failure.
pub fn free_port() -> u16 {
    testkit::free_port().expect("bind 127.0.0.1:0 to find a free port")
}

/// The account a server of `name`'s kind runs as: that account when we are root.
pub fn account(name: &str) -> RunAs {
    RunAs::named(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Hands `path` to `owner`.
pub fn chown(owner: RunAs, path: &Path) {
    owner.chown(path).unwrap_or_else(|e| panic!("{e}"));
}

/// Creates (or truncates) a server's log file, owned by the server's account.
pub fn create_log(path: &Path, owner: RunAs) -> File {
    let log = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    chown(owner, path);
    log
}

/// The last lines of a server's log, with a header naming the file.
pub fn log_tail(path: &Path) -> String {
    testkit::log_tail(path, LOG_TAIL_LINES)
}

/// `<prefix>_<n>`, unique in this process, with the prefix folded to lower-case letters,
/// digits and `_`, kept well under the limits on names (PostgreSQL 63 bytes, MariaDB 64).
pub fn unique_database_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Sends `signal` (a `libc::SIG*` number) to process `pid`, a child of this test process.
pub fn signal(pid: u32, signal: c_int) {
    let signal =
        Signal::from_named_raw(signal).unwrap_or_else(|| panic!("{signal} is not a named signal"));
    testkit::signal(pid, signal);
}

/// Runs a future to completion on a fresh runtime in its own thread, so that synchronous
/// harness code (cluster start-up) works whether or not the caller is inside a runtime.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|scope| {
        let run = || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a tokio runtime for the test harness");
            runtime.block_on(future)
        };
        scope
            .spawn(run)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Waits between attempts at something, with a growing delay, until a deadline.
pub struct Backoff {
    deadline: Instant,
    delay: Duration,
}

impl Backoff {
    pub fn new(timeout: Duration) -> Backoff {
        Backoff {
            deadline: Instant::now() + timeout,
            delay: Duration::from_millis(5),
        }
    }

    /// Sleeps before the next attempt; `false` once the deadline has passed.
    pub async fn wait(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(200));
        true
    }
}

/// Retries `attempt` until it returns `Ok`, or returns its last error after `timeout`.
pub async fn retry<T, E, Fut>(timeout: Duration, mut attempt: impl FnMut() -> Fut) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(timeout);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if !backoff.wait().await => return Err(e),
            Err(_) => {}
        }
    }
}

/// Eight sqlx clients of `$conn` at `$url`, each inserting (every other client), reading
/// back its own rows and adding two parameters, with `$insert`, `$select` and `$sum` in the
/// protocol's placeholders and `$int` its integer type: sqlx names its statements
/// `sqlx_s_1`, `sqlx_s_2` … in every connection, so over a small pool the same names carry
/// other texts, in other orders.
macro_rules! sqlx_clients_share_a_pool {
    ($conn:ty, $url:expr, $int:ty, $insert:expr, $select:expr, $sum:expr) => {{
        use sqlx::Connection;
        let mut tasks = Vec::new();
        for n in 0..8 as $int {
            let url: String = $url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = <$conn>::connect(&url).await.expect("sqlx connects");
                for i in 0..10 as $int {
                    let k = n * 100 + i;
                    if n % 2 == 0 {
                        sqlx::query($insert)
                            .bind(k)
                            .bind(format!("v{k}"))
                            .execute(&mut c)
                            .await
                            .expect("insert");
                    }
                    let v: Option<String> = sqlx::query_scalar($select)
                        .bind(k)
                        .fetch_optional(&mut c)
                        .await
                        .expect("select");
                    let want = (n % 2 == 0).then(|| format!("v{k}"));
                    assert_eq!(v, want, "client {n} reads its own row {k}");
                    let sum: $int = sqlx::query_scalar($sum)
                        .bind(n)
                        .bind(i)
                        .fetch_one(&mut c)
                        .await
                        .expect("arithmetic");
                    assert_eq!(sum, n + i);
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    }};
}
pub(crate) use sqlx_clients_share_a_pool;
