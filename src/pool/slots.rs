//! One pool's bookkeeping, without I/O: its idle connections, how many are in use, opening
//! or being reset, and the checkouts waiting in line. Each change is one method here, run
//! under the pool's lock; the pool does the I/O (connect, reset, close) outside it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{CloseReason, Settings};

/// A pooled connection and its age. The connection is boxed once, when it opens: a
/// checkout and a give-back per transaction then move a pointer, not the connection
/// (hundreds of bytes, moved half a dozen times each way).
pub(super) struct Entry<C> {
    pub conn: Box<C>,
    pub born: Instant,
    /// When it last became idle.
    pub since: Instant,
}

impl<C> Entry<C> {
    pub fn new(conn: C, now: Instant) -> Entry<C> {
        Entry {
            conn: Box::new(conn),
            born: now,
            since: now,
        }
    }

    fn past_lifetime(&self, settings: &Settings, now: Instant) -> bool {
        now.saturating_duration_since(self.born) > settings.max_lifetime
    }

    /// Why this idle connection must not be handed out at `now`, if it must not.
    pub fn expired(&self, settings: &Settings, now: Instant) -> Option<CloseReason> {
        if self.past_lifetime(settings, now) {
            Some(CloseReason::MaxLifetime)
        } else if now.saturating_duration_since(self.since) > settings.idle_timeout {
            Some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }
}

/// What a connection that is not idle is doing; each holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// Lent out.
    InUse,
    /// Being opened by a checkout.
    Opening,
    /// Given back with `Release::Reset`, the reset still running.
    Resetting,
}

/// What a waiting checkout is handed: a connection, or a free slot to open one in.
pub(super) enum Grant<C> {
    Idle(Entry<C>),
    Slot,
}

/// What a checkout does next.
pub(super) enum Take<C> {
    /// Use this idle connection (now counted in use).
    Idle(Entry<C>),
    /// Open a connection in the slot reserved for it.
    Open,
    /// Wait in line (number `id`) for a grant.
    Wait(u64, oneshot::Receiver<Grant<C>>),
    /// Nothing: the pool was retired (its key's next pool is the one to take from).
    Retired,
}

/// How many connections are in each state, and how many checkouts wait.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub idle: usize,
    pub in_use: usize,
    pub opening: usize,
    pub resetting: usize,
    pub waiting: usize,
}

/// The connections open to one instance across all its pools (idle, in use, opening or
/// being reset), held against `max_backend_connections`: a pool takes a unit before it
/// opens a connection and gives it back once that connection is closed.
#[derive(Debug, Default)]
pub(super) struct Budget {
    open: AtomicUsize,
}

