//! Server processes and scratch directories for test binaries: stopped when dropped, at
//! process exit, or by the kernel when the process is killed.
//!
//! # Why no server outlives the test binary
//!
//! 1. **A handle is dropped** (a test's own cluster): [`ServerProcess`]'s `Drop` sends the
//!    server's stop signal, waits, escalates to `SIGKILL` after [`STOP_GRACE`], and
//!    [`ScratchDir`]'s `Drop` removes the directory.
//! 2. **The process exits normally** while servers still run (a shared cluster lives in a
//!    `static`, and statics are never dropped): every server and directory is recorded in
//!    [`LEFTOVERS`] while it exists, and an `atexit` handler, registered once, stops and
//!    removes whatever is still recorded.
//! 3. **The process is killed** (`kill -9`, a CI time-out): no code of ours runs, so the
//!    kernel does it. Each server is spawned with `PR_SET_PDEATHSIG`, which signals the
//!    child when the *thread* that forked it dies. `cargo test` runs each test on a thread
//!    that ends with the test, so servers are forked from one spawner thread that lives as
//!    long as the process. For PostgreSQL the death signal is `SIGQUIT` (an immediate
//!    shutdown in which the postmaster also stops its children); for MariaDB `SIGKILL`.
//!    Directories of such killed runs are swept by the next run ([`ScratchDir::new`]).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::os::{Account, at_exit, reap, signal, tie_to_this_thread};

/// How long a server may take to stop after its stop signal before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A temporary directory named `<kind>.<pid>.<random>` under the system temp dir, owned by
/// a server account, removed on drop or, if never dropped, at process exit.
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Creates one, after removing the `<kind>.<pid>.*` directories of killed runs.
    pub fn new(kind: &str, owner: Account) -> ScratchDir {
        let base = std::env::temp_dir();
        crate::sweep_killed_runs(&base, &format!("{kind}."), |_| false);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{kind}.{}.", std::process::id()))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("create a {kind} directory in {}: {e}", base.display()));
        owner.chown(dir.path()).unwrap_or_else(|e| panic!("{e}"));
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

/// A server process: stopped when dropped, at process exit, or by the kernel when this
/// process dies (see the module docs).
pub struct ServerProcess {
    child: Child,
    stop_signal: Signal,
}

impl ServerProcess {
    /// Spawns `command` from the spawner thread; `stop_signal` asks it to stop cleanly,
    /// `death_signal` is what the kernel sends it if this process dies.
    pub fn spawn(
        mut command: Command,
        stop_signal: Signal,
        death_signal: Signal,
    ) -> io::Result<ServerProcess> {
        tie_to_this_thread(&mut command, death_signal);
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
                    "pid {} ignored {:?} for {STOP_GRACE:?}; killing it",
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

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread that forks every server: it never ends, so `PR_SET_PDEATHSIG` fires only
/// when the whole process dies.
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
    processes: Vec<(u32, Signal)>,
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
        at_exit(stop_leftovers).expect("register the test-server exit handler");
    });
}

/// At exit: stop every server still running (all signalled first, so they stop in
/// parallel) and remove every directory still recorded. Catches every panic: it must not
/// unwind out of an `extern "C"` fn (see [`at_exit`]).
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
            reap(pid, STOP_GRACE);
        }
        for dir in dirs {
            std::fs::remove_dir_all(&dir).ok(); // best effort: nothing to report to at exit
        }
    };
    // A panic must not unwind out of an extern "C" fn.
    if std::panic::catch_unwind(cleanup).is_err() {
        eprintln!("test-server cleanup at exit panicked; servers may be left running");
    }
}
