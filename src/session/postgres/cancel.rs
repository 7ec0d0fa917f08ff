//! CancelRequest: the proxy hands each client its own key and forwards a cancel to the
//! backend that is running that client's statement at the moment. In session mode the key's
//! process id is the session's writer connection's own (what `pg_backend_pid()` answers
//! there); in transaction mode, where many clients share a connection, it is one of the
//! proxy's ([`CancelRegistry::own_pid`]), which the client's `pg_backend_pid()` answers
//! too. The secret is the proxy's, so a cancel works only through the proxy, and a client
//! that sends its key to a server directly cancels nothing.
//!
//! `pg_cancel_backend(pid)` and `pg_terminate_backend(pid)` naming a client's pid of the
//! proxy's are answered here too ([`CancelRegistry::signal_pid`]): a cancel goes where a
//! CancelRequest would; a terminate marks the session, whose own task then ends it as the
//! server ends a terminated backend (see `signal`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::backend::postgres::BackendKey;
use crate::protocol::postgres::startup::CANCEL_REQUEST_CODE;
use crate::session::latch::Latch;
use crate::sql::Signal;
use crate::topology::Instance;

/// A backend connection a cancel can be sent to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Shared, not copied: the target changes at every checkout in transaction mode.
    pub instance: Arc<Instance>,
    pub key: BackendKey,
}

/// Where a session stands for `pg_terminate_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Running,
    /// Another client terminated it: it ends at once (see `signal`).
    Terminating,
    /// Its client connection is closed.
    Ended,
}

/// `SessionCancel::active` between units: no statement of the session runs.
const IDLE: u8 = 2;

/// How long a cancel may take, from connecting to the server to the server's close of the
/// cancel connection, which it does once it signalled the backend (and so how long, at
/// most, a session whose statement is being cancelled keeps its connection before the next
/// statement or another client uses it).
const CANCEL_DELIVERY: Duration = Duration::from_secs(5);

/// The backends of one session, which of them runs its current statement, and whether it
/// was terminated.
///
/// A server signals a cancelled backend twice (the process, then its process group), and
/// the second signal can land on the statement that follows the cancelled one, which in
/// transaction mode may be another client's. So a cancel is delivered only while the
/// session runs a statement, counts as in flight until the server closed the cancel
/// connection (both signals sent, as libpq waits for), and a session whose statement ended
/// waits for the cancels in flight before it sends more or gives the connection back
/// ([`SessionCancel::unit_ended`], [`SessionCancel::delivered`]).
#[derive(Debug)]
pub struct SessionCancel {
    targets: Mutex<[Option<CancelTarget>; 2]>,
    /// The slot (0 writer, 1 reader) running the session's statement, or [`IDLE`].
    active: AtomicU8,
    /// Cancels being delivered to the session's statement.
    in_flight: AtomicUsize,
    /// Told when the last cancel in flight was delivered.
    delivered: Notify,
    /// For the terminating client, which waits for the session's end.
    life: watch::Sender<Life>,
    /// Set once another client terminated the session; read, and waited for, by the
    /// session at every statement.
    terminated: Latch,
}

impl Default for SessionCancel {
    fn default() -> SessionCancel {
        SessionCancel {
            targets: Mutex::default(),
            active: AtomicU8::new(IDLE),
            in_flight: AtomicUsize::new(0),
            delivered: Notify::new(),
            life: watch::Sender::new(Life::Running),
            terminated: Latch::default(),
        }
    }
}

impl SessionCancel {
    /// Whether another client terminated the session.
    pub fn terminated(&self) -> bool {
        self.terminated.is_set()
    }

