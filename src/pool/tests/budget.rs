//! The per-instance budget (`max_backend_connections`) the pools of one instance share.

use super::*;

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
    bench.until_alive(2, "closed").await;
    assert_eq!(bench.pools.backend_connections("db:5432"), 2);
    drop((b, other));
    assert_eq!(bench.pools.backend_connections("db:5432"), 0);
}
