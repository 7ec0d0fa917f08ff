//! The pools of one connection type, one per [`Key`], created on first checkout: the
//! checkout itself (idle connection, new connection, or a fair wait in line bounded by
//! `checkout_timeout`), the sweep that closes idle connections past their time and opens
//! the ones `min_idle` asks for, and the per-instance budget the pools of one instance share
//! (`max_backend_connections`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::lease::Lease;
use super::slots::{Budget, Busy, Counts, Entry, Grant, Slots, Take};
use super::{CheckoutError, CloseReason, Key, LoginError, Opener, Pooled, Settings};
use crate::metrics::PoolMetrics;
use crate::shutdown::Shutdown;

/// How often idle connections are checked against `idle_timeout` and `max_lifetime`.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Every pool of connections of type `C`. Cheap to clone; the sweep task ends on shutdown
/// or when the last clone is dropped.
pub struct Pools<C: Pooled> {
    shared: Arc<Shared<C>>,
}

impl<C: Pooled> Clone for Pools<C> {
    fn clone(&self) -> Self {
        Pools {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<C: Pooled> {
    pools: Mutex<HashMap<Key, Arc<Pool<C>>>>,
    /// Every pool still alive, retired ones included, for [`Pools::publish`].
    alive: Mutex<Vec<Weak<Pool<C>>>>,
    /// Each instance's budget, by `Key::instance`.
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    /// How the sweep opens connections for `min_idle` (none: it opens none).
    opener: OnceLock<Arc<dyn Opener<C>>>,
}

/// A handle on one pool, kept by a caller that checks out from it again and again
/// ([`Pools::checkout_from`]). It keeps the pool's bookkeeping alive, not its connections.
pub struct PoolRef<C: Pooled>(Arc<Pool<C>>);

impl<C: Pooled> PoolRef<C> {
    pub fn key(&self) -> &Key {
        &self.0.key
    }

    pub(super) fn new(pool: Arc<Pool<C>>) -> PoolRef<C> {
        PoolRef(pool)
    }
}

/// One pool: the connections of one [`Key`].
pub(super) struct Pool<C: Pooled> {
    pub key: Key,
    slots: Mutex<Slots<C>>,
    pub metrics: PoolMetrics,
    /// The other pools of its instance, woken when it gives back a unit of their budget.
    shared: Weak<Shared<C>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The bookkeeping is changed by short methods that do not panic; take it as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Pooled> Pools<C> {
    /// No pools yet, and the task that sweeps them every few seconds (spawned here: call
    /// it inside a Tokio runtime).
    pub fn new(mut shutdown: Shutdown) -> Pools<C> {
        let shared = Arc::new(Shared {
            pools: Mutex::new(HashMap::new()),
            alive: Mutex::new(Vec::new()),
            budgets: Mutex::new(HashMap::new()),
            opener: OnceLock::new(),
        });
        let weak: Weak<Shared<C>> = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.recv() => return,
                    _ = tick.tick() => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                shared.sweep(Instant::now());
            }
        });
        Pools { shared }
    }

    /// Lets the sweep open connections (to keep `min_idle` idle ones in each pool) with
    /// `opener`; the first one set stays.
    pub fn set_opener(&self, opener: Arc<dyn Opener<C>>) {
        let _ = self.shared.opener.set(opener);
    }

    /// How many connections are open to `instance` across its pools (what
    /// `max_backend_connections` limits).
    pub fn backend_connections(&self, instance: &str) -> usize {
        lock(&self.shared.budgets)
            .get(instance)
            .map_or(0, |budget| budget.open())
    }

    /// Lends a connection for `key`: the newest idle one that is still open and young
    /// enough, else a new one from `connect` when fewer than `settings.size` are open, else
    /// the first one given back (or slot freed) after the checkouts already waiting,
    /// waiting at most `settings.checkout_timeout`.
    pub async fn checkout<E, F, Fut>(
        &self,
        key: &Key,
        settings: &Settings,
        connect: F,
    ) -> Result<Lease<C>, CheckoutError<E>>
    where
        E: LoginError + std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let pool = self.shared.pool(key, settings);
        self.checkout_in(pool, settings, connect).await
    }