    /// Resolves once another client terminated the session. Awaited by the session's own
    /// task only.
    pub fn terminating(&self) -> impl Future<Output = ()> + '_ {
        self.terminated.wait()
    }

    /// Marks the session terminated (its task notices: see `terminating`).
    fn terminate(&self) {
        self.life.send_if_modified(|l| {
            let running = *l == Life::Running;
            if running {
                *l = Life::Terminating;
            }
            running
        });
        self.terminated.set();
    }

    /// Waits up to `timeout` for the session's end; whether it ended.
    async fn ended_within(&self, timeout: Duration) -> bool {
        let mut life = self.life.subscribe();
        let ended = tokio::time::timeout(timeout, life.wait_for(|l| *l == Life::Ended)).await;
        matches!(ended, Ok(Ok(_)))
    }

    /// Records the backend behind slot 0 (writer) or 1 (reader).
    pub fn set_target(&self, slot: usize, target: Option<CancelTarget>) {
        if let Ok(mut t) = self.targets.lock() {
            t[slot & 1] = target;
        }
    }

    /// Marks which slot runs the statement now.
    pub fn set_active(&self, slot: usize) {
        self.active.store(slot as u8 & 1, Ordering::SeqCst);
    }

    /// The session's statement ended (its answer is complete): a cancel from now on has
    /// nothing to reach. Whether no cancel sent before is still being delivered (nearly
    /// always); else the session waits for them ([`SessionCancel::delivered`]) before it
    /// sends more or gives the connection back, so that none reaches the statements that
    /// follow on the connection.
    pub fn unit_ended(&self) -> bool {
        // With `cancel`'s increment-then-load: either it sees IDLE or this sees its count.
        self.active.store(IDLE, Ordering::SeqCst);
        // Nearly always none in flight: no wait to register (a lock in `Notify`) then.
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Resolves once the cancels in flight are delivered (see [`SessionCancel::unit_ended`]).
    pub async fn delivered(&self) {
        loop {
            let delivered = self.delivered.notified();
            tokio::pin!(delivered);
            delivered.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            delivered.await;
        }
    }

    /// Cancels the statement the session runs now, if it runs one; whether a cancel was
    /// sent. Returns once the server took it (see the type's note).
    async fn cancel(&self) -> std::io::Result<bool> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let slot = self.active.load(Ordering::SeqCst);
        let target = match slot {
            IDLE => None,
            slot => self
                .targets
                .lock()
                .ok()
                .and_then(|t| t[slot as usize & 1].clone()),
        };
        let sent = send_cancel(target).await;
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.delivered.notify_waiters();
        }
        sent
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
        self.cancel.life.send_replace(Life::Ended);
    }
}

/// What a signal sent by pid did, as the server's `pg_signal_backend` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// Sent (and, for a terminate with a timeout, the session ended within it): `true`.
    Sent,
    /// The cancel could not be forwarded: `false`.
    Failed,
    /// A terminate with a timeout whose session did not end within it: `false` and a
    /// WARNING.
    Lingers,
    /// No client has that pid: `false` and a WARNING.
    NoSuchProcess,
    /// That client logs in to the backends as another user: an error (`42501`).
    NotPermitted,
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
        let session = {
            let sessions = match self.sessions.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            sessions.get(&(pid, secret)).map(|(s, _)| Arc::clone(s))
        };
        match session {
            Some(session) => session.cancel().await,
            None => Ok(false),
        }
    }

    /// Whether the client with process id `pid` is logged in to the backends as `user`;
    /// `None` when no client has that pid.
    pub fn owner_is(&self, pid: i32, user: &str) -> Option<bool> {
        self.by_pid(pid).map(|(_, owner)| owner == user)
    }

    /// The session with process id `pid`, and its backend user.
    fn by_pid(&self, pid: i32) -> Option<Registered> {
        let sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sessions
            .iter()
            .find(|((p, _), _)| *p == pid)
            .map(|(_, (cancel, owner))| (Arc::clone(cancel), owner.clone()))
    }

    /// `pg_cancel_backend(pid)` or `pg_terminate_backend(pid)` (`signal`) of a pid in the
    /// proxy's range, asked by a client logged in to the backends as `user`, as the server
    /// answers it for its own processes: a cancel reaches the statement that client runs now
    /// as a CancelRequest would; a terminate ends the client's session and, given a `wait`,
    /// waits that long for its end. The right is the server's simplest: the same backend
    /// user (the proxy knows no role memberships). `pid` is one of the proxy's range
    /// ([`proxy_pid`]); a server's goes to the server.
    pub async fn signal_pid(
        &self,
        pid: i32,
        user: &str,
        signal: Signal,
        wait: Option<Duration>,
    ) -> Signalled {
        let found = self
            .by_pid(pid)
            .map(|(cancel, owner)| (cancel, owner == user));
        let Some((session, permitted)) = found else {
            return Signalled::NoSuchProcess;
        };
        if !permitted {
            return Signalled::NotPermitted;
        }
        match signal {
            // As on a server: the signal is sent (true) even when the client runs nothing.
            Signal::Cancel => match session.cancel().await {
                Ok(_) => Signalled::Sent,
                Err(e) => {
                    tracing::warn!(error = %e, "could not forward a cancel");
                    Signalled::Failed
                }
            },
            Signal::Terminate => {
                session.terminate();
                match wait {
                    Some(wait) if !session.ended_within(wait).await => Signalled::Lingers,
                    _ => Signalled::Sent,
                }
            }
        }
    }
}

/// `pid` as a process id of the proxy's range (from 2^30): a client's in transaction mode,
/// never a server's.
pub fn proxy_pid(pid: i64) -> Option<i32> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p >= FIRST_OWN_PID as i32)
}

