//! `pg_cancel_backend(pid)` and `pg_terminate_backend(pid [, timeout])` naming a pooled
//! client's pid (one of the proxy's, which no server knows), answered by the proxy as the
//! server answers them for its own processes, whether sent as a simple Query or as an
//! extended-protocol batch (Parse, Bind, Describe, Execute up to Sync; each argument a
//! literal or a parameter, in text or binary); and the end of a session another client
//! terminated, as the server ends a terminated backend: FATAL `57P01`, then the connection
//! closes. Outside transactions only; pids below the proxy's range are the server's.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::cancel::{self, Signalled};
use super::scan::{Ending, Prepared, Unit};
use super::{Session, SessionError};
use crate::protocol::postgres::extended::{self, Bind, INT4_OID, INT8_OID, TEXT};
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::sqlstate;
use crate::router::Target;
use crate::sql::{Arg, Class, Signal, SignalCall, signal_call};

/// What the server tells a terminated backend's client before it closes the connection.
pub(super) const TERMINATED: &str = "terminating connection due to administrator command";

/// The FATAL a terminated session's client gets.
pub(super) fn terminated_fatal(out: &mut BytesMut) {
    messages::error_response(out, Severity::Fatal, sqlstate::ADMIN_SHUTDOWN, TERMINATED);
}

/// A signal call with its arguments known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resolved {
    signal: Signal,
    pid: i64,
    timeout: Option<i64>,
}

/// What the proxy answers for one message of a unit it runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ParseComplete,
    BindComplete,
    /// Describe of the statement: ParameterDescription, and the column in text.
    DescribeStatement,
    /// Describe of the portal (and a simple Query's description): the column in the format
    /// asked for.
    DescribePortal,
    Execute,
    Sync,
}

/// A unit that runs one signal call and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Batch {
    call: Resolved,
    /// The statement's parameter types, as ParameterDescription tells them.
    types: Vec<u32>,
    /// The result column's format.
    format: i16,
    steps: Vec<Step>,
}

impl Session {
    /// The call to answer, and the transaction status to answer it in, when `unit` is a
    /// signal call of a pid of the proxy's (see the module's note): answered with
    /// [`Session::answer_signal`], out of line. Synchronous, as every statement asks.
    pub(super) fn signal_call(&self, unit: &Unit) -> Option<(Batch, u8)> {
        // Inside a transaction on the writer (what drivers that do not autocommit run
        // everything in) the call leaves the transaction as it was, as on a server, so
        // long as that transaction is healthy; one that failed, or lost its writer, is
        // the server's (or the failover's) to answer.
        let status = match self.view.in_transaction {
            None => b'I',
            Some(Target::Writer)
                if self.side.status == b'T' && !self.side.loss_untold && self.writer.is_some() =>
            {
                b'T'
            }
            Some(_) => return None,
        };
        // The functions are classified as writes: anything else is not one of these.
        let may_be =
            unit.ending == Ending::Ready && unit.stmt.class == Class::Write && unit.stmt.count == 1;
        if !may_be {
            return None;
        }
        let bytes = &self.side.client.buf[..unit.end];
        let batch = match unit.first_tag {
            tag::QUERY => simple(bytes),
            tag::FUNCTION_CALL => None,
            _ if unit.executes => extended(bytes, &unit.refs),
            _ => None,
        };
        let batch = batch.filter(|b| cancel::proxy_pid(b.call.pid).is_some())?;
        // An error here would fail the client's transaction but not the server's: the
        // calls the server refuses (a negative timeout; another backend user's pid, which
        // it answers with a WARNING and false) go to it instead.
        if status == b'T' && !self.signal_allowed(batch.call) {
            return None;
        }
        // Every write statement passes the checks above; few get here.
        Some((batch, status))
    }

