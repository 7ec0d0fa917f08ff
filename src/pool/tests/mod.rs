//! The pool's bookkeeping with an in-test connection type: this file holds the harness (a
//! fake connection, pools of them, counters); the tests are grouped by what they cover:
//! checkouts and their ends (`checkout`), time and the sweep (`sweep`), the per-instance
//! budget (`budget`).

mod budget;
mod checkout;
mod sweep;

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

impl LoginError for Refused {
    fn server_full(&self) -> bool {
        false
    }

    fn refused(&self) -> bool {
        true
    }
}

/// A login the server refused for want of connection slots.
#[derive(Debug, thiserror::Error)]
#[error("too many connections")]
struct Full;

impl LoginError for Full {
    fn server_full(&self) -> bool {
        true
    }

    fn refused(&self) -> bool {
        true
    }
}

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

/// Opens fakes for the sweep, or fails while `failing` is set: as a server out of
/// connection slots when `full`.
struct FakeOpener {
    counters: Counters,
    failing: Arc<std::sync::atomic::AtomicBool>,
    full: bool,
}

impl Opener<Fake> for FakeOpener {
    fn settings(&self, _key: &Key) -> Option<Settings> {
        None
    }

    fn open(
        &self,
        _key: &Key,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Fake, OpenError>> + Send>> {
        let result = match self.failing.load(Ordering::SeqCst) {
            true if self.full => Err(OpenError::login(&Full)),
            true => Err("refused".into()),
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
                .checkout(&key, &settings, || {
                    let fake = counters.fake();
                    async move { Ok(fake) }
                })
                .await
        }
    }

    /// Lets the sweep open fakes; the flag makes them fail while set.
    /// The bench with an opener for the sweep, and the switch that makes its logins fail.
    fn with_opener(self) -> (Bench, Arc<std::sync::atomic::AtomicBool>) {
        self.opener(false)
    }

    /// The same, the logins failing as on a server out of connection slots.
    fn with_full_opener(self) -> (Bench, Arc<std::sync::atomic::AtomicBool>) {
        self.opener(true)
    }

    fn opener(self, full: bool) -> (Bench, Arc<std::sync::atomic::AtomicBool>) {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.pools.set_opener(Arc::new(FakeOpener {
            counters: Counters {
                opened: Arc::clone(&self.opened),
                alive: Arc::clone(&self.alive),
                lent: Arc::clone(&self.lent),
            },
            failing: Arc::clone(&failing),
            full,
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

    /// Until `n` fakes are alive (the others closed).
    async fn until_alive(&self, n: usize, what: &str) {
        self.until(what, |b| b.alive() == n).await;
    }

    /// Until `n` checkouts wait in line.
    async fn until_waiting(&self, n: usize, what: &str) {
        self.until(what, |b| b.counts().waiting == n).await;
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}