/// Sends a CancelRequest to `target`, if there is one; whether one was sent. Returns once
/// the server closed the connection, which it does once it signalled the backend (or
/// after [`CANCEL_DELIVERY`]).
pub(super) async fn send_cancel(target: Option<CancelTarget>) -> std::io::Result<bool> {
    let Some(target) = target else {
        return Ok(false);
    };
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    packet[8..12].copy_from_slice(&target.key.pid.to_be_bytes());
    packet[12..].copy_from_slice(&target.key.secret.to_be_bytes());
    let instance = &target.instance;
    // Bounded as a whole: the session whose statement it cancels waits for it.
    let deadline = tokio::time::Instant::now() + CANCEL_DELIVERY;
    let sent = tokio::time::timeout_at(deadline, async {
        let mut tcp = TcpStream::connect((instance.host.as_str(), instance.port)).await?;
        tcp.write_all(&packet).await?;
        tcp.shutdown().await?;
        Ok::<TcpStream, std::io::Error>(tcp)
    })
    .await;
    let mut tcp = sent.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    // The server sends nothing: read to its close.
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout_at(deadline, async {
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
    match closed {
        Ok(read) => read.map(|()| true),
        Err(_) => {
            tracing::debug!(
                host = %instance.host,
                port = instance.port,
                "the server did not close a cancel connection in time"
            );
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pid_is_signalled_by_its_own_backend_user_only() {
        let registry = Arc::new(CancelRegistry::default());
        let pid = registry.own_pid();
        let victim = Arc::new(SessionCancel::default());
        let registration = registry.register(Arc::clone(&victim), Some(pid), "app");
        let signal = |user: &'static str, signal, wait| {
            let registry = Arc::clone(&registry);
            async move { registry.signal_pid(pid, user, signal, wait).await }
        };
        assert_eq!(
            signal("other", Signal::Terminate, None).await,
            Signalled::NotPermitted
        );
        assert!(!victim.terminated());
        // Nothing runs: a cancel has nowhere to go, and is still "sent", as on a server.
        assert_eq!(signal("app", Signal::Cancel, None).await, Signalled::Sent);
        assert!(!victim.terminated());
        let wait = Some(Duration::from_millis(50));
        assert_eq!(
            signal("app", Signal::Terminate, wait).await,
            Signalled::Lingers,
            "the session did not end"
        );
        assert!(victim.terminated());
        victim.terminating().await;
        let ending = tokio::spawn(signal(
            "app",
            Signal::Terminate,
            Some(Duration::from_secs(60)),
        ));
        tokio::task::yield_now().await;
        drop(registration);
        assert_eq!(ending.await.unwrap(), Signalled::Sent, "it ended in time");
        assert_eq!(
            signal("app", Signal::Terminate, None).await,
            Signalled::NoSuchProcess
        );
    }

    /// A cancel counts as in flight until the server closed its connection, and the
    /// session's next statement waits for that; once the statement ended, a cancel sends
    /// nothing.
    #[tokio::test]
    async fn a_session_waits_for_the_cancel_of_its_statement_to_be_delivered() {
        use crate::topology::{Role, Status};
        use futures_util::FutureExt;
        use tokio::net::TcpListener;

        // Stands in for the server's cancel port only: a cancel connection carries no data
        // back, and the point is when it closes.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let instance = Instance::new("c", "w", "127.0.0.1", port, Role::Writer, Status::Healthy);
        let session = Arc::new(SessionCancel::default());
        let key = BackendKey { pid: 7, secret: 9 };
        let target = CancelTarget {
            instance: Arc::new(instance),
            key,
        };
        session.set_target(0, Some(target));
        session.set_active(0);
        let cancelling = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.cancel().await.unwrap() }
        });
        let (mut conn, _) = server.accept().await.unwrap();
        let mut packet = [0u8; 16];
        conn.read_exact(&mut packet).await.unwrap();
        assert_eq!(&packet[8..12], &7i32.to_be_bytes(), "the backend's pid");
        assert_eq!(&packet[12..], &9i32.to_be_bytes(), "the backend's secret");
        assert!(!session.unit_ended(), "a cancel is in flight");
        let ended = session.delivered();
        tokio::pin!(ended);
        assert!(
            ended.as_mut().now_or_never().is_none(),
            "the cancel is not delivered yet"
        );
        assert!(!cancelling.is_finished());
        drop(conn);
        assert!(cancelling.await.unwrap(), "a cancel was sent");
        ended.await;
        // Between statements a cancel reaches nothing (no connection is opened).
        assert!(!session.cancel().await.unwrap());
    }

    #[test]
    fn only_the_proxy_range_is_the_proxy_s() {
        assert_eq!(proxy_pid(1 << 30), Some(1 << 30));
        assert_eq!(proxy_pid(i64::from(i32::MAX)), Some(i32::MAX));
        for server in [0, 4_194_304, (1 << 30) - 1, -1, -(1 << 30), 1 << 31] {
            assert_eq!(proxy_pid(server), None, "{server}");
        }
    }
}
