//! What a session does about migration control and writer changes, once for both
//! protocols: the gate before work on the writer (wait out a pause, follow read-only mode,
//! refuse writes to a read-only cluster), and the moves to another writer — the new active
//! cluster's after a cutover, or its own cluster's new writer after a failover — with the
//! session's state replayed there. A session moves only between transactions; a session
//! holding state that cannot be replayed ends instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::SessionError;
use super::failover::{self, Ended, MoveCause, Verdict, WaitError, WriterWait};
use super::flow::{Dial, Held, OpenError, Protocol, Session, Why, checkout, checkout_from};
use crate::cutover::{Entry, Mode};
use crate::pool::{CheckoutError, Lease, PoolRef};
use crate::router::Target;
use crate::topology::{Cluster, Instance};

/// Work the session answers itself with an error, in its protocol's words; it did not run.
pub struct Refusal<P: Protocol> {
    pub code: P::Code,
    pub message: String,
}

impl<P: Protocol> Refusal<P> {
    fn of(why: Why<'_>) -> Refusal<P> {
        let (code, message) = P::refusal(why);
        Refusal { code, message }
    }
}

impl<P: Protocol> Session<P> {
    /// Applies the cluster's migration mode to work that starts a transaction on the
    /// writer (`writes`: it is a write): waits out a pause, keeps the writer connection's
    /// own read-only setting in step with the mode (so a write the classifier missed fails
    /// in the database too), and refuses a write to a read-only cluster. A writer that is
    /// gone is waited for (without holding up a cutover's drain). `Some` when the work is
    /// to be answered with that error instead.
    pub(super) async fn migration_gate(
        &mut self,
        writes: bool,
    ) -> Result<Option<Refusal<P>>, SessionError<P>> {
        let (mode, admission) = loop {
            let (routing, seen) = (&self.ctx.routing, &mut self.routing);
            let entry = match routing.try_enter(&self.cluster.name, seen) {
                Some(entry) => Some(entry),
                None => (routing.enter(&self.cluster.name, seen, &mut self.shutdown)).await,
            };
            match entry.ok_or(SessionError::Shutdown)? {
                Entry::Admitted(mode, admission) if self.writer.is_none() && self.pooled() => {
                    // Transaction mode between transactions: take a writer connection now.
                    // An idle one of the session's pool is taken at once, admitted;
                    if let Some((cluster, lease)) = self.idle_writer() {
                        if let Err((cluster, lease)) = self.install_at_once(cluster, lease) {
                            self.install_writer(cluster, lease, None).await?;
                        }
                        break (mode, admission);
                    }
                    // else past any pause (waiting for one, or for a failover), then pass
                    // again.
                    drop(admission);
                    if let Some(refusal) = self.take_writer(None).await? {
                        return Ok(Some(refusal));
                    }
                }
                Entry::Admitted(mode, admission) if self.writer_verdict() == Verdict::Keep => {
                    break (mode, admission);
                }
                Entry::Admitted(_, admission) => {
                    // Unless only this session's connection ended (then the session ends,
                    // as the server ended it), wait for a usable writer, then pass again.
                    drop(admission);
                    self.end_if_alone().await?;
                    if let Some(refusal) = self.follow_writer().await? {
                        return Ok(Some(refusal));
                    }
                }
                Entry::Moved => self.follow_active().await?,
            }
        };
        let read_only = mode == Mode::ReadOnly;
        self.admitted_read_only = read_only;
        if let Some(writer) = self.writer.as_mut()
            && (writer.carried().read_only != read_only
                || (read_only && writer.carried().read_only_unsure))
        {
            if let Some(message) = P::set_read_only(writer, read_only).await? {
                tracing::warn!(%message, "could not set the writer connection's read-only mode");
            }
            writer.carried().read_only = read_only;
            writer.carried().read_only_unsure = false;
            let applied = *writer.applied();
            if !read_only && applied > 0 {
                // Read-write again over the client's own default, if it set one (its own
                // `SET … READ ONLY`): what the session ran on the connection runs again.
                *writer.applied() = 0;
                let replayed = P::replay(writer, &self.replays.items()[..applied]).await?;
                *writer.applied() = applied;
                if let Err(message) = replayed {
                    tracing::warn!(%message, "the session's state did not run again after read-only mode");
                }
            }
        }
        if !(read_only && writes) {
            self.admission = Some(admission);
            return Ok(None);
        }
        self.ctx.routing.write_refused(&self.cluster.name);
        let cluster = &self.cluster.name;
        Ok(Some(Refusal::of(Why::ReadOnly { cluster })))
    }

