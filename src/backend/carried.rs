//! What a pooled backend connection carries from one session to the next: the session
//! state run on it ([`Carried`]) and the prepared statements it holds on its server
//! ([`StatementCache`]), shared by every session that uses the connection — a statement
//! prepared for one client is used as it is by the next that needs the same one, and the
//! least recently used one is closed when a connection would hold more than
//! `max_prepared_statements` (so a server's own limit, such as MySQL's
//! `max_prepared_stmt_count`, is never reached through the proxy).

use std::collections::HashMap;

/// What a connection carries from the sessions that used it, for the next one: in
/// transaction mode a connection goes back to its pool as the session left it, not reset,
/// so the next session compares this with its own state and changes only what differs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Fingerprints (`pool::fingerprint`) of the session-state changes (`SET`, `USE` …) run on
    /// it since its login or last reset, in order.
    pub state: Vec<u64>,
    /// Its transactions were made read-only (a migration's read-only mode).
    pub read_only: bool,
    /// Session state ran on it since the proxy last set its read-only mode (a client's
    /// `SET`, or its replayed settings): a client's own `default_transaction_read_only`
    /// (`SET SESSION CHARACTERISTICS … READ WRITE`, MySQL `SET SESSION TRANSACTION READ
    /// WRITE`) may have undone it, so read-only mode sets it again.
    pub read_only_unsure: bool,
}

/// Statements held on one server connection, by name as the proxy looks one up (a
/// PostgreSQL statement name, a MySQL statement's SQL text); `V` is what it knows of one
/// there (the Parse it was prepared with, the server's statement id). The one under the
/// empty name (PostgreSQL's unnamed statement, which extended-protocol drivers parse for
/// almost every statement) is kept apart from the map: looked up several times per
/// statement, it costs no hashing nor key comparison.
#[derive(Debug)]
pub struct StatementCache<V> {
    unnamed: Option<(V, u64)>,
    by_key: HashMap<Vec<u8>, (V, u64), foldhash::fast::RandomState>,
    /// Bumped at each use; the entry with the lowest stamp is the least recently used.
    clock: u64,
    /// The instance's `switchyard_prepared_statements`, kept at the statements held.
    gauge: Option<metrics::Gauge>,
}

impl<V> Default for StatementCache<V> {
    fn default() -> Self {
        StatementCache {
            unnamed: None,
            by_key: HashMap::default(),
            clock: 0,
            gauge: None,
        }
    }
}

impl<V> Drop for StatementCache<V> {
    fn drop(&mut self) {
        // The connection closes: its statements go with it.
        if let Some(g) = &self.gauge {
            g.decrement(self.len() as f64);
        }
    }
}

impl<V> StatementCache<V> {
    /// An empty cache that keeps `gauge` at the number of statements it holds.
    pub fn counted(gauge: metrics::Gauge) -> Self {
        StatementCache {
            unnamed: None,
            by_key: HashMap::default(),
            clock: 0,
            gauge: Some(gauge),
        }
    }

    /// Moves the gauge by how the count changed from `before`.
    fn counted_from(&self, before: usize) {
        if let Some(g) = self.gauge.as_ref().filter(|_| self.len() != before) {
            g.increment(self.len() as f64 - before as f64);
        }
    }

    fn entry(&self, key: &[u8]) -> Option<&(V, u64)> {
        match key {
            [] => self.unnamed.as_ref(),
            key => self.by_key.get(key),
        }
    }

    fn entry_mut(&mut self, key: &[u8]) -> Option<&mut (V, u64)> {
        match key {
            [] => self.unnamed.as_mut(),
            key => self.by_key.get_mut(key),
        }
    }

