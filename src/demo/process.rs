//! The demo's servers and proxy as child processes in one scratch directory (the OS calls
//! are testkit's, the harness the demo shares with the tests).
//!
//! Each runs as the database's own account (PostgreSQL and MariaDB refuse root), in a
//! process group of its own (so Ctrl-C reaches only the demo, which then stops them in
//! order), with its output in a log file that a failed start quotes. Unless `--keep`, each
//! is also tied to the demo with `PR_SET_PDEATHSIG`: if the demo is killed outright, the
//! kernel stops them. The demo spawns from its one runtime thread (the main thread, which
//! lives as long as the process), so that signal comes only when the process dies.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use testkit::Signal;
use tokio::process::{Child, Command};

/// How long a process may take to stop after its stop signal before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long one readiness probe may take: a stranger on our port may accept and never answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Start attempts, each on fresh ports, when another process takes a port first.
const START_ATTEMPTS: usize = 5;
/// What a server or the proxy logs when another process took its port.
const PORT_TAKEN: &str = "Address already in use";
/// How much of a log a failure quotes.
const LOG_TAIL_LINES: usize = 30;
/// Scratch directories are `<temp dir>/switchyard-demo.<pid>.<engine>.<random>`.
const DIR_PREFIX: &str = "switchyard-demo.";
/// Written into a directory whose processes `--keep` left running; such a directory is
/// never swept.
pub const STOP_SCRIPT: &str = "stop.sh";

/// How a process is asked to stop.
#[derive(Debug, Clone, Copy)]
pub enum StopSignal {
    /// PostgreSQL: fast shutdown.
    Int,
    /// MariaDB and switchyard: clean shutdown.
    Term,
}

impl StopSignal {
    fn signal(self) -> Signal {
        match self {
            StopSignal::Int => Signal::INT,
            StopSignal::Term => Signal::TERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopSignal::Int => "INT",
            StopSignal::Term => "TERM",
        }
    }
}

/// How one kind of process is stopped: by us, and by the kernel if the demo dies.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    pub stop: StopSignal,
    /// Sent by the kernel when the demo dies (PostgreSQL: SIGQUIT, an immediate shutdown
    /// that also ends the postmaster's children).
    pub on_demo_death: Signal,
}

/// The OS account a server runs as: its own when the demo runs as root, else the demo's.
#[derive(Debug, Clone, Copy)]
pub struct Account(testkit::Account);

impl Account {
    /// The demo's own account.
    pub fn current() -> Account {
        Account(testkit::Account::current())
    }

    pub async fn named(name: &str) -> Result<Account> {
        let name = name.to_owned();
        let account = tokio::task::spawn_blocking(move || testkit::Account::named(&name))
            .await
            .context("look up an OS account")??;
        Ok(Account(account))
    }

    /// The account as testkit knows it, for the servers' set-up there.
    pub fn os(self) -> testkit::Account {
        self.0
    }

    /// A command for `program` that runs as this account in `dir`, without the caller's
    /// libpq (`PG*`) environment, which could point clients elsewhere.
    pub fn command(self, program: &Path, dir: &Path) -> Command {
        Command::from(self.0.command(program, dir))
    }

    /// Hands `path` to this account.
    pub fn chown(self, path: &Path) -> Result<()> {
        Ok(self.0.chown(path)?)
    }

    /// Creates directory `path`, owned by this account.
    pub fn create_dir(self, path: &Path) -> Result<()> {
        std::fs::create_dir(path).with_context(|| format!("create {}", path.display()))?;
        self.chown(path)
    }
}

/// The demo's directory: data directories, logs, the proxy's config and state.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates `<temp dir>/switchyard-demo.<pid>.<engine>.<random>`, owned by `owner`, after
    /// removing the directories of demos that were killed (their process is gone and they
    /// left no stop script).
    pub fn create(engine: &str, owner: Account) -> Result<Scratch> {
        let base = std::env::temp_dir();
        sweep_killed_runs(&base);
        let path = base.join(format!(
            "{DIR_PREFIX}{}.{engine}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        owner.create_dir(&path)?;
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn remove(&self) -> Result<()> {
        std::fs::remove_dir_all(&self.path)
            .with_context(|| format!("remove {}", self.path.display()))
    }
}

/// Removes the directories of demos that were killed: their process is gone and they left
/// no stop script.
fn sweep_killed_runs(base: &Path) {
    testkit::sweep_killed_runs(base, DIR_PREFIX, |dir| dir.join(STOP_SCRIPT).exists());
}

/// A TCP port on 127.0.0.1 that was free a moment ago (whoever binds it retries on failure).
pub fn free_port() -> Result<u16> {
    testkit::free_port().context("bind 127.0.0.1:0 to find a free port")
}

/// Runs blocking set-up work (initdb, a base backup, an install) off the runtime's one
/// thread, so that servers set up side by side.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(work)
        .await
        .context("a set-up task panicked")??)
}

/// The last lines of a log, with a header naming the file.
pub fn log_tail(path: &Path) -> String {
    testkit::log_tail(path, LOG_TAIL_LINES)
}

struct Running {
    name: String,
    child: Child,
    stop: StopSignal,
}

/// Every long-running process the demo started, so that one call stops them all.
pub struct Processes {
    /// Whether the kernel stops them when the demo dies (not with `--keep`).
    tie_to_demo: bool,
    running: Mutex<Vec<Running>>,
}

