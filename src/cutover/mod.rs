//! Migration control: the routing state (which cluster is active, and whether each
//! cluster is read-write, read-only or paused), changed only through this module,
//! published atomically, and recorded in a state file so that a restarted proxy comes back
//! in the same state (it never sends writes to a cluster that was fenced).

mod catch_up;
mod control;
mod database;
pub mod driver;
pub mod fleet;
mod lock;
mod plan;
mod record;
mod state;
mod store;

pub use control::{Controller, Progress, Settings, StartError, StepError, Warm};
pub use database::{Databases, DbError};
pub use fleet::Fleet;
pub use plan::Phase;
pub use record::{Record, now_ms};
pub use state::{Mode, RoutingError, RoutingState};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::sync::{Notify, watch};

use crate::shutdown::Shutdown;
pub use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("record the routing state")]
    Store(#[from] StoreError),
}

/// One session's copy of the routing state ([`Routing::seen`]), replaced only when a newer
/// one is published.
#[derive(Debug)]
pub struct Seen {
    /// [`Routing::published`] when it was copied (or before).
    published: u64,
    state: Arc<RoutingState>,
}

/// The one owner of the routing state. The data path does one atomic load per statement;
/// `changes()` wakes sessions waiting for a pause to end.
pub struct Routing {
    state: ArcSwap<RoutingState>,
    /// How many times `state` was replaced, counted after each: a session's [`Seen`]
    /// copy is current while this has not moved.
    published: AtomicU64,
    /// Per cluster: sessions with work on its writer (a transaction, or a statement
    /// outside one). A cutover's drain waits for zero.
    gates: BTreeMap<String, Arc<Gate>>,
    /// Transactions that ever waited for a pause to end.
    held_total: AtomicU64,
    /// Transactions refused by migration control: writes to a read-only cluster, and
    /// sessions ended because their state could not follow a cutover.
    refused_total: AtomicU64,
    changed: watch::Sender<u64>,
    store: Option<store::StateFile>,
    max_pause: Duration,
}

impl Routing {
    /// Starts from the state file in `state_dir` if there is one, else from `initial`; then
    /// from `record` (a cutover recorded in the database) when it is newer than that.
    pub fn open(
        initial: RoutingState,
        state_dir: Option<PathBuf>,
        max_pause: Duration,
        record: Option<&Record>,
    ) -> Result<Routing, StoreError> {
        let store = state_dir.map(store::StateFile::new);
        let mut state = match &store {
            Some(file) => match file.read()? {
                Some(saved) => merge(saved, &initial),
                None => initial,
            },
            None => initial,
        };
        if let Some(r) = record.filter(|r| r.at_ms > state.updated_ms || r.epoch > state.epoch) {
            match state.with_record(r) {
                Ok(recorded) => {
                    tracing::info!(active = %r.active, fenced = %r.fenced, source = %r.source, "routing state from the cutover record, newer than the state file");
                    state = recorded;
                }
                Err(e) => {
                    tracing::warn!(error = %e, source = %r.source, "cutover record ignored")
                }
            }
        }
        if let Some(file) = &store {
            file.write(&state)?;
        }
        let (changed, _) = watch::channel(state.generation);
        let gates = state
            .modes
            .keys()
            .map(|name| (name.clone(), Arc::new(Gate::default())))
            .collect();
        Ok(Routing {
            gates,
            published: AtomicU64::new(0),
            held_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            state: ArcSwap::from_pointee(state),
            changed,
            store,
            max_pause,
        })
    }

    /// The routing state the config describes, or the recorded one if `state_dir` or a
    /// newer cutover `record` has it.
    pub fn from_config(
        config: &crate::config::Validated,
        record: Option<&Record>,
    ) -> Result<Routing, StoreError> {
        let r = &config.raw.routing;
        let modes = config
            .raw
            .clusters
            .keys()
            .map(|name| {
                let mode = if r.read_only.contains(name) {
                    Mode::ReadOnly
                } else {
                    Mode::ReadWrite
                };
                (name.clone(), mode)
            })
            .collect();
        let initial = RoutingState::new(r.active.clone(), modes);
        Routing::open(initial, r.state_dir.clone(), r.max_pause, record)
    }