    /// [`Pools::checkout`] from the pool of a connection the caller had before (kept with
    /// [`Lease::pool`]), without looking it up by key: a session takes its writer from the
    /// same pool transaction after transaction. If that pool was retired since, from the
    /// one that took its place.
    pub async fn checkout_from<E, F, Fut>(
        &self,
        pool: &PoolRef<C>,
        settings: &Settings,
        connect: F,
    ) -> Result<Lease<C>, CheckoutError<E>>
    where
        E: LoginError + std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        self.checkout_in(Arc::clone(&pool.0), settings, connect)
            .await
    }

    /// An idle connection of `pool` lent at once, when one is there for the taking (no
    /// checkout waiting before this one, still open and young enough): the checkout of
    /// [`Pools::checkout_from`] that neither opens nor waits, with no future to drive. A
    /// session takes its writer this way transaction after transaction; `None` sends it
    /// the long way.
    pub fn take_idle(&self, pool: &PoolRef<C>, settings: &Settings) -> Option<Lease<C>> {
        let pool = &pool.0;
        // Its zero wait goes into the histogram when the metrics are read (`publish`).
        let entry = pool.with(|s| {
            let entry = s.take_idle(*settings)?;
            s.unrecorded_immediate += 1;
            Some(entry)
        })?;
        match pool.usable(entry, settings) {
            Ok(entry) => Some(Lease::new(Arc::clone(pool), entry)),
            Err((conn, reason)) => {
                pool.with(|s| {
                    s.unrecorded_immediate -= 1;
                    s.free(Busy::InUse);
                });
                pool.close(*conn, reason);
                None
            }
        }
    }

    async fn checkout_in<E, F, Fut>(
        &self,
        mut pool: Arc<Pool<C>>,
        settings: &Settings,
        mut connect: F,
    ) -> Result<Lease<C>, CheckoutError<E>>
    where
        E: LoginError + std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let started = Instant::now();
        let mut recorded = false;
        loop {
            let granted = loop {
                match pool.with(|s| s.take(*settings)) {
                    Take::Idle(entry) => match pool.usable(entry, settings) {
                        Ok(entry) => break Grant::Idle(entry),
                        Err((conn, reason)) => {
                            pool.with(|s| s.free(Busy::InUse));
                            pool.close(*conn, reason);
                        }
                    },
                    Take::Open => break Grant::Slot,
                    Take::Retired => {
                        let key = pool.key.clone();
                        pool = self.shared.pool(&key, settings);
                    }
                    Take::Wait(id, rx) => {
                        if pool.with(|s| s.short_of_budget()) {
                            self.shared.make_room(&pool);
                        }
                        let deadline = started + settings.checkout_timeout;
                        if let Some(grant) = pool.wait(id, rx, deadline, settings).await {
                            break grant;
                        }
                        pool.metrics
                            .checkout_wait
                            .record(started.elapsed().as_secs_f64());
                        pool.metrics.checkout_timeouts.increment(1);
                        return Err(CheckoutError::Timeout {
                            instance: pool.key.instance.clone(),
                            user: pool.key.user.clone(),
                            size: settings.size,
                            budget: settings.max_backend,
                            timeout: settings.checkout_timeout,
                        });
                    }
                }
            };
            if !recorded {
                recorded = true;
                pool.metrics
                    .checkout_wait
                    .record(started.elapsed().as_secs_f64());
            }
            let slot = match granted {
                Grant::Idle(entry) => return Ok(Lease::new(pool, entry)),
                Grant::Slot => Opening {
                    pool: Arc::clone(&pool),
                    armed: true,
                },
            };
            match connect().await {
                Ok(conn) => {
                    slot.opened();
                    return Ok(Lease::new(pool, Entry::new(conn, Instant::now())));
                }
                // The server is up but full: wait in line for a connection the pool has,
                // if it has any.
                Err(e) if e.server_full() => {
                    if !pool.server_full(slot, &e) {
                        return Err(CheckoutError::Connect(e));
                    }
                }
                Err(e) => return Err(CheckoutError::Connect(e)),
            }
        }
    }

    /// Lends `conn`, opened by the caller outside the pool, as a connection of `key`'s
    /// pool, to be given back like any other. It counts at once, even past `pool_size`: a
    /// MySQL session's first writer connection is opened before the client logs in, so
    /// that the client is greeted with its server's own greeting.
    pub fn adopt(&self, key: &Key, settings: &Settings, conn: C) -> Lease<C> {
        let pool = self.shared.pool(key, settings);
        pool.with(|s| s.adopted());
        pool.metrics.opened.increment(1);
        Lease::new(pool, Entry::new(conn, Instant::now()))
    }

    /// Each pool's key and how many connections it has in each state (for `/status`).
    pub fn counts(&self) -> Vec<(Key, Counts)> {
        let pools = lock(&self.shared.pools);
        let mut all: Vec<_> = pools
            .iter()
            .map(|(key, pool)| (key.clone(), lock(&pool.slots).counts()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Retires the pools whose key `which` selects (an instance left, a cluster is no longer
    /// used): their idle connections close now, the lent ones as they come back, and the
    /// next checkout for such a key starts a new pool.
    pub fn retire(&self, which: impl Fn(&Key) -> bool) {
        let mut pools = lock(&self.shared.pools);
        let retired: Vec<Arc<Pool<C>>> = pools
            .extract_if(|key, _| which(key))
            .map(|(_, pool)| pool)
            .collect();
        drop(pools);
        let now = Instant::now();
        for pool in retired {
            let closing = pool.with(|s| {
                s.retired = true;
                s.expire(now)
            });
            for (entry, reason) in closing {
                pool.close(*entry.conn, reason);
            }
        }
    }

    /// Closes the idle connections past their time now (the sweep task does it every few
    /// seconds) and forgets pools with nothing left.
    pub fn sweep(&self) {
        self.shared.sweep(Instant::now());
    }

    /// Brings every pool's gauges (idle, in use, opening, resetting, waiting) to its counts
    /// now, and records the zero waits of the checkouts that took an idle connection at
    /// once. Called when the metrics are read (`GET /metrics`): a checkout and a give-back
    /// per transaction then touch no shared metric, only the pool's own counts under its
    /// lock.
    pub fn publish(&self) {
        let mut alive = lock(&self.shared.alive);
        alive.retain(|pool| match pool.upgrade() {
            Some(pool) => {
                pool.publish();
                true
            }
            None => false,
        });
    }
}

impl<C: Pooled> Shared<C> {
    fn pool(self: &Arc<Self>, key: &Key, settings: &Settings) -> Arc<Pool<C>> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(key) {
            return Arc::clone(pool);
        }
        let budget = Arc::clone(lock(&self.budgets).entry(key.instance.clone()).or_default());
        let reasons = CloseReason::ALL.map(CloseReason::as_str);
        let pool = Arc::new(Pool {
            metrics: PoolMetrics::new(
                &key.cluster,
                &key.instance,
                &key.user,
                &key.database,
                &reasons,
            ),
            key: key.clone(),
            slots: Mutex::new(Slots::new(*settings, budget)),
            shared: Arc::downgrade(self),
        });
        pools.insert(key.clone(), Arc::clone(&pool));
        lock(&self.alive).push(Arc::downgrade(&pool));
        pool
    }

    /// Takes the live settings (from the opener) for each pool, closes the idle connections
    /// past their time, and opens the ones `min_idle` asks for (in slots reserved as
    /// opening, outside the lock, like a checkout), except on instances where checkouts wait.
    fn sweep(&self, now: Instant) {
        let all: Vec<Arc<Pool<C>>> = lock(&self.pools).values().cloned().collect();
        let opener = self.opener.get();
        // Instances where checkouts wait (for a full pool or the budget): no idle connection
        // is opened there, it would take a unit a waiter needs.
        let starved: HashSet<String> = all
            .iter()
            .filter(|pool| lock(&pool.slots).counts().waiting > 0)
            .map(|pool| pool.key.instance.clone())
            .collect();
        for pool in &all {
            let top_up = opener.is_some() && !starved.contains(&pool.key.instance);
            let live = opener.and_then(|o| o.settings(&pool.key));
            let (closing, opening) = pool.with(|s| {
                if let Some(live) = live {
                    s.settings = live;
                }
                let closing = s.expire(now);
                (closing, if top_up { s.top_up() } else { 0 })
            });
            for (entry, reason) in closing {
                pool.close(*entry.conn, reason);
            }
            if let Some(opener) = opener {
                for _ in 0..opening {
                    pool.open_idle(opener.as_ref());
                }
            }
        }
        drop(all);
        // A pool nobody holds (no lease, reset or checkout) with nothing open is forgotten.
        let mut pools = lock(&self.pools);
        pools.retain(|_, pool| Arc::strong_count(pool) > 1 || !lock(&pool.slots).is_unused());
    }

    /// The other pools of `pool`'s instance.
    fn siblings(&self, pool: &Pool<C>) -> Vec<Arc<Pool<C>>> {
        lock(&self.pools)
            .values()
            .filter(|p| p.key.instance == pool.key.instance && !std::ptr::eq(Arc::as_ptr(p), pool))
            .cloned()
            .collect()
    }

    /// Closes one idle connection of another pool of `pool`'s instance, if one has any, so
    /// that `pool`'s waiting checkout can open one within the budget.
    fn make_room(&self, pool: &Arc<Pool<C>>) {
        for other in self.siblings(pool) {
            if let Some(entry) = other.with(|s| s.evict_idle()) {
                other.close(*entry.conn, CloseReason::Budget);
                return;
            }
        }
    }
}

impl<C: Pooled> Pool<C> {
    /// Changes the bookkeeping under the lock (the gauges follow when published).
    pub fn with<R>(&self, change: impl FnOnce(&mut Slots<C>) -> R) -> R {
        let mut slots = lock(&self.slots);
        let result = change(&mut slots);
        let budgeted = slots.settle() && slots.settings.max_backend.is_some();
        drop(slots);
        if budgeted {
            self.wake_siblings();
        }
        result
    }

    /// Moves the gauges by what changed since they were last published. Gauges are moved,
    /// not set: a retired pool and its key's new one share them.
    fn publish(&self) {
        let mut slots = lock(&self.slots);
        let now = slots.counts();
        let before = std::mem::replace(&mut slots.published, now);
        let immediate = std::mem::take(&mut slots.unrecorded_immediate);
        drop(slots);
        move_gauges(&self.metrics, before, now);
        self.metrics.checkout_wait.record_many(0.0, immediate);
    }

    /// This pool gave back units of its instance's budget: the other pools of the instance
    /// grant them to their waiting checkouts.
    /// The login in `slot` was refused by the server for want of connection slots: the
    /// pool opens no more for a while ([`Slots::server_full`]; the first refusal of that
    /// time is logged), the slot is freed, and the checkout waits in line again when the
    /// pool has connections to wait for (true), else it fails with the server's refusal.
    fn server_full(self: &Arc<Self>, slot: Opening<C>, error: &impl std::error::Error) -> bool {
        self.metrics.refused.increment(1);
        // The window is set before the slot is freed, so the freed slot goes to no waiter.
        if self.with(|s| s.server_full(Instant::now())) {
            let key = &self.key;
            tracing::warn!(
                cluster = %key.cluster,
                instance = %key.instance,
                user = %key.user,
                database = %key.database,
                error = %crate::error::chain(error),
                "the server refused a pooled login for want of connection slots; while it does, the pool's own connections serve its checkouts and a login is tried again every {:?} (switchyard_pool_refused_total counts the refusals)",
                super::FULL_RETRY_AFTER
            );
        }
        drop(slot);
        self.with(|s| s.open() > 0)
    }

    fn wake_siblings(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        for other in shared.siblings(self) {
            other.with(|s| s.grant_slots());
        }
    }

    /// Opens a connection in a slot the sweep reserved, in a task of its own; it goes to a
    /// waiting checkout or idle. A failure is logged; the next sweep tries again. A server
    /// out of connection slots is treated as at a checkout (`server_full`): logged once,
    /// and no slot is reserved again while it lasts and the pool has connections.
    fn open_idle(self: &Arc<Self>, opener: &dyn Opener<C>) {
        let slot = Opening {
            pool: Arc::clone(self),
            armed: true,
        };
        let open = opener.open(&self.key);
        spawn_or_run(async move {
            match open.await {
                Ok(conn) => slot.idle(conn),
                Err(e) if e.server_full => {
                    let pool = Arc::clone(&slot.pool);
                    pool.server_full(slot, &e);
                }
                Err(e) => {
                    let key = &slot.pool.key;
                    tracing::warn!(
                        cluster = %key.cluster,
                        instance = %key.instance,
                        user = %key.user,
                        "could not open an idle connection for min_idle (the next sweep tries again): {e}"
                    );
                }
            }
        });
    }

    /// Waits in line (place `id`) until `deadline` for a usable connection, or a slot to
    /// open one in (also when the connection granted turns out unusable: its slot is
    /// reused rather than queueing again); `None` when nothing came in time.
    async fn wait(
        self: &Arc<Self>,
        id: u64,
        rx: oneshot::Receiver<Grant<C>>,
        deadline: Instant,
        settings: &Settings,
    ) -> Option<Grant<C>> {
        let waiting = Waiting {
            pool: Arc::clone(self),
            id,
            rx,
            done: false,
        };
        match waiting.until(deadline).await? {
            Grant::Idle(entry) => match self.usable(entry, settings) {
                Ok(entry) => Some(Grant::Idle(entry)),
                Err((conn, reason)) => {
                    self.with(|s| s.reopen());
                    self.close(*conn, reason);
                    Some(Grant::Slot)
                }
            },
            Grant::Slot => Some(Grant::Slot),
        }
    }

    /// The idle connection `entry` if it may be handed out now, else it and why to close it.
    fn usable(
        &self,
        mut entry: Entry<C>,
        settings: &Settings,
    ) -> Result<Entry<C>, (Box<C>, CloseReason)> {
        if let Some(reason) = entry.expired(settings, Instant::now()) {
            return Err((entry.conn, reason));
        }
        if entry.conn.is_closed() {
            return Err((entry.conn, CloseReason::Broken));
        }
        Ok(entry)
    }

    /// A `busy` connection comes back healthy: to a waiter, idle, or closed when past its
    /// lifetime or over the pool's size.
    pub fn give_back(&self, busy: Busy, mut entry: Entry<C>) {
        entry.conn.set_leased(false);
        if let Some((entry, reason)) = self.with(|s| s.give_back(busy, entry, Instant::now())) {
            self.close(*entry.conn, reason);
        }
    }

    /// Closes `conn` (its slot is already freed) in a task of its own.
    pub fn close(&self, conn: C, reason: CloseReason) {
        self.metrics.closed(reason.as_str());
        tracing::debug!(
            cluster = %self.key.cluster,
            instance = %self.key.instance,
            user = %self.key.user,
            reason = reason.as_str(),
            "closing a pooled backend connection"
        );
        spawn_or_run(conn.close());
    }
}

impl<C: Pooled> Drop for Pool<C> {
    /// Takes what the pool last published out of the gauges it shares with its key's other
    /// pools, as if it had published nothing open.
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(PoisonError::into_inner);
        move_gauges(&self.metrics, slots.published, Counts::default());
        self.metrics
            .checkout_wait
            .record_many(0.0, slots.unrecorded_immediate);
    }
}

/// Moves a pool's gauges from the counts `before` to `now`.
fn move_gauges(m: &PoolMetrics, before: Counts, now: Counts) {
    if before == now {
        return;
    }
    let move_by = |gauge: &metrics::Gauge, before: usize, now: usize| {
        if before != now {
            gauge.increment(now as f64 - before as f64);
        }
    };
    move_by(&m.idle, before.idle, now.idle);
    move_by(&m.in_use, before.in_use, now.in_use);
    move_by(&m.opening, before.opening, now.opening);
    move_by(&m.resetting, before.resetting, now.resetting);
    move_by(&m.waiting, before.waiting, now.waiting);
}

/// Spawns `task`, or drops it when no runtime runs any more (the process is ending).
pub(super) fn spawn_or_run(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// A checkout's place in line. Dropped before it was granted anything (the checkout gave
/// up or its task ended), it leaves the line, or gives back what it was granted meanwhile.
struct Waiting<C: Pooled> {
    pool: Arc<Pool<C>>,
    id: u64,
    rx: oneshot::Receiver<Grant<C>>,
    done: bool,
}

impl<C: Pooled> Waiting<C> {
    /// What it is granted before `deadline`; `None` when nothing came in time.
    async fn until(mut self, deadline: Instant) -> Option<Grant<C>> {
        if let Ok(Ok(grant)) = tokio::time::timeout_at(deadline, &mut self.rx).await {
            self.done = true;
            return Some(grant);
        }
        self.leave()
    }

    /// Leaves the line; a grant that arrived just before is kept (it was sent under the
    /// lock, so it is in the channel once the waiter is out of the line).
    fn leave(&mut self) -> Option<Grant<C>> {
        self.done = true;
        if self.pool.with(|s| s.leave_line(self.id)) {
            return None;
        }
        self.rx.try_recv().ok()
    }
}

impl<C: Pooled> Drop for Waiting<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.leave() {
            Some(Grant::Idle(entry)) => self.pool.give_back(Busy::InUse, entry),
            Some(Grant::Slot) => self.pool.with(|s| s.free(Busy::Opening)),
            None => {}
        }
    }
}

/// A slot reserved for a connection being opened: freed if the login fails or the
/// checkout is dropped before it ends.
struct Opening<C: Pooled> {
    pool: Arc<Pool<C>>,
    armed: bool,
}

impl<C: Pooled> Opening<C> {
    fn opened(mut self) {
        self.armed = false;
        if self.pool.with(|s| s.opened()) {
            self.logins_again();
        }
        self.pool.metrics.opened.increment(1);
    }

    /// Logs the end of a time of refusals for want of slots ([`Slots::server_full`]).
    fn logins_again(&self) {
        let key = &self.pool.key;
        tracing::info!(
            cluster = %key.cluster,
            instance = %key.instance,
            user = %key.user,
            database = %key.database,
            "the server takes the pool's logins again"
        );
    }

    /// Opened by the sweep: to a waiting checkout, else idle.
    fn idle(mut self, conn: C) {
        self.armed = false;
        if self.pool.with(|s| s.login_succeeded()) {
            self.logins_again();
        }
        self.pool.metrics.opened.increment(1);
        self.pool
            .give_back(Busy::Opening, Entry::new(conn, Instant::now()));
    }
}

impl<C: Pooled> Drop for Opening<C> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.with(|s| s.free(Busy::Opening));
        }
    }
}
