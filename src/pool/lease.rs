//! A lent connection: used through `Deref`, given back with [`Lease::release`] when its
//! state is known, closed when dropped without a release (its state is not known).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use super::pools::{Pool, PoolRef, spawn_or_run};
use super::slots::{Busy, Entry};
use super::{Carried, CloseReason, Key, Pooled};

/// How long a reset may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its state is that of a fresh login (nothing was changed, or the caller undid it):
    /// idle again at once.
    Clean,
    /// Its state may have changed: idle again once [`Pooled::reset`] succeeds (the slot
    /// stays taken meanwhile); closed if the reset fails.
    Reset,
}

/// A connection lent by a pool.
pub struct Lease<C: Pooled> {
    /// `None` only once it was released or detached.
    entry: Option<Entry<C>>,
    pool: Arc<Pool<C>>,
}

impl<C: Pooled> Lease<C> {
    pub(super) fn new(pool: Arc<Pool<C>>, mut entry: Entry<C>) -> Lease<C> {
        entry.conn.set_leased(true);
        Lease {
            entry: Some(entry),
            pool,
        }
    }

    /// The pool it came from.
    pub fn key(&self) -> &Key {
        &self.pool.key
    }

    /// A handle on the pool it came from, to check out from it again.
    pub fn pool(&self) -> PoolRef<C> {
        PoolRef::new(Arc::clone(&self.pool))
    }

    /// Gives the connection back to its pool (see [`Release`]).
    pub fn release(mut self, how: Release) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        match how {
            Release::Clean => self.pool.give_back(Busy::InUse, entry),
            Release::Reset => {
                let pool = Arc::clone(&self.pool);
                pool.with(|s| s.reset_started());
                spawn_or_run(async move {
                    let failed = match tokio::time::timeout(RESET_TIMEOUT, entry.conn.reset()).await
                    {
                        Ok(Ok(())) => {
                            *entry.conn.carried() = Carried::default();
                            return pool.give_back(Busy::Resetting, entry);
                        }
                        Ok(Err(e)) => crate::error::chain(&e),
                        Err(_) => format!("no answer within {RESET_TIMEOUT:?}"),
                    };
                    tracing::warn!(
                        cluster = %pool.key.cluster,
                        instance = %pool.key.instance,
                        user = %pool.key.user,
                        "reset of a pooled backend connection failed, closing it: {failed}"
                    );
                    pool.with(|s| s.free(Busy::Resetting));
                    pool.close(*entry.conn, CloseReason::ResetFailed);
                });
            }
        }
    }

    /// Takes the connection out of the pool: its slot is freed and the caller owns it (to
    /// close it in a special way, for instance).
    pub fn detach(mut self) -> C {
        let entry = self.take();
        self.pool.with(|s| s.free(Busy::InUse));
        self.pool.metrics.closed(CloseReason::Detached.as_str());
        *entry.conn
    }

    fn take(&mut self) -> Entry<C> {
        self.entry
            .take()
            .expect("a lease holds its connection until released, detached or dropped")
    }

    fn entry(&self) -> &Entry<C> {
        self.entry
            .as_ref()
            .expect("a lease holds its connection until released, detached or dropped")
    }
}

impl<C: Pooled> Deref for Lease<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.entry().conn
    }
}

impl<C: Pooled> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self
            .entry
            .as_mut()
            .expect("a lease holds its connection until released, detached or dropped")
            .conn
    }
}

impl<C: Pooled> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.pool.with(|s| s.free(Busy::InUse));
            self.pool.close(*entry.conn, CloseReason::Dropped);
        }
    }
}