    /// Answers `unit`, the signal call `batch`, in transaction status `status` (its bytes
    /// are then consumed).
    pub(super) async fn answer_signal(
        &mut self,
        unit: &Unit,
        batch: Batch,
        status: u8,
    ) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        let function = batch.call.signal.function();
        let mut failed = false;
        for step in &batch.steps {
            match step {
                Step::Sync => messages::ready_for_query(&mut out, status),
                _ if failed => {}
                Step::ParseComplete => messages::parse_complete(&mut out),
                Step::BindComplete => messages::bind_complete(&mut out),
                Step::DescribeStatement => {
                    messages::parameter_description(&mut out, &batch.types);
                    messages::bool_column(&mut out, function, TEXT);
                }
                Step::DescribePortal => messages::bool_column(&mut out, function, batch.format),
                Step::Execute => {
                    failed = !self.run_signal(batch.call, batch.format, &mut out).await
                }
            }
        }
        self.answer_with(unit.end, &out).await
    }

    /// Whether `call` is one the proxy answers without an error: a timeout that is not
    /// negative, and a pid that is no client's or one of the same backend user's.
    fn signal_allowed(&self, call: Resolved) -> bool {
        let Some(pid) = cancel::proxy_pid(call.pid) else {
            return false;
        };
        let user = &self.creds.user;
        call.timeout.is_none_or(|t| t >= 0) && self.ctx.cancels.owner_is(pid, user) != Some(false)
    }

    /// Sends the signal and writes what Execute answers (DataRow and CommandComplete, a
    /// WARNING before them where the server gives one); `false` when it wrote an error.
    async fn run_signal(&self, call: Resolved, format: i16, out: &mut BytesMut) -> bool {
        let Some(pid) = cancel::proxy_pid(call.pid) else {
            return false;
        };
        if call.timeout.is_some_and(|t| t < 0) {
            let code = sqlstate::INVALID_PARAMETER_VALUE;
            messages::error_response(
                out,
                Severity::Error,
                code,
                "\"timeout\" must not be negative",
            );
            return false;
        }
        // A client that terminates itself cannot wait for its own end (a server's backend
        // ends in that wait).
        let own = self.side.scanner.identity == Some(pid as u32);
        let timeout = call.timeout.filter(|t| *t > 0 && !own);
        let wait = timeout.map(|t| Duration::from_millis(t.unsigned_abs()));
        let user = &self.creds.user;
        let signalled = self
            .ctx
            .cancels
            .signal_pid(pid, user, call.signal, wait)
            .await;
        let ended = matches!(signalled, Signalled::Sent | Signalled::Lingers);
        if call.signal == Signal::Terminate && ended {
            tracing::info!(
                pid,
                "a client terminated a pooled client with pg_terminate_backend"
            );
        }
        let sent = match signalled {
            Signalled::Sent => true,
            Signalled::Failed => false,
            Signalled::Lingers => {
                let t = timeout.unwrap_or_default();
                let unit = if t == 1 {
                    "millisecond"
                } else {
                    "milliseconds"
                };
                let message = format!("backend with PID {pid} did not terminate within {t} {unit}");
                messages::warning(out, sqlstate::WARNING, &message);
                false
            }
            Signalled::NoSuchProcess => {
                let message = format!("PID {pid} is not a PostgreSQL backend process");
                messages::warning(out, sqlstate::WARNING, &message);
                false
            }
            Signalled::NotPermitted => {
                let message = match call.signal {
                    Signal::Cancel => {
                        "must be a member of the role whose query is being canceled or member of pg_signal_backend"
                    }
                    Signal::Terminate => {
                        "must be a member of the role whose process is being terminated or member of pg_signal_backend"
                    }
                };
                let code = sqlstate::INSUFFICIENT_PRIVILEGE;
                messages::error_response(out, Severity::Error, code, message);
                return false;
            }
        };
        messages::bool_value(out, sent, format);
        messages::command_complete(out, "SELECT 1");
        true
    }

    /// Another client terminated this session between its units (or before its unit ran):
    /// its connections go back to their pools (reset), and the client is told as a server
    /// tells a terminated backend's client.
    pub(super) async fn end_terminated(&mut self) -> SessionError {
        self.release_backends();
        let mut out = BytesMut::new();
        terminated_fatal(&mut out);
        // The session ends right after, so a failed write changes nothing.
        let _ = self.side.client.stream.write_all(&out).await;
        SessionError::Killed
    }
}

/// A simple Query of one signal call with literal arguments.
fn simple(bytes: &[u8]) -> Option<Batch> {
    let (_, body) = frame::message(bytes, usize::MAX).ok()??;
    let sql = messages::query_text(body)?;
    if !mentions_backend(sql) {
        return None;
    }
    let call = signal_call(sql)?;
    (call.params()? == 0).then_some(())?;
    Some(Batch {
        call: resolve(&call, None, &[])?.0,
        types: Vec::new(),
        format: TEXT,
        steps: vec![Step::DescribePortal, Step::Execute, Step::Sync],
    })
}

/// Whether `sql` may call one of the functions: a cheap test before the lexer.
pub(super) fn mentions_backend(sql: &[u8]) -> bool {
    sql.iter().enumerate().any(|(at, b)| {
        *b == b'_'
            && sql
                .get(at..at + 8)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"_backend"))
    })
}

