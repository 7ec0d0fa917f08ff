//! The session state a session recorded to replay on its other connections (`SET`, `USE`
//! …), in order, with a fingerprint of each: a pooled connection carries the fingerprints of
//! what it ran (`Carried::state`), so the next session that takes it runs only what it
//! lacks. Replays that later ones make pointless (the same settings set again from
//! literals, as an ORM does at every request) are dropped when the list is full, so only a
//! session with more distinct settings than the cap stays pinned. Pure, no I/O.

use crate::pool;

/// The session state a session recorded, in order.
pub struct Replays<R> {
    items: Vec<R>,
    marks: Vec<u64>,
    /// The settings each one sets, each from a literal value (so nothing it sets depends on
    /// what ran before it); `None` for anything else (`SET @a = @b`, `SET ROLE` …), which
    /// nothing before it is dropped across.
    names: Vec<Option<Box<[String]>>>,
    /// How many of the last ones were recorded for the unit about to run, while the session
    /// held no writer: the writer it takes runs them with the unit.
    unrun: usize,
}

impl<R> Default for Replays<R> {
    fn default() -> Self {
        Replays {
            items: Vec::new(),
            marks: Vec::new(),
            names: Vec::new(),
            unrun: 0,
        }
    }
}

/// Which replays [`Replays::compact`] would drop, by index (ascending), out of `len`.
#[derive(Debug, PartialEq, Eq)]
pub struct Compaction {
    dropped: Vec<usize>,
    len: usize,
}

impl Compaction {
    /// What a connection that had run the first `applied` replays has run of the compacted
    /// list: all of it when it had run all (what was dropped, it ran and overwrote), the
    /// same prefix when nothing before `applied` is dropped; `None` when it holds a dropped
    /// value that nothing it ran overwrote (it must not be taken for clean).
    pub fn applied(&self, applied: usize) -> Option<usize> {
        if applied >= self.len {
            Some(self.len - self.dropped.len())
        } else if self.dropped.first().is_none_or(|&first| applied <= first) {
            Some(applied)
        } else {
            None
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty()
    }
}

impl<R: std::hash::Hash> Replays<R> {
    /// Records `replay`, which sets `names` from literals (`None`: anything else).
    pub fn push(&mut self, replay: R, names: Option<Vec<String>>) {
        self.marks.push(pool::fingerprint(&replay));
        self.items.push(replay);
        self.names.push(names.map(Vec::into_boxed_slice));
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.marks.clear();
        self.names.clear();
        self.unrun = 0;
    }

    /// Counts the last replay as run by the unit about to run (no writer ran it yet).
    pub fn unrun_one(&mut self) {
        self.unrun += 1;
    }

    /// The unit ran: whatever it recorded has run.
    pub fn ran(&mut self) {
        self.unrun = 0;
    }

