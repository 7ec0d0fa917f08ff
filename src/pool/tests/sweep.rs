//! Time and the sweep: the idle timeout and max lifetime in paused time, and the idle
//! connections the sweep opens for `min_idle`.

use super::*;

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
    bench.until_alive(1, "the expired one closed").await;
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
    bench.until_alive(0, "the sweep closed it").await;
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
    bench.until_alive(0, "closed on return").await;
    assert_eq!(bench.lease(s).await.id, 2);
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

#[tokio::test(start_paused = true)]
async fn a_server_out_of_slots_gets_no_idle_opens_for_a_while() {
    let (bench, full) = Bench::new().with_full_opener();
    let s = with_min_idle(3, 2);
    let lent = bench.lease(s).await;
    full.store(true, Ordering::SeqCst);
    bench.pools.sweep();
    bench
        .until("the refused open freed its slot", |b| {
            b.counts().opening == 0
        })
        .await;
    // The server would take logins again, but the pool, which has a connection, tries
    // none until FULL_RETRY_AFTER has passed: no sweep reserves a slot meanwhile.
    full.store(false, Ordering::SeqCst);
    bench.pools.sweep();
    tokio::task::yield_now().await;
    assert_eq!((bench.counts().opening, bench.counts().idle), (0, 0));
    assert_eq!(bench.opened.load(Ordering::SeqCst), 1, "only the lent one");
    tokio::time::advance(FULL_RETRY_AFTER).await;
    bench.pools.sweep();
    bench
        .until("min_idle reached once the time passed", |b| {
            b.counts().idle == 2
        })
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
    bench.until_alive(0, "the lent one closed").await;
    assert_eq!(bench.pools.backend_connections("db:5432"), 0);
}
