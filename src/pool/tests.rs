//! The pool's bookkeeping with an in-test connection type: sizes, the line of waiters,
//! timeouts, releases, the idle timeout and max lifetime in paused time, `min_idle` and the
//! per-instance budget.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A connection that only remembers whether a session dirtied it.
struct Fake {
    id: u32,
    dirty: bool,
    /// The server closed it.
    closed: bool,
    /// Its next reset fails.
    refuse_reset: bool,
    alive: Arc<AtomicUsize>,
    leased: bool,
    /// How many fakes are lent out now, as the pool says.
    lent: Arc<AtomicUsize>,
    carried: super::Carried,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reset refused")]
struct Refused;

impl Pooled for Fake {
    type ResetError = Refused;

    fn reset(&mut self) -> impl Future<Output = Result<(), Refused>> + Send {
        let result = if self.refuse_reset {
            Err(Refused)
        } else {
            self.dirty = false;
            Ok(())
        };
        async move { result }
    }

    fn is_closed(&mut self) -> bool {
        self.closed
    }

    fn carried(&mut self) -> &mut super::Carried {
        &mut self.carried
    }

    fn set_leased(&mut self, leased: bool) {
        if leased != self.leased {
            self.leased = leased;
            match leased {
                true => self.lent.fetch_add(1, Ordering::SeqCst),
                false => self.lent.fetch_sub(1, Ordering::SeqCst),
            };
        }
    }
}

/// Pools of fakes, and how many fakes were opened and are alive.
struct Bench {
    pools: Pools<Fake>,
    opened: Arc<AtomicU32>,
    alive: Arc<AtomicUsize>,
    lent: Arc<AtomicUsize>,
    _stop: crate::shutdown::Trigger,
}

fn key() -> Key {
    Key {
        cluster: "main".into(),
        instance: "db:5432".into(),
        user: "app".into(),
        database: "shop".into(),
        options: 7,
    }
}

fn settings(size: usize) -> Settings {
    Settings {
        size,
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(600),
        checkout_timeout: Duration::from_secs(5),
        min_idle: 0,
        max_backend: None,
    }
}

/// The pool of `key()`'s instance for another database.
fn other_key() -> Key {
    Key {
        database: "books".into(),
        ..key()
    }
}

/// Counters shared by every fake a bench opens.
#[derive(Clone, Default)]
struct Counters {
    opened: Arc<AtomicU32>,
    alive: Arc<AtomicUsize>,
    lent: Arc<AtomicUsize>,
}

impl Counters {
    fn fake(&self) -> Fake {
        self.alive.fetch_add(1, Ordering::SeqCst);
        Fake {
            id: self.opened.fetch_add(1, Ordering::SeqCst) + 1,
            dirty: false,
            closed: false,
            refuse_reset: false,
            alive: Arc::clone(&self.alive),
            leased: false,
            lent: Arc::clone(&self.lent),
            carried: super::Carried::default(),
        }
    }
}

/// Opens fakes for the sweep, or fails while `failing` is set.
struct FakeOpener {
    counters: Counters,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Opener<Fake> for FakeOpener {
    fn settings(&self, _key: &Key) -> Option<Settings> {
        None
    }

    fn open(
        &self,
        _key: &Key,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Fake, String>> + Send>> {
        let result = match self.failing.load(Ordering::SeqCst) {
            true => Err("refused".to_owned()),
            false => Ok(self.counters.fake()),
        };
        Box::pin(async move { result })
    }
}

impl Bench {
    fn new() -> Bench {
        let (stop, shutdown) = crate::shutdown::channel();
        Bench {
            pools: Pools::new(shutdown),
            opened: Arc::new(AtomicU32::new(0)),
            alive: Arc::new(AtomicUsize::new(0)),
            lent: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        }
    }

    fn checkout(
        &self,
        settings: Settings,
    ) -> impl Future<Output = Result<Lease<Fake>, CheckoutError<Refused>>> + Send + 'static {
        self.checkout_for(key(), settings)
    }

    fn checkout_for(
        &self,
        key: Key,
        settings: Settings,
    ) -> impl Future<Output = Result<Lease<Fake>, CheckoutError<Refused>>> + Send + 'static {
        let pools = self.pools.clone();
        let counters = Counters {
            opened: Arc::clone(&self.opened),
            alive: Arc::clone(&self.alive),
            lent: Arc::clone(&self.lent),
        };
        async move {
            pools
                .checkout(&key, &settings, || async move { Ok(counters.fake()) })
                .await
        }
    }