/// An extended batch (its bytes, and the statements its messages name, in order) that
/// binds and executes one signal call: Parse, Bind, Describe of that statement or portal,
/// one Execute, and its Sync; `None` for anything else.
fn extended(bytes: &[u8], refs: &[Option<Arc<Prepared>>]) -> Option<Batch> {
    let first = refs.iter().flatten().next()?;
    if !first.names_backend {
        return None;
    }
    let mut refs = refs.iter();
    let mut statement: Option<&Arc<Prepared>> = None;
    let mut bind: Option<Bind<'_>> = None;
    let mut steps = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (h, body) = frame::message(&bytes[at..], usize::MAX).ok()??;
        at += h.total;
        let step = match h.tag {
            tag::PARSE => {
                same(&mut statement, refs.next()?.as_ref()?)?;
                Step::ParseComplete
            }
            tag::BIND if bind.is_none() => {
                same(&mut statement, refs.next()?.as_ref()?)?;
                bind = Some(Bind::parse(body)?);
                Step::BindComplete
            }
            tag::DESCRIBE => match messages::target_fields(body)? {
                (b'S', _) => {
                    same(&mut statement, refs.next()?.as_ref()?)?;
                    Step::DescribeStatement
                }
                (_, portal) if bind.as_ref().is_some_and(|b| b.portal == portal) => {
                    Step::DescribePortal
                }
                _ => return None,
            },
            tag::EXECUTE if !steps.contains(&Step::Execute) => {
                let portal = messages::execute_portal(body)?;
                bind.as_ref().filter(|b| b.portal == portal)?;
                Step::Execute
            }
            tag::SYNC if at == bytes.len() => Step::Sync,
            _ => return None,
        };
        steps.push(step);
    }
    let statement = statement?;
    let bind = bind?;
    if !steps.contains(&Step::Execute) {
        return None;
    }
    let call = signal_call(statement.sql()?.as_bytes())?;
    let declared = extended::parse_param_types(statement.parse.get(frame::HEADER_LEN..)?)?;
    let (call, types) = resolve(&call, Some(&bind), &declared)?;
    Some(Batch {
        call,
        types,
        format: bind.result_format(0, 1)?,
        steps,
    })
}

/// Keeps `p` as the batch's statement: the first one named, which must be a signal call,
/// and every later message must name that one.
fn same<'a>(statement: &mut Option<&'a Arc<Prepared>>, p: &'a Arc<Prepared>) -> Option<()> {
    match statement {
        Some(s) => Arc::ptr_eq(s, p).then_some(()),
        None => {
            *statement = Some(p);
            Some(())
        }
    }
}