    /// The verdict on the writer connection the session holds, against the cluster's
    /// current snapshot: one atomic load, and a read that does not wait.
    pub(super) fn writer_verdict(&mut self) -> Verdict {
        let held = (self.writer.as_mut()).map(|w| (w.closed(), Arc::clone(w.instance())));
        failover::check(&self.ctx.topology, &mut self.cluster, held)
    }

    /// Whether a cutover made another cluster than the session's active: one atomic load
    /// and a comparison, asked before every transaction (then [`Session::follow_active`]).
    pub(super) fn moved(&mut self) -> bool {
        self.ctx.routing.current(&mut self.routing).active != self.cluster.name
    }

    /// Moves the session to the active cluster when a cutover changed it: a writer
    /// connection to the new writer with the session's state replayed; readers and prepared
    /// statements follow lazily. Called only between transactions.
    pub(super) async fn follow_active(&mut self) -> Result<(), SessionError<P>> {
        let state = self.ctx.routing.current(&mut self.routing);
        if state.active == self.cluster.name {
            return Ok(());
        }
        let state = Arc::clone(state);
        super::cold(self.move_to_active(state)).await
    }

    /// [`Session::follow_active`] once the active cluster is another than the session's.
    async fn move_to_active(
        &mut self,
        state: Arc<crate::cutover::RoutingState>,
    ) -> Result<(), SessionError<P>> {
        let Some(cluster) = self.ctx.topology.cluster(&state.active) else {
            let name = &state.active;
            return Err(Self::refused(Why::NoActiveCluster { name }));
        };
        self.movable(MoveCause::Cutover, &cluster.name)?;
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let dial = self.dial(&cluster, timeout);
        let conn = checkout(&self.ctx, dial, &cluster.writer)
            .await
            .map_err(SessionError::Connect)?;
        let old = self.cluster.name.clone();
        self.install_writer(cluster, conn, Some(MoveCause::Cutover))
            .await?;
        self.admission = None;
        // The old cluster serves nobody now: its idle connections close, lent ones as they
        // come back (every session that moves says so; the first one does it).
        P::pools(&self.ctx).retire(|key| key.cluster == old);
        Ok(())
    }

    /// Ends a session that holds state that cannot be replayed on another writer (LISTEN,
    /// temporary tables, locks …) rather than move it without that state.
    pub(super) fn movable(&self, cause: MoveCause, to: &str) -> Result<(), SessionError<P>> {
        if !self.view.pinned_to_writer {
            return Ok(());
        }
        cause.record(&self.ctx.routing, false);
        Err(Self::refused(Why::CannotMove { cause, to }))
    }

    /// Makes `conn`, a connection to `cluster`'s writer, the session's writer, with the
    /// session's state replayed on it; prepared statements follow lazily, and the reader
    /// too when the cluster changed. `cause`: why the session moves (`None`: it only takes
    /// a pooled connection to its writer, in transaction mode).
    pub(super) async fn install_writer(
        &mut self,
        cluster: Arc<Cluster>,
        conn: Lease<P::Conn>,
        cause: Option<MoveCause>,
    ) -> Result<(), SessionError<P>> {
        let mut writer = self.take(conn).await?;
        let (replays, unrun) = self.replays.for_new_writer();
        let before = *writer.applied();
        let mut replayed = P::replay(&mut writer, replays).await?;
        // What ran may have changed the connection's read-only mode (see `Carried`).
        writer.carried().read_only_unsure |= *writer.applied() != before;
        *writer.applied() += unrun;
        if replayed.is_ok() {
            replayed = P::prepare_writer(&self.side, &mut writer).await?;
        }
        if let Err(message) = replayed {
            tracing::warn!(%message, "session state does not replay on the new writer");
            let to = &cluster.name;
            let Some(cause) = cause else {
                // It ran on another connection to this writer a moment ago.
                return Err(SessionError::BackendProtocol {
                    addr: cluster.writer.addr.clone(),
                    detail: format!(
                        "the session's state does not replay on a pooled connection: {message}"
                    ),
                });
            };
            cause.record(&self.ctx.routing, false);
            return Err(Self::refused(Why::CannotMove { cause, to }));
        }
        if let Some(cause) = cause {
            tracing::debug!(from = %self.cluster.name, to = %cluster.name, writer = %cluster.writer.addr, cause = cause.as_str(), "session moved to another writer");
            cause.record(&self.ctx.routing, true);
        }
        self.set_backend(Target::Writer, Some(writer));
        if cluster.name != self.cluster.name {
            self.drop_reader(false);
        }
        self.cluster = cluster;
        Ok(())
    }

