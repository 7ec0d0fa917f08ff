//! The session flow, written once for both protocols: a [`Session<P>`] holds what every
//! session has (its cluster, backend login, writer and reader connections, the state it
//! replays on them, its routing view, read-your-writes window, admission, reader spread)
//! and decides, the same way for PostgreSQL and MySQL, where each unit runs: route,
//! reader choice and fallback, session state to record or pin on, read-your-writes. The
//! migration gate and the moves to another writer are in `migration.rs`, the reader
//! connection in `readers.rs`.
//!
//! The protocol is chosen once, when the session starts (`session::run`), so the flow is
//! monomorphic: `P` is a marker type (`postgres::Postgres`, `mysql::Mysql`) and
//! [`Protocol`] is what each protocol supplies: connecting and logging in, replaying
//! session state on a connection, setting one read-only, and the codes and words of the
//! errors the flow itself raises. Framing units, relaying them and answering the client in
//! its wire format stay in `session::{postgres,mysql}`, as `impl Session<Postgres>` /
//! `impl Session<Mysql>` blocks over this same struct.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::holds::Holds;
pub use super::pins::{Pin, PinGuard, Pins};
use super::readers::ReaderSpread;
use super::replays::Replays;
use super::{Context, error::SessionError};
use crate::backend::Credentials;
use crate::catalog::SessionFunctions;
use crate::config::PoolMode;
use crate::cutover::Admission;
use crate::pool::{self, CheckoutError, Key, Lease, PoolRef, Pooled, Pools, Release};
use crate::router::{self, Effect, ReadYourWrites, SessionView, Settings, Target};
use crate::shutdown::Shutdown;
use crate::sql::Statement;
use crate::topology::{Cluster, Instance};

