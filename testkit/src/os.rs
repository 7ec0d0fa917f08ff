//! The operating-system calls the harness makes: the account a server runs as, signals,
//! reaping, and the parent-death signal that stops a child when this process dies.
//!
//! The calls go through rustix's safe wrappers. Two have no safe form and are the only
//! `unsafe` of the project: std's `pre_exec` ([`tie_to_this_thread`]) and `atexit(3)`
//! ([`at_exit`], which rustix does not wrap).

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{
    Pid, Signal, WaitOptions, geteuid, getpid, getppid, kill_process,
    set_parent_process_death_signal, test_kill_process, waitpid,
};

/// The OS account a server runs as. Database servers refuse to run as root, so when we are
/// root they run as their own account (`postgres`, `mysql`); otherwise they run as we do.
#[derive(Clone, Copy, Debug)]
pub struct Account {
    ids: Option<(u32, u32)>,
}

impl Account {
    /// This process's own account.
    pub fn current() -> Account {
        Account { ids: None }
    }

    /// The account `name` if this process is root, else the current one.
    pub fn named(name: &str) -> io::Result<Account> {
        if !geteuid().is_root() {
            return Ok(Account::current());
        }
        let id = |flag: &str| -> io::Result<u32> {
            let output = Command::new("id").args([flag, name]).output()?;
            if !output.status.success() {
                return Err(io::Error::other(format!(
                    "the OS account `{name}` does not exist ({}); it comes with the server \
                     packages: run scripts/install-deps.sh",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&output.stdout);
            text.trim()
                .parse()
                .map_err(|_| io::Error::other(format!("`id {flag} {name}` printed {text:?}")))
        };
        Ok(Account {
            ids: Some((id("-u")?, id("-g")?)),
        })
    }

    /// A command for `program` that runs as this account in `dir`, without the caller's
    /// libpq (`PG*`) environment, which could point clients elsewhere.
    pub fn command(self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir);
        for (key, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("PG")) {
            command.env_remove(key);
        }
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Hands `path` to this account.
    pub fn chown(self, path: &Path) -> io::Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("chown {} to uid {uid}: {e}", path.display()),
                )
            })?;
        }
        Ok(())
    }
}

fn pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Sends `signal` to process `pid` (a child not yet reaped). A process already gone is
/// not an error: there is nothing left to signal.
pub fn signal(process: u32, signal: Signal) {
    if let Some(pid) = pid(process) {
        kill_process(pid, signal).ok();
    }
}

/// Whether a process `pid` exists (one we may not signal exists too).
pub fn process_exists(process: u32) -> bool {
    let Some(pid) = pid(process) else {
        return false;
    };
    !matches!(test_kill_process(pid), Err(Errno::SRCH))
}

/// Waits for a signalled child to end, killing it after `grace`. A child already reaped
/// elsewhere returns at once.
pub fn reap(process: u32, grace: Duration) {
    let Some(pid) = pid(process) else {
        return;
    };
    let deadline = Instant::now() + grace;
    while let Ok(None) = waitpid(Some(pid), WaitOptions::NOHANG) {
        if Instant::now() > deadline {
            kill_process(pid, Signal::KILL).ok();
            waitpid(Some(pid), WaitOptions::empty()).ok();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes the kernel send `death_signal` to the child when the thread that spawns it dies.
///
/// `PR_SET_PDEATHSIG` fires when the forking *thread* ends, so callers spawn from a thread
/// that lives as long as the process (the tests' spawner thread, the demo's main thread).
pub fn tie_to_this_thread(command: &mut Command, death_signal: Signal) {
    let parent = getpid();
    // Runs in the forked child after std switched uid/gid (a credential change would clear
    // the death signal). rustix makes raw system calls here: no allocation, no lock.
    let tie = move || -> io::Result<()> {
        set_parent_process_death_signal(Some(death_signal))?;
        // If the parent died between fork and prctl, the signal will never come: give up.
        if getppid() != Some(parent) {
            return Err(Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: `pre_exec` is unsafe because the closure runs between fork and exec, where
    // only async-signal-safe work is allowed. `tie` only makes the prctl and getppid system
    // calls and builds an io::Error from an errno, none of which allocates or takes a lock.
    unsafe { command.pre_exec(tie) };
}

/// Registers `handler` to run when the process exits normally (after `main` returns, or
/// when the test harness exits), where statics are never dropped.
///
/// `handler` must not unwind: catch every panic inside it.
pub fn at_exit(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: atexit(3) only stores the function pointer, which is 'static. The handler
    // takes no arguments, and the caller's contract (above) keeps a panic from unwinding
    // into libc.
    let rc = unsafe { libc::atexit(handler) };
    if rc != 0 {
        return Err(io::Error::other("atexit: no room for another handler"));
    }
    Ok(())
}
