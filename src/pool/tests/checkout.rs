//! Checkouts and their ends: idle connections reused newest first, the fair line of
//! waiters and its timeout, resets, dropped, detached and broken connections, settings,
//! retired pools, checkouts from a kept pool and `take_idle`.

use super::*;

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
        bench.until_waiting(waiter, "the waiter queues").await;
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
    bench.until_waiting(1, "the waiter queues").await;
    waiter.abort();
    bench.until_waiting(0, "the waiter left").await;
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
    bench.until_alive(1, "the first one closed").await;
}

#[tokio::test]
async fn a_dropped_lease_closes_its_connection_and_frees_its_slot() {
    let bench = Bench::new();
    drop(bench.lease(settings(1)).await);
    assert_eq!(bench.counts(), Counts::default());
    let again = bench.lease(settings(1)).await;
    assert_eq!(again.id, 2);
    bench.until_alive(1, "the dropped one closed").await;
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

#[tokio::test]
async fn settings_apply_from_the_next_checkout() {
    let bench = Bench::new();
    let first = bench.lease(settings(1)).await;
    let waiter = tokio::spawn(bench.checkout(settings(1)));
    bench.until_waiting(1, "the waiter queues").await;
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
    bench.until_alive(1, "two closed").await;
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
    bench.until_alive(1, "the idle one closed").await;
    lent.release(Release::Clean);
    bench.until_alive(0, "the lent one closed on return").await;
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
    bench.until_alive(0, "the idle one closed").await;
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
    bench.until_waiting(1, "the checkout waits").await;
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
    bench.until_alive(0, "the broken one closed").await;
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

/// A checkout whose login the server refuses for want of connection slots, counting its
/// attempts in `tries`.
fn refused_checkout(
    bench: &Bench,
    tries: &Arc<AtomicUsize>,
) -> impl Future<Output = Result<Lease<Fake>, CheckoutError<Full>>> + Send + 'static {
    let (pools, tries) = (bench.pools.clone(), Arc::clone(tries));
    async move {
        pools
            .checkout(&key(), &settings(3), || {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err(Full) }
            })
            .await
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_out_of_connection_slots_makes_checkouts_wait_for_the_pools_own() {
    let bench = Bench::new();
    let tries = Arc::new(AtomicUsize::new(0));
    // With nothing in the pool there is nothing to wait for: the refusal is the client's.
    match refused_checkout(&bench, &tries).await {
        Err(CheckoutError::Connect(Full)) => {}
        Err(other) => panic!("expected the server's refusal, got {other}"),
        Ok(_) => panic!("expected the server's refusal, got a connection"),
    }
    assert_eq!(
        bench.counts(),
        Counts::default(),
        "nothing held, nobody waiting"
    );

    let held = bench.lease(settings(3)).await;
    tokio::time::advance(FULL_RETRY_AFTER).await;
    let first = tokio::spawn(refused_checkout(&bench, &tries));
    bench
        .until_waiting(1, "refused, it waits for the pool's connection")
        .await;
    let second = tokio::spawn(refused_checkout(&bench, &tries));
    bench.until_waiting(2, "the next one waits too").await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        2,
        "the empty pool's, then the first waiter's, and no login while the server is full"
    );
    held.release(Release::Clean);
    let lease = first.await.expect("task").expect("the first waiter");
    assert_eq!(lease.id, 1, "the pool's own connection");
    lease.release(Release::Clean);
    let lease = second.await.expect("task").expect("the second waiter");
    assert_eq!(lease.id, 1);

    // A second later the pool tries a login again.
    tokio::time::advance(FULL_RETRY_AFTER).await;
    let third = tokio::spawn(refused_checkout(&bench, &tries));
    bench.until_waiting(1, "refused again, it waits").await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        3,
        "one login tried after the pause"
    );
    lease.release(Release::Clean);
    assert_eq!(third.await.expect("task").expect("the third").id, 1);
}