/// What a protocol supplies to the shared flow.
pub trait Protocol: Sized + Send + Sync + std::fmt::Debug + 'static {
    /// The code an error carries: a SQLSTATE, or a MySQL error number.
    type Code: Copy + std::fmt::Debug + Send + Sync + 'static;
    type ConnectError: std::error::Error + crate::pool::LoginError + Send + Sync + 'static;
    /// A backend connection as the connector returns it, logged in; kept in a pool.
    type Conn: Pooled + Send;
    /// A connection the session holds (lent by the pool), with what the session tracks
    /// about it.
    type Backend: Held<Conn = Lease<Self::Conn>> + Send + Sync;
    /// One change of session state, recorded to replay on other connections.
    type Replay: Send + Sync + std::hash::Hash;
    /// What a backend login needs besides the credentials (startup parameters, the
    /// client's capabilities and database).
    type Login: Clone + Send + Sync;
    /// The protocol's own half of a session: the client connection and what only this
    /// protocol tracks.
    type Side: Send + Sync;

    /// The codes and words of the ways a session ends.
    const ENDINGS: super::error::Endings<Self::Code>;

    /// A ROLLBACK undoes a `SET` (PostgreSQL). MySQL's session settings and user variables
    /// are not transactional: one set in a transaction stays, whatever ends it.
    const TRANSACTIONAL_SETTINGS: bool;

    /// Connects to `instance` as `dial` says and logs in.
    fn connect(
        dial: Dial<'_, Self>,
        instance: &Arc<Instance>,
    ) -> impl Future<Output = Result<Self::Conn, Self::ConnectError>> + Send;

    /// The pools of this protocol's connections.
    fn pools(ctx: &Context) -> &Pools<Self::Conn>;

    /// The logins this protocol's sessions use, to open the same on another cluster.
    fn logins(ctx: &Context) -> &super::warm::Logins<Self>;

    /// What tells apart the pools of one instance and backend `user` for a login: its
    /// database, and a fingerprint of the options that cannot change after login
    /// (`pool::fingerprint`).
    fn pool_login(login: &Self::Login, user: &str) -> (String, u64);

    /// Closes a connection the session will not use (a probe).
    fn close(conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// Replays `replays[backend.applied()..]` on `backend`; `Ok(Err(message))` when the
    /// server refused one.
    fn replay(
        backend: &mut Self::Backend,
        replays: &[Self::Replay],
    ) -> impl Future<Output = Result<Result<(), String>, SessionError<Self>>> + Send;

    /// The settings `replay` sets, when it sets each from a literal value (replaying a later
    /// replay of the same names in its place leaves the same state); `None` otherwise.
    fn setting_names(replay: &Self::Replay) -> Option<Vec<String>>;

    /// What `replay` leaves the session's default transaction isolation at, when it changes
    /// it and a serializable one matters (PostgreSQL: a hot standby refuses it).
    fn default_isolation(replay: &Self::Replay) -> Option<crate::sql::DefaultIsolation>;

    /// Whether [`Protocol::prepare_writer`] has anything to do for this session (MySQL:
    /// autocommit is off), so that a writer carrying the session's state can be installed
    /// without awaiting it.
    fn writer_needs_preparing(side: &Self::Side) -> bool;

    /// What else a new writer connection needs of the session's state (MySQL: autocommit
    /// off); `Ok(Err(message))` when the server refused it.
    fn prepare_writer(
        side: &Self::Side,
        backend: &mut Self::Backend,
    ) -> impl Future<Output = Result<Result<(), String>, SessionError<Self>>> + Send;

    /// Makes `backend`'s transactions read-only (or read-write again); `Some(message)`
    /// when the server refused.
    fn set_read_only(
        backend: &mut Self::Backend,
        read_only: bool,
    ) -> impl Future<Output = Result<Option<String>, SessionError<Self>>> + Send;

    /// The session's `target` connection changed (`None`: it has none now): what the
    /// protocol keeps per connection (cancel targets, prepared statement ids) follows.
    fn backend_changed(side: &mut Self::Side, target: Target, backend: Option<&Self::Backend>);

    /// Whether the session's writer connection may serve another session once this one
    /// ends (MySQL: not the connection the client was greeted with, which no later client
    /// can be greeted with; it is closed instead).
    fn reusable_writer(side: &Self::Side) -> bool;

    /// Relays to the client what the server said before it ended `writer` by itself (a
    /// FATAL, an ERR), if it left anything unread; whether the client was told.
    fn last_words(
        side: &mut Self::Side,
        writer: Self::Backend,
    ) -> impl Future<Output = bool> + Send;

    /// The code and words of an error the shared flow raises.
    fn refusal(why: Why<'_>) -> (Self::Code, String);

    /// Resolves once another client ended the session (`pg_terminate_backend`, `KILL`):
    /// a wait for a connection stops there.
    fn killed(side: &Self::Side) -> impl Future<Output = ()> + Send + '_;
}

/// How a session connects: to which cluster, as whom, within how long.
pub struct Dial<'a, P: Protocol> {
    pub cluster: &'a Cluster,
    pub login: &'a P::Login,
    pub creds: &'a Credentials,
    pub timeout: Duration,
    /// Whose pools: those of session-mode or of transaction-mode sessions (their size
    /// differs).
    pub mode: PoolMode,
}

impl<P: Protocol> Clone for Dial<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Protocol> Copy for Dial<'_, P> {}

/// Why no connection could be had: the pool stayed full, or opening one failed.
pub type OpenError<P> = CheckoutError<<P as Protocol>::ConnectError>;

/// The pool a connection to `instance` as `dial` says belongs to: the same instance,
/// backend user, database and login options.
pub(super) fn key<P: Protocol>(dial: &Dial<'_, P>, instance: &Instance) -> Key {
    let (database, options) = P::pool_login(dial.login, &dial.creds.user);
    Key {
        cluster: dial.cluster.name.clone(),
        instance: instance.addr.clone(),
        user: dial.creds.user.clone(),
        database,
        options,
    }
}

/// A connection to `instance` as `dial` says, from its pool: an idle one, else one opened
/// and logged in now, else the first one given back within `checkout_timeout`.
pub async fn checkout<P: Protocol>(
    ctx: &Context,
    dial: Dial<'_, P>,
    instance: &Arc<Instance>,
) -> Result<Lease<P::Conn>, OpenError<P>> {
    let key = key(&dial, instance);
    P::logins(ctx).note(&key, dial);
    checkout_keyed(ctx, dial, instance, &key).await
}

