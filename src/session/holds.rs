//! The state that pins a pooled session to its server connection, as the session's
//! statements took it and gave it back (`sql::hold`): what the session holds now, so that
//! it lets its connection go once nothing is held. Pure transitions, no I/O.

use crate::sql::hold::{HeldKind, HoldChange};

/// What a session holds on its writer connection that cannot move to another.
#[derive(Debug, Default)]
pub struct Holds {
    /// Each held thing, by kind and name, with how many times it was taken (named locks
    /// nest; anything else is taken once).
    held: Vec<(HeldKind, Vec<u8>, u32)>,
    /// State whose end cannot be seen: it lasts as long as the session's state does.
    untracked: bool,
}

impl Holds {
    /// Applies what a statement did. A statement that `failed` is counted to take what it
    /// names (it may have, before failing) but to give nothing back.
    pub fn apply(&mut self, changes: Vec<HoldChange>, failed: bool) {
        for change in changes {
            match change {
                HoldChange::Untracked => self.untracked = true,
                HoldChange::Take(kind, name) => {
                    match self
                        .held
                        .iter_mut()
                        .find(|(k, n, _)| *k == kind && *n == name)
                    {
                        // A second GET_LOCK of a name must be released twice (MySQL
                        // 5.7+, MariaDB 10.0.2+); anything else is held once.
                        Some((_, _, count)) if kind == HeldKind::NamedLock => *count += 1,
                        Some(_) => {}
                        None => self.held.push((kind, name, 1)),
                    }
                }
                HoldChange::Release(_, _) | HoldChange::ReleaseAll(_) if failed => {}
                HoldChange::Release(kind, name) => {
                    if let Some(at) = self
                        .held
                        .iter()
                        .position(|(k, n, _)| *k == kind && *n == name)
                    {
                        self.held[at].2 -= 1;
                        if self.held[at].2 == 0 {
                            self.held.swap_remove(at);
                        }
                    }
                }
                HoldChange::ReleaseAll(kind) => self.held.retain(|(k, _, _)| *k != kind),
            }
        }
    }

    /// Whether anything but cursors is held (what `Pin::Statement` stands for).
    pub fn statement_state(&self) -> bool {
        self.untracked || self.held.iter().any(|(k, _, _)| *k != HeldKind::Cursor)
    }

    /// Whether state whose end cannot be seen is held.
    pub fn untracked(&self) -> bool {
        self.untracked
    }

    /// Whether a cursor is held (what `Pin::Cursor` stands for).
    pub fn cursors(&self) -> bool {
        self.held.iter().any(|(k, _, _)| *k == HeldKind::Cursor)
    }

    /// The server forgot the session's state (a reset): nothing is held.
    pub fn clear(&mut self) {
        *self = Holds::default();
    }

    /// What the server says the connection still holds, when it can tell everything:
    /// nothing. Anything tracked here is then gone.
    pub fn confirmed_empty(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;
    use crate::sql::hold::changes;

    fn run(holds: &mut Holds, sql: &str, pins: bool, failed: bool) {
        holds.apply(changes(sql.as_bytes(), Dialect::MySql, pins), failed);
    }

    #[test]
    fn state_is_held_until_each_piece_is_given_back() {
        let mut h = Holds::default();
        run(&mut h, "CREATE TEMPORARY TABLE t (x int)", true, false);
        run(&mut h, "SELECT GET_LOCK('a', 1)", true, false);
        run(&mut h, "SELECT GET_LOCK('a', 1)", true, false);
        run(&mut h, "LOCK TABLES x READ", true, false);
        assert!(h.statement_state());
        run(&mut h, "DROP TEMPORARY TABLE t", false, false);
        run(&mut h, "UNLOCK TABLES", true, false);
        run(&mut h, "SELECT RELEASE_LOCK('a')", false, false);
        assert!(
            h.statement_state(),
            "a lock taken twice is held until released twice"
        );
        run(&mut h, "SELECT RELEASE_LOCK('a')", false, false);
        assert!(!h.statement_state());
    }

    #[test]
    fn a_failed_release_gives_nothing_back_and_untracked_state_lasts() {
        let mut h = Holds::default();
        run(&mut h, "CREATE TEMPORARY TABLE t (x int)", true, false);
        run(&mut h, "DROP TABLE t, missing", false, true);
        assert!(h.statement_state());
        run(&mut h, "DROP TABLE IF EXISTS T", false, false);
        assert!(h.statement_state(), "names are compared as written");
        run(&mut h, "DROP TABLE t", false, false);
        assert!(!h.statement_state());
        run(&mut h, "SELECT GET_LOCK(CONCAT('a', 1), 1)", true, false);
        run(&mut h, "SELECT RELEASE_ALL_LOCKS()", false, false);
        assert!(h.statement_state());
        h.clear();
        assert!(!h.statement_state());
    }
}