    /// [`Session::install_writer`] in transaction mode when it has nothing to await: `conn`
    /// carries the session's state already (every replay it needs ran on it) and the
    /// protocol has nothing to prepare on a writer. The common case between transactions,
    /// installed without a future; otherwise `conn` comes back for `install_writer`.
    fn install_at_once(
        &mut self,
        cluster: Arc<Cluster>,
        conn: Lease<P::Conn>,
    ) -> Result<(), (Arc<Cluster>, Lease<P::Conn>)> {
        if P::writer_needs_preparing(&self.side) {
            return Err((cluster, conn));
        }
        let need = self.replays.len() - self.replays.unrun();
        let mut writer = match self.take_carrying(conn, need) {
            Ok(writer) => writer,
            Err(conn) => return Err((cluster, conn)),
        };
        let (_, unrun) = self.replays.for_new_writer();
        *writer.applied() += unrun;
        self.set_backend(Target::Writer, Some(writer));
        if cluster.name != self.cluster.name {
            self.drop_reader(false);
        }
        self.cluster = cluster;
        Ok(())
    }

    /// A writer connection for the work about to run, from the pool of the cluster's writer
    /// (waited for within `failover_timeout` while there is no usable one), with the
    /// session's state: after a failover (`cause`), or in transaction mode between
    /// transactions (`None`). `Some` when the work is to be answered with that error
    /// instead (the work did not run).
    async fn take_writer(
        &mut self,
        cause: Option<MoveCause>,
    ) -> Result<Option<Refusal<P>>, SessionError<P>> {
        match self.connect_writer(false).await {
            Ok((cluster, Ok(conn))) => {
                self.install_writer(cluster, conn, cause).await?;
                Ok(None)
            }
            // Only a first connection, or a full pool, is returned failed; a wait retries
            // until it times out.
            Ok((_, Err(e))) => Err(SessionError::Connect(e)),
            Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
            Err(WaitError::Killed) => Err(self.killed_waiting()),
            Err(e) => {
                e.report();
                Ok(Some(Refusal::of(Why::NoWriter(&e))))
            }
        }
    }

    /// In transaction mode, the writer connection of the next transaction when one can be
    /// had at once: the cluster's writer usable, the session's pool still its pool, and an
    /// idle connection in it. [`Session::take_writer`]'s common case, without its waits
    /// (they stay for a full pool, a failover, a new writer or a cutover's new pools).
    fn idle_writer(&mut self) -> Option<(Arc<Cluster>, Lease<P::Conn>)> {
        let pool = self.writer_pool.as_ref()?;
        let mut cluster = Arc::clone(&self.cluster);
        self.ctx.topology.refresh(&mut cluster);
        let writer = &cluster.writer;
        let key = pool.key();
        if key.cluster != cluster.name
            || key.instance != writer.addr
            || !writer.load.status().is_usable()
            || writer.load.down_now()
        {
            return None;
        }
        let config = self.ctx.config_now(&mut self.config);
        let settings = crate::pool::Settings::from_config(&config.raw.server, self.mode);
        let lease = P::pools(&self.ctx).take_idle(pool, &settings)?;
        Some((cluster, lease))
    }

    /// Moves the session, between transactions, to its cluster's writer once one is usable.
    /// `Some` when the work is to be answered with that error instead: no usable writer
    /// within `failover_timeout` (the work did not run).
    pub(super) async fn follow_writer(&mut self) -> Result<Option<Refusal<P>>, SessionError<P>> {
        self.movable(MoveCause::Failover, &self.cluster.name)?;
        self.drop_writer();
        self.admission = None;
        self.take_writer(Some(MoveCause::Failover)).await
    }

    /// The session's first writer connection: to the cluster's writer, or, while the
    /// topology shows no usable writer (a failover under way), to the next one once it is
    /// usable, within `failover_timeout`. A refused login is returned as the connector's
    /// error, for the protocol to relay.
    pub(super) async fn first_writer(
        &mut self,
    ) -> Result<Result<Lease<P::Conn>, OpenError<P>>, SessionError<P>> {
        match self.connect_writer(true).await {
            Ok((cluster, outcome)) => {
                self.cluster = cluster;
                Ok(outcome)
            }
            Err(WaitError::Shutdown) => Err(SessionError::Shutdown),
            Err(WaitError::Killed) => Err(self.killed_waiting()),
            Err(e) => {
                e.report();
                let (code, message) = P::refusal(Why::NoWriter(&e));
                Err(SessionError::Failover { code, message })
            }
        }
    }

