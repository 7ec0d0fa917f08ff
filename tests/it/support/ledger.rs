//! The write ledger of a cutover test: every write a client got acknowledged, and every
//! error any client saw, recorded by the load that runs through the proxy the whole time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::Backoff;

#[derive(Default)]
pub struct Ledger {
    acknowledged: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    writes: AtomicUsize,
    /// Client connections the server (or the proxy, as the server would) ended, after which
    /// the client connected again, as an application's pool does.
    ended: AtomicUsize,
    stop: AtomicBool,
}

impl Ledger {
    /// A write the database acknowledged to the client.
    pub fn ack(&self, key: String) {
        self.acknowledged.lock().unwrap().push(key);
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    pub fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }

    /// A client connection was ended under the client (its transaction, never acknowledged,
    /// is gone with it); the client connects again.
    pub fn connection_ended(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn acknowledged(&self) -> Vec<String> {
        self.acknowledged.lock().unwrap().clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits until `more` writes were acknowledged after this call (or errors appeared).
    pub async fn wait_for_writes(&self, more: usize) {
        let target = self.writes() + more;
        let mut backoff = Backoff::new(Duration::from_secs(60));
        while self.writes() < target {
            assert!(self.errors().is_empty(), "load failed: {:?}", self.errors());
            assert!(
                backoff.wait().await,
                "the load made {} of {target} writes in 60 s",
                self.writes()
            );
        }
    }
}
