//! What a pooled backend connection carries from one session to the next: the session
//! state run on it ([`Carried`]) and the prepared statements it holds on its server
//! ([`StatementCache`]), shared by every session that uses the connection — a statement
//! prepared for one client is used as it is by the next that needs the same one, and the
//! least recently used one is closed when a connection would hold more than
//! `max_prepared_statements` (so a server's own limit, such as MySQL's
//! `max_prepared_stmt_count`, is never reached through the proxy).

use std::collections::HashMap;
use std::hash::Hash;

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
}

/// Statements held on one server connection: `K` names one as the proxy looks it up (a
/// PostgreSQL statement name, a MySQL statement's SQL text), `V` is what it knows of it
/// there (the Parse it was prepared with, the server's statement id).
#[derive(Debug)]
pub struct StatementCache<K, V> {
    by_key: HashMap<K, (V, u64), foldhash::fast::RandomState>,
    /// Bumped at each use; the entry with the lowest stamp is the least recently used.
    clock: u64,
    /// The instance's `switchyard_prepared_statements`, kept at the statements held.
    gauge: Option<metrics::Gauge>,
}

impl<K, V> Default for StatementCache<K, V> {
    fn default() -> Self {
        StatementCache {
            by_key: HashMap::default(),
            clock: 0,
            gauge: None,
        }
    }
}

impl<K, V> Drop for StatementCache<K, V> {
    fn drop(&mut self) {
        // The connection closes: its statements go with it.
        if let Some(g) = &self.gauge {
            g.decrement(self.by_key.len() as f64);
        }
    }
}

impl<K: Hash + Eq + Clone, V> StatementCache<K, V> {
    /// An empty cache that keeps `gauge` at the number of statements it holds.
    pub fn counted(gauge: metrics::Gauge) -> Self {
        StatementCache {
            by_key: HashMap::default(),
            clock: 0,
            gauge: Some(gauge),
        }
    }

    /// Moves the gauge by how the count changed from `before`.
    fn counted_from(&self, before: usize) {
        if let Some(g) = &self.gauge {
            g.increment(self.by_key.len() as f64 - before as f64);
        }
    }

    /// The statement under `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.by_key.get_mut(key).map(|(v, used)| {
            *used = clock;
            &*v
        })
    }

    /// The statement under `key`, without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.by_key.get(key).map(|(v, _)| v)
    }

    /// Records a statement now prepared under `key` (replacing one of that key); the least
    /// recently used others that no longer fit under `cap`, which the caller closes on the
    /// server.
    pub fn insert(&mut self, key: K, value: V, cap: usize) -> Vec<(K, V)> {
        let before = self.by_key.len();
        self.clock += 1;
        self.by_key.insert(key.clone(), (value, self.clock));
        let mut evicted = Vec::new();
        while self.by_key.len() > cap.max(1) {
            let oldest = self
                .by_key
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some((v, _)) = self.by_key.remove(&oldest) {
                evicted.push((oldest, v));
            }
        }
        self.counted_from(before);
        evicted
    }

    /// Every statement held, in no order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.by_key.values().map(|(v, _)| v)
    }

    /// The statement under `key`, to change in place, without marking it used.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.by_key.get_mut(key).map(|(v, _)| v)
    }

    /// Every statement held, to change in place, in no order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.by_key.values_mut().map(|(v, _)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let before = self.by_key.len();
        let removed = self.by_key.remove(key).map(|(v, _)| v);
        self.counted_from(before);
        removed
    }

    /// Forgets every statement (the server dropped them: a reset).
    pub fn clear(&mut self) {
        let before = self.by_key.len();
        self.by_key.clear();
        self.counted_from(before);
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_statement_is_evicted_past_the_cap() {
        let mut cache = StatementCache::default();
        assert!(cache.insert("a", 1, 2).is_empty());
        assert!(cache.insert("b", 2, 2).is_empty());
        assert_eq!(cache.get(&"a"), Some(&1));
        assert_eq!(cache.insert("c", 3, 2), vec![("b", 2)]);
        assert_eq!(cache.peek(&"a"), Some(&1));
        assert_eq!(cache.len(), 2);
        // Replacing a key evicts nothing, and a cap of 0 still keeps the newest.
        assert!(cache.insert("c", 4, 2).is_empty());
        assert_eq!(cache.insert("d", 5, 0).len(), 2);
        assert_eq!(cache.remove(&"d"), Some(5));
        assert!(cache.is_empty());
    }
}
