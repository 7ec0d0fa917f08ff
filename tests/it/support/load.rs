//! The checks of a load test over a transaction-mode pool: while the load runs, a sampler
//! asks each server (primary first, then the replicas) again and again how many connections
//! the proxy's user has to the test's database; afterwards no server had more than the
//! pool's size at once, the pools never opened more (nothing was closed and opened again),
//! and the reads spread over the replicas.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;

use super::proxy::Proxy;

const CHECKOUTS: &str = "switchyard_pool_checkout_wait_seconds_count";
const OPENED: &str = "switchyard_pool_opened_total";
const REFUSED: &str = "switchyard_pool_refused_total";
const HELD: &str = "switchyard_pool_connections";

/// The servers of a test cluster, asked how many connections the proxy's user has to the
/// test's database on each.
pub trait Servers: Send + 'static {
    /// How many connections on each server now, the primary's first.
    fn connections(&mut self) -> impl Future<Output = Vec<i64>> + Send;
}

/// A sampler running beside a load, and the checkouts per instance before the load.
pub struct Watch {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Vec<i64>>,
    since: Since,
}

/// Starts asking `servers` again and again, keeping the most connections each had at once,
/// and notes the checkouts per instance so far.
pub async fn watch(proxy: &Proxy, db: &str, mut servers: impl Servers) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = Arc::clone(&stop);
    let sampler = tokio::spawn(async move {
        let mut most: Vec<i64> = Vec::new();
        while !sampling.load(Ordering::SeqCst) {
            let now = servers.connections().await;
            most.resize(now.len(), 0);
            for (most, now) in most.iter_mut().zip(now) {
                *most = (*most).max(now);
            }
            tokio::task::yield_now().await;
        }
        most
    });
    let since = Since::now(proxy, db).await;
    Watch {
        stop,
        sampler,
        since,
    }
}

impl Watch {
    /// Ends the sampler and checks the load: no server over `pool_size` connections at
    /// once (and the primary used), no pool opened more than `pool_size`, and at least
    /// `reads` checkouts on the `replicas` (`host:port`), each with a fifth of them or more.
    pub async fn check(
        self,
        proxy: &Proxy,
        db: &str,
        pool_size: f64,
        replicas: &[String],
        reads: f64,
    ) {
        self.stop.store(true, Ordering::SeqCst);
        let most = self.sampler.await.expect("sampler");
        assert!(
            most.iter().all(|&n| n as f64 <= pool_size) && most.first() >= Some(&1),
            "the most connections the primary and each replica had from the proxy at once: {most:?}"
        );
        let opened = proxy.pool_series_by_instance(OPENED, db).await;
        assert!(
            opened.values().all(|&n| n <= pool_size),
            "connections the pools opened per instance: {opened:?}"
        );
        let per_replica = self.since.checkouts_on(proxy, db, replicas).await;
        let total: f64 = per_replica.iter().sum();
        assert!(
            total >= reads && per_replica.iter().all(|&n| n >= total * 0.2),
            "{reads} reads spread over the replicas {replicas:?}: {per_replica:?}"
        );
    }
}

/// The checkouts per instance at some moment, to count those made since.
pub struct Since(BTreeMap<String, f64>);

impl Since {
    pub async fn now(proxy: &Proxy, db: &str) -> Since {
        Since(proxy.pool_series_by_instance(CHECKOUTS, db).await)
    }

    /// The checkouts on each of `instances` (`host:port`) since then.
    pub async fn checkouts_on(&self, proxy: &Proxy, db: &str, instances: &[String]) -> Vec<f64> {
        let after = proxy.pool_series_by_instance(CHECKOUTS, db).await;
        instances
            .iter()
            .map(|addr| {
                after.get(addr).copied().unwrap_or(0.0) - self.0.get(addr).copied().unwrap_or(0.0)
            })
            .collect()
    }

    /// Checks a load on servers out of connection slots for the proxy's logins: the
    /// refusals were counted, no pool holds more than `limit` connections, and at least
    /// `reads` checkouts since then ran on the `replicas` (a full replica is not taken for
    /// a failed one, nor are its reads sent to the writer).
    pub async fn check_out_of_slots(
        &self,
        proxy: &Proxy,
        db: &str,
        limit: f64,
        replicas: &[String],
        reads: f64,
    ) {
        let refused = proxy.pool_series_by_instance(REFUSED, db).await;
        assert!(
            refused.values().sum::<f64>() >= 1.0,
            "the refusals are counted: {refused:?}"
        );
        // What each pool holds at the end: a MySQL connection the first client was greeted
        // with joins its pool even past its size, so the pool may close one and open another.
        let held = proxy.pool_series_by_instance(HELD, db).await;
        assert!(
            held.values().all(|&n| n <= limit),
            "no pool holds more than the servers let it: {held:?}"
        );
        let on_replicas: f64 = self.checkouts_on(proxy, db, replicas).await.iter().sum();
        assert!(
            on_replicas >= reads,
            "the {reads} reads ran on the replicas: {on_replicas}"
        );
    }
}
