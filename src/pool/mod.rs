//! The backend connection pool: logged-in connections kept per (cluster, instance, backend
//! user, database, login options), lent out as [`Lease`]s and given back clean, so that a
//! login is paid once per connection instead of once per client. Protocol-agnostic: a
//! connection type only says how to reset itself and whether it is still open
//! ([`Pooled`]); the caller says how to open one (the `connect` of [`Pools::checkout`]).
//!
//! Idle connections are handed out newest first (LIFO): the connections in use stay a small
//! hot set, the ones a quieter hour no longer needs stay idle until `idle_timeout` closes
//! them (oldest first would keep every connection busy just enough never to time out), and
//! the newest is the least likely to have been cut by a firewall or server timeout.

mod backends;
mod lease;
mod pools;
mod slots;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::time::Duration;

pub use crate::backend::Carried;
pub use lease::{Lease, Release};
pub use pools::{PoolRef, Pools};
pub use slots::Counts;

use crate::config::{PoolMode, ServerConfig};

/// A connection the pool can keep between clients.
pub trait Pooled: Send + 'static {
    /// Why a reset failed (the connection is then closed).
    type ResetError: std::error::Error + Send + Sync + 'static;

    /// Makes the connection indistinguishable from a fresh login with the same [`Key`]: no
    /// transaction, no session settings, temporary tables, prepared statements or locks.
    fn reset(&mut self) -> impl Future<Output = Result<(), Self::ResetError>> + Send;

    /// Whether the server has closed the connection (or is closing it), judged from what
    /// has already arrived, without waiting; checked before an idle one is handed out.
    fn is_closed(&mut self) -> bool;

    /// What the connection carries from the sessions that used it (see [`Carried`]); a
    /// successful [`Pooled::reset`] leaves it empty.
    fn carried(&mut self) -> &mut Carried;

    /// Told `true` when the connection is lent to a session and `false` when it goes back
    /// to the pool (to count only lent connections as an instance's load, for example).
    fn set_leased(&mut self, _leased: bool) {}

    /// Ends the connection politely (PostgreSQL Terminate, MySQL COM_QUIT).
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move { drop(self) }
    }
}

/// What makes two backend connections interchangeable: same instance, same login.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub cluster: String,
    /// The instance's `host:port` (its metrics label).
    pub instance: String,
    /// The backend user the connection logged in as.
    pub user: String,
    /// The database of the login; empty for a MySQL login without one.
    pub database: String,
    /// A fingerprint of the login options that cannot change after login (PostgreSQL
    /// startup parameters; MySQL capability flags, character set, connection attributes),
    /// computed by the caller.
    pub options: u64,
}

/// A fingerprint of login options for [`Key::options`] (for instance the startup
/// parameters as a list of pairs): equal options give equal fingerprints in one process.
pub fn fingerprint(options: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    options.hash(&mut hasher);
    hasher.finish()
}

/// The pool settings of the live config, read at each checkout (so a reload applies to
/// the next checkout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most connections open per [`Key`] (idle, in use, opening or being reset).
    pub size: usize,
    /// An idle connection unused for longer is closed.
    pub idle_timeout: Duration,
    /// A connection older than this is not handed out again: it is closed when idle or
    /// when given back.
    pub max_lifetime: Duration,
    /// How long a checkout waits for a connection when the pool is full.
    pub checkout_timeout: Duration,
    /// Idle connections the sweep keeps open in the pool (within `size`).
    pub min_idle: usize,
    /// Most connections open to the key's instance across all its pools; `None`: no limit.
    pub max_backend: Option<usize>,
}

impl Settings {
    /// The `[server]` pool keys (`pool_size`, `idle_timeout`, `max_lifetime`,
    /// `checkout_timeout`, `min_idle`, `max_backend_connections`) for the pools of sessions
    /// in `mode`.
    pub fn from_config(server: &ServerConfig, mode: PoolMode) -> Settings {
        Settings {
            size: server.pool_size(mode),
            idle_timeout: server.idle_timeout,
            max_lifetime: server.max_lifetime,
            checkout_timeout: server.checkout_timeout,
            min_idle: server.min_idle,
            max_backend: server.max_backend_connections,
        }
    }
}

