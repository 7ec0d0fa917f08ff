//! Where the process is in its life — starting, serving, draining — as load balancers and
//! the drain on SIGTERM need to know it: whether the listener accepts, how many client
//! sessions are open (the connection limit and the drain both count them), and the drain
//! signal that sessions obey at their next transaction boundary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::shutdown::{self, Shutdown, Trigger};

/// The process-wide life state; one per proxy, shared by the listener, sessions and the
/// admin API.
#[derive(Debug)]
pub struct Lifecycle {
    listening: AtomicBool,
    open: AtomicUsize,
    /// Woken whenever a session ends, so the drain can see the count reach zero.
    ended: Notify,
    drain: Trigger,
    draining: Shutdown,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        let (drain, draining) = shutdown::channel();
        Lifecycle {
            listening: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            ended: Notify::new(),
            drain,
            draining,
        }
    }
}

/// A client session counted as open for as long as it lives.
#[derive(Debug)]
pub struct SessionSlot(Arc<Lifecycle>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Lifecycle {
    /// A slot for one more session, unless `max` are open already.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<SessionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(Arc::clone(self)))
    }

    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The listener accepts (true) or has stopped (false).
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Starts the drain: the listener stops accepting, readiness fails, and every session
    /// ends at its next transaction boundary.
    pub fn drain(&self) {
        self.drain.trigger();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_triggered()
    }

    /// Completes when the drain starts; what the listener and sessions wait on.
    pub fn draining(&self) -> Shutdown {
        self.draining.clone()
    }

    /// Completes when no session is open.
    pub async fn drained(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so a session ending in between is not missed.
            ended.as_mut().enable();
            if self.open_sessions() == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_count_against_the_limit_and_the_drain_waits_for_them() {
        let life = Arc::new(Lifecycle::default());
        let a = life.admit(2).expect("first");
        let b = life.admit(2).expect("second");
        assert!(life.admit(2).is_none(), "over the limit");
        assert_eq!(life.open_sessions(), 2);
        assert!(!life.is_draining());
        life.drain();
        assert!(life.is_draining());
        let waiter = tokio::spawn({
            let life = Arc::clone(&life);
            async move { life.drained().await }
        });
        drop(a);
        drop(b);
        waiter.await.expect("drained");
        assert_eq!(life.open_sessions(), 0);
    }
}
