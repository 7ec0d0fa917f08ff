//! The pools of one connection type, one per [`Key`], created on first checkout: the
//! checkout itself (idle connection, new connection, or a fair wait in line bounded by
//! `checkout_timeout`), and the sweep that closes idle connections past their time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use metrics::Gauge;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::lease::Lease;
use super::slots::{Busy, Counts, Entry, Grant, Slots, Take};
use super::{CheckoutError, CloseReason, Key, Pooled, Settings};
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
}

/// One pool: the connections of one [`Key`].
pub(super) struct Pool<C: Pooled> {
    pub key: Key,
    slots: Mutex<Slots<C>>,
    pub metrics: PoolMetrics,
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
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let pool = self.shared.pool(key, settings);
        let started = Instant::now();
        let granted = loop {
            match pool.with(|s| s.take(*settings)) {
                Take::Idle(entry) => match pool.usable(entry, settings) {
                    Ok(entry) => break Grant::Idle(entry),
                    Err((conn, reason)) => {
                        pool.with(|s| s.free(Busy::InUse));
                        pool.close(conn, reason);
                    }
                },
                Take::Open => break Grant::Slot,
                Take::Wait(id, rx) => {
                    let deadline = started + settings.checkout_timeout;
                    if let Some(grant) = pool.wait(id, rx, deadline, settings).await {
                        break grant;
                    }
                    pool.metrics
                        .checkout_wait
                        .record(started.elapsed().as_secs_f64());
                    pool.metrics.checkout_timeouts.increment(1);
                    return Err(CheckoutError::Timeout {
                        instance: key.instance.clone(),
                        user: key.user.clone(),
                        size: settings.size,
                        timeout: settings.checkout_timeout,
                    });
                }
            }
        };
        pool.metrics
            .checkout_wait
            .record(started.elapsed().as_secs_f64());
        match granted {
            Grant::Idle(entry) => Ok(Lease::new(pool, entry)),
            Grant::Slot => {
                let slot = Opening {
                    pool: Arc::clone(&pool),
                    armed: true,
                };
                let conn = connect().await.map_err(CheckoutError::Connect)?;
                slot.opened();
                Ok(Lease::new(pool, Entry::new(conn, Instant::now())))
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
                pool.close(entry.conn, reason);
            }
        }
    }

    /// Closes the idle connections past their time now (the sweep task does it every few
    /// seconds) and forgets pools with nothing left.
    pub fn sweep(&self) {
        self.shared.sweep(Instant::now());
    }
}

impl<C: Pooled> Shared<C> {
    fn pool(&self, key: &Key, settings: &Settings) -> Arc<Pool<C>> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(key) {
            return Arc::clone(pool);
        }
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
            slots: Mutex::new(Slots::new(*settings)),
        });
        pools.insert(key.clone(), Arc::clone(&pool));
        pool
    }

    fn sweep(&self, now: Instant) {
        let mut pools = lock(&self.pools);
        for pool in pools.values() {
            for (entry, reason) in pool.with(|s| s.expire(now)) {
                pool.close(entry.conn, reason);
            }
        }
        // A pool nobody holds (no lease, reset or checkout) with nothing open is forgotten.
        pools.retain(|_, pool| Arc::strong_count(pool) > 1 || !pool.with(|s| s.is_unused()));
    }
}

impl<C: Pooled> Pool<C> {
    /// Changes the bookkeeping under the lock, then moves the gauges by what changed.
    pub fn with<R>(&self, change: impl FnOnce(&mut Slots<C>) -> R) -> R {
        let mut slots = lock(&self.slots);
        let result = change(&mut slots);
        let now = slots.counts();
        let before = std::mem::replace(&mut slots.published, now);
        if now != before {
            let m = &self.metrics;
            let move_by = |gauge: &Gauge, before: usize, now: usize| {
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
        result
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
                    self.close(conn, reason);
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
    ) -> Result<Entry<C>, (C, CloseReason)> {
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
            self.close(entry.conn, reason);
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
        self.pool.with(|s| s.opened());
        self.pool.metrics.opened.increment(1);
    }
}

impl<C: Pooled> Drop for Opening<C> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.with(|s| s.free(Busy::Opening));
        }
    }
}
