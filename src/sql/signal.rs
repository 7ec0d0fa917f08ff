//! `SELECT pg_cancel_backend(pid)` and `SELECT pg_terminate_backend(pid [, timeout])` written
//! plainly (one call, the whole statement, a literal or a `$n` parameter for each argument):
//! a pooled client's pid is the proxy's own (see `identity`), which no server knows, so the
//! proxy answers such a call itself. Anything else is left to the server.

use super::Dialect;
use super::lexer::{Lexer, Token};

/// The signal a call sends to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `pg_cancel_backend`: cancel the statement running now.
    Cancel,
    /// `pg_terminate_backend`: end the session.
    Terminate,
}

impl Signal {
    /// The function's name, which is also the result column's.
    pub fn function(self) -> &'static str {
        match self {
            Signal::Cancel => "pg_cancel_backend",
            Signal::Terminate => "pg_terminate_backend",
        }
    }
}

/// An argument of a call: an integer literal, or a parameter `$n` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Literal(i64),
    Param(u16),
}

/// One plain call of a signal function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalCall {
    pub signal: Signal,
    pub pid: Arg,
    /// `pg_terminate_backend`'s second argument (milliseconds), when given.
    pub timeout: Option<Arg>,
}

impl SignalCall {
    /// How many parameters the statement takes: its `$n` must be exactly `$1` (and `$2`),
    /// else the server's own answer (an error) is the right one. `None` when they are not.
    pub fn params(&self) -> Option<u16> {
        let numbers: Vec<u16> = [Some(self.pid), self.timeout]
            .into_iter()
            .flatten()
            .filter_map(|a| match a {
                Arg::Param(n) => Some(n),
                Arg::Literal(_) => None,
            })
            .collect();
        match numbers.as_slice() {
            [] => Some(0),
            [1] => Some(1),
            [1, 2] | [2, 1] => Some(2),
            _ => None,
        }
    }
}

/// The call `sql` is, when it is one plain `SELECT [pg_catalog.]pg_cancel_backend(pid)` or
/// `SELECT [pg_catalog.]pg_terminate_backend(pid [, timeout])` (a trailing `;` allowed).
pub fn signal_call(sql: &[u8]) -> Option<SignalCall> {
    let statements = Lexer::new(sql, Dialect::Postgres).statements();
    let [tokens] = statements.as_slice() else {
        return None;
    };
    let (select, rest) = tokens.split_first()?;
    if !word(*select, b"select") {
        return None;
    }
    let rest = match rest {
        [schema, dot, rest @ ..] if word(*schema, b"pg_catalog") && dot.is_punct(b'.') => rest,
        rest => rest,
    };
    let (function, rest) = rest.split_first()?;
    let signal = if word(*function, b"pg_cancel_backend") {
        Signal::Cancel
    } else if word(*function, b"pg_terminate_backend") {
        Signal::Terminate
    } else {
        return None;
    };
    let inner = match rest {
        [open, inner @ .., close] if open.is_punct(b'(') && close.is_punct(b')') => inner,
        _ => return None,
    };
    let mut args = inner.split(|t| t.is_punct(b','));
    let pid = arg(args.next()?)?;
    let timeout = args.next().map(arg);
    if args.next().is_some() {
        return None;
    }
    let timeout = match (signal, timeout) {
        (_, None) => None,
        (Signal::Terminate, Some(t)) => Some(t?),
        (Signal::Cancel, Some(_)) => return None,
    };
    Some(SignalCall {
        signal,
        pid,
        timeout,
    })
}

fn word(token: Token<'_>, wanted: &[u8]) -> bool {
    matches!(token, Token::Word(w, _) if w.eq_ignore_ascii_case(wanted))
}

/// One argument: an integer literal (with a sign) or a parameter.
fn arg(tokens: &[Token<'_>]) -> Option<Arg> {
    let (negative, tokens) = match tokens {
        [sign, rest @ ..] if sign.is_punct(b'-') => (true, rest),
        [sign, rest @ ..] if sign.is_punct(b'+') => (false, rest),
        rest => (false, rest),
    };
    match tokens {
        [Token::Number(digits)] if digits.iter().all(u8::is_ascii_digit) => {
            let n: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            Some(Arg::Literal(if negative { -n } else { n }))
        }
        [Token::Param(digits)] if !negative => {
            Some(Arg::Param(std::str::from_utf8(digits).ok()?.parse().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(signal: Signal, pid: Arg, timeout: Option<Arg>) -> Option<SignalCall> {
        Some(SignalCall {
            signal,
            pid,
            timeout,
        })
    }

    #[test]
    fn only_plain_calls_are_read() {
        use Arg::{Literal, Param};
        use Signal::{Cancel, Terminate};
        let read = |sql: &str| signal_call(sql.as_bytes());
        let table = [
            (
                "SELECT pg_cancel_backend(1073741825)",
                call(Cancel, Literal(1073741825), None),
            ),
            (
                "select PG_CANCEL_BACKEND( 12 );",
                call(Cancel, Literal(12), None),
            ),
            ("SELECT pg_cancel_backend($1)", call(Cancel, Param(1), None)),
            (
                "SELECT pg_catalog.pg_terminate_backend(12)",
                call(Terminate, Literal(12), None),
            ),
            (
                "SELECT pg_terminate_backend($1, 500)",
                call(Terminate, Param(1), Some(Literal(500))),
            ),
            (
                "SELECT pg_terminate_backend(7, -1)",
                call(Terminate, Literal(7), Some(Literal(-1))),
            ),
            (
                "SELECT pg_terminate_backend($1, $2)",
                call(Terminate, Param(1), Some(Param(2))),
            ),
            ("SELECT pg_cancel_backend(12), 1", None),
            ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity", None),
            ("SELECT pg_cancel_backend(1); SELECT 1", None),
            ("SELECT pg_cancel_backend(1, 2)", None),
            ("SELECT pg_terminate_backend(1, 2, 3)", None),
            ("SELECT pg_terminate_backend(1.5)", None),
            ("SELECT pg_terminate_backend(-$1)", None),
            ("SELECT pg_terminate_backend()", None),
            ("SELECT pg_terminate_backend(1) AS t", None),
            ("SELECT other.pg_terminate_backend(1)", None),
        ];
        for (sql, want) in table {
            assert_eq!(read(sql), want, "{sql}");
        }
    }

    #[test]
    fn parameters_must_be_the_first_ones() {
        let params = |sql: &str| signal_call(sql.as_bytes()).and_then(|c| c.params());
        assert_eq!(params("SELECT pg_cancel_backend(5)"), Some(0));
        assert_eq!(params("SELECT pg_cancel_backend($1)"), Some(1));
        assert_eq!(params("SELECT pg_terminate_backend(5, $1)"), Some(1));
        assert_eq!(params("SELECT pg_terminate_backend($2, $1)"), Some(2));
        assert_eq!(params("SELECT pg_cancel_backend($2)"), None);
        assert_eq!(params("SELECT pg_terminate_backend($1, $1)"), None);
    }
}
