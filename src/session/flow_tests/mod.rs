//! The session's per-statement policy — route, migration gate, retry, failover, follow the
//! active cluster, read-your-writes, pinning — tested from outside (`session::run` on an
//! accepted socket) without real database servers: scripted servers that record every
//! statement they receive (`server.rs`), a real driver as the client (`client.rs`), and a
//! world the test changes between steps as discovery, health checks and the cutover
//! controller would (`world.rs`). One table of cases, each run for both protocols, each
//! protocol two ways: PostgreSQL with simple Queries and with the extended protocol, MySQL
//! with COM_QUERY and with prepared statements.
//!
//! Reading a row: a setup, then steps in protocol-neutral words. `Run(stmt, expect)` sends a
//! statement and checks what happened to it; `Then(event)` changes the world between
//! statements; `Send`/`Held`/`Await` split a statement that waits at the proxy.

mod client;
mod mysql_server;
mod postgres_server;
mod server;
mod world;

use Error::*;
use Event::*;
use Expect::*;
use Step::*;
use Stmt::*;
use Where::*;
use server::Fault::*;
use world::Setup;

/// Turns each row of the table below into a module per case with a test per protocol, and
/// two more with the session in transaction mode (`*_pooled`: PostgreSQL extended, MySQL
/// prepared). A row may end with `extended: "why"`, `prepared: "why"` or `pooled: "why"`:
/// that variant differs, and is ignored with that reason (`cargo test -- --ignored` shows
/// how).
macro_rules! table {
    ($($name:ident: $setup:expr, [$($step:expr),* $(,)?]
        $(extended: $why:literal)? $(prepared: $prepared:literal)?
        $(pooled: $pooled:literal)?;)*) => {
        $(
            mod $name {
                use super::*;

                const CASE: Case = Case { setup: $setup, steps: &[$($step),*] };

                #[tokio::test]
                async fn postgres() {
                    world::run(Proto::Postgres, &CASE).await;
                }

                #[tokio::test]
                $(#[ignore = $why])?
                async fn postgres_extended() {
                    world::run(Proto::PostgresExtended, &CASE).await;
                }

                #[tokio::test]
                async fn mysql() {
                    world::run(Proto::Mysql, &CASE).await;
                }

                #[tokio::test]
                $(#[ignore = $prepared])?
                async fn mysql_prepared() {
                    world::run(Proto::MysqlPrepared, &CASE).await;
                }

                #[tokio::test]
                $(#[ignore = $pooled])?
                async fn postgres_pooled() {
                    world::run_in(Proto::PostgresExtended, &CASE, "transaction").await;
                }

                #[tokio::test]
                $(#[ignore = $pooled])?
                async fn mysql_pooled() {
                    world::run_in(Proto::MysqlPrepared, &CASE, "transaction").await;
                }
            }
        )*
    };
}

/// One or two readers in cluster `old`; `new` adds cluster `new` (writer `nw`, reader `nr`).
const ONE_READER: Setup = Setup {
    readers: 1,
    new_cluster: false,
    read_your_writes: false,
    short_failover: false,
};
const TWO_READERS: Setup = Setup {
    readers: 2,
    ..ONE_READER
};
const TWO_CLUSTERS: Setup = Setup {
    new_cluster: true,
    ..ONE_READER
};

table! {
    a_read_goes_to_a_reader: ONE_READER, [
        Run(Read, On(R1)),
    ];
    a_write_goes_to_the_writer: ONE_READER, [
        Run(Write, On(W)),
    ];
    a_transaction_runs_on_the_writer_reads_included: ONE_READER, [
        Run(Begin, On(W)),
        Run(Read, On(W)),
        Run(Commit, On(W)),
        Run(Read, On(R1)),
    ];
    a_read_only_transaction_runs_on_a_reader: ONE_READER, [
        Run(BeginReadOnly, On(R1)),
        Run(Read, On(R1)),
        Run(Commit, On(R1)),
    ];
    // A ROLLBACK undoes a PostgreSQL SET, not a MySQL one, which is replayed as usual. The
    // PostgreSQL session is pinned until the transaction ends, then the setting's value is
    // read back and replayed (as `set_config`, which this scripted server answers too).
    a_set_inside_a_transaction_follows_the_session_once_the_transaction_ends: ONE_READER, [
        Run(Begin, On(W)),
        Run(Set, On(W)),
        Run(Commit, On(W)),
        Run(Read, ByDialect(&On(R1), &OnAfterSet(R1))),
    ];
    a_read_right_after_a_write_stays_on_the_writer: Setup { read_your_writes: true, ..ONE_READER }, [
        Run(Write, On(W)),
        Run(Read, On(W)),
    ];
    a_read_right_after_a_transaction_that_wrote_stays_on_the_writer: Setup { read_your_writes: true, ..ONE_READER }, [
        Run(Begin, On(W)),
        Run(Write, On(W)),
        Run(Read, On(W)),
        Run(Commit, On(W)),
        Run(Read, On(W)),
    ];
    without_read_your_writes_a_read_after_a_write_goes_to_a_reader: ONE_READER, [
        Run(Write, On(W)),
        Run(Read, On(R1)),
    ];
    a_set_is_replayed_on_the_reader_before_a_read: ONE_READER, [
        Run(Set, On(W)),
        Run(Read, OnAfterSet(R1)),
    ];
    a_reader_that_closes_before_answering_is_retried_on_another: TWO_READERS, [
        Run(Read, On(AnyReader)),
        Then(Break(SameReader, CloseBeforeAnswer)),
        Run(Read, Retried { from: SameReader, to: OtherReader }),
    ] pooled: "transaction mode holds no reader between reads: the closed connection is found closed in the pool and the read runs on a new one";
    a_read_whose_only_reader_closes_before_answering_is_retried_on_the_writer: ONE_READER, [
        Run(Read, On(R1)),
        Then(Break(R1, CloseBeforeAnswer)),
        Run(Read, Retried { from: R1, to: W }),
    ] pooled: "transaction mode holds no reader between reads: the closed connection is found closed in the pool and the read runs on a new one";
    a_reader_that_fails_mid_answer_fails_the_read: ONE_READER, [
        Run(Read, On(R1)),
        Then(Break(R1, CloseAfterFirstRow)),
        Run(Read, Fails(LostMidAnswer)),
    ];
    a_reader_removed_by_discovery_gets_no_more_reads: TWO_READERS, [
        Run(Read, On(AnyReader)),
        Then(Remove(SameReader)),
        Run(Read, On(OtherReader)),
    ];
    a_server_error_reaches_the_client_and_the_session_goes_on: ONE_READER, [
        Then(Break(W, AnswerError)),
        Run(Write, Fails(Relayed)),
        Run(Write, On(W)),
    ];
    a_read_only_cluster_refuses_writes_before_the_backend: ONE_READER, [
        Then(ReadOnly),
        Run(Write, Refused(WriteRefused)),
        Run(Read, On(R1)),
    ];
    a_pause_holds_a_write_until_resumed: ONE_READER, [
        Then(Pause),
        Send(Write),
        Held,
        Then(Resume),
        Await(On(W)),
    ];
    after_a_cutover_the_next_statement_runs_on_the_new_writer: TWO_CLUSTERS, [
        Run(Set, On(W)),
        Run(Read, On(R1)),
        Then(Cutover),
        Run(Write, OnAfterSet(NW)),
        Run(Read, OnAfterSet(NR)),
    ];
    a_pause_does_not_hold_reads: ONE_READER, [
        Then(Pause),
        Run(Read, On(R1)),
        Then(Resume),
    ];
    a_pause_lets_an_open_transaction_finish: ONE_READER, [
        Run(Begin, On(W)),
        Run(Write, On(W)),
        Then(Pause),
        Run(Write, On(W)),
        Run(Commit, On(W)),
        Send(Write),
        Held,
        Then(Resume),
        Await(On(W)),
    ];
    a_write_held_by_the_cutover_pause_runs_on_the_new_writer: TWO_CLUSTERS, [
        Run(Set, On(W)),
        Then(Pause),
        Send(Write),
        Held,
        Then(Switch),
        Await(OnAfterSet(NW)),
    ];
    after_a_cutover_reads_go_to_the_new_cluster_readers: TWO_CLUSTERS, [
        Run(Set, On(W)),
        Run(Read, OnAfterSet(R1)),
        Then(Cutover),
        Run(Read, OnAfterSet(NR)),
    ];
    a_cutover_waits_for_the_open_transaction_to_end: TWO_CLUSTERS, [
        Run(Begin, On(W)),
        Run(Write, On(W)),
        Then(Cutover),
        Run(Write, On(W)),
        Run(Commit, On(W)),
        Run(Write, On(NW)),
    ];
    a_pinned_session_cannot_follow_a_cutover: TWO_CLUSTERS, [
        Run(Pin, On(W)),
        Then(Cutover),
        Run(Write, Refused(CannotMove)),
    ];
    after_a_writer_failover_the_session_moves_to_the_promoted_writer: ONE_READER, [
        Run(Set, On(W)),
        Then(Promote(R1)),
        Run(Write, OnAfterSet(R1)),
    ];
    a_write_waits_for_a_promoted_writer_without_error: ONE_READER, [
        Run(Set, On(W)),
        Then(Crash(W)),
        Send(Write),
        Then(Promote(R1)),
        Await(OnAfterSet(R1)),
    ];
    after_a_failover_reads_go_to_the_promoted_writer_when_no_reader_is_left: ONE_READER, [
        Run(Read, On(R1)),
        Then(Promote(R1)),
        Run(Read, On(R1)),
        Run(Write, On(R1)),
    ];
    a_writer_that_crashes_under_a_write_leaves_its_outcome_unknown: ONE_READER, [
        Run(Set, On(W)),
        Then(Break(W, CrashBeforeAnswer)),
        Run(Write, Fails(OutcomeUnknown)),
        Then(Promote(R1)),
        Run(Write, OnAfterSet(R1)),
    ];
    a_transaction_whose_writer_crashed_is_rolled_back: ONE_READER, [
        Run(Begin, On(W)),
        Run(Write, On(W)),
        Then(Crash(W)),
        Run(Write, Refused(RolledBack)),
        Then(Promote(R1)),
        Run(Rollback, Succeeds),
        Run(Write, On(R1)),
    ];
    a_writer_connection_the_server_ended_alone_ends_the_session: ONE_READER, [
        Run(Write, On(W)),
        Then(Disconnect(W)),
        Run(Write, Refused(ConnectionLost)),
    ] pooled: "transaction mode holds no writer between statements: the ended connection is found closed in the pool and the write runs on a new one";
    no_usable_writer_within_failover_timeout_fails_the_write: Setup { short_failover: true, ..ONE_READER }, [
        Then(Crash(W)),
        Run(Write, Refused(NoWriter)),
    ];
    a_hint_sends_a_read_to_the_writer: ONE_READER, [
        Run(ReadOnWriter, On(W)),
        Run(Read, On(R1)),
    ];
    a_pinned_session_reads_on_the_writer: ONE_READER, [
        Run(Read, On(R1)),
        Run(Pin, On(W)),
        Run(Read, On(W)),
    ];
}

/// One row of the table.
struct Case {
    pub setup: Setup,
    pub steps: &'static [Step],
}

/// A step of a case.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Sends the statement and checks the outcome.
    Run(Stmt, Expect),
    /// Changes the world.
    Then(Event),
    /// Sends the statement without waiting for its answer.
    Send(Stmt),
    /// The statement sent waits at the proxy: held by a pause, and no server received it.
    Held,
    /// The answer to the statement sent, checked.
    Await(Expect),
}

/// A statement in protocol-neutral words; `Proto::sql` has the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stmt {
    Read,
    /// A read with the hint `/* switchyard:writer */`.
    ReadOnWriter,
    Write,
    Begin,
    /// `BEGIN READ ONLY` / `START TRANSACTION READ ONLY`.
    BeginReadOnly,
    Commit,
    Rollback,
    /// A session setting the proxy records and replays (search_path, a user variable).
    Set,
    /// Session state that cannot move: a temporary table.
    Pin,
}

/// An instance, by name: `old`'s writer and readers, `new`'s writer and reader, or the
/// reader the session read from last (the balancer picks among two at random).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    W,
    R1,
    NW,
    NR,
    /// Any reader of `old`; remembered as the session's reader.
    AnyReader,
    /// The reader remembered.
    SameReader,
    /// The other reader of `old`.
    OtherReader,
}

/// What the world does between statements, as discovery, health checks, a server or the
/// cutover controller would.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next statement (not a SET) reaching that server meets the fault.
    Break(Where, server::Fault),
    /// Discovery removes the reader from `old`.
    Remove(Where),
    /// The server closes every connection it has (an administrator's kill, an idle
    /// timeout) and stays up.
    Disconnect(Where),
    /// The server dies: its connections close and it takes no new one (health checks have
    /// not noticed yet).
    Crash(Where),
    /// `old`'s writer dies, and the reader is promoted in its place.
    Promote(Where),
    /// `old` becomes read-only.
    ReadOnly,
    Pause,
    Resume,
    /// A cutover's pause, fence and switch: `new` becomes the active cluster.
    Cutover,
    /// A cutover's fence and switch, `old` already paused.
    Switch,
}