    pub fn load(&self) -> Arc<RoutingState> {
        self.state.load_full()
    }

    /// A copy of the routing state for one session, kept current with [`Routing::current`].
    pub fn seen(&self) -> Seen {
        Seen {
            published: self.published.load(Ordering::SeqCst),
            state: self.load(),
        }
    }

    /// The routing state as `seen` holds it, made current first if a newer one was
    /// published since: one atomic load when none was (no guard, no reference count
    /// written), as every transaction asks.
    pub fn current<'a>(&self, seen: &'a mut Seen) -> &'a Arc<RoutingState> {
        let published = self.published.load(Ordering::SeqCst);
        if published != seen.published {
            // Read after the count: never older than the count says.
            seen.state = self.load();
            seen.published = published;
        }
        &seen.state
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn max_pause(&self) -> Duration {
        self.max_pause
    }

    /// Applies a pure transition: records it, then publishes it.
    fn apply(
        &self,
        f: impl FnOnce(&RoutingState) -> Result<RoutingState, RoutingError>,
    ) -> Result<Arc<RoutingState>, ControlError> {
        let mut next = f(&self.load())?;
        next.updated_ms = now_ms();
        let next = Arc::new(next);
        if let Some(file) = &self.store {
            file.write(&next)?;
        }
        self.state.store(Arc::clone(&next));
        self.published.fetch_add(1, Ordering::SeqCst);
        self.changed.send_replace(next.generation);
        tracing::info!(generation = next.generation, modes = ?next.modes, active = %next.active, "routing state changed");
        Ok(next)
    }

    /// Holds the caller while `cluster` is paused; returns the mode it resumed to, or
    /// `None` on shutdown. The watchdog ends a pause after `max_pause`; the bound here only
    /// guards against a stuck one.
    pub async fn wait_while_paused(&self, cluster: &str, shutdown: &mut Shutdown) -> Option<Mode> {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + self.max_pause + Duration::from_secs(1);
        let _held = crate::metrics::transaction_held();
        self.held_total.fetch_add(1, Ordering::Relaxed);
        loop {
            let state = self.load();
            let mode = state.mode(cluster);
            if mode != Mode::Paused {
                return Some(mode);
            }
            tokio::select! {
                _ = shutdown.recv() => return None,
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Some(state.before_pause.get(cluster).copied().unwrap_or_default());
                }
            }
        }
    }

    /// Registers work on `cluster`'s writer; the mode must be read *after* this (the
    /// drain reads the count after publishing the pause, so one of the two sees the other).
    pub fn admit(&self, cluster: &str) -> Admission {
        let gate = self.gates.get(cluster).cloned();
        if let Some(g) = &gate {
            g.busy.fetch_add(1, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        Admission(gate)
    }

    pub fn held_total(&self) -> u64 {
        self.held_total.load(Ordering::Relaxed)
    }

    /// A session refused a write because `cluster` is read-only.
    pub fn write_refused(&self, cluster: &str) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        crate::metrics::write_refused(cluster);
    }

    /// A session was ended because its state could not follow the active cluster.
    pub fn session_ended(&self) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes refused and sessions ended by migration control, ever.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Admits work on `cluster`'s writer, waiting out a pause; `None` on shutdown.
    /// Admission comes before the mode is read: a cutover's drain, which reads the count
    /// after publishing the pause, then either sees this session busy or this session sees
    /// the pause.
    pub async fn enter(
        &self,
        cluster: &str,
        seen: &mut Seen,
        shutdown: &mut Shutdown,
    ) -> Option<Entry> {
        loop {
            if let Some(entry) = self.try_enter(cluster, seen) {
                return Some(entry);
            }
            self.wait_while_paused(cluster, shutdown).await?;
        }
    }

    /// [`Routing::enter`] when `cluster` is not paused, without a future (every transaction
    /// passes here); `None` while it is paused.
    pub fn try_enter(&self, cluster: &str, seen: &mut Seen) -> Option<Entry> {
        let admission = self.admit(cluster);
        // The session's copy, current: the count is read after the admission (a publish
        // stores the state, then counts it; a drain then reads `busy`).
        let state = self.current(seen);
        if state.active != cluster {
            return Some(Entry::Moved);
        }
        match state.mode(cluster) {
            Mode::Paused => None,
            mode => Some(Entry::Admitted(mode, admission)),
        }
    }

    /// Sessions with work on `cluster`'s writer now.
    pub fn busy(&self, cluster: &str) -> usize {
        self.gates
            .get(cluster)
            .map_or(0, |g| g.busy.load(Ordering::SeqCst))
    }

    /// Waits until no session has work on `cluster`'s writer; `Err(busy)` at `deadline`.
    pub async fn drained(
        &self,
        cluster: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), usize> {
        let Some(gate) = self.gates.get(cluster) else {
            return Ok(());
        };
        loop {
            let idle = gate.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            std::sync::atomic::fence(Ordering::SeqCst);
            let busy = gate.busy.load(Ordering::SeqCst);
            if busy == 0 {
                return Ok(());
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return Err(busy),
            }
        }
    }

    pub fn fence(&self, cluster: &str) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_fence(cluster))
    }

    pub fn switch(
        &self,
        from: &str,
        to: &str,
        epoch: u64,
    ) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_switch(from, to, epoch))
    }

    /// Like [`Routing::converge`], but first as a cutover does: the cluster this proxy
    /// serves is paused and the transactions in flight on it get up to `drain` to finish, so
    /// none is cut in two by the move.
    pub async fn converge_drained(
        &self,
        record: &Record,
        drain: Duration,
    ) -> Result<Option<Arc<RoutingState>>, ControlError> {
        let state = self.load();
        if record.epoch <= state.epoch {
            return Ok(None);
        }
        let serving = state.active.clone();
        if serving != record.active
            && state.mode(&serving) != Mode::Paused
            && self.pause(&serving).is_ok()
            && let Err(busy) = self
                .drained(&serving, tokio::time::Instant::now() + drain)
                .await
        {
            tracing::warn!(cluster = %serving, busy, ?drain, "following the cutover record with transactions still open");
        }
        self.converge(record)
    }

    /// Applies a cutover `record` newer (by epoch) than this proxy's state: the proxy
    /// missed that cutover, or its coordinator died after recording the switch. `None` when
    /// the state already follows it.
    pub fn converge(&self, record: &Record) -> Result<Option<Arc<RoutingState>>, ControlError> {
        if record.epoch <= self.load().epoch {
            return Ok(None);
        }
        tracing::warn!(epoch = record.epoch, active = %record.active, fenced = %record.fenced, source = %record.source, "a newer cutover record: following it");
        self.apply(|s| s.with_record(record)).map(Some)
    }

    pub fn abort(&self, cluster: &str, restore: Mode) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_abort(cluster, restore))
    }

    pub fn set_read_only(
        &self,
        cluster: &str,
        on: bool,
    ) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_read_only(cluster, on))
    }

    pub fn pause(&self, cluster: &str) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_pause(cluster))
    }

    pub fn resume(&self, cluster: &str) -> Result<Arc<RoutingState>, ControlError> {
        self.apply(|s| s.with_resume(cluster))
    }
}