/// [`checkout`] from `pool`, the pool of the session's last writer connection, known to be
/// the one `dial` and `instance` give: no key is built, looked up or noted per transaction
/// (`settings` from the session's config).
pub async fn checkout_from<P: Protocol>(
    ctx: &Context,
    dial: Dial<'_, P>,
    instance: &Arc<Instance>,
    pool: &PoolRef<P::Conn>,
    settings: &pool::Settings,
) -> Result<Lease<P::Conn>, OpenError<P>> {
    let connect = || P::connect(dial, instance);
    P::pools(ctx).checkout_from(pool, settings, connect).await
}

/// [`checkout`] from the pool of `key`, already known to be the one `dial` and `instance`
/// give (its login already noted).
async fn checkout_keyed<P: Protocol>(
    ctx: &Context,
    dial: Dial<'_, P>,
    instance: &Arc<Instance>,
    key: &Key,
) -> Result<Lease<P::Conn>, OpenError<P>> {
    let settings = pool::Settings::from_config(&ctx.config().raw.server, dial.mode);
    let connect = || P::connect(dial, instance);
    P::pools(ctx).checkout(key, &settings, connect).await
}

/// What a session knows about a connection it holds, for the shared flow; implemented
/// with [`held!`] over the backend type's own fields and methods.
pub trait Held {
    type Conn;
    /// The empty queues a backend fills while a unit runs, kept with their capacity from
    /// the connection a session gives back to the next one it takes: in transaction mode a
    /// session takes a connection for every transaction, and would allocate them anew.
    type Spare: Default + Send + Sync;
    fn new(conn: Self::Conn, spare: Self::Spare) -> Self;
    fn instance(&self) -> &Arc<Instance>;
    /// Whether the server closed the connection (a read that does not wait).
    fn closed(&mut self) -> bool;
    /// How many of the session's replays this connection has had.
    fn applied(&mut self) -> &mut usize;
    /// What the connection carries between sessions: the state run on it, whether its
    /// transactions are read-only now.
    fn carried(&mut self) -> &mut crate::backend::Carried;
    /// The pooled connection.
    fn lease(&mut self) -> &mut Self::Conn;
    /// The connection, to give back to its pool, and the queues, emptied.
    fn into_parts(self) -> (Self::Conn, Self::Spare);
}

/// Implements [`Held`] for a protocol's `Backend`: a struct with `conn` (whose `instance`
/// and `carried` it is) and `applied` fields, and `closed()` method; either `new(conn)`
/// (no spare) or, given the spare's type, `with_spare(conn, spare)` and `into_parts()`.
macro_rules! held {
    ($backend:ty, $conn:ty) => {
        $crate::session::flow::held!(@impl $backend, $conn, (),
            fn new(conn: $conn, _spare: ()) -> Self {
                <$backend>::new(conn)
            }
            fn into_parts(self) -> ($conn, ()) {
                (self.conn, ())
            });
    };
    ($backend:ty, $conn:ty, $spare:ty) => {
        $crate::session::flow::held!(@impl $backend, $conn, $spare,
            fn new(conn: $conn, spare: $spare) -> Self {
                <$backend>::with_spare(conn, spare)
            }
            fn into_parts(self) -> ($conn, $spare) {
                <$backend>::into_parts(self)
            });
    };
    (@impl $backend:ty, $conn:ty, $spare:ty, $($parts:item)*) => {
        impl $crate::session::flow::Held for $backend {
            type Conn = $conn;
            type Spare = $spare;
            $($parts)*
            fn instance(&self) -> &std::sync::Arc<$crate::topology::Instance> {
                &self.conn.instance
            }
            fn closed(&mut self) -> bool {
                <$backend>::closed(self)
            }
            fn applied(&mut self) -> &mut usize {
                &mut self.applied
            }
            fn carried(&mut self) -> &mut $crate::backend::Carried {
                &mut self.conn.carried
            }
            fn lease(&mut self) -> &mut $conn {
                &mut self.conn
            }
        }
    };
}
pub(crate) use held;

