//! The routing state as a value: which cluster is active and what each cluster accepts
//! (read-write, read-only, paused), with pure transitions that return the next state or
//! say why it cannot change. `Routing` (in the parent module) owns and publishes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::Record;

/// What a cluster accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    ReadWrite,
    /// Writes are refused with the standard read-only error; reads work.
    ReadOnly,
    /// New transactions wait (no error) until resumed; ones in flight finish.
    Paused,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "read_write",
            Mode::ReadOnly => "read_only",
            Mode::Paused => "paused",
        }
    }
}

/// The routing state as of one moment. Immutable; replaced whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingState {
    pub active: String,
    pub modes: BTreeMap<String, Mode>,
    /// Increases with every change.
    pub generation: u64,
    /// The mode a paused cluster returns to on resume.
    #[serde(default)]
    pub before_pause: BTreeMap<String, Mode>,
    /// When it was last changed, in milliseconds since the Unix epoch (0: never recorded).
    /// A cutover record in the database newer than this takes precedence at start.
    #[serde(default)]
    pub updated_ms: u64,
    /// The epoch of the newest cutover record this state follows (0: none). A record with a
    /// higher epoch, read by the fleet poller, is a cutover this proxy has not applied yet.
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    #[error("no cluster named {0:?}")]
    UnknownCluster(String),
    #[error("cluster {0:?} is not paused")]
    NotPaused(String),
    #[error("cluster {0:?} is already paused")]
    AlreadyPaused(String),
    #[error("cluster {cluster:?} is paused: lift the pause before changing read-only mode")]
    Paused { cluster: String },
    #[error("cluster {0:?} is not the active cluster")]
    NotActive(String),
    #[error("cluster {0:?} is already the active cluster")]
    AlreadyActive(String),
}

impl RoutingState {
    pub fn new(active: String, modes: BTreeMap<String, Mode>) -> RoutingState {
        RoutingState {
            active,
            modes,
            generation: 0,
            before_pause: BTreeMap::new(),
            updated_ms: 0,
            epoch: 0,
        }
    }

    pub fn mode(&self, cluster: &str) -> Mode {
        self.modes.get(cluster).copied().unwrap_or_default()
    }

    fn next(&self) -> RoutingState {
        RoutingState {
            generation: self.generation + 1,
            ..self.clone()
        }
    }

    fn known(&self, cluster: &str) -> Result<(), RoutingError> {
        if self.modes.contains_key(cluster) {
            Ok(())
        } else {
            Err(RoutingError::UnknownCluster(cluster.to_owned()))
        }
    }

    /// Read-only on or off. Refused while the cluster is paused.
    pub fn with_read_only(&self, cluster: &str, on: bool) -> Result<RoutingState, RoutingError> {
        self.known(cluster)?;
        if self.mode(cluster) == Mode::Paused {
            return Err(RoutingError::Paused {
                cluster: cluster.to_owned(),
            });
        }
        let mut s = self.next();
        s.modes.insert(
            cluster.to_owned(),
            if on { Mode::ReadOnly } else { Mode::ReadWrite },
        );
        Ok(s)
    }

    pub fn with_pause(&self, cluster: &str) -> Result<RoutingState, RoutingError> {
        self.known(cluster)?;
        let current = self.mode(cluster);
        if current == Mode::Paused {
            return Err(RoutingError::AlreadyPaused(cluster.to_owned()));
        }
        let mut s = self.next();
        s.before_pause.insert(cluster.to_owned(), current);
        s.modes.insert(cluster.to_owned(), Mode::Paused);
        Ok(s)
    }

    /// Fences a paused cluster: when its pause ends, by resume or by the watchdog, it is
    /// read-only. Writes held during a cutover then never reach a cluster that was fenced.
    pub fn with_fence(&self, cluster: &str) -> Result<RoutingState, RoutingError> {
        self.known(cluster)?;
        if self.mode(cluster) != Mode::Paused {
            return Err(RoutingError::NotPaused(cluster.to_owned()));
        }
        let mut s = self.next();
        s.before_pause.insert(cluster.to_owned(), Mode::ReadOnly);
        Ok(s)
    }

    /// The cutover's switch, in one snapshot: `to` becomes the active, read-write cluster
    /// and `from` (paused) becomes read-only. Sessions held by the pause wake up, see the new
    /// active cluster and move to it.
    pub fn with_switch(
        &self,
        from: &str,
        to: &str,
        epoch: u64,
    ) -> Result<RoutingState, RoutingError> {
        self.known(from)?;
        self.known(to)?;
        if self.active != from {
            return Err(RoutingError::NotActive(from.to_owned()));
        }
        if from == to {
            return Err(RoutingError::AlreadyActive(to.to_owned()));
        }
        // Paused, or fenced and already resumed by the watchdog: either way nothing can
        // have been written on `from` since the cutover took its position.
        if self.mode(from) == Mode::ReadWrite {
            return Err(RoutingError::NotPaused(from.to_owned()));
        }
        let mut s = self.next();
        s.active = to.to_owned();
        s.before_pause.remove(from);
        s.before_pause.remove(to);
        s.modes.insert(from.to_owned(), Mode::ReadOnly);
        s.modes.insert(to.to_owned(), Mode::ReadWrite);
        s.epoch = s.epoch.max(epoch);
        Ok(s)
    }

    /// What a cutover `record` says: its cluster active, the one it fenced read-only (and
    /// neither paused).
    pub fn with_record(&self, record: &Record) -> Result<RoutingState, RoutingError> {
        self.known(&record.active)?;
        self.known(&record.fenced)?;
        let mut s = self.next();
        s.active = record.active.clone();
        for cluster in [&record.active, &record.fenced] {
            s.before_pause.remove(cluster);
        }
        if s.mode(&record.active) == Mode::Paused {
            s.modes.insert(record.active.clone(), Mode::ReadWrite);
        }
        s.modes.insert(record.fenced.clone(), Mode::ReadOnly);
        s.updated_ms = record.at_ms;
        s.epoch = s.epoch.max(record.epoch);
        Ok(s)
    }

    /// Undoes a cutover's pause and fence: `cluster` returns to `restore` (its mode before
    /// the cutover). Does nothing to a cluster that is no longer paused and was not fenced
    /// by this cutover.
    pub fn with_abort(&self, cluster: &str, restore: Mode) -> Result<RoutingState, RoutingError> {
        self.known(cluster)?;
        if self.active != cluster {
            return Err(RoutingError::NotActive(cluster.to_owned()));
        }
        let mut s = self.next();
        s.before_pause.remove(cluster);
        s.modes.insert(cluster.to_owned(), restore);
        Ok(s)
    }

    pub fn with_resume(&self, cluster: &str) -> Result<RoutingState, RoutingError> {
        self.known(cluster)?;
        if self.mode(cluster) != Mode::Paused {
            return Err(RoutingError::NotPaused(cluster.to_owned()));
        }
        let mut s = self.next();
        let back = s.before_pause.remove(cluster).unwrap_or_default();
        s.modes.insert(cluster.to_owned(), back);
        Ok(s)
    }
}
