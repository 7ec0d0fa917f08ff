//! The routing decision, pure: (statement class, session state, routing settings) → where
//! the statement runs. No I/O; table-tested.

use std::time::{Duration, Instant};

use crate::config::{Consistency, RoutingConfig};
use crate::sql::{Class, Hint, Statement};

/// The backend connection of a session a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Writer,
    Reader,
}

/// What routing needs to know of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    /// The backend an open transaction runs on; everything goes there until it ends.
    pub in_transaction: Option<Target>,
    /// Session state that cannot be replayed was created: writer only from now on, on the
    /// writer connection that holds the state.
    pub pinned_to_writer: bool,
    /// Reads go to the writer (a reader cannot serve them: transactions serializable by
    /// default, settings a reader refused), but on any connection to it: the session holds
    /// none between transactions in transaction mode.
    pub reads_on_writer: bool,
    /// The session wrote within the read-your-writes window: its reads stay on the writer,
    /// which has the write, until the replicas have it too.
    pub wrote_recently: bool,
}

/// Settings that apply to every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub read_write_split: bool,
}

pub fn route(stmt: &Statement, session: SessionView, settings: Settings) -> Target {
    if let Some(bound) = session.in_transaction {
        return bound;
    }
    if session.pinned_to_writer || session.reads_on_writer || !settings.read_write_split {
        return Target::Writer;
    }
    match (stmt.class, stmt.hint) {
        // State changes always run on the writer, whatever the hint says.
        (Class::SessionSet | Class::Pin | Class::Autocommit(_), _) => Target::Writer,
        (_, Some(Hint::Writer)) => Target::Writer,
        (_, Some(Hint::Reader)) => Target::Reader,
        _ if session.wrote_recently => Target::Writer,
        (Class::Read, None) | (Class::Begin { read_only: true }, None) => Target::Reader,
        _ => Target::Writer,
    }
}

/// Whether a PostgreSQL session's startup parameters make its transactions serializable by
/// default (`default_transaction_isolation` given directly or in `options`): a hot standby
/// would refuse every read, so such a session stays on the writer.
pub fn serializable_by_default(params: &[(String, String)]) -> bool {
    const SETTING: &str = "default_transaction_isolation";
    params.iter().any(|(key, value)| {
        let value = value.to_ascii_lowercase();
        match key.as_str() {
            SETTING => value.trim() == "serializable",
            "options" => value
                .match_indices(SETTING)
                .any(|(at, _)| value[at + SETTING.len()..].starts_with("=serializable")),
            _ => false,
        }
    })
}

/// Whether a statement may have written data when it ran on the writer: it starts the
/// session's read-your-writes window. Session settings do not.
pub fn may_write(stmt: &Statement) -> bool {
    matches!(stmt.class, Class::Write | Class::Pin | Class::End)
}

/// How long a session's reads stay on the writer after it wrote, resolved once per login
/// from its route (`consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadYourWrites {
    /// `consistency = "eventual"`: reads go to replicas right after a write.
    Off,
    /// `consistency = "session"`: reads stay on the writer for at least `minimum`, and for
    /// as long as the replicas may lag behind the write.
    Window { minimum: Duration },
}

impl ReadYourWrites {
    /// What a session of `user` (the client's login name) on `database` gets.
    pub fn for_session(routing: &RoutingConfig, user: &str, database: Option<&str>) -> Self {
        match routing.consistency_for(user, database) {
            Consistency::Eventual => ReadYourWrites::Off,
            Consistency::Session => ReadYourWrites::Window {
                minimum: routing.read_your_writes,
            },
        }
    }

    /// Until when reads stay on the writer after a write at `now`; `catch_up` tells how long
    /// the cluster's replicas may miss it (measured lag plus margin).
    pub fn writer_until(
        self,
        now: Instant,
        catch_up: impl FnOnce() -> Duration,
    ) -> Option<Instant> {
        match self {
            ReadYourWrites::Off => None,
            ReadYourWrites::Window { minimum } => Some(now + minimum.max(catch_up())),
        }
    }
}

/// What a statement does to the session besides running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Replay the statement text on the other connection before it is next used.
    Record,
    /// Stay on the writer for the rest of the session.
    Pin,
}