/// What a statement's outcome must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// It ran there (last), and a read's row came from there.
    On(Where),
    /// As `On`, with the session's SET replayed there first, during this step.
    OnAfterSet(Where),
    /// A first server received it and failed; it ran on the second, with no error.
    Retried { from: Where, to: Where },
    /// The client got the error, and no server received the statement.
    Refused(Error),
    /// The client got the error.
    Fails(Error),
    /// No error; where it ran is not the point.
    Succeeds,
    /// The first for PostgreSQL, the second for MySQL: the two servers differ there.
    ByDialect(&'static Expect, &'static Expect),
}

/// An error the client sees, in protocol-neutral words; `Proto::code` has the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    /// A write to a read-only cluster.
    WriteRefused,
    /// The writer died while the statement ran: it may have committed.
    OutcomeUnknown,
    /// The writer died under an open transaction: none of it committed.
    RolledBack,
    /// No usable writer within `failover_timeout`: the statement did not run.
    NoWriter,
    /// The session holds state that cannot move to another writer: it ends.
    CannotMove,
    /// The connection broke under the statement.
    ConnectionLost,
    /// The reader's connection broke after part of the answer reached the client: the
    /// proxy's error follows what was relayed (MySQL: with the next sequence id).
    LostMidAnswer,
    /// The server's own error, relayed.
    Relayed,
}

