//! Keeping a connection's record of its prepared statements (`StatementCache`) true to
//! its server after what the server did without the proxy asking: Parses it skipped after
//! an error, and statements SQL `DISCARD ALL` / `DEALLOCATE` dropped.

use bytes::Bytes;

use super::backend::Backend;
use super::scan::Deallocate;

/// What a CommandComplete of SQL `DISCARD ALL`, `DEALLOCATE ALL` (`All`) or `DEALLOCATE`
/// (`One`) says the server dropped.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dropped {
    All,
    One,
}

impl Dropped {
    /// What a CommandComplete tag (`done`, with or without its NUL) says was dropped.
    pub(super) fn of(done: &[u8]) -> Option<Dropped> {
        match done.strip_suffix(b"\0").unwrap_or(done) {
            b"DISCARD ALL" | b"DEALLOCATE ALL" => Some(Dropped::All),
            b"DEALLOCATE" => Some(Dropped::One),
            _ => None,
        }
    }
}

impl Backend {
    /// Forgets the statements whose Parse the backend skipped after an error.
    pub(super) fn forget_failed(&mut self, failed: Vec<(Vec<u8>, Bytes)>) {
        for (name, parse) in failed {
            if self
                .conn
                .prepared
                .peek(&name)
                .is_some_and(|h| h.parse == parse)
            {
                self.conn.prepared.remove(&name);
            }
        }
    }

    /// The statements still owed a ParseComplete, which a server that failed the batch
    /// skipped: not prepared.
    pub(super) fn owed_parses(&mut self) -> Vec<(Vec<u8>, Bytes)> {
        self.q.describing.clear();
        self.q.owed.drain(..).filter_map(|o| o.parse).collect()
    }

    /// Makes the connection's cache follow what the server said it dropped: `DISCARD ALL`
    /// and `DEALLOCATE ALL` dropped every statement; `DEALLOCATE` the one named, and when
    /// the proxy does not know which, every one is marked as not to be trusted (its next
    /// use closes and prepares it again).
    pub(super) fn server_dropped(&mut self, dropped: Dropped) {
        match dropped {
            Dropped::All => {
                self.conn.prepared.clear();
                self.q.deallocated = Some(Deallocate::All);
            }
            Dropped::One => match self.q.watch_drops.as_mut().and_then(Option::take) {
                Some(name) => {
                    self.conn.prepared.remove(&name);
                    self.q.deallocated = Some(Deallocate::Name(name));
                }
                None => self
                    .conn
                    .prepared
                    .values_mut()
                    .for_each(|held| held.parse = Bytes::new()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dropped;

    #[test]
    fn completion_tags_that_drop_statements() {
        assert!(matches!(Dropped::of(b"DISCARD ALL\0"), Some(Dropped::All)));
        assert!(matches!(Dropped::of(b"DEALLOCATE ALL"), Some(Dropped::All)));
        assert!(matches!(Dropped::of(b"DEALLOCATE\0"), Some(Dropped::One)));
        for other in [
            &b"DISCARD PLANS\0"[..],
            b"DISCARD TEMP\0",
            b"SELECT 1\0",
            b"",
        ] {
            assert!(Dropped::of(other).is_none());
        }
    }
}
