//! Why a session stays on its writer connection, or sends its reads there (a pin), counted
//! by reason for `/status` and the pinned gauge, and the session's pins taken and let go:
//! each reason holds only while the state behind it lasts.

use std::sync::Arc;

use super::flow::{Protocol, Session};
use crate::sql::hold::HoldChange;

/// Why a session stays on its writer connection (a pin), for the metric by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// A statement left state that cannot move to another connection: a temporary table,
    /// LISTEN, a session advisory lock or `GET_LOCK`, SQL `PREPARE`, `LOCK TABLES` …
    Statement,
    /// A `SET` inside a transaction (a rollback may undo it, so it cannot be replayed).
    SetInTransaction,
    /// A setting the proxy cannot replay (a prepared `SET` with parameters).
    Unreplayable,
    /// More settings than the proxy records.
    TooManySettings,
    /// A reader refused to replay the session's settings: reads go to the writer, on any
    /// connection to it, until the settings change.
    SettingsRefused,
    /// A server-side cursor is open (MySQL `COM_STMT_EXECUTE` with a cursor).
    Cursor,
    /// Transactions serializable by default (a standby refuses them): reads go to the
    /// writer, on any connection to it.
    Serializable,
}

/// How many sessions are pinned now, by reason, for `/status` (the metric says the same).
#[derive(Debug, Default)]
pub struct Pins([std::sync::atomic::AtomicUsize; Pin::ALL.len()]);

impl Pins {
    /// Counts a session pinned for `reason` for as long as the guard lives.
    pub(super) fn pin(self: &Arc<Self>, reason: Pin) -> PinGuard {
        let at = Pin::ALL
            .iter()
            .position(|p| *p == reason)
            .unwrap_or_default();
        self.0[at].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PinGuard {
            pins: Arc::clone(self),
            at,
            _gauge: crate::metrics::pinned(reason.as_str()),
        }
    }

    /// The sessions pinned now, by reason.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        let load =
            |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
        Pin::ALL
            .iter()
            .zip(&self.0)
            .map(move |(p, c)| (p.as_str(), load(c)))
    }
}

/// A pinned session, counted in [`Pins`] and the pinned gauge while it lives.
pub struct PinGuard {
    pins: Arc<Pins>,
    at: usize,
    _gauge: crate::metrics::GaugeGuard,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.pins.0[self.at].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Pin {
    const ALL: [Pin; 7] = [
        Pin::Statement,
        Pin::SetInTransaction,
        Pin::Unreplayable,
        Pin::TooManySettings,
        Pin::SettingsRefused,
        Pin::Cursor,
        Pin::Serializable,
    ];

    /// Whether the session keeps its writer connection for this reason; the others only send
    /// its reads to the writer (a pooled session takes a connection per unit still).
    pub fn holds_connection(self) -> bool {
        !matches!(self, Pin::SettingsRefused | Pin::Serializable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pin::Statement => "statement",
            Pin::SetInTransaction => "set_in_transaction",
            Pin::Unreplayable => "unreplayable_setting",
            Pin::TooManySettings => "too_many_settings",
            Pin::SettingsRefused => "settings_refused",
            Pin::Cursor => "cursor",
            Pin::Serializable => "serializable",
        }
    }
}

impl<P: Protocol> Session<P> {
    /// Keeps the session on its writer connection from now on: its state cannot be
    /// replayed elsewhere, for `reason` (counted, and shown by the pinned gauge while the
    /// session lasts).
    pub(super) fn pin(&mut self, reason: Pin) {
        if !self.pinned_by(reason) {
            self.pinned.push((reason, self.ctx.pins.pin(reason)));
        }
        self.view_pins();
        self.drop_reader(false);
    }

    /// The view's part of the pins: whether one holds the writer connection, whether one
    /// sends reads to the writer.
    fn view_pins(&mut self) {
        let holds = |(r, _): &(Pin, PinGuard)| r.holds_connection();
        self.view.pinned_to_writer = self.pinned.iter().any(holds);
        self.view.reads_on_writer = self.pinned.iter().any(|p| !holds(p));
    }

    /// Whether `reason` keeps the session on its writer connection now.
    pub(super) fn pinned_by(&self, reason: Pin) -> bool {
        self.pinned.iter().any(|(r, _)| *r == reason)
    }

    /// The state `reason` stood for is gone from the writer connection: the session stays
    /// on it only for the reasons left (none: its connections go back to their pools
    /// between transactions again, in transaction mode).
    pub(super) fn unpin(&mut self, reason: Pin) {
        self.pinned.retain(|(r, _)| *r != reason);
        self.view_pins();
    }

    /// After a unit that `failed` or not, what it did (`changes`) to the state that pins the
    /// session; between transactions, `Pin::Statement` and `Pin::Cursor` let go once the
    /// state they stand for is gone.
    pub(super) fn track_holds(&mut self, changes: Vec<HoldChange>, failed: bool) {
        if !changes.is_empty() {
            self.holds.apply(changes, failed);
        }
        if self.view.in_transaction.is_some() {
            return;
        }
        if self.pinned_by(Pin::Statement) && !self.holds.statement_state() {
            self.unpin(Pin::Statement);
        }
        if self.pinned_by(Pin::Cursor) && !self.holds.cursors() {
            self.unpin(Pin::Cursor);
        }
    }

    /// The session's connection state was reset (MySQL COM_RESET_CONNECTION, a change of
    /// user): nothing pins it any more.
    pub(super) fn unpin_all(&mut self) {
        self.pinned.clear();
        self.holds.clear();
        self.view_pins();
    }
}
