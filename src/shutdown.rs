//! One small shutdown handle passed to every task: cheap to clone, awaited with `recv()`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use tokio::sync::watch;

/// Tells every task holding a [`Shutdown`] to stop; dropped, it tells them as well.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
    kept: Arc<Kept>,
}

/// Held by a task; `recv()` completes once shutdown was triggered.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    kept: Arc<Kept>,
}

/// The waits kept from poll to poll ([`Shutdown::wait`]), each with a waker slot of its
/// own, woken once when shutdown comes.
#[derive(Debug, Default)]
struct Kept {
    ended: AtomicBool,
    waiting: Mutex<Vec<Weak<AtomicWaker>>>,
}

impl Kept {
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiting.iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
    }

    fn add(&self, waker: &Arc<AtomicWaker>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() == waiting.capacity() {
            // Those of waits dropped since go before the list grows.
            waiting.retain(|w| w.strong_count() > 0);
        }
        waiting.push(Arc::downgrade(waker));
    }
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let kept = Arc::new(Kept::default());
    let shutdown = Shutdown {
        rx,
        kept: Arc::clone(&kept),
    };
    (Trigger { tx, kept }, shutdown)
}

impl Trigger {
    pub fn trigger(&self) {
        // send_replace never fails, even with no receiver left.
        self.tx.send_replace(true);
        self.kept.end();
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
            kept: Arc::clone(&self.kept),
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        // As for `recv`: a trigger gone is shutdown as well.
        self.kept.end();
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when shutdown is triggered (or the trigger was dropped).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which is shutdown as well.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// A wait for shutdown to keep and poll again and again, at the cost of a flag read:
    /// each [`Shutdown::recv`] takes a place among the channel's waiters and gives it up
    /// (several hundred instructions, which a session waiting for its client's next
    /// transaction would pay at every one).
    pub fn wait(&self) -> ShutdownWait {
        let waker = Arc::new(AtomicWaker::new());
        self.kept.add(&waker);
        ShutdownWait {
            waker,
            kept: Arc::clone(&self.kept),
        }
    }
}

/// See [`Shutdown::wait`]; ready for good once shutdown was triggered.
#[derive(Debug)]
pub struct ShutdownWait {
    waker: Arc<AtomicWaker>,
    kept: Arc<Kept>,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read: a trigger in between wakes this waker.
        self.waker.register(cx.waker());
        if self.kept.ended.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kept_wait_ends_once_shutdown_is_triggered_and_stays_ended() {
        let (trigger, shutdown) = channel();
        let mut wait = shutdown.wait();
        for _ in 0..3 {
            assert!(futures_util::poll!(&mut wait).is_pending());
        }
        // A task parked on a kept wait is woken by the trigger.
        let parked = tokio::spawn(shutdown.wait());
        tokio::task::yield_now().await;
        trigger.trigger();
        parked.await.expect("woken");
        (&mut wait).await;
        assert!(futures_util::poll!(&mut wait).is_ready(), "ready for good");
        // A wait taken after the trigger, or after the trigger is gone, is ready at once.
        shutdown.wait().await;
        let (trigger, shutdown) = channel();
        let parked = tokio::spawn(shutdown.wait());
        tokio::task::yield_now().await;
        drop(trigger);
        parked.await.expect("woken when the trigger is gone");
    }
}