/// The errors the shared flow raises, for [`Protocol::refusal`].
#[derive(Debug, Clone, Copy)]
pub enum Why<'a> {
    /// A write to `cluster`, read-only for a migration.
    ReadOnly { cluster: &'a str },
    /// The session holds state that cannot move to `to`'s writer.
    CannotMove {
        cause: super::failover::MoveCause,
        to: &'a str,
    },
    /// The active cluster is not in the topology.
    NoActiveCluster { name: &'a str },
    /// No usable writer within `failover_timeout`.
    NoWriter(&'a super::failover::WaitError),
}

/// One client session. `P` picks the protocol; `side` is the protocol's own half.
pub struct Session<P: Protocol> {
    pub(super) ctx: Arc<Context>,
    /// The config as the session read it last (see [`Context::config_now`]).
    pub(super) config: super::HeldConfig,
    pub(super) cluster: Arc<Cluster>,
    pub(super) creds: Credentials,
    pub(super) login: P::Login,
    /// Whether the session holds its connections throughout or per transaction.
    pub(super) mode: PoolMode,
    /// Whether the unknown functions a read calls only read (the catalog cache).
    pub(super) functions: SessionFunctions,
    pub(super) writer: Option<P::Backend>,
    pub(super) reader: Option<P::Backend>,
    /// The pool of the session's last writer connection: in transaction mode the next
    /// transaction takes one from the same pool, without building its key again.
    pub(super) writer_pool: Option<PoolRef<P::Conn>>,
    /// The routing state as this session last saw it (`Routing::current`).
    pub(super) routing: crate::cutover::Seen,
    /// The queues of the connections given back, for the next ones taken (see
    /// [`Held::Spare`]).
    spares: Vec<<P::Backend as Held>::Spare>,
    /// Session state (`SET`, `USE` …), replayed in order on the session's other connections.
    pub(super) replays: Replays<P::Replay>,
    pub(super) view: SessionView,
    /// What this session's route says its reads see after its writes.
    pub(super) read_your_writes: ReadYourWrites,
    /// Reads stay on the writer until then, after this session wrote (read-your-writes).
    pub(super) writes_until: Option<Instant>,
    /// The open transaction may have written on the writer: its end starts the
    /// read-your-writes window (the clock is read once, then, not after every write).
    pub(super) wrote_in_transaction: bool,
    /// Held while this session has work on the writer (a cutover's drain waits for it).
    pub(super) admission: Option<Admission>,
    /// The transaction open now was admitted while its cluster was read-only: a client's
    /// `SET TRANSACTION READ WRITE` in it is undone (PostgreSQL).
    pub(super) admitted_read_only: bool,
    /// Transaction mode: how many more units the session keeps its writer connection
    /// after one whose answer is read on that connection only (MySQL: a statement that
    /// gave an AUTO_INCREMENT value, which `LAST_INSERT_ID()` reads).
    pub(super) keep_writer: u8,
    /// The writer connection was kept after the last unit (see `keep_writer`): a unit on
    /// it does not keep it again, so a client that inserts in a loop still lets it go.
    pub(super) kept_writer: bool,
    /// Why the session stays on its writer connection, if it does: every reason that
    /// holds now (each lets go on its own, see [`Session::unpin`]).
    pub(super) pinned: Vec<(Pin, PinGuard)>,
    /// The session's transactions were serializable by default at login (`Start::pinned`),
    /// what a `RESET` goes back to.
    pub(super) login_serializable: bool,
    /// The state behind `Pin::Statement` and `Pin::Cursor`, piece by piece.
    pub(super) holds: Holds,
    /// When this session last looked at whether its reader should change.
    pub(super) spread: ReaderSpread,
    pub(super) shutdown: Shutdown,
    /// The drain (shutdown) as the session waits for it between transactions, kept from
    /// one wait to the next.
    pub(super) drain: crate::shutdown::ShutdownWait,
    pub(super) side: P::Side,
}

/// What a session starts with, besides its protocol's half.
pub struct Start<P: Protocol> {
    pub ctx: Arc<Context>,
    pub cluster: Arc<Cluster>,
    pub creds: Credentials,
    pub login: P::Login,
    /// How long it holds its backend connections (`pool_mode`, per route).
    pub mode: PoolMode,
    /// The database the client logged in to, for the function catalog.
    pub database: Option<String>,
    pub read_your_writes: ReadYourWrites,
    /// Reads stay on the writer from the start (a serializable-by-default session).
    pub pinned: bool,
    pub shutdown: Shutdown,
}

impl<P: Protocol> Session<P> {
    pub fn new(start: Start<P>, side: P::Side) -> Session<P> {
        let functions = start
            .ctx
            .functions(&start.creds, start.database, &start.shutdown);
        let pinned = start
            .pinned
            .then(|| (Pin::Serializable, start.ctx.pins.pin(Pin::Serializable)))
            .into_iter()
            .collect();
        Session {
            config: start.ctx.held_config(),
            routing: start.ctx.routing.seen(),
            ctx: start.ctx,
            cluster: start.cluster,
            creds: start.creds,
            login: start.login,
            mode: start.mode,
            functions,
            writer: None,
            reader: None,
            writer_pool: None,
            spares: Vec::new(),
            replays: Replays::default(),
            view: SessionView {
                in_transaction: None,
                pinned_to_writer: false,
                reads_on_writer: start.pinned,
                wrote_recently: false,
            },
            read_your_writes: start.read_your_writes,
            writes_until: None,
            wrote_in_transaction: false,
            admission: None,
            admitted_read_only: false,
            keep_writer: 0,
            kept_writer: false,
            pinned,
            login_serializable: start.pinned,
            holds: Holds::default(),
            spread: ReaderSpread::new(),
            drain: start.shutdown.wait(),
            shutdown: start.shutdown,
            side,
        }
    }

    /// A connection to `instance` of the session's cluster as the session's backend login,
    /// from the pool.
    pub(super) async fn lease(
        &self,
        instance: &Arc<Instance>,
    ) -> Result<Lease<P::Conn>, OpenError<P>> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        checkout(&self.ctx, self.dial(&self.cluster, timeout), instance).await
    }

    /// Lends `conn`, a connection to `instance` of the session's cluster opened outside
    /// the pool (a MySQL session's greeting), as one of its pool's.
    pub(super) fn adopt(&self, instance: &Instance, conn: P::Conn) -> Lease<P::Conn> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let key = key(&self.dial(&self.cluster, timeout), instance);
        let settings = pool::Settings::from_config(&self.ctx.config().raw.server, self.mode);
        P::pools(&self.ctx).adopt(&key, &settings, conn)
    }

    /// How this session connects to `cluster`.
    pub(super) fn dial<'a>(&'a self, cluster: &'a Cluster, timeout: Duration) -> Dial<'a, P> {
        Dial {
            cluster,
            login: &self.login,
            creds: &self.creds,
            timeout,
            mode: self.mode,
        }
    }

    /// The router's target for `stmt`, given the session's view now (its read-your-writes
    /// window included), and the statement as the function catalog resolves its calls.
    pub(super) fn route(&mut self, stmt: &Statement) -> (Target, Statement) {
        let config = self.ctx.config_now(&mut self.config);
        let settings = Settings {
            read_write_split: config.raw.routing.read_write_split,
        };
        // Only routing outside a transaction asks (the clock is read then only).
        self.view.wrote_recently = self.view.in_transaction.is_none()
            && self.writes_until.is_some_and(|t| Instant::now() < t);
        let resolved = self.functions.resolve(stmt, &self.cluster);
        (router::route(&resolved, self.view, settings), resolved)
    }

    /// Where work routed to `target` runs now, when that is known without waiting: on the
    /// writer (what writes, transactions and every read of a cluster without readers run
    /// on). `None`: a read, in a cluster with readers, for [`Session::place_reader`]. No
    /// future is built for the first, which every statement on the writer takes.
    pub(super) fn placed(&mut self, target: Target) -> Option<Target> {
        self.ctx.topology.refresh(&mut self.cluster);
        match target {
            Target::Reader if !self.cluster.readers.is_empty() => None,
            _ => Some(Target::Writer),
        }
    }

    /// Where a read runs, in a cluster with readers: a reader when one is usable and has
    /// the session's state (opened and replayed here), else the writer.
    pub(super) async fn place_reader(&mut self) -> Result<Target, SessionError<P>> {
        if !self.prepare_reader().await? {
            crate::metrics::reader_fallback();
            return Ok(Target::Writer);
        }
        Ok(Target::Reader)
    }

    /// What `stmt` does to the session's state, before it runs: state that keeps the
    /// session on the writer, or a change to apply on other connections, `replay` (as this
    /// protocol replays it, made only when needed), returned to record with
    /// [`Session::record_ran`] once it ran without error (a failed one changed nothing, or,
    /// for a MySQL text of several, part of what it says).
    #[must_use = "a change of session state is recorded once it ran"]
    pub(super) fn record_effect(
        &mut self,
        stmt: &Statement,
        replay: impl FnOnce() -> Option<P::Replay>,
    ) -> Option<P::Replay> {
        let effect = match router::effect(stmt, self.view) {
            // Not undone by a rollback, so replayable like any other; in a transaction
            // on the writer only, where recorded settings run.
            Effect::Pin
                if stmt.class == crate::sql::Class::SessionSet
                    && !P::TRANSACTIONAL_SETTINGS
                    && self.view.in_transaction == Some(Target::Writer) =>
            {
                Effect::Record
            }
            effect => effect,
        };
        match effect {
            Effect::None => {}
            Effect::Record => match replay() {
                None => self.pin(Pin::Unreplayable),
                Some(r) => return Some(r),
            },
            Effect::Pin if stmt.class == crate::sql::Class::SessionSet => {
                self.pin(Pin::SetInTransaction);
            }
            Effect::Pin => self.pin(Pin::Statement),
        }
        None
    }

    /// Records `replay`, the change [`Session::record_effect`] left to record once it ran,
    /// unless it `failed` (the caller decides what a failed one left).
    pub(super) fn record_ran(&mut self, replay: Option<P::Replay>, failed: bool) {
        if let Some(replay) = replay.filter(|_| !failed) {
            let names = P::setting_names(&replay);
            self.record(replay, names);
        }
    }

    /// The session's default transaction isolation is now `isolation`: while serializable,
    /// its reads go to the writer (a hot standby refuses them).
    pub(super) fn default_isolation(&mut self, isolation: crate::sql::DefaultIsolation) {
        use crate::sql::DefaultIsolation::*;
        match (isolation, self.login_serializable) {
            (Serializable, _) | (Login, true) => self.pin(Pin::Serializable),
            (Other, _) | (Login, false) => self.unpin(Pin::Serializable),
        }
    }

    /// Records `replay`, which sets `names` from literals (`None`: anything else), to apply
    /// on the session's other connections. Past `max_session_settings` (or when a reader refused
    /// them) the replays that later ones made pointless are dropped; a session that still
    /// has too many stays on its writer connection, and records nothing more.
    pub(super) fn record(&mut self, replay: P::Replay, names: Option<Vec<String>>) {
        if self.pinned_by(Pin::TooManySettings) {
            return;
        }
        if let Some(isolation) = P::default_isolation(&replay) {
            self.default_isolation(isolation);
        }
        self.replays.push(replay, names);
        // State changes run on the writer: one that had the session's state has this one
        // too once the unit ran. Without one (transaction mode), the writer taken for this
        // unit runs it with the unit, not before.
        let recorded = self.replays.len();
        match self.writer.as_mut().map(|w| w.applied()) {
            Some(applied) if *applied + 1 == recorded => *applied += 1,
            Some(_) => {}
            None => self.replays.unrun_one(),
        }
        let refused = self.pinned_by(Pin::SettingsRefused);
        let cap = self.ctx.config().raw.server.max_session_settings;
        if recorded > cap || refused {
            self.compact_replays();
        }
        if self.replays.len() > cap {
            self.pin(Pin::TooManySettings);
        }
        if refused {
            // The settings changed: the next read tries a reader again.
            self.unpin(Pin::SettingsRefused);
        }
    }

    /// Drops the replays that later ones made pointless, unless the writer connection holds
    /// one of them without what overwrote it. A reader connection in that case goes back
    /// to its pool to be reset.
    fn compact_replays(&mut self) {
        let plan = self.replays.compaction();
        if plan.is_empty() {
            return;
        }
        let writer = self.writer.as_mut().map(|w| w.applied());
        let writer = match writer.map(|applied| (plan.applied(*applied), applied)) {
            Some((None, _)) => return,
            Some((Some(now), applied)) => {
                *applied = now;
                true
            }
            None => false,
        };
        let reader = self.reader.as_mut().map(|r| plan.applied(*r.applied()));
        match (reader, self.reader.as_mut()) {
            (Some(Some(now)), Some(r)) => *r.applied() = now,
            (Some(None), _) => self.drop_reader(false),
            _ => {}
        }
        tracing::debug!(writer, "dropping replays that later ones made pointless");
        self.replays.compact(&plan);
    }

    /// After `stmt` ran on `ran_on`: the function catalog learns from it, and work that may
    /// have written on the writer (`wrote`) starts the read-your-writes window.
    pub(super) fn ran(&mut self, stmt: &Statement, ran_on: Target, wrote: bool) {
        let in_transaction = self.view.in_transaction.is_some();
        self.functions.ran(stmt, in_transaction, &self.cluster.name);
        if ran_on == Target::Writer
            && crate::sql::pins(stmt.class)
            && let Some(writer) = self.writer.as_mut()
        {
            // It may have changed the connection's read-only mode (see `Carried`).
            writer.carried().read_only_unsure = true;
        }
        let wrote = (ran_on == Target::Writer && wrote) || self.wrote_in_transaction;
        // Within a transaction the window waits for its end, whatever ends it (COMMIT, an
        // implicit commit, `SET autocommit = 1`): only then do other sessions see the writes.
        self.wrote_in_transaction = wrote && in_transaction;
        if wrote && !in_transaction && self.read_your_writes != ReadYourWrites::Off {
            let cluster = &self.cluster;
            self.writes_until = self
                .read_your_writes
                .writer_until(Instant::now(), || cluster.catch_up_window());
        }
    }

    /// The transaction state a response reported: open on `target`, or closed (which ends
    /// the session's admission).
    pub(super) fn transaction(&mut self, open: Option<Target>) {
        self.view.in_transaction = open;
        if open.is_none() {
            self.admission = None;
        }
    }

    /// Whether the session holds backend connections only while work runs on them
    /// (transaction mode).
    pub(super) fn pooled(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    /// Takes `conn`, just lent by its pool, as one of the session's connections. What it
    /// carries from earlier sessions stays when that is where this session's state starts
    /// (only the rest is replayed, by the caller); a connection holding other state is
    /// reset first.
    /// The backend of `conn` when the connection carries at least the first `need` of the
    /// session's replays (so neither a reset nor a replay is needed: no future); else `conn`
    /// back.
    pub(super) fn take_carrying(
        &mut self,
        mut conn: Lease<P::Conn>,
        need: usize,
    ) -> Result<P::Backend, Lease<P::Conn>> {
        let carried = crate::pool::Pooled::carried(&mut *conn);
        match self.replays.carried(&carried.state) {
            Some(applied) if applied >= need => {
                let spare = self.spares.pop().unwrap_or_default();
                let mut backend = P::Backend::new(conn, spare);
                *backend.applied() = applied;
                Ok(backend)
            }
            _ => Err(conn),
        }
    }

    pub(super) async fn take(
        &mut self,
        conn: Lease<P::Conn>,
    ) -> Result<P::Backend, SessionError<P>> {
        let conn = match self.take_carrying(conn, 0) {
            Ok(backend) => return Ok(backend),
            Err(conn) => conn,
        };
        let spare = self.spares.pop().unwrap_or_default();
        let mut backend = P::Backend::new(conn, spare);
        let conn: &mut P::Conn = backend.lease();
        if let Err(e) = conn.reset().await {
            return Err(SessionError::BackendLost {
                addr: backend.instance().addr.clone(),
                source: std::io::Error::other(crate::error::chain(&e)),
            });
        }
        *backend.carried() = crate::backend::Carried::default();
        Ok(backend)
    }

    /// In transaction mode, after a unit, between transactions: the session's connections
    /// go back to their pools as they are (what they carry says which of the session's
    /// state they have), unless state that cannot move pins the session to its writer
    /// connection. The next unit takes connections again.
    pub(super) fn release_idle(&mut self) {
        self.replays.ran();
        if !self.pooled() || self.view.in_transaction.is_some() || self.view.pinned_to_writer {
            return;
        }
        let keep = self.keep_writer > 0 && self.writer.is_some();
        self.keep_writer = self.keep_writer.saturating_sub(1);
        self.kept_writer = keep;
        for target in [Target::Reader, Target::Writer] {
            if target == Target::Writer && keep {
                continue;
            }
            let held = match target {
                Target::Writer => self.writer.take(),
                Target::Reader => self.reader.take(),
            };
            let Some(mut backend) = held else { continue };
            P::backend_changed(&mut self.side, target, None);
            let applied = *backend.applied();
            let carried = &mut backend.carried().state;
            let how = if let Some(marks) = self.replays.marks(applied) {
                // What it ran of the session's state (dropped replays make what it carried
                // from its checkout no guide).
                if carried[..] != *marks {
                    *carried = marks.to_vec();
                }
                Release::Clean
            } else {
                // What it holds is not known: make it a fresh login again.
                Release::Reset
            };
            self.unheld(backend).release(how);
        }
    }

    /// The pooled connection of `backend`, whose queues the session keeps for the next.
    fn unheld(&mut self, backend: P::Backend) -> Lease<P::Conn> {
        let (conn, spare) = backend.into_parts();
        if self.spares.len() < 2 {
            self.spares.push(spare);
        }
        conn
    }

    /// Makes `conn` the session's `target` connection (`None`: drops it).
    pub(super) fn set_backend(&mut self, target: Target, backend: Option<P::Backend>) {
        P::backend_changed(&mut self.side, target, backend.as_ref());
        match target {
            Target::Writer => self.writer = backend,
            Target::Reader => self.reader = backend,
        }
    }

    /// Lets the reader connection go: back to its pool, reset, between units; closed when
    /// it `failed` (and its instance skipped for `backend_retry`).
    pub(super) fn drop_reader(&mut self, failed: bool) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        P::backend_changed(&mut self.side, Target::Reader, None);
        if failed {
            let retry = self.ctx.config().raw.server.backend_retry;
            reader.instance().load.mark_down(Instant::now(), retry);
        } else {
            self.unheld(reader).release(Release::Reset);
        }
    }

    /// Another client ended the session while it waited for a connection: what it holds
    /// goes back to the pools, and the session ends with the client told.
    pub(super) fn killed_waiting(&mut self) -> SessionError<P> {
        self.release_backends();
        SessionError::KilledWaiting
    }

    /// Gives the session's connections back to their pools, reset for the next client: the
    /// client left, or the proxy shuts down, between units (nothing is in flight on them).
    pub(super) fn release_backends(&mut self) {
        self.drop_reader(false);
        let Some(writer) = self.writer.take() else {
            return;
        };
        let reuse = P::reusable_writer(&self.side);
        P::backend_changed(&mut self.side, Target::Writer, None);
        let conn = self.unheld(writer);
        if reuse {
            conn.release(Release::Reset);
        } else {
            tokio::spawn(conn.detach().close());
        }
    }

    pub(super) fn drop_writer(&mut self) {
        self.set_backend(Target::Writer, None);
    }

    /// A refusal of the shared flow as this protocol words it.
    pub(super) fn refused(why: Why<'_>) -> SessionError<P> {
        let (code, message) = P::refusal(why);
        SessionError::Refused { code, message }
    }
}
