//! Test support: real database servers in temporary directories, tied to the test process's life.
//!
//! Integration tests use it with `mod support;`. PostgreSQL lives in [`postgres`], MariaDB in
//! [`mariadb`]; what both need (processes, directories, ports, logs, waiting) lives here.
//!
//! # Why no server outlives the test binary
//!
//! A server can be left behind in three ways, and each has its own guard:
//!
//! 1. **A handle is dropped** (a test's own cluster): [`ServerProcess`]'s `Drop` sends the
//!    server's stop signal, waits, escalates to `SIGKILL` after [`STOP_GRACE`], and
//!    [`ScratchDir`]'s `Drop` removes the directory.
//! 2. **The process exits normally** while servers are still running (the `shared()` cluster
//!    lives in a `static`, and statics are never dropped): every server and directory is
//!    recorded in [`LEFTOVERS`] while it exists, and a `libc::atexit` handler, registered
//!    once, stops and removes whatever is still recorded.
//! 3. **The test binary is killed** (`kill -9`, a CI time-out): no code of ours runs, so the
//!    kernel does it. Each server is spawned with `PR_SET_PDEATHSIG`, which signals the child
//!    when the *thread* that forked it dies. `cargo test` runs each test on a thread that ends
//!    with the test, so servers are forked from one dedicated spawner thread that lives as
//!    long as the process (its channel's sender sits in a `static`, so its loop never ends).
//!    When the process dies, that thread dies with it and every server gets its death signal
//!    (for PostgreSQL `SIGQUIT`, an immediate shutdown in which the postmaster also stops its
//!    own children; for MariaDB, a single process, `SIGKILL`). Directories of such killed
//!    runs are swept by the next run ([`ScratchDir::new`] removes `<kind>.<pid>.*`
//!    directories whose pid is dead).
#![allow(dead_code)]

pub mod dns;
pub mod fault;
pub mod ledger;
pub mod mariadb;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod topology;

#[allow(unused_imports)] // not every test binary names them all
pub use mariadb::{MariaCluster, MariaServer};
#[allow(unused_imports)]
pub use postgres::{PgCluster, PgServer};

use std::ffi::{CString, c_int};
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

/// How long a server may take to stop after its stop signal before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// The path of a PostgreSQL program (`initdb`, `pg_basebackup`, …): from `$PG_BIN`, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
pub fn bin(name: &str) -> PathBuf {
    let path = pg_bin_dir().join(name);
    assert!(
        path.is_file(),
        "PostgreSQL program {} not found; run scripts/install-deps.sh or set PG_BIN",
        path.display()
    );
    path
}

fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        env::var_os("PG_BIN").map(PathBuf::from).or_else(newest_installed_pg).expect(
            "no PostgreSQL under /usr/lib/postgresql/*/bin; run scripts/install-deps.sh or set PG_BIN",
        )
    })
}

fn newest_installed_pg() -> Option<PathBuf> {
    let version = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let bin = entry.path().join("bin");
            let version = version(entry.file_name().to_str()?)?;
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// The account a server runs as. Database servers refuse to run as root, so when we are root
/// they run as their own account (`postgres`, `mysql`); otherwise they run as we do.
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    ids: Option<(libc::uid_t, libc::gid_t)>,
}

impl RunAs {
    /// `account` if this process is root, else the current user.
    pub fn account(name: &str) -> RunAs {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        RunAs {
            ids: is_root.then(|| lookup_account(name)),
        }
    }

    /// A command for `program` that runs as this account in `dir`, without the caller's
    /// libpq (`PG*`) environment, which could point clients elsewhere.
    pub fn command(self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir);
        for (key, _) in env::vars_os().filter(|(key, _)| key.to_string_lossy().starts_with("PG")) {
            command.env_remove(key);
        }
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Hands `path` to this account.
    pub fn chown(self, path: &Path) {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to uid {uid}: {e}", path.display()));
        }
    }
}

fn lookup_account(name: &str) -> (libc::uid_t, libc::gid_t) {
    let c_name = CString::new(name).expect("account name without NUL");
    // SAFETY: passwd is plain old data; getpwnam_r fills it, pointing into `buf`, which outlives its use.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    assert!(
        rc == 0 && !found.is_null(),
        "OS account `{name}` not found (getpwnam_r returned {rc}); run scripts/install-deps.sh"
    );
    (entry.pw_uid, entry.pw_gid)
}

/// Runs a set-up program to completion; panics with its output if it fails.
pub fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {command:?}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Creates (or truncates) a server's log file, owned by the server's account.
pub fn create_log(path: &Path, owner: RunAs) -> File {
    let log = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    owner.chown(path);
    log
}

/// The last lines of a server's log, with a header naming the file.
pub fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            format!(
                "--- last lines of {} ---\n{}",
                path.display(),
                tail.join("\n")
            )
        }
        Err(e) => format!("--- no log at {}: {e} ---", path.display()),
    }
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

/// A temporary directory named `<kind>.<pid>.<random>` under the system temp dir, owned by a
/// server account, removed on drop or, if never dropped, at process exit.
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    pub fn new(kind: &str, owner: RunAs) -> ScratchDir {
        sweep_killed_runs(kind);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{kind}.{}.", std::process::id()))
            .tempdir_in(env::temp_dir())
            .unwrap_or_else(|e| {
                panic!(
                    "create a {kind} directory in {}: {e}",
                    env::temp_dir().display()
                )
            });
        owner.chown(dir.path());
        leftovers().dirs.push(dir.path().to_path_buf());
        register_at_exit();
        ScratchDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        leftovers().dirs.retain(|dir| dir != self.dir.path());
        // The TempDir field removes the directory after this.
    }
}