/// What the sweep needs to keep `min_idle` connections in a pool without a checkout: the
/// pool's current settings, and a way to open a connection for its key. Given to
/// [`Pools::set_opener`] by the layer that knows the logins.
pub trait Opener<C>: Send + Sync + 'static {
    /// The settings of the live config for `key`'s pools; `None` keeps those of its latest
    /// checkout.
    fn settings(&self, key: &Key) -> Option<Settings>;

    /// Opens and logs in a connection for `key`; the error says why not.
    fn open(&self, key: &Key) -> Pin<Box<dyn Future<Output = Result<C, OpenError>> + Send>>;
}

/// Why an [`Opener`] could not open a connection: the cause, for the log, and whether the
/// server refused the login for want of connection slots, which the pool then treats as it
/// does a checkout's ([`LoginError::server_full`]: no more opened for a while, logged once).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OpenError {
    pub message: String,
    pub server_full: bool,
}

impl OpenError {
    /// A failed login, as its error says.
    pub fn login<E: std::error::Error + LoginError>(error: &E) -> OpenError {
        OpenError {
            message: crate::error::chain(error),
            server_full: error.server_full(),
        }
    }
}

impl From<&str> for OpenError {
    fn from(message: &str) -> OpenError {
        OpenError {
            message: message.to_owned(),
            server_full: false,
        }
    }
}

/// What the pool needs to know of a failed login.
pub trait LoginError {
    /// The server refused the login for want of connection slots (PostgreSQL `53300`:
    /// `max_connections`, a role's or a database's `CONNECTION LIMIT`; MySQL `1040`,
    /// `1203`, `1226`: `max_connections`, `max_user_connections`): the instance is up, only
    /// full. A pool that still has connections then opens no more for
    /// [`FULL_RETRY_AFTER`], and its checkouts wait for those instead.
    fn server_full(&self) -> bool;

    /// The server answered the login with a refusal (a password, a database, an account's
    /// rights, its connection slots): it is up, so the refusal is the client's error, and
    /// waiting for a failover would not help. False when the server could not be reached
    /// or is shutting down or starting up (a failover's errors).
    fn refused(&self) -> bool;
}

/// A login that cannot fail.
impl LoginError for std::convert::Infallible {
    fn server_full(&self) -> bool {
        match *self {}
    }

    fn refused(&self) -> bool {
        match *self {}
    }
}

/// How long a pool whose server refused a login for want of connection slots opens no
/// more while it has connections of its own (the next checkout after it tries again).
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a checkout gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError<E> {
    /// The pool stayed full (or its instance at `max_backend_connections`) for
    /// `checkout_timeout` (PostgreSQL 53300, MySQL 1040).
    #[error(
        "no connection to {instance} for user {user:?} came free within {timeout:?} \
         (pool_size {size}{})",
        budget.map(|b| format!(", max_backend_connections {b}")).unwrap_or_default()
    )]
    Timeout {
        instance: String,
        user: String,
        size: usize,
        /// The instance's `max_backend_connections`, if set.
        budget: Option<usize>,
        timeout: Duration,
    },
    /// Opening a new connection failed (the caller's `connect` error).
    #[error("open a pooled connection")]
    Connect(#[source] E),
}

/// Why the pool closed a connection: the `reason` label of `switchyard_pool_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`.
    IdleTimeout,
    /// Older than `max_lifetime`.
    MaxLifetime,
    /// `reset()` failed or timed out.
    ResetFailed,
    /// The server had closed it (found before handing it out).
    Broken,
    /// The lease was dropped without a release: its state was unknown.
    Dropped,
    /// Given back while more connections were open than `pool_size` allows (a reload
    /// lowered it).
    PoolSize,
    /// Taken out of the pool with [`Lease::detach`] (the caller closes it).
    Detached,
    /// Its pool was retired ([`Pools::retire`]: its instance left, or its cluster is no
    /// longer used).
    Retired,
    /// Idle, closed to let another pool of its instance open a connection within
    /// `max_backend_connections`.
    Budget,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        CloseReason::IdleTimeout,
        CloseReason::MaxLifetime,
        CloseReason::ResetFailed,
        CloseReason::Broken,
        CloseReason::Dropped,
        CloseReason::PoolSize,
        CloseReason::Detached,
        CloseReason::Retired,
        CloseReason::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::ResetFailed => "reset_failed",
            CloseReason::Broken => "broken",
            CloseReason::Dropped => "dropped",
            CloseReason::PoolSize => "pool_size",
            CloseReason::Detached => "detached",
            CloseReason::Retired => "retired",
            CloseReason::Budget => "max_backend_connections",
        }
    }
}