/// The protocol a case runs with, and how its client sends statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// PostgreSQL, simple Query messages.
    Postgres,
    /// PostgreSQL, the extended protocol: each statement prepared (Parse, Describe, Sync),
    /// then bound and executed (Bind, Execute, Sync).
    PostgresExtended,
    Mysql,
    /// MySQL, each statement prepared (COM_STMT_PREPARE) and executed (COM_STMT_EXECUTE).
    MysqlPrepared,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Postgres => "postgres",
            Proto::PostgresExtended => "postgres-extended",
            Proto::Mysql => "mysql",
            Proto::MysqlPrepared => "mysql-prepared",
        }
    }

    /// The `protocol` of the proxy's config.
    pub fn protocol(self) -> &'static str {
        match self {
            Proto::Postgres | Proto::PostgresExtended => "postgres",
            Proto::Mysql | Proto::MysqlPrepared => "mysql",
        }
    }

    pub fn sql(self, stmt: Stmt) -> &'static str {
        let postgres = self.protocol() == "postgres";
        match (stmt, postgres) {
            (Read, _) => "SELECT name FROM who",
            (ReadOnWriter, _) => "/* switchyard:writer */ SELECT name FROM who",
            (Write, _) => "INSERT INTO t VALUES (1)",
            (Begin, _) => "BEGIN",
            (BeginReadOnly, true) => "BEGIN READ ONLY",
            (BeginReadOnly, false) => "START TRANSACTION READ ONLY",
            (Commit, _) => "COMMIT",
            (Rollback, _) => "ROLLBACK",
            (Set, true) => "SET search_path TO app",
            (Set, false) => "SET @x = 1",
            (Pin, true) => "CREATE TEMP TABLE tmp (id int)",
            (Pin, false) => "CREATE TEMPORARY TABLE tmp (id INT)",
        }
    }

    /// The code the client must see; `None`: any error will do (the driver's own, for a
    /// connection that broke mid-answer).
    pub fn code(self, error: Error) -> Option<&'static str> {
        let (postgres, mysql) = match error {
            WriteRefused => ("25006", "1290"),
            OutcomeUnknown => ("08007", "1053"),
            RolledBack => ("40001", "1213"),
            NoWriter => ("57P03", "1927"),
            CannotMove => ("57P01", "1053"),
            ConnectionLost => ("08006", ""),
            LostMidAnswer => ("08006", "1053"),
            Relayed => ("42P01", "1146"),
        };
        let code = match self.protocol() {
            "postgres" => postgres,
            _ => mysql,
        };
        (!code.is_empty()).then_some(code)
    }
}