    /// Lets the sweep open fakes; the flag makes them fail while set.
    fn with_opener(self) -> (Bench, Arc<std::sync::atomic::AtomicBool>) {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.pools.set_opener(Arc::new(FakeOpener {
            counters: Counters {
                opened: Arc::clone(&self.opened),
                alive: Arc::clone(&self.alive),
                lent: Arc::clone(&self.lent),
            },
            failing: Arc::clone(&failing),
        }));
        (self, failing)
    }

    fn counts_of(&self, which: &Key) -> Counts {
        self.pools
            .counts()
            .into_iter()
            .find(|(k, _)| k == which)
            .map(|(_, counts)| counts)
            .unwrap_or_default()
    }

    async fn lease(&self, settings: Settings) -> Lease<Fake> {
        self.checkout(settings).await.expect("checkout")
    }

    fn counts(&self) -> Counts {
        let all = self.pools.counts();
        all.into_iter()
            .find(|(k, _)| *k == key())
            .map(|(_, counts)| counts)
            .unwrap_or_default()
    }

    /// Lets spawned tasks (resets, closes, checkouts) run until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Bench) -> bool) {
        for _ in 0..1000 {
            if done(self) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened: {what}; counts {:?}", self.counts());
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn idle_connections_are_reused_newest_first() {
    let bench = Bench::new();
    let (a, b) = (
        bench.lease(settings(2)).await,
        bench.lease(settings(2)).await,
    );
    assert_eq!((a.id, b.id), (1, 2));
    a.release(Release::Clean);
    b.release(Release::Clean);
    assert_eq!(bench.counts().idle, 2);
    assert_eq!(
        bench.lent.load(Ordering::SeqCst),
        0,
        "idle ones are not lent"
    );
    let again = bench.lease(settings(2)).await;
    assert_eq!(again.id, 2, "the newest idle connection first");
    assert_eq!(bench.counts().in_use, 1);
    assert_eq!(bench.counts().idle, 1);
    assert_eq!(bench.lent.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_full_pool_serves_its_waiters_in_order() {
    let bench = Bench::new();
    let held = bench.lease(settings(1)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for waiter in 1..=3 {
        let checkout = bench.checkout(settings(1));
        let tx = tx.clone();
        tokio::spawn(async move {
            let lease = checkout.await.expect("checkout");
            tx.send((waiter, lease.id)).expect("send");
            lease.release(Release::Clean);
        });
        bench
            .until("the waiter queues", |b| b.counts().waiting == waiter)
            .await;
    }
    held.release(Release::Clean);
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(rx.recv().await.expect("served"));
    }
    assert_eq!(served, [(1, 1), (2, 1), (3, 1)], "first come, first served");
    assert_eq!(
        bench.opened.load(Ordering::SeqCst),
        1,
        "never over pool_size"
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkout_that_waits_too_long_gets_a_timeout() {
    let bench = Bench::new();
    let _held = bench.lease(settings(1)).await;
    match bench.checkout(settings(1)).await {
        Err(CheckoutError::Timeout { size, timeout, .. }) => {
            assert_eq!((size, timeout), (1, Duration::from_secs(5)));
        }
        Err(other) => panic!("expected a timeout, got {other}"),
        Ok(_) => panic!("expected a timeout, got a connection"),
    }
    assert_eq!(
        bench.counts().waiting,
        0,
        "the timed-out checkout left the line"
    );
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let bench = Bench::new();
    let held = bench.lease(settings(1)).await;
    let waiter = tokio::spawn(bench.checkout(settings(1)));
    bench
        .until("the waiter queues", |b| b.counts().waiting == 1)
        .await;
    waiter.abort();
    bench
        .until("the waiter left", |b| b.counts().waiting == 0)
        .await;
    held.release(Release::Clean);
    assert_eq!(
        bench.counts().idle,
        1,
        "the connection went idle, not to a gone waiter"
    );
}

#[tokio::test]
async fn reset_cleans_a_connection_before_it_is_reused() {
    let bench = Bench::new();
    let mut lease = bench.lease(settings(1)).await;
    lease.dirty = true;
    lease.release(Release::Reset);
    // The slot stays taken while the reset runs: this checkout waits for it.
    let again = bench.lease(settings(1)).await;
    assert_eq!(again.id, 1);
    assert!(!again.dirty, "reset before reuse");
}

#[tokio::test]
async fn a_failed_reset_closes_the_connection() {
    let bench = Bench::new();
    let mut lease = bench.lease(settings(1)).await;
    lease.refuse_reset = true;
    lease.release(Release::Reset);
    let again = bench.lease(settings(1)).await;
    assert_eq!(again.id, 2, "a new connection in the freed slot");
    bench
        .until("the first one closed", |b| b.alive() == 1)
        .await;
}

#[tokio::test]
async fn a_dropped_lease_closes_its_connection_and_frees_its_slot() {
    let bench = Bench::new();
    drop(bench.lease(settings(1)).await);
    assert_eq!(bench.counts(), Counts::default());
    let again = bench.lease(settings(1)).await;
    assert_eq!(again.id, 2);
    bench
        .until("the dropped one closed", |b| b.alive() == 1)
        .await;
}

#[tokio::test]
async fn a_detached_connection_leaves_the_pool() {
    let bench = Bench::new();
    let conn = bench.lease(settings(1)).await.detach();
    assert_eq!(conn.id, 1);
    let other = bench.lease(settings(1)).await;
    assert_eq!(other.id, 2, "the slot was freed at once");
    assert_eq!(bench.alive(), 2, "the detached one is the caller's");
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_handed_out() {
    let bench = Bench::new();
    let mut lease = bench.lease(settings(1)).await;
    lease.closed = true;
    lease.release(Release::Clean);
    let again = bench.lease(settings(1)).await;
    assert_eq!(again.id, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_after_idle_timeout() {
    let bench = Bench::new();
    bench.lease(settings(1)).await.release(Release::Clean);
    tokio::time::advance(Duration::from_secs(30)).await;
    let lease = bench.lease(settings(1)).await;
    assert_eq!(lease.id, 1, "idle for less than idle_timeout: reused");
    lease.release(Release::Clean);
    tokio::time::advance(Duration::from_secs(61)).await;
    // Lazily, at checkout:
    assert_eq!(bench.lease(settings(1)).await.id, 2);
    bench
        .until("the expired one closed", |b| b.alive() == 1)
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_sweep_closes_expired_idle_connections() {
    let bench = Bench::new();
    bench.lease(settings(1)).await.release(Release::Clean);
    assert_eq!(bench.counts().idle, 1);
    // The sweep task ticks every few seconds; let a minute and more pass.
    for _ in 0..14 {
        tokio::time::advance(Duration::from_secs(5)).await;
    }
    bench.until("the sweep closed it", |b| b.alive() == 0).await;
    assert_eq!(bench.counts(), Counts::default());
}

#[tokio::test(start_paused = true)]
async fn connections_past_max_lifetime_are_not_reused() {
    let bench = Bench::new();
    let s = Settings {
        max_lifetime: Duration::from_secs(100),
        ..settings(1)
    };
    let lease = bench.lease(s).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    lease.release(Release::Clean);
    let lease = bench.lease(s).await;
    assert_eq!(lease.id, 1, "younger than max_lifetime");
    tokio::time::advance(Duration::from_secs(51)).await;
    // Given back past its lifetime: closed, not idle.
    lease.release(Release::Clean);
    assert_eq!(bench.counts().idle, 0);
    bench.until("closed on return", |b| b.alive() == 0).await;
    assert_eq!(bench.lease(s).await.id, 2);
}

#[tokio::test]
async fn settings_apply_from_the_next_checkout() {
    let bench = Bench::new();
    let first = bench.lease(settings(1)).await;
    let waiter = tokio::spawn(bench.checkout(settings(1)));
    bench
        .until("the waiter queues", |b| b.counts().waiting == 1)
        .await;
    // A reload raised pool_size to 3: the waiter gets a slot (first), and so does this
    // checkout; each opens its connection.
    let third = bench.lease(settings(3)).await;
    let second = waiter.await.expect("waiter").expect("checkout");
    let mut ids = [first.id, second.id, third.id];
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(bench.counts().in_use, 3);
    for lease in [first, second, third] {
        lease.release(Release::Clean);
    }
    // A reload lowered it to 1: the extra idle connections close.
    let one = bench.lease(settings(1)).await;
    bench.pools.sweep();
    assert_eq!(bench.counts().idle, 0);
    one.release(Release::Clean);
    assert_eq!(bench.counts().idle, 1);
    bench.until("two closed", |b| b.alive() == 1).await;
}

#[tokio::test]
async fn a_retired_pool_closes_its_connections_and_a_new_one_starts() {
    let bench = Bench::new();
    let (idle, lent) = (
        bench.lease(settings(2)).await,
        bench.lease(settings(2)).await,
    );
    idle.release(Release::Clean);
    bench.pools.retire(|k| k.instance == "db:5432");
    assert!(bench.pools.counts().is_empty(), "forgotten at once");
    bench.until("the idle one closed", |b| b.alive() == 1).await;
    lent.release(Release::Clean);
    bench
        .until("the lent one closed on return", |b| b.alive() == 0)
        .await;
    assert_eq!(
        bench.lease(settings(2)).await.id,
        3,
        "a new pool, a new connection"
    );
}

#[tokio::test]
async fn a_checkout_from_a_kept_pool_reuses_it_and_follows_its_retirement() {
    let bench = Bench::new();
    let first = bench.lease(settings(2)).await;
    let kept = first.pool();
    first.release(Release::Clean);
    let counters = Counters {
        opened: Arc::clone(&bench.opened),
        alive: Arc::clone(&bench.alive),
        lent: Arc::clone(&bench.lent),
    };
    let again = bench
        .pools
        .checkout_from(&kept, &settings(2), || async {
            Ok::<_, Refused>(counters.fake())
        })
        .await
        .expect("checkout");
    assert_eq!(again.id, 1, "the kept pool's idle connection");
    again.release(Release::Clean);

    bench.pools.retire(|k| k.instance == "db:5432");
    bench.until("the idle one closed", |b| b.alive() == 0).await;
    let after = bench
        .pools
        .checkout_from(&kept, &settings(2), || async {
            Ok::<_, Refused>(counters.fake())
        })
        .await
        .expect("a checkout from a retired pool goes to the one that took its place");
    assert_eq!(after.id, 2, "a new connection");
    assert_eq!(bench.counts().in_use, 1, "in the key's new pool");
    after.release(Release::Clean);
    assert_eq!(bench.counts().idle, 1, "given back there, not closed");
}

#[tokio::test]
async fn take_idle_lends_an_idle_connection_at_once_and_nothing_else() {
    let bench = Bench::new();
    let first = bench.lease(settings(1)).await;
    let kept = first.pool();
    assert!(
        bench.pools.take_idle(&kept, &settings(1)).is_none(),
        "none idle: it neither opens nor waits"
    );
    assert_eq!(
        (bench.counts().in_use, bench.opened.load(Ordering::SeqCst)),
        (1, 1)
    );

    // A checkout waits for the only connection: nobody overtakes it.
    let waiting = tokio::spawn(bench.checkout(settings(1)));
    bench
        .until("the checkout waits", |b| b.counts().waiting == 1)
        .await;
    first.release(Release::Clean);
    let second = waiting.await.expect("join").expect("checkout");
    assert_eq!(second.id, 1, "the waiting checkout got it");
    second.release(Release::Clean);

    let taken = bench
        .pools
        .take_idle(&kept, &settings(1))
        .expect("the idle one");
    assert_eq!(taken.id, 1);
    assert_eq!((bench.counts().in_use, bench.counts().idle), (1, 0));
    taken.release(Release::Clean);

    // An idle connection the server closed is closed, not lent.
    let mut broken = bench.pools.take_idle(&kept, &settings(1)).expect("idle");
    broken.closed = true;
    broken.release(Release::Clean);
    assert!(bench.pools.take_idle(&kept, &settings(1)).is_none());
    bench
        .until("the broken one closed", |b| b.alive() == 0)
        .await;
    let counts = bench.counts();
    assert_eq!((counts.in_use, counts.idle), (0, 0), "its slot freed");
    let fresh = bench.lease(settings(1)).await;
    fresh.release(Release::Clean);

    bench.pools.retire(|k| k.instance == "db:5432");
    assert!(
        bench.pools.take_idle(&kept, &settings(1)).is_none(),
        "a retired pool lends nothing"
    );
}

fn with_min_idle(size: usize, min_idle: usize) -> Settings {
    Settings {
        min_idle,
        ..settings(size)
    }
}

#[tokio::test]
async fn the_sweep_opens_idle_connections_up_to_min_idle() {
    let (bench, _) = Bench::new().with_opener();
    let s = with_min_idle(3, 2);
    bench.lease(s).await.release(Release::Clean);
    assert_eq!(bench.counts().idle, 1, "nothing opened before the sweep");
    bench.pools.sweep();
    bench
        .until("min_idle reached", |b| b.counts().idle == 2)
        .await;
    bench.pools.sweep();
    tokio::task::yield_now().await;
    assert_eq!(
        bench.opened.load(Ordering::SeqCst),
        2,
        "no more than min_idle"
    );
    assert_eq!(bench.pools.backend_connections("db:5432"), 2);

    // Both in use: the sweep may open only one more, pool_size is 3.
    let (a, b) = (bench.lease(s).await, bench.lease(s).await);
    bench.pools.sweep();
    bench.until("one opened", |b| b.counts().idle == 1).await;
    bench.pools.sweep();
    tokio::task::yield_now().await;
    let counts = bench.counts();
    assert_eq!((counts.in_use, counts.idle, counts.opening), (2, 1, 0));
    assert_eq!(
        bench.opened.load(Ordering::SeqCst),
        3,
        "never over pool_size"
    );
    drop((a, b));
}

#[tokio::test]
async fn a_failed_idle_open_is_tried_again_at_the_next_sweep() {
    let (bench, failing) = Bench::new().with_opener();
    let s = with_min_idle(3, 1);
    let lent = bench.lease(s).await;
    failing.store(true, Ordering::SeqCst);
    bench.pools.sweep();
    bench
        .until("the failed open freed its slot", |b| {
            b.counts().opening == 0
        })
        .await;
    assert_eq!(bench.counts().idle, 0);
    failing.store(false, Ordering::SeqCst);
    bench.pools.sweep();
    bench
        .until("opened at the next sweep", |b| b.counts().idle == 1)
        .await;
    drop(lent);
}

#[tokio::test]
async fn a_retired_pool_gets_no_idle_connections() {
    let (bench, _) = Bench::new().with_opener();
    let lent = bench.lease(with_min_idle(3, 2)).await;
    bench.pools.retire(|k| k.instance == "db:5432");
    bench.pools.sweep();
    tokio::task::yield_now().await;
    assert_eq!(bench.opened.load(Ordering::SeqCst), 1, "none opened for it");
    lent.release(Release::Clean);
    bench.until("the lent one closed", |b| b.alive() == 0).await;
    assert_eq!(bench.pools.backend_connections("db:5432"), 0);
}

fn budget(size: usize, max: usize) -> Settings {
    Settings {
        max_backend: Some(max),
        ..settings(size)
    }
}

#[tokio::test(start_paused = true)]
async fn a_checkout_over_the_instance_budget_waits_then_times_out() {
    let bench = Bench::new();
    let s = budget(5, 1);
    let _held = bench.lease(s).await;
    match bench.checkout_for(other_key(), s).await {
        Err(CheckoutError::Timeout { .. }) => {}
        Err(other) => panic!("expected a timeout, got {other}"),
        Ok(_) => panic!("expected a timeout, got a connection over the budget"),
    }
    assert_eq!(bench.opened.load(Ordering::SeqCst), 1);
    assert_eq!(bench.pools.backend_connections("db:5432"), 1);
    // Without a budget the other pool opens its own.
    let settings = settings(5);
    assert!(bench.checkout_for(other_key(), settings).await.is_ok());
}

#[tokio::test]
async fn a_closed_connection_lets_another_pool_of_the_instance_open_one() {
    let bench = Bench::new();
    let s = budget(5, 1);
    let held = bench.lease(s).await;
    let waiter = tokio::spawn(bench.checkout_for(other_key(), s));
    bench
        .until("the other pool's checkout waits", |b| {
            b.counts_of(&other_key()).waiting == 1
        })
        .await;
    drop(held);
    let lease = waiter.await.expect("waiter").expect("checkout");
    assert_eq!(lease.id, 2);
    assert_eq!(bench.pools.backend_connections("db:5432"), 1);
}

#[tokio::test]
async fn an_idle_connection_of_another_pool_is_closed_to_make_room() {
    let bench = Bench::new();
    let s = budget(5, 2);
    let (a, b) = (bench.lease(s).await, bench.lease(s).await);
    a.release(Release::Clean);
    let other = bench.checkout_for(other_key(), s).await.expect("room made");
    assert_eq!(other.id, 3);
    assert_eq!(bench.counts().idle, 0, "the idle one was closed");
    bench.until("closed", |b| b.alive() == 2).await;
    assert_eq!(bench.pools.backend_connections("db:5432"), 2);
    drop((b, other));
    assert_eq!(bench.pools.backend_connections("db:5432"), 0);
}