#[derive(Default)]
struct Gate {
    busy: AtomicUsize,
    idle: Notify,
}

/// Where a session stands before it starts work on a cluster's writer.
pub enum Entry {
    /// Admitted, in this mode (not paused); the guard is what a cutover's drain waits for.
    Admitted(Mode, Admission),
    /// A cutover made another cluster active: the session moves there first.
    Moved,
}

/// Work admitted on a cluster's writer; ends when dropped.
pub struct Admission(Option<Arc<Gate>>);

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(g) = &self.0
            && g.busy.fetch_sub(1, Ordering::SeqCst) == 1
        {
            g.idle.notify_waiters();
        }
    }
}

/// A saved state is authoritative for the clusters the config still has; clusters the
/// config added start from the config.
fn merge(saved: RoutingState, config: &RoutingState) -> RoutingState {
    let mut merged = saved;
    merged
        .modes
        .retain(|name, _| config.modes.contains_key(name));
    for (name, mode) in &config.modes {
        merged.modes.entry(name.clone()).or_insert(*mode);
    }
    if !config.modes.contains_key(&merged.active) {
        merged.active = config.active.clone();
    }
    merged
}

/// Ends pauses that last longer than `max_pause`, so a lost operator never leaves clients
/// waiting. Runs until shutdown.
pub async fn pause_watchdog(routing: Arc<Routing>, mut shutdown: Shutdown) {
    let mut changes = routing.changes();
    loop {
        let paused: Vec<String> = routing
            .load()
            .modes
            .iter()
            .filter(|(_, m)| **m == Mode::Paused)
            .map(|(n, _)| n.clone())
            .collect();
        let generation = routing.load().generation;
        if paused.is_empty() {
            tokio::select! {
                _ = shutdown.recv() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(routing.max_pause()) => {
                if routing.load().generation == generation {
                    for cluster in paused {
                        tracing::warn!(%cluster, max_pause = ?routing.max_pause(), "pause exceeded max_pause; resuming");
                        if let Err(e) = routing.resume(&cluster) {
                            tracing::error!(%cluster, error = %e, "could not end an expired pause");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RoutingState {
        let modes = [
            ("old".to_owned(), Mode::ReadWrite),
            ("new".to_owned(), Mode::ReadWrite),
        ];
        RoutingState::new("old".into(), modes.into_iter().collect())
    }

    #[test]
    fn transitions() {
        let s = state();
        let ro = s.with_read_only("old", true).unwrap();
        assert_eq!(ro.mode("old"), Mode::ReadOnly);
        assert_eq!(ro.generation, 1);
        let paused = ro.with_pause("old").unwrap();
        assert_eq!(paused.mode("old"), Mode::Paused);
        assert_eq!(
            paused.with_pause("old"),
            Err(RoutingError::AlreadyPaused("old".into()))
        );
        assert_eq!(
            paused.with_read_only("old", false),
            Err(RoutingError::Paused {
                cluster: "old".into()
            })
        );
        let resumed = paused.with_resume("old").unwrap();
        assert_eq!(
            resumed.mode("old"),
            Mode::ReadOnly,
            "resume returns to the mode before the pause"
        );
        assert_eq!(
            resumed.with_resume("old"),
            Err(RoutingError::NotPaused("old".into()))
        );
        assert_eq!(
            s.with_pause("nope"),
            Err(RoutingError::UnknownCluster("nope".into()))
        );
        assert_eq!(resumed.generation, 3);
    }

    #[tokio::test]
    async fn a_session_copy_follows_every_change_and_the_gate_sees_it() {
        let routing = Routing::open(state(), None, Duration::from_secs(5), None).unwrap();
        let (_stop, mut shutdown) = crate::shutdown::channel();
        let mut seen = routing.seen();
        let admitted = routing.enter("old", &mut seen, &mut shutdown).await;
        assert!(matches!(
            admitted,
            Some(Entry::Admitted(Mode::ReadWrite, _))
        ));
        drop(admitted);

        routing.set_read_only("old", true).unwrap();
        assert_eq!(routing.current(&mut seen).mode("old"), Mode::ReadOnly);
        let admitted = routing.enter("old", &mut seen, &mut shutdown).await;
        assert!(matches!(admitted, Some(Entry::Admitted(Mode::ReadOnly, _))));
        drop(admitted);

        routing.switch("old", "new", 1).unwrap();
        assert_eq!(routing.current(&mut seen).active, "new");
        let moved = routing.enter("old", &mut seen, &mut shutdown).await;
        assert!(matches!(moved, Some(Entry::Moved)));
        let mut other = routing.seen();
        assert_eq!(
            routing.current(&mut other).generation,
            routing.current(&mut seen).generation,
            "a copy taken later agrees"
        );
    }

    #[test]
    fn a_saved_state_wins_for_known_clusters() {
        let mut saved = state().with_read_only("old", true).unwrap();
        saved.modes.insert("gone".into(), Mode::ReadOnly);
        let mut config = state();
        config.modes.insert("extra".into(), Mode::ReadWrite);
        let merged = merge(saved, &config);
        assert_eq!(merged.mode("old"), Mode::ReadOnly);
        assert!(!merged.modes.contains_key("gone"));
        assert_eq!(merged.mode("extra"), Mode::ReadWrite);
    }

    #[test]
    fn the_state_file_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = |record: Option<&Record>| {
            Routing::open(
                state(),
                Some(dir.path().to_owned()),
                Duration::from_secs(5),
                record,
            )
            .unwrap()
        };
        let r = open(None);
        r.set_read_only("old", true).unwrap();
        let changed_at = r.load().updated_ms;
        assert!(changed_at > 0);
        drop(r);
        assert_eq!(open(None).load().mode("old"), Mode::ReadOnly);
        // A record older than the state file's last change is history: the file wins.
        let old_record = record(changed_at - 1);
        let again = open(Some(&old_record));
        assert_eq!(again.load().active, "old");
        drop(again);
        // A newer one is a cutover this proxy did not see.
        let new_record = record(changed_at + 1);
        let again = open(Some(&new_record));
        assert_eq!(again.load().active, "new");
        assert_eq!(again.load().mode("old"), Mode::ReadOnly);
        assert_eq!(again.load().mode("new"), Mode::ReadWrite);
    }

    #[test]
    fn a_newer_epoch_is_followed_once() {
        let r = Routing::open(state(), None, Duration::from_secs(5), None).unwrap();
        let paused = r.pause("old").unwrap();
        assert_eq!(paused.epoch, 0);
        let newer = Record {
            epoch: 3,
            ..record(1)
        };
        let followed = r
            .converge(&newer)
            .unwrap()
            .expect("a newer epoch is applied");
        assert_eq!(followed.active, "new");
        assert_eq!(followed.mode("old"), Mode::ReadOnly);
        assert_eq!(followed.epoch, 3);
        assert!(r.converge(&newer).unwrap().is_none(), "applied once");
        // An epoch at or below this proxy's is history, whatever its time.
        let older = Record {
            epoch: 2,
            active: "old".into(),
            fenced: "new".into(),
            ..record(u64::MAX)
        };
        assert!(r.converge(&older).unwrap().is_none());
    }

    fn record(at_ms: u64) -> Record {
        Record {
            active: "new".into(),
            fenced: "old".into(),
            at_ms,
            epoch: 0,
            source: "test".into(),
        }
    }

    #[test]
    fn a_record_makes_its_cluster_active_and_fences_the_other() {
        let paused = state().with_pause("old").unwrap();
        let s = paused.with_record(&record(7)).unwrap();
        assert_eq!(s.active, "new");
        assert_eq!(s.mode("old"), Mode::ReadOnly);
        assert_eq!(s.mode("new"), Mode::ReadWrite);
        assert!(s.before_pause.is_empty());
        assert_eq!(s.updated_ms, 7);
        let unknown = Record {
            active: "gone".into(),
            ..record(7)
        };
        assert_eq!(
            state().with_record(&unknown),
            Err(RoutingError::UnknownCluster("gone".into()))
        );
    }
}