    /// Connects to the cluster's writer, waiting for a usable one (see
    /// [`WriterWait::connect`]); `first` for the session's first connection.
    async fn connect_writer(
        &mut self,
        first: bool,
    ) -> Result<(Arc<Cluster>, Result<Lease<P::Conn>, OpenError<P>>), WaitError> {
        let (ctx, login, creds, mode) = (&self.ctx, &self.login, &self.creds, self.mode);
        let known = self.writer_pool.as_ref();
        // Set when the pool's key had to be built: the session keeps the new one.
        let built = &AtomicBool::new(false);
        // The session's own config: no load from the live one per transaction.
        let config = self.ctx.config_now(&mut self.config);
        let settings = &crate::pool::Settings::from_config(&config.raw.server, mode);
        let (topology, name) = (&self.ctx.topology, &self.cluster.name);
        let wait = WriterWait::new(topology, config, name, &mut self.shutdown);
        let connect = |cluster: Arc<Cluster>, timeout| async move {
            let dial: Dial<'_, P> = Dial {
                cluster: &cluster,
                login,
                creds,
                timeout,
                mode,
            };
            let writer = &cluster.writer;
            // Only the cluster and instance can differ from the last writer's pool: the
            // session's login and backend user are its own for good.
            let same = |p: &&PoolRef<P::Conn>| {
                p.key().cluster == cluster.name && p.key().instance == writer.addr
            };
            match known.filter(same) {
                Some(pool) => checkout_from(ctx, dial, writer, pool, settings).await,
                None => {
                    built.store(true, Ordering::Relaxed);
                    checkout(ctx, dial, writer).await
                }
            }
        };
        // A full pool, or a server that answered the login with a refusal (a password
        // rotated, a database dropped, no connection slot left while the pool has none to
        // wait for): the writer is up, so the error is the client's at once, and the
        // writer is not marked down for every session.
        let busy = |e: &OpenError<P>| match e {
            CheckoutError::Timeout { .. } => true,
            CheckoutError::Connect(e) => crate::pool::LoginError::refused(e),
        };
        // The pool's checkout is cancel-safe: a place in line or a slot being opened is
        // given up when the wait stops.
        let connected = tokio::select! {
            biased;
            connected = wait.connect(Arc::clone(&self.cluster), first, connect, busy) => connected,
            () = P::killed(&self.side) => Err(WaitError::Killed),
        };
        if built.load(Ordering::Relaxed)
            && let Ok((_, Ok(lease))) = &connected
        {
            self.writer_pool = Some(lease.pool());
        }
        connected
    }

    /// Ends the session as the server ended its writer connection, when only that
    /// connection ended and the writer stays up (the shared rule,
    /// [`failover::judge_end`]): the server's last words (a FATAL, an ERR) go to the
    /// client, then the connection closes. `Ok` when the writer itself failed or changed
    /// (or there is no writer connection): the caller takes the failover path.
    pub(super) async fn end_if_alone(&mut self) -> Result<(), SessionError<P>> {
        let Some(held) = self.writer.as_ref().map(|w| Arc::clone(w.instance())) else {
            return Ok(());
        };
        if !self.ended_alone(&held).await {
            return Ok(());
        }
        tracing::info!(writer = %held.addr, "the server ended this session's writer connection; ending the session");
        let told = match self.writer.take() {
            Some(writer) => P::last_words(&mut self.side, writer).await,
            None => false,
        };
        self.drop_writer();
        Err(SessionError::ConnectionEnded {
            addr: held.addr.clone(),
            told,
        })
    }

    /// Whether the writer connection to `held`, found ended, ended alone: the topology
    /// still names `held` the usable writer and it takes a new login now.
    async fn ended_alone(&mut self, held: &Arc<Instance>) -> bool {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        let (login, creds, mode) = (&self.login, &self.creds, self.mode);
        let probe = |cluster: Arc<Cluster>| {
            let held = Arc::clone(held);
            async move {
                let dial: Dial<'_, P> = Dial {
                    cluster: &cluster,
                    login,
                    creds,
                    timeout,
                    mode,
                };
                let conn = P::connect(dial, &held).await?;
                P::close(conn).await;
                Ok::<(), P::ConnectError>(())
            }
        };
        let ended = failover::judge_end(&self.ctx.topology, &mut self.cluster, held, probe).await;
        ended == Ended::Connection
    }
}
