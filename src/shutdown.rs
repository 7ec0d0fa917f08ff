//! One small shutdown handle passed to every task: cheap to clone, awaited with `recv()`.

use tokio::sync::watch;

/// Tells every task holding a [`Shutdown`] to stop.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Held by a task; `recv()` completes once shutdown was triggered.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        // send_replace never fails, even with no receiver left.
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is triggered (or the trigger was dropped).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which is shutdown as well.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
