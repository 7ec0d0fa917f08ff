//! A session's reader connection: which reader it uses, when it leaves one (removed, taken
//! out by health checks, or to even the spread), opening one with fallback over the
//! others, and replaying the session's state on it before use.

use std::sync::Arc;
use std::time::Instant;

use super::error::SessionError;
use super::flow::{Held, Protocol, Session};
use crate::router::Target;
use crate::topology::Instance;

/// How often, at most, a session between transactions asks whether its reader is one too
/// many (see [`ReaderSpread`]).
const RESPREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a session's reader choice in step with the cluster: a session holds one reader
/// connection for many queries, so without this a long-lived pooled connection would never
/// reach a replica added after it opened. At most once per [`RESPREAD_EVERY`], and only on
/// a coin flip (so sessions seeing the same imbalance do not all move at once), it asks
/// [`crate::topology::rebalance_target`] whether moving evens the spread of sessions over
/// the readers by weight.
#[derive(Debug)]
pub(crate) struct ReaderSpread {
    last: std::time::Instant,
}

impl ReaderSpread {
    pub(crate) fn new() -> ReaderSpread {
        ReaderSpread {
            last: std::time::Instant::now(),
        }
    }

    /// Between transactions, for a session holding a reader on `current`: whether to leave
    /// it — because discovery removed it or health checks took it out (scale-in without
    /// errors), or because moving evens the spread — and where to, when that was chosen.
    pub(crate) fn leave(
        &mut self,
        current: &Instance,
        readers: &[Arc<Instance>],
        now: std::time::Instant,
    ) -> Leave {
        if !current.load.status().is_usable() {
            crate::metrics::reader_drained(&current.cluster);
            return Leave::For(None);
        }
        if now.saturating_duration_since(self.last) < RESPREAD_EVERY {
            return Leave::Stay;
        }
        self.last = now;
        if !rand::random::<bool>() {
            return Leave::Stay;
        }
        match crate::topology::rebalance_target(current, readers, now) {
            Some(to) => {
                crate::metrics::reader_respread(&current.cluster);
                Leave::For(Some(to))
            }
            None => Leave::Stay,
        }
    }
}

/// What [`ReaderSpread::leave`] decided.
pub(crate) enum Leave {
    Stay,
    /// Drop the reader; open the one given next (else pick as usual).
    For(Option<Arc<Instance>>),
}

/// Opens a connection to a reader for a session: `next` first when given, else weighted
/// power-of-two picks among the usable `readers`. A reader that refuses is skipped for
/// `retry` (by every session) and the next one tried; one whose pool stayed full (`busy`)
/// is only skipped by this read. `None` when no reader can be used now (reads then go to
/// the writer).
pub(crate) async fn open_reader<C, E, Fut>(
    readers: &[Arc<Instance>],
    mut next: Option<Arc<Instance>>,
    retry: std::time::Duration,
    now: std::time::Instant,
    mut connect: impl FnMut(Arc<Instance>) -> Fut,
    busy: impl Fn(&E) -> bool,
) -> Option<C>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<C, E>>,
{
    for _ in 0..readers.len() {
        let instance = next.take().or_else(|| {
            crate::topology::pick_reader(readers, now, None, |n| rand::random_range(0..n))
        })?;
        match connect(Arc::clone(&instance)).await {
            Ok(conn) => return Some(conn),
            Err(e) if busy(&e) => {
                tracing::debug!(reader = %instance.addr, error = %e, "reader pool full; this read goes elsewhere");
            }
            Err(e) => {
                crate::metrics::error(crate::metrics::ErrorKind::BackendConnect);
                tracing::warn!(reader = %instance.addr, error = %e, "reader unusable; skipping it for {retry:?}");
                instance.load.mark_down(now, retry);
            }
        }
    }
    None
}

impl<P: Protocol> Session<P> {
    /// Makes sure a reader connection is open and has the session's state; `false` when no
    /// reader can be used now (the caller falls back to the writer). Between transactions
    /// the session may leave its reader first (see [`ReaderSpread::leave`]).
    pub(super) async fn prepare_reader(&mut self) -> Result<bool, SessionError<P>> {
        let now = Instant::now();
        let mut next = None;
        if self.view.in_transaction.is_none()
            && let Some(reader) = &self.reader
            && let Leave::For(to) = self
                .spread
                .leave(reader.instance(), &self.cluster.readers, now)
        {
            next = to;
            self.drop_reader(false);
        }
        if self.reader.is_none() {
            let retry = self.ctx.config().raw.server.backend_retry;
            let this = &*self;
            let connect = |i: Arc<Instance>| async move { this.lease(&i).await };
            let busy = |e: &super::flow::OpenError<P>| {
                matches!(e, crate::pool::CheckoutError::Timeout { .. })
            };
            let opened = tokio::select! {
                opened = open_reader(&this.cluster.readers, next, retry, now, connect, busy) => Some(opened),
                () = P::killed(&this.side) => None,
            };
            let Some(opened) = opened else {
                return Err(self.killed_waiting());
            };
            if let Some(conn) = opened {
                match self.take(conn).await {
                    Ok(reader) => self.set_backend(Target::Reader, Some(reader)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a pooled reader connection failed its reset");
                        return Ok(false);
                    }
                }
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        match P::replay(reader, self.replays.items()).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(message)) => {
                tracing::info!(%message, "session settings do not replay on the reader; staying on the writer");
                self.pin(super::flow::Pin::SettingsRefused);
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reader failed while replaying session settings");
                self.drop_reader(true);
                Ok(false)
            }
        }
    }

    /// Where a read runs again after its reader failed before any byte of the answer
    /// reached the client, outside a transaction: another reader, else the writer. The
    /// failed reader is skipped for `backend_retry` by every session.
    pub(super) async fn retry_target(
        &mut self,
        error: &impl std::fmt::Display,
    ) -> Result<Target, SessionError<P>> {
        crate::metrics::read_retried(&self.cluster.name);
        self.drop_reader(true);
        let retry = if self.prepare_reader().await? {
            Target::Reader
        } else {
            Target::Writer
        };
        tracing::warn!(error = %error, retry_on = ?retry, "reader failed before answering; retrying");
        Ok(retry)
    }
}