impl Processes {
    pub fn new(tie_to_demo: bool) -> Processes {
        Processes {
            tie_to_demo,
            running: Mutex::new(Vec::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `command` in its own process group with its output in `log` (truncated, and
    /// owned by `owner`, since a server may open it itself too).
    pub fn spawn(
        &self,
        name: &str,
        mut command: Command,
        log: &Path,
        owner: Account,
        signals: Signals,
    ) -> Result<u32> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        owner.chown(log)?;
        let err = out.try_clone().context("duplicate a log file handle")?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        command.process_group(0);
        if self.tie_to_demo {
            testkit::tie_to_this_thread(command.as_std_mut(), signals.on_demo_death);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {name}: {:?}", command.as_std()))?;
        let pid = child.id().context("a just-spawned child has a pid")?;
        self.running().push(Running {
            name: name.to_owned(),
            child,
            stop: signals.stop,
        });
        Ok(pid)
    }

    /// How the process `pid` ended, or `None` while it runs.
    pub fn exited(&self, pid: u32) -> Option<String> {
        let mut running = self.running();
        let process = running.iter_mut().find(|p| p.child.id() == Some(pid))?;
        match process.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Starts a server (or the proxy) on free ports and waits until `probe` passes, trying
    /// again on fresh ports when another process took one. `spawn` gets the attempt's ports
    /// and returns the pid; `probe` gets the same ports.
    pub async fn launch<const N: usize, F>(
        &self,
        name: &str,
        log: &Path,
        timeout: Duration,
        mut spawn: impl FnMut([u16; N]) -> Result<u32>,
        mut probe: impl FnMut([u16; N]) -> F,
    ) -> Result<[u16; N]>
    where
        F: Future<Output = Result<(), String>>,
    {
        for attempt in 1..=START_ATTEMPTS {
            let mut ports = [0; N];
            for port in &mut ports {
                *port = free_port()?;
            }
            let pid = spawn(ports)?;
            match self.wait_ready(pid, timeout, || probe(ports)).await {
                Ok(()) => return Ok(ports),
                Err(NotReady::Exited(_))
                    if attempt < START_ATTEMPTS
                        && std::fs::read_to_string(log).is_ok_and(|l| l.contains(PORT_TAKEN)) =>
                {
                    self.forget(pid);
                    eprintln!("{name}: a port was taken; retrying on another");
                }
                Err(why) => bail!("{name} did not start: {why}\n{}", log_tail(log)),
            }
        }
        unreachable!("the last attempt returns or fails")
    }

    /// Polls `probe` until it passes, the process ends, or `timeout` passes.
    async fn wait_ready<F>(
        &self,
        pid: u32,
        timeout: Duration,
        mut probe: impl FnMut() -> F,
    ) -> Result<(), NotReady>
    where
        F: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(status) = self.exited(pid) {
                return Err(NotReady::Exited(status));
            }
            let last = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout(timeout, last));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    fn forget(&self, pid: u32) {
        self.running().retain(|p| p.child.id() != Some(pid));
    }

    /// Asks every process to stop (all at once, so they stop in parallel), waits for each,
    /// and kills one that takes longer than [`STOP_GRACE`].
    pub async fn stop_all(&self) {
        let mut running = std::mem::take(&mut *self.running());
        for process in &running {
            if let Some(pid) = process.child.id() {
                testkit::signal(pid, process.stop.signal());
            }
        }
        for process in &mut running {
            match tokio::time::timeout(STOP_GRACE, process.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("wait for {} to stop: {e}", process.name),
                Err(_) => {
                    eprintln!(
                        "{} ignored SIG{} for {STOP_GRACE:?}; killing it",
                        process.name,
                        process.stop.name()
                    );
                    if let Err(e) = process.child.kill().await {
                        eprintln!("kill {}: {e}", process.name);
                    }
                }
            }
        }
    }

    /// Leaves every process running (for `--keep`) and returns a shell script that stops
    /// them and then removes `dir`.
    pub fn leave_running(&self, dir: &Path) -> String {
        let running = std::mem::take(&mut *self.running());
        let mut script = String::from(
            "#!/bin/sh\n# Stops what `switchyard demo --keep` left running, then removes its directory.\n",
        );
        let mut pids = Vec::new();
        for process in &running {
            if let Some(pid) = process.child.id() {
                script.push_str(&format!(
                    "kill -{} {pid} 2>/dev/null  # {}\n",
                    process.stop.name(),
                    process.name
                ));
                pids.push(pid.to_string());
            }
        }
        script.push_str(&format!(
            "for pid in {}; do\n    while kill -0 \"$pid\" 2>/dev/null; do sleep 0.2; done\ndone\n",
            pids.join(" ")
        ));
        script.push_str(&format!(
            "rm -rf '{}'\necho 'switchyard demo: stopped, and {} removed'\n",
            dir.display(),
            dir.display()
        ));
        script
    }
}

#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("it exited ({0})")]
    Exited(String),
    #[error("not ready after {0:?}: {1}")]
    Timeout(Duration, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_script_stops_what_was_left_running() {
        let processes = Processes::new(false);
        let script = processes.leave_running(Path::new("/tmp/switchyard-demo.1.postgres.0"));
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains("rm -rf '/tmp/switchyard-demo.1.postgres.0'"),
            "{script}"
        );
    }
}
