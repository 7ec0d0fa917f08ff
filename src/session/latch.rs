//! A flag set once, by any task, that one task waits for: how a session learns that
//! another client ended it (PostgreSQL `pg_terminate_backend`, MySQL `KILL`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// Read and waited for by its session at every statement, so with no lock and no waiter
/// list: one waker slot, swapped in place (a `Notify` or a watch channel joined and left a
/// locked list of waiters at every wait).
#[derive(Debug, Default)]
pub struct Latch {
    set: AtomicBool,
    /// The one task that waits (the session's own).
    waker: AtomicWaker,
}

impl Latch {
    /// Sets it for good, waking the task that waits.
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once it is set, at once if it is. For one task only: a second task's wait
    /// would take the first one's waker slot.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_set() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Set between the check and the registration: seen now.
            match self.is_set() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_wait_ends_once_the_latch_is_set_and_at_once_after() {
        let latch = Arc::new(Latch::default());
        let waiting = {
            let latch = Arc::clone(&latch);
            tokio::spawn(async move { latch.wait().await })
        };
        tokio::task::yield_now().await;
        assert!(!latch.is_set());
        latch.set();
        waiting.await.expect("woken");
        assert!(latch.is_set());
        latch.wait().await;
    }
}