    /// The statement under `key`, marked as just used.
    pub fn get(&mut self, key: &[u8]) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entry_mut(key).map(|(v, used)| {
            *used = clock;
            &*v
        })
    }

    /// The statement under `key`, without marking it used.
    pub fn peek(&self, key: &[u8]) -> Option<&V> {
        self.entry(key).map(|(v, _)| v)
    }

    /// Records a statement now prepared under `key` (replacing one of that key); the least
    /// recently used others that no longer fit under `cap`, which the caller closes on the
    /// server.
    pub fn insert(&mut self, key: Vec<u8>, value: V, cap: usize) -> Vec<(Vec<u8>, V)> {
        let before = self.len();
        self.clock += 1;
        let fresh = usize::from(self.entry(&key).is_none());
        // Room for it first: the least recently used others go.
        let mut evicted = Vec::new();
        while self.len() + fresh > cap.max(1) {
            let Some(oldest) = self.oldest_except(&key) else {
                break;
            };
            if let Some(v) = self.remove_entry(&oldest) {
                evicted.push((oldest, v));
            }
        }
        let entry = (value, self.clock);
        match key.is_empty() {
            true => self.unnamed = Some(entry),
            false => {
                self.by_key.insert(key, entry);
            }
        }
        self.counted_from(before);
        evicted
    }

    /// The name of the least recently used statement other than `key`.
    fn oldest_except(&self, key: &[u8]) -> Option<Vec<u8>> {
        let named = self
            .by_key
            .iter()
            .filter(|(k, _)| k.as_slice() != key)
            .min_by_key(|(_, (_, used))| *used);
        let unnamed = self.unnamed.as_ref().filter(|_| !key.is_empty());
        match (named, unnamed) {
            (Some((_, (_, n))), Some((_, u))) if u < n => Some(Vec::new()),
            (Some((k, _)), _) => Some(k.clone()),
            (None, Some(_)) => Some(Vec::new()),
            (None, None) => None,
        }
    }

    /// Every statement held, in no order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        let named = self.by_key.values();
        self.unnamed.iter().chain(named).map(|(v, _)| v)
    }

    /// The statement under `key`, to change in place, without marking it used.
    pub fn peek_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.entry_mut(key).map(|(v, _)| v)
    }

    /// Every statement held, to change in place, in no order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        let named = self.by_key.values_mut();
        self.unnamed.iter_mut().chain(named).map(|(v, _)| v)
    }

    fn remove_entry(&mut self, key: &[u8]) -> Option<V> {
        match key {
            [] => self.unnamed.take(),
            key => self.by_key.remove(key),
        }
        .map(|(v, _)| v)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let before = self.len();
        let removed = self.remove_entry(key);
        self.counted_from(before);
        removed
    }

    /// Forgets every statement (the server dropped them: a reset).
    pub fn clear(&mut self) {
        let before = self.len();
        self.unnamed = None;
        self.by_key.clear();
        self.counted_from(before);
    }

    pub fn len(&self) -> usize {
        self.by_key.len() + usize::from(self.unnamed.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_statement_is_evicted_past_the_cap() {
        let mut cache = StatementCache::default();
        assert!(cache.insert(b"a".to_vec(), 1, 2).is_empty());
        assert!(cache.insert(b"b".to_vec(), 2, 2).is_empty());
        assert_eq!(cache.get(b"a"), Some(&1));
        assert_eq!(cache.insert(b"c".to_vec(), 3, 2), vec![(b"b".to_vec(), 2)]);
        assert_eq!(cache.peek(b"a"), Some(&1));
        assert_eq!(cache.len(), 2);
        // Replacing a key evicts nothing, and a cap of 0 still keeps the newest.
        assert!(cache.insert(b"c".to_vec(), 4, 2).is_empty());
        assert_eq!(cache.insert(b"d".to_vec(), 5, 0).len(), 2);
        assert_eq!(cache.remove(b"d"), Some(5));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_unnamed_statement_is_held_and_evicted_like_the_others() {
        let mut cache = StatementCache::default();
        assert!(cache.insert(b"".to_vec(), 1, 2).is_empty());
        assert!(cache.insert(b"a".to_vec(), 2, 2).is_empty());
        assert_eq!((cache.len(), cache.peek(b"")), (2, Some(&1)));
        assert_eq!(cache.get(b""), Some(&1));
        // "a" is now the least recently used.
        assert_eq!(cache.insert(b"b".to_vec(), 3, 2), vec![(b"a".to_vec(), 2)]);
        assert_eq!(cache.insert(b"c".to_vec(), 4, 2), vec![(Vec::new(), 1)]);
        assert_eq!(cache.peek(b""), None);
        assert!(cache.insert(b"".to_vec(), 5, 3).is_empty());
        let mut all: Vec<_> = cache.values().copied().collect();
        all.sort();
        assert_eq!(all, [3, 4, 5]);
        // Replacing the unnamed one evicts another, never itself.
        assert_eq!(cache.insert(b"".to_vec(), 6, 1).len(), 2);
        assert_eq!(cache.remove(b""), Some(6));
        assert!(cache.is_empty());
    }
}