pub fn effect(stmt: &Statement, session: SessionView) -> Effect {
    match stmt.class {
        Class::Pin => Effect::Pin,
        // Inside a transaction a SET may be rolled back: replaying it could be wrong.
        Class::SessionSet if session.in_transaction.is_some() => Effect::Pin,
        Class::SessionSet => Effect::Record,
        // autocommit=0 opens a transaction on the writer, which the server's status flags
        // report after every statement until autocommit is set back; nothing to replay.
        Class::Autocommit(_) => Effect::None,
        _ => Effect::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: SessionView = SessionView {
        in_transaction: None,
        pinned_to_writer: false,
        reads_on_writer: false,
        wrote_recently: false,
    };
    const SPLIT: Settings = Settings {
        read_write_split: true,
    };

    fn stmt(class: Class, hint: Option<Hint>) -> Statement {
        Statement {
            hint,
            ..Statement::of(class)
        }
    }

    #[test]
    fn routing_table() {
        use Target::*;
        let in_tx = |t| SessionView {
            in_transaction: Some(t),
            pinned_to_writer: false,
            reads_on_writer: false,
            wrote_recently: false,
        };
        let wrote = SessionView {
            wrote_recently: true,
            ..IDLE
        };
        let pinned = SessionView {
            in_transaction: None,
            pinned_to_writer: true,
            reads_on_writer: false,
            wrote_recently: false,
        };
        let cases = [
            (stmt(Class::Read, None), IDLE, SPLIT, Reader),
            (stmt(Class::Write, None), IDLE, SPLIT, Writer),
            (
                stmt(Class::Begin { read_only: false }, None),
                IDLE,
                SPLIT,
                Writer,
            ),
            (
                stmt(Class::Begin { read_only: true }, None),
                IDLE,
                SPLIT,
                Reader,
            ),
            (stmt(Class::End, None), IDLE, SPLIT, Writer),
            (stmt(Class::SessionSet, None), IDLE, SPLIT, Writer),
            (
                stmt(Class::SessionSet, Some(Hint::Reader)),
                IDLE,
                SPLIT,
                Writer,
            ),
            (stmt(Class::Pin, None), IDLE, SPLIT, Writer),
            // About the node: the session's own writer, unless a hint says otherwise.
            (stmt(Class::Node, None), IDLE, SPLIT, Writer),
            (stmt(Class::Node, Some(Hint::Reader)), IDLE, SPLIT, Reader),
            (stmt(Class::Node, None), in_tx(Reader), SPLIT, Reader),
            (stmt(Class::Read, Some(Hint::Writer)), IDLE, SPLIT, Writer),
            (stmt(Class::Write, Some(Hint::Reader)), IDLE, SPLIT, Reader),
            (stmt(Class::Read, None), in_tx(Writer), SPLIT, Writer),
            (stmt(Class::Write, None), in_tx(Reader), SPLIT, Reader),
            (
                stmt(Class::Read, Some(Hint::Reader)),
                in_tx(Writer),
                SPLIT,
                Writer,
            ),
            (stmt(Class::Read, None), pinned, SPLIT, Writer),
            (stmt(Class::Read, None), wrote, SPLIT, Writer),
            (
                stmt(Class::Begin { read_only: true }, None),
                wrote,
                SPLIT,
                Writer,
            ),
            (stmt(Class::Read, Some(Hint::Reader)), wrote, SPLIT, Reader),
            (stmt(Class::Read, Some(Hint::Reader)), pinned, SPLIT, Writer),
            (
                stmt(Class::Read, None),
                IDLE,
                Settings {
                    read_write_split: false,
                },
                Writer,
            ),
        ];
        for (i, (s, session, settings, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                route(&s, session, settings),
                want,
                "case {i}: {s:?} {session:?}"
            );
        }
    }

    #[test]
    fn read_your_writes_lasts_the_longer_of_the_minimum_and_the_catch_up() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        let window = |minimum| ReadYourWrites::Window { minimum };
        assert_eq!(
            window(ms(1000)).writer_until(now, || ms(300)),
            Some(now + ms(1000))
        );
        assert_eq!(
            window(ms(1000)).writer_until(now, || ms(2500)),
            Some(now + ms(2500))
        );
        assert_eq!(
            window(ms(0)).writer_until(now, || ms(300)),
            Some(now + ms(300))
        );
        let unasked = || -> Duration { unreachable!("eventual never asks for the lag") };
        assert_eq!(ReadYourWrites::Off.writer_until(now, unasked), None);
    }

    #[test]
    fn serializable_startup_defaults() {
        let p = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(serializable_by_default(&p(
            "default_transaction_isolation",
            "SERIALIZABLE"
        )));
        assert!(serializable_by_default(&p(
            "options",
            "-c default_transaction_isolation=serializable"
        )));
        assert!(serializable_by_default(&p(
            "options",
            "--default_transaction_isolation=Serializable -c x=y"
        )));
        assert!(!serializable_by_default(&p(
            "options",
            "-c default_transaction_isolation=repeatable\\ read"
        )));
        assert!(!serializable_by_default(&p(
            "application_name",
            "serializable"
        )));
        assert!(!serializable_by_default(&[]));
    }

    #[test]
    fn effects() {
        let in_tx = SessionView {
            in_transaction: Some(Target::Writer),
            pinned_to_writer: false,
            reads_on_writer: false,
            wrote_recently: false,
        };
        assert_eq!(effect(&stmt(Class::SessionSet, None), IDLE), Effect::Record);
        assert_eq!(effect(&stmt(Class::SessionSet, None), in_tx), Effect::Pin);
        assert_eq!(effect(&stmt(Class::Pin, None), IDLE), Effect::Pin);
        assert_eq!(effect(&stmt(Class::Read, None), IDLE), Effect::None);
        // autocommit=0 is followed through the server's status flags, not pinned.
        assert_eq!(
            effect(&stmt(Class::Autocommit(false), None), IDLE),
            Effect::None
        );
    }
}