    /// What a writer taken for the unit about to run replays before it: all but what the
    /// unit itself runs. The count is spent.
    pub fn for_new_writer(&mut self) -> (&[R], usize) {
        let unrun = std::mem::take(&mut self.unrun);
        (&self.items[..self.items.len() - unrun], unrun)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// How many of the last replays the session recorded without running them on its
    /// writer (see [`Replays::unrun_one`]).
    pub fn unrun(&self) -> usize {
        self.unrun
    }

    pub fn items(&self) -> &[R] {
        &self.items
    }

    /// The fingerprints of the first `applied` replays, what a connection that ran them
    /// carries.
    pub fn marks(&self, applied: usize) -> Option<&[u64]> {
        self.marks.get(..applied)
    }

    /// How many of these a connection carrying `state` has run already: all of `state`
    /// when it is where this session's state starts, else `None` (it holds other state).
    pub fn carried(&self, state: &[u64]) -> Option<usize> {
        self.marks.starts_with(state).then_some(state.len())
    }

    /// The replays that later ones make pointless: one whose every setting a later one
    /// sets again from a literal, with only such replays after it (anything else after it
    /// may read what it set).
    pub fn compaction(&self) -> Compaction {
        let mut covered: Vec<&str> = Vec::new();
        let mut dropped = Vec::new();
        for (at, names) in self.names.iter().enumerate().rev() {
            let Some(names) = names else { break };
            if names.iter().all(|n| covered.contains(&n.as_str())) {
                dropped.push(at);
            } else {
                covered.extend(names.iter().map(String::as_str));
            }
        }
        dropped.reverse();
        Compaction {
            dropped,
            len: self.items.len(),
        }
    }

    /// Drops what `plan` (this list's [`Replays::compaction`]) says.
    pub fn compact(&mut self, plan: &Compaction) {
        let unrun_from = self.items.len() - self.unrun;
        let dropped_unrun = plan.dropped.iter().filter(|&&i| i >= unrun_from).count();
        self.unrun -= dropped_unrun;
        let kept: Vec<bool> = (0..self.items.len())
            .map(|at| plan.dropped.binary_search(&at).is_err())
            .collect();
        let mut keep = kept.iter().copied();
        self.items.retain(|_| keep.next().unwrap_or(true));
        let mut keep = kept.iter().copied();
        self.marks.retain(|_| keep.next().unwrap_or(true));
        let mut keep = kept.iter().copied();
        self.names.retain(|_| keep.next().unwrap_or(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &mut Replays<String>, sql: &str, names: Option<&[&str]>) {
        let names = names.map(|n| n.iter().map(|s| s.to_string()).collect());
        list.push(sql.to_owned(), names);
    }

    #[test]
    fn a_setting_set_again_from_a_literal_drops_the_earlier_one() {
        let mut r = Replays::default();
        set(&mut r, "SET a = 1", Some(&["a"]));
        set(&mut r, "SET b = 1", Some(&["b"]));
        set(&mut r, "SET a = 2", Some(&["a"]));
        set(&mut r, "SET a = 3, c = 1", Some(&["a", "c"]));
        let plan = r.compaction();
        assert_eq!(plan.dropped, vec![0, 2]);
        // A connection that ran all of it has the compacted state; one that ran only the
        // first holds a value nothing overwrote; one that ran none has nothing extra.
        assert_eq!(plan.applied(4), Some(2));
        assert_eq!(plan.applied(1), None);
        assert_eq!(plan.applied(0), Some(0));
        let before = r.marks(4).unwrap().to_vec();
        r.compact(&plan);
        assert_eq!(r.items(), ["SET b = 1", "SET a = 3, c = 1"]);
        assert_eq!(r.marks(2).unwrap(), [before[1], before[3]]);
        assert!(r.compaction().is_empty());
    }

    #[test]
    fn nothing_is_dropped_across_a_replay_that_may_read_it() {
        let mut r = Replays::default();
        set(&mut r, "SET @a = 1", Some(&["@a"]));
        set(&mut r, "SET @b = @a", None);
        set(&mut r, "SET @a = 2", Some(&["@a"]));
        set(&mut r, "SET @a = 3", Some(&["@a"]));
        assert_eq!(r.compaction().dropped, vec![2]);
        // A replay setting fewer names than an earlier one does not replace it.
        let mut r = Replays::default();
        set(&mut r, "SET a = 1, b = 1", Some(&["a", "b"]));
        set(&mut r, "SET a = 2", Some(&["a"]));
        assert!(r.compaction().is_empty());
    }

    #[test]
    fn what_the_unit_runs_itself_stays_counted() {
        let mut r = Replays::default();
        set(&mut r, "SET a = 1", Some(&["a"]));
        set(&mut r, "SET b = 1", Some(&["b"]));
        set(&mut r, "SET a = 2", Some(&["a"]));
        r.unrun_one();
        r.unrun_one();
        let plan = r.compaction();
        r.compact(&plan);
        let (before, unrun) = r.for_new_writer();
        assert_eq!((before.len(), unrun), (0, 2));
    }
}