/// Removes `<kind>.<pid>.*` directories left by test processes that were killed.
fn sweep_killed_runs(kind: &str) {
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| {
            name.strip_prefix(kind)?
                .strip_prefix('.')?
                .split('.')
                .next()?
                .parse()
                .ok()
        }) else {
            continue;
        };
        if !process_exists(pid) {
            // Best effort: another run may be sweeping the same directory.
            fs::remove_dir_all(entry.path()).ok();
        }
    }
}

fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
}

/// A server process: stopped when dropped, at process exit, or by the kernel when the test
/// process dies (see the module docs).
pub struct ServerProcess {
    child: Child,
    stop_signal: c_int,
}

impl ServerProcess {
    /// Spawns `command` from the spawner thread; `stop_signal` asks it to stop cleanly,
    /// `death_signal` is what the kernel sends it if this process dies.
    pub fn spawn(
        mut command: Command,
        stop_signal: c_int,
        death_signal: c_int,
    ) -> io::Result<ServerProcess> {
        tie_to_this_process(&mut command, death_signal);
        let (reply, spawned) = mpsc::channel();
        spawner()
            .send((command, reply))
            .expect("the server-spawner thread lives as long as the process");
        let child = spawned
            .recv()
            .expect("the server-spawner thread answers every request")?;
        leftovers().processes.push((child.id(), stop_signal));
        register_at_exit();
        Ok(ServerProcess { child, stop_signal })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs; a process found ended is reaped and forgotten.
    pub fn is_running(&mut self) -> bool {
        // An error means the child was reaped elsewhere: it is gone either way.
        let running = matches!(self.child.try_wait(), Ok(None));
        if !running {
            forget_process(self.child.id());
        }
        running
    }

    /// How the process ended, for messages.
    pub fn describe_exit(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Sends the stop signal (once the process is gone, does nothing).
    pub fn request_stop(&mut self) {
        if self.is_running() {
            signal(self.child.id(), self.stop_signal);
        }
    }

    /// Waits for the process to end, killing it after [`STOP_GRACE`].
    pub fn wait_stopped(&mut self) {
        let deadline = Instant::now() + STOP_GRACE;
        while self.is_running() {
            if Instant::now() > deadline {
                eprintln!(
                    "pid {} ignored signal {} for {STOP_GRACE:?}; killing it",
                    self.id(),
                    self.stop_signal
                );
                self.child.kill().ok(); // fails only if it just exited, which wait() then reports
                self.child
                    .wait()
                    .unwrap_or_else(|e| panic!("wait for killed pid {}: {e}", self.child.id()));
            } else {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.request_stop();
        self.wait_stopped();
    }
}

/// Sends `signal` to process `pid` (a child of this test process).
pub fn signal(pid: u32, signal: c_int) {
    // SAFETY: kill has no memory-safety preconditions; pid is a child we have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Makes the kernel send `death_signal` to the child when the spawner thread dies.
fn tie_to_this_process(command: &mut Command, death_signal: c_int) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // The closure runs in the forked child after std has switched uid/gid (a credential
    // change would clear the death signal), and only makes async-signal-safe system calls.
    let tie = move || {
        // SAFETY: plain system calls.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // If we died between fork and prctl, the signal will never come: give up instead.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: see above.
    unsafe { command.pre_exec(tie) };
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread that forks every server: it never ends, so `PR_SET_PDEATHSIG` fires only when
/// the whole process dies.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        let serve = move || {
            for (mut command, reply) in incoming {
                if let Err(mpsc::SendError(Ok(mut orphan))) = reply.send(command.spawn()) {
                    orphan.kill().ok(); // nobody will own it; it may already be dead
                    orphan.wait().ok();
                }
            }
        };
        thread::Builder::new()
            .name("server-spawner".into())
            .spawn(serve)
            .expect("start the server-spawner thread");
        requests
    })
}

/// Servers and directories that exist right now, for the exit handler.
struct Leftovers {
    processes: Vec<(u32, c_int)>,
    dirs: Vec<PathBuf>,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    processes: Vec::new(),
    dirs: Vec::new(),
});

fn leftovers() -> MutexGuard<'static, Leftovers> {
    LEFTOVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn forget_process(pid: u32) {
    leftovers()
        .processes
        .retain(|(recorded, _)| *recorded != pid);
}

fn register_at_exit() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handler is a plain extern "C" fn that never unwinds.
        let rc = unsafe { libc::atexit(stop_leftovers) };
        assert_eq!(rc, 0, "register the test-server exit handler");
    });
}

/// At exit: stop every server still running (all signalled first, so they stop in parallel)
/// and remove every directory still recorded.
extern "C" fn stop_leftovers() {
    let cleanup = || {
        let Leftovers { processes, dirs } = std::mem::replace(
            &mut *leftovers(),
            Leftovers {
                processes: Vec::new(),
                dirs: Vec::new(),
            },
        );
        for &(pid, stop_signal) in &processes {
            signal(pid, stop_signal);
        }
        for &(pid, _) in &processes {
            reap(pid as libc::pid_t);
        }
        for dir in dirs {
            fs::remove_dir_all(&dir).ok(); // best effort: nothing to report to at exit
        }
    };
    // A panic must not unwind out of an extern "C" fn.
    if std::panic::catch_unwind(cleanup).is_err() {
        eprintln!("test-server cleanup at exit panicked; servers may be left running");
    }
}

/// Waits for a signalled child to end, killing it after [`STOP_GRACE`].
fn reap(pid: libc::pid_t) {
    let deadline = Instant::now() + STOP_GRACE;
    let mut status = 0;
    // SAFETY: waitpid on our own child; WNOHANG returns 0 while it runs, -1 if already reaped.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if Instant::now() > deadline {
            signal(pid as u32, libc::SIGKILL);
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
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