/// The call's arguments, from its literals and the Bind's values, and the statement's
/// parameter types; `None` where the server's answer would differ from the function's (a
/// parameter of another type, a NULL, a value that does not read, a Bind that does not
/// fit the statement): the server then answers.
fn resolve(
    call: &SignalCall,
    bind: Option<&Bind<'_>>,
    declared: &[u32],
) -> Option<(Resolved, Vec<u32>)> {
    let params = usize::from(call.params()?);
    if declared.len() > params || bind.map_or(0, |b| b.values.len()) != params {
        return None;
    }
    let mut types = vec![0; params];
    for (arg, inferred, allowed) in [
        (Some(call.pid), INT4_OID, &[INT4_OID][..]),
        (call.timeout, INT8_OID, &[INT4_OID, INT8_OID][..]),
    ] {
        if let Some(Arg::Param(n)) = arg {
            let index = usize::from(n).checked_sub(1)?;
            let oid = match declared.get(index) {
                None | Some(0) => inferred,
                Some(oid) => *oid,
            };
            if !allowed.contains(&oid) {
                return None;
            }
            *types.get_mut(index)? = oid;
        }
    }
    let value = |arg: Arg| -> Option<i64> {
        match arg {
            Arg::Literal(v) => Some(v),
            Arg::Param(n) => {
                let index = usize::from(n).checked_sub(1)?;
                let bind = bind?;
                let value = (*bind.values.get(index)?)?;
                extended::integer(value, bind.param_format(index)?, *types.get(index)?)
            }
        }
    };
    let resolved = Resolved {
        signal: call.signal,
        pid: value(call.pid)?,
        timeout: match call.timeout {
            Some(t) => Some(value(t)?),
            None => None,
        },
    };
    Some((resolved, types))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::extended::BINARY;
    use crate::session::postgres::scan::tests::msg;

    fn prepared(name: &str, sql: &str, types: &[u32]) -> Arc<Prepared> {
        let mut parse = BytesMut::new();
        let mut body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0"].concat();
        body.extend_from_slice(&(types.len() as i16).to_be_bytes());
        types
            .iter()
            .for_each(|t| body.extend_from_slice(&t.to_be_bytes()));
        msg(&mut parse, b'P', &body);
        Arc::new(Prepared {
            name: name.as_bytes().to_vec(),
            parse: parse.freeze(),
            class: crate::sql::classify(sql, crate::sql::Dialect::Postgres),
            names_backend: mentions_backend(sql.as_bytes()),
            described: Default::default(),
        })
    }

    /// A Bind of `stmt` to the unnamed portal with `values` in `format`, results in `result`.
    fn bind(out: &mut BytesMut, stmt: &str, format: i16, values: &[&[u8]], result: i16) {
        let mut body = [b"\0", stmt.as_bytes(), b"\0"].concat();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
        body.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
        }
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&result.to_be_bytes());
        msg(out, b'B', &body);
    }

    fn resolved(signal: Signal, pid: i64, timeout: Option<i64>) -> Resolved {
        Resolved {
            signal,
            pid,
            timeout,
        }
    }

    #[test]
    fn a_simple_query_with_literals() {
        let mut q = BytesMut::new();
        msg(
            &mut q,
            b'Q',
            b"SELECT pg_terminate_backend(1073741825, 250)\0",
        );
        let batch = simple(&q).unwrap();
        assert_eq!(
            batch.call,
            resolved(Signal::Terminate, 1073741825, Some(250))
        );
        assert_eq!(batch.format, TEXT);
        let mut q = BytesMut::new();
        msg(&mut q, b'Q', b"SELECT pg_cancel_backend($1)\0");
        assert_eq!(simple(&q), None, "a parameter without a Bind");
    }

    #[test]
    fn a_prepared_call_bound_in_binary_as_tokio_postgres_sends_it() {
        let p = prepared("s0", "SELECT pg_cancel_backend($1)", &[]);
        let mut b = BytesMut::new();
        bind(
            &mut b,
            "s0",
            BINARY,
            &[&0x4000_0002i32.to_be_bytes()],
            BINARY,
        );
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'S', b"");
        let batch = extended(&b, &[Some(Arc::clone(&p))]).unwrap();
        assert_eq!(batch.call, resolved(Signal::Cancel, 0x4000_0002, None));
        assert_eq!(batch.types, [INT4_OID]);
        assert_eq!(batch.format, BINARY);
        assert_eq!(batch.steps, [Step::BindComplete, Step::Execute, Step::Sync]);
    }

    #[test]
    fn a_whole_batch_in_text_as_jdbc_sends_it() {
        let p = prepared("", "SELECT pg_terminate_backend($1, $2)", &[INT4_OID, 0]);
        let mut b = BytesMut::new();
        b.extend_from_slice(&p.parse);
        bind(&mut b, "", TEXT, &[b"1073741826", b"1000"], TEXT);
        msg(&mut b, b'D', b"P\0");
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'S', b"");
        let refs = [Some(Arc::clone(&p)), Some(Arc::clone(&p))];
        let batch = extended(&b, &refs).unwrap();
        assert_eq!(
            batch.call,
            resolved(Signal::Terminate, 1073741826, Some(1000))
        );
        assert_eq!(batch.types, [INT4_OID, INT8_OID]);
        use Step::*;
        assert_eq!(
            batch.steps,
            [ParseComplete, BindComplete, DescribePortal, Execute, Sync]
        );
    }

    #[test]
    fn anything_else_is_the_servers() {
        type Case<'a> = (&'a str, &'a [u32], &'a [&'a [u8]]);
        let cases: [Case<'_>; 5] = [
            // A parameter declared of another type: the server resolves another function.
            (
                "SELECT pg_cancel_backend($1)",
                &[INT8_OID],
                &[b"1073741825"],
            ),
            // A value that does not read as the parameter's type.
            ("SELECT pg_cancel_backend($1)", &[], &[b"x"]),
            // Too many values.
            ("SELECT pg_cancel_backend($1)", &[], &[b"1", b"2"]),
            // Another statement.
            ("SELECT $1::int", &[], &[b"1073741825"]),
            ("SELECT pg_cancel_backend($1), 1", &[], &[b"1073741825"]),
        ];
        for (sql, types, values) in cases {
            let p = prepared("s", sql, types);
            let mut b = BytesMut::new();
            bind(&mut b, "s", TEXT, values, TEXT);
            msg(&mut b, b'E', b"\0\0\0\0\0");
            msg(&mut b, b'S', b"");
            assert_eq!(extended(&b, &[Some(p)]), None, "{sql}");
        }
        // Two Executes, or a Bind of an unknown statement.
        let p = prepared("s", "SELECT pg_cancel_backend(1073741825)", &[]);
        let mut b = BytesMut::new();
        bind(&mut b, "s", TEXT, &[], TEXT);
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'S', b"");
        assert_eq!(extended(&b, &[Some(Arc::clone(&p))]), None);
        let mut b = BytesMut::new();
        bind(&mut b, "s", TEXT, &[], TEXT);
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'S', b"");
        assert_eq!(extended(&b, &[None]), None);
        assert!(extended(&b, &[Some(p)]).is_some(), "the literal form");
    }
}
