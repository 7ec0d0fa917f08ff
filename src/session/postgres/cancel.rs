//! CancelRequest: the proxy hands each client its own key and forwards a cancel to the
//! backend that is running that client's statement at the moment. In session mode the key's
//! process id is the session's writer connection's own (what `pg_backend_pid()` answers
//! there); in transaction mode, where many clients share a connection, it is one of the
//! proxy's ([`CancelRegistry::own_pid`]), which the client's `pg_backend_pid()` answers
//! too. The secret is the proxy's, so a cancel works only through the proxy, and a client
//! that sends its key to a server directly cancels nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::postgres::BackendKey;
use crate::protocol::postgres::startup::CANCEL_REQUEST_CODE;
use crate::topology::Instance;

/// A backend connection a cancel can be sent to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Shared, not copied: the target changes at every checkout in transaction mode.
    pub instance: Arc<Instance>,
    pub key: BackendKey,
}

/// The backends of one session and which of them runs its current statement.
#[derive(Debug, Default)]
pub struct SessionCancel {
    targets: Mutex<[Option<CancelTarget>; 2]>,
    active: AtomicU8,
}

impl SessionCancel {
    /// Records the backend behind slot 0 (writer) or 1 (reader).
    pub fn set_target(&self, slot: usize, target: Option<CancelTarget>) {
        if let Ok(mut t) = self.targets.lock() {
            t[slot & 1] = target;
        }
    }

    /// Marks which slot runs the statement now (one relaxed store per statement).
    pub fn set_active(&self, slot: usize) {
        self.active.store(slot as u8 & 1, Ordering::Relaxed);
    }

    fn active_target(&self) -> Option<CancelTarget> {
        let slot = self.active.load(Ordering::Relaxed) as usize;
        self.targets.lock().ok()?[slot].clone()
    }
}

/// Every live session's cancel key, shared by the accept loop and the sessions.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    /// Each session by its key, with its backend user (whose rights a cancel by pid needs).
    sessions: Mutex<HashMap<(i32, i32), Registered>>,
    /// How many process ids of the proxy's were handed out.
    own_pids: AtomicU32,
}

/// Process ids of the proxy's own are taken from 2^30 up (to 2^31 - 1, then again): far
/// above the ids of server processes (Linux's `pid_max` is at most 2^22), so that one is
/// never taken for a server connection's, nor a server's for a client's.
const FIRST_OWN_PID: u32 = 1 << 30;

/// A registered session: where its statement runs, and its backend user.
type Registered = (Arc<SessionCancel>, String);

/// Removes a session from the registry when dropped.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: (i32, i32),
    pub cancel: Arc<SessionCancel>,
}

impl Registration {
    /// The (pid, secret) handed to the client in BackendKeyData.
    pub fn key(&self) -> (i32, i32) {
        self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.registry.sessions.lock() {
            s.remove(&self.key);
        }
    }
}

impl CancelRegistry {
    /// Registers a session's `cancel` under `pid` (its writer connection's process id; a
    /// random one when the server sent none) and a fresh random secret, returned as
    /// (pid, secret). Two sessions may show the same pid (writers of two clusters); their
    /// secrets tell them apart.
    pub fn register(
        self: &Arc<Self>,
        cancel: Arc<SessionCancel>,
        pid: Option<i32>,
        user: &str,
    ) -> Registration {
        let mut sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = loop {
            let pid = pid.unwrap_or_else(|| rand::random::<i32>() & 0x7fff_ffff);
            let key = (pid, rand::random::<i32>());
            if !sessions.contains_key(&key) {
                break key;
            }
        };
        sessions.insert(key, (Arc::clone(&cancel), user.to_owned()));
        Registration {
            registry: Arc::clone(self),
            key,
            cancel,
        }
    }

    /// A process id of the proxy's for a client of a transaction-mode session: unique among
    /// the clients until 2^30 more have come.
    pub fn own_pid(&self) -> i32 {
        let n = self.own_pids.fetch_add(1, Ordering::Relaxed);
        (FIRST_OWN_PID | (n % FIRST_OWN_PID)) as i32
    }

    /// Forwards a client's CancelRequest; unknown keys are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) -> std::io::Result<bool> {
        let target = {
            let sessions = match self.sessions.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            sessions
                .get(&(pid, secret))
                .and_then(|(s, _)| s.active_target())
        };
        send_cancel(target).await
    }

    /// `pg_cancel_backend(pid)` of a client's own pid (the proxy's, handed out in
    /// transaction mode), asked by a client logged in to the backends as `user`: the
    /// statement that client runs now is cancelled as a CancelRequest would cancel it.
    /// `None` when `pid` is no client's, or one of another backend user (whose rights only
    /// the server knows): the call then goes to the server as written.
    pub async fn cancel_pid(&self, pid: i64, user: &str) -> Option<std::io::Result<bool>> {
        let pid = i32::try_from(pid)
            .ok()
            .filter(|p| *p as u32 >= FIRST_OWN_PID)?;
        let target = {
            let sessions = match self.sessions.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (cancel, owner) = sessions
                .iter()
                .find(|((p, _), _)| *p == pid)
                .map(|(_, session)| session)?;
            if owner != user {
                return None;
            }
            cancel.active_target()
        };
        // As on a server: the signal is sent (true) even when the client runs nothing.
        Some(send_cancel(target).await.map(|_| true))
    }
}

/// Sends a CancelRequest to `target`, if there is one; whether one was sent.
async fn send_cancel(target: Option<CancelTarget>) -> std::io::Result<bool> {
    let Some(target) = target else {
        return Ok(false);
    };
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    packet[8..12].copy_from_slice(&target.key.pid.to_be_bytes());
    packet[12..].copy_from_slice(&target.key.secret.to_be_bytes());
    let instance = &target.instance;
    let mut tcp = TcpStream::connect((instance.host.as_str(), instance.port)).await?;
    tcp.write_all(&packet).await?;
    tcp.shutdown().await?;
    Ok(true)
}