impl Budget {
    /// Takes a unit if fewer than `max` are taken (always, with no max).
    fn try_take(&self, max: Option<usize>) -> bool {
        let Some(max) = max else {
            self.open.fetch_add(1, Ordering::SeqCst);
            return true;
        };
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give(&self, units: usize) {
        self.open.fetch_sub(units, Ordering::SeqCst);
    }

    /// How many units are taken: the connections open to the instance.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

pub(super) struct Slots<C> {
    /// The settings of the latest checkout.
    pub settings: Settings,
    /// Oldest first: handed out from the back, expired from the front.
    idle: VecDeque<Entry<C>>,
    in_use: usize,
    opening: usize,
    resetting: usize,
    waiters: VecDeque<(u64, oneshot::Sender<Grant<C>>)>,
    next_id: u64,
    /// The counts last published to the metrics.
    pub published: Counts,
    /// Checkouts that took an idle connection at once ([`Slots::take_idle`]) since the
    /// metrics were last published: each one a zero wait for the checkout-wait histogram.
    pub unrecorded_immediate: usize,
    /// Set by `Pools::retire`: connections close as they come back.
    pub retired: bool,
    /// The instance's budget, shared with its other pools.
    budget: Arc<Budget>,
    /// Units of `budget` this pool holds: `open()` once settled ([`Slots::settle`]).
    reserved: usize,
    /// Until when the pool opens no more connections while it has some: its server
    /// refused a login for want of connection slots ([`Slots::server_full`]).
    full_until: Option<Instant>,
    /// A refusal for want of slots was reported, and no login has succeeded since.
    full_reported: bool,
}

impl<C> Slots<C> {
    pub fn new(settings: Settings, budget: Arc<Budget>) -> Slots<C> {
        Slots {
            settings,
            idle: VecDeque::new(),
            in_use: 0,
            opening: 0,
            resetting: 0,
            waiters: VecDeque::new(),
            next_id: 0,
            published: Counts::default(),
            unrecorded_immediate: 0,
            retired: false,
            budget,
            reserved: 0,
            full_until: None,
            full_reported: false,
        }
    }

    /// Connections holding a slot: idle, in use, opening or resetting.
    pub fn open(&self) -> usize {
        self.idle.len() + self.in_use + self.opening + self.resetting
    }

    pub fn counts(&self) -> Counts {
        Counts {
            idle: self.idle.len(),
            in_use: self.in_use,
            opening: self.opening,
            resetting: self.resetting,
            waiting: self.waiters.len(),
        }
    }

    /// Nothing open and nobody waiting: the pool can be forgotten.
    pub fn is_unused(&self) -> bool {
        self.open() == 0 && self.waiters.is_empty()
    }

    /// A checkout with `settings` (which become the pool's): the newest idle connection,
    /// else a slot to open one if the pool has room, else a place at the end of the line.
    /// Nobody overtakes a waiting checkout.
    pub fn take(&mut self, settings: Settings) -> Take<C> {
        if self.retired {
            return Take::Retired;
        }
        self.settings = settings;
        self.grant_slots();
        if self.waiters.is_empty() {
            if let Some(entry) = self.idle.pop_back() {
                self.in_use += 1;
                return Take::Idle(entry);
            }
            if self.claim() {
                return Take::Open;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((id, tx));
        Take::Wait(id, rx)
    }

    /// The newest idle connection, when one is there for the taking (the pool not retired
    /// and no checkout waiting before this one), with `settings` (which become the
    /// pool's): [`Slots::take`] when it neither opens nor waits. `None` changes nothing.
    pub fn take_idle(&mut self, settings: Settings) -> Option<Entry<C>> {
        if self.retired || !self.waiters.is_empty() {
            return None;
        }
        let entry = self.idle.pop_back()?;
        self.settings = settings;
        self.in_use += 1;
        Some(entry)
    }

    /// A connection opened outside the pool joins it, in use: counted even past
    /// `pool_size` (the caller could not wait for a slot).
    pub fn adopted(&mut self) {
        self.in_use += 1;
        if self.reserved < self.open() {
            self.budget.try_take(None);
            self.reserved += 1;
        }
    }

    /// Whether a checkout that has to wait could open a connection but for the instance's
    /// budget (another pool of the instance closing an idle connection would let it).
    pub fn short_of_budget(&self) -> bool {
        self.settings.max_backend.is_some() && self.open() < self.settings.size
    }

    /// Takes out the oldest idle connection, to close it so that another pool of the
    /// instance can open one within the budget.
    pub fn evict_idle(&mut self) -> Option<Entry<C>> {
        self.idle.pop_front()
    }

    /// Reserves slots for the sweep to open idle connections in: up to `min_idle` idle or
    /// opening, within `pool_size` and the budget. None for a retired pool, nor while
    /// checkouts wait (a freed slot is theirs).
    pub fn top_up(&mut self) -> usize {
        if self.retired || !self.waiters.is_empty() {
            return 0;
        }
        let mut reserved = 0;
        while self.idle.len() + self.opening < self.settings.min_idle && self.claim() {
            reserved += 1;
        }
        reserved
    }

    /// Gives back to the budget the units this pool holds for connections no longer open;
    /// whether it gave any (another pool of the instance may now open one). Run after each
    /// change.
    pub fn settle(&mut self) -> bool {
        let surplus = self.reserved.saturating_sub(self.open());
        if surplus > 0 {
            self.budget.give(surplus);
            self.reserved -= surplus;
        }
        surplus > 0
    }

    /// The server refused a login of this pool for want of connection slots, at `now`: no
    /// more are opened for [`super::FULL_RETRY_AFTER`] while the pool has connections (its
    /// checkouts wait for those). True when this starts such a time (the one refusal of it
    /// to report: the first since a login last succeeded).
    pub fn server_full(&mut self, now: Instant) -> bool {
        self.full_until = Some(now + super::FULL_RETRY_AFTER);
        !std::mem::replace(&mut self.full_reported, true)
    }

    /// A connection opened in its reserved slot is now in use. True when it ends a time of
    /// refusals that was reported.
    pub fn opened(&mut self) -> bool {
        self.leave(Busy::Opening);
        self.in_use += 1;
        self.login_succeeded()
    }

    /// A login of this pool succeeded. True when it ends a time of refusals that was
    /// reported.
    pub fn login_succeeded(&mut self) -> bool {
        std::mem::take(&mut self.full_reported)
    }

    /// A connection in use goes to be reset.
    pub fn reset_started(&mut self) {
        self.leave(Busy::InUse);
        self.resetting += 1;
    }

    /// A waiter was granted a connection it cannot use (broken, expired): it opens a new one
    /// in that connection's slot instead of queueing again.
    pub fn reopen(&mut self) {
        self.leave(Busy::InUse);
        self.opening += 1;
    }

    /// A `busy` connection's slot is freed (it was closed, detached, or failed to open):
    /// the first waiter gets it.
    pub fn free(&mut self, busy: Busy) {
        self.leave(busy);
        self.grant_slots();
    }

    /// A `busy` connection comes back healthy at `now`: to the first waiter, else idle.
    /// Returned with why to close it instead when it is past `max_lifetime` or the pool
    /// has more connections than `pool_size` allows.
    pub fn give_back(
        &mut self,
        busy: Busy,
        mut entry: Entry<C>,
        now: Instant,
    ) -> Option<(Entry<C>, CloseReason)> {
        if self.retired {
            self.free(busy);
            return Some((entry, CloseReason::Retired));
        }
        if entry.past_lifetime(&self.settings, now) {
            self.free(busy);
            return Some((entry, CloseReason::MaxLifetime));
        }
        self.leave(busy);
        while let Some((_, tx)) = self.waiters.pop_front() {
            match tx.send(Grant::Idle(entry)) {
                Ok(()) => {
                    self.in_use += 1;
                    return None;
                }
                Err(Grant::Idle(back)) => entry = back,
                Err(Grant::Slot) => return None,
            }
        }
        if self.open() >= self.settings.size {
            return Some((entry, CloseReason::PoolSize));
        }
        entry.since = now;
        self.idle.push_back(entry);
        None
    }

    /// Takes waiter `id` out of the line; false when it is no longer in it (it was granted
    /// something, which its receiver holds).
    pub fn leave_line(&mut self, id: u64) -> bool {
        match self.waiters.iter().position(|(w, _)| *w == id) {
            Some(at) => {
                self.waiters.remove(at);
                true
            }
            None => false,
        }
    }

    /// Takes out the idle connections to close at `now`: expired ones, and the oldest while
    /// more are open than `pool_size` allows.
    pub fn expire(&mut self, now: Instant) -> Vec<(Entry<C>, CloseReason)> {
        let mut closing = Vec::new();
        let mut kept = VecDeque::with_capacity(self.idle.len());
        for entry in self.idle.drain(..) {
            let expired = match self.retired {
                true => Some(CloseReason::Retired),
                false => entry.expired(&self.settings, now),
            };
            match expired {
                Some(reason) => closing.push((entry, reason)),
                None => kept.push_back(entry),
            }
        }
        self.idle = kept;
        while self.open() > self.settings.size {
            let Some(entry) = self.idle.pop_front() else {
                break;
            };
            closing.push((entry, CloseReason::PoolSize));
        }
        self.grant_slots();
        closing
    }

    fn leave(&mut self, busy: Busy) {
        let count = match busy {
            Busy::InUse => &mut self.in_use,
            Busy::Opening => &mut self.opening,
            Busy::Resetting => &mut self.resetting,
        };
        *count = count.saturating_sub(1);
    }

    /// Reserves room for one more connection, counted as opening: within `pool_size`, within
    /// the instance's budget unless this pool still holds a unit of a connection it
    /// closed, and not while its server is full ([`Slots::server_full`]) and it has
    /// connections.
    fn claim(&mut self) -> bool {
        if self.open() >= self.settings.size {
            return false;
        }
        // Rarely set, so the clock is read only then. With no connection at all there is
        // nothing to wait for: the login is tried (and its refusal reaches the client).
        if let Some(until) = self.full_until {
            if Instant::now() >= until {
                self.full_until = None;
            } else if self.open() > 0 {
                return false;
            }
        }
        if self.reserved <= self.open() {
            if !self.budget.try_take(self.settings.max_backend) {
                return false;
            }
            self.reserved += 1;
        }
        self.opening += 1;
        true
    }

    /// Grants free slots to the waiters, first come first served.
    pub fn grant_slots(&mut self) {
        while !self.waiters.is_empty() && self.claim() {
            let Some((_, tx)) = self.waiters.pop_front() else {
                self.opening -= 1;
                break;
            };
            if tx.send(Grant::Slot).is_err() {
                self.opening -= 1;
            }
        }
    }
}
