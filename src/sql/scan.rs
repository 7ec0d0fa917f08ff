//! One pass over all the tokens of a statement, whatever the statement is, noting what
//! turns a read into a write (FOR UPDATE, INTO, data-modifying CTEs, side-effect
//! functions) or pins the session (session-level locks), names what describes the node,
//! and collects the calls of functions only the catalog can judge.

use super::function::{FunctionId, Functions, describes_node, is_identity, known_read};
use super::keyword::{Effect, Kw, function_effect};
use super::lexer::Token;
use super::{Class, Dialect};

/// What one pass over a statement's tokens found, whatever the statement is.
pub(super) struct Scan<'a> {
    dialect: Dialect,
    /// The previous token's text if it was a word or quoted identifier (a function
    /// name when a `(` follows), else empty.
    prev_name: &'a [u8],
    prev_kw: Kw,
    /// The previous words were INTO [LOCAL|GLOBAL].
    after_into: bool,
    /// INSERT/UPDATE/DELETE/MERGE was just seen; a `(` next makes it a function call.
    pending_modify: bool,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE, LOCK IN SHARE MODE.
    locks_rows: bool,
    /// SELECT ... INTO (a new table, a variable, a file).
    into: bool,
    /// SELECT ... INTO TEMP table (PostgreSQL): a temporary table.
    into_temp: bool,
    /// INSERT/UPDATE/DELETE/MERGE as a statement (a data-modifying CTE).
    modifies: bool,
    /// A side-effect function, NEXT/PREVIOUS VALUE FOR, SQL_CALC_FOUND_ROWS.
    side_effect: bool,
    /// A MySQL user-variable assignment `@v := ...`.
    pub(super) assigns: bool,
    /// A function that takes session-level state.
    pins: bool,
    /// A relation or function that describes the node itself.
    node: bool,
    /// The word `serializable` (a PostgreSQL hot standby refuses serializable transactions).
    pub(super) serializable: bool,
    /// A PostgreSQL SET of the session's default transaction isolation (which the session
    /// follows, serializable or not), rather than some other SET naming `serializable`.
    pub(super) default_isolation: bool,
    /// The previous token was `AS` or `::`, so a name after it is an alias or a type.
    after_as_or_cast: bool,
    /// `prev_name` may be a function name: not an alias, a type or a keyword.
    prev_may_call: bool,
    /// Unknown functions called, and whether the statement is DDL.
    pub(super) functions: Functions,
}

impl<'a> Scan<'a> {
    pub(super) fn new(dialect: Dialect) -> Self {
        Scan {
            dialect,
            prev_name: &[],
            prev_kw: Kw::Other,
            after_into: false,
            pending_modify: false,
            locks_rows: false,
            into: false,
            into_temp: false,
            modifies: false,
            side_effect: false,
            assigns: false,
            pins: false,
            node: false,
            serializable: false,
            default_isolation: false,
            after_as_or_cast: false,
            prev_may_call: false,
            functions: Functions::NONE,
        }
    }

    #[inline(always)]
    pub(super) fn feed(&mut self, tok: Token<'a>) {
        if self.pending_modify {
            self.pending_modify = false;
            // MySQL's INSERT(str, pos, len, new) is a string function.
            self.modifies |= !tok.is_punct(b'(');
        }
        let after_into = std::mem::take(&mut self.after_into);
        match tok {
            Token::Word(word, kw) => match kw {
                Kw::Insert | Kw::Delete | Kw::Merge => self.pending_modify = true,
                Kw::Update => {
                    self.locks_rows |= self.prev_kw == Kw::For;
                    self.pending_modify = true;
                }
                Kw::Share | Kw::No | Kw::Key => self.locks_rows |= self.prev_kw == Kw::For,
                Kw::In => self.locks_rows |= self.prev_kw == Kw::Lock,
                Kw::Into => {
                    self.into = true;
                    self.after_into = true;
                }
                Kw::Local | Kw::Global => self.after_into = after_into,
                Kw::Temp | Kw::Temporary => self.into_temp |= after_into,
                Kw::Value => {
                    self.side_effect |= matches!(self.prev_kw, Kw::Next | Kw::Previous);
                }
                Kw::Other => {
                    self.side_effect |= word.len() == 19
                        && self.dialect == Dialect::MySql
                        && word.eq_ignore_ascii_case(b"sql_calc_found_rows");
                    self.serializable |= is_serializable(word);
                    self.node |= describes_node(word, self.dialect);
                }
                _ => {}
            },
            Token::QuotedIdent(name) => self.node |= describes_node(name, self.dialect),
            Token::String(text) => self.serializable |= is_serializable(text),
            Token::Punct(b'(') => match function_effect(self.prev_name, self.dialect) {
                Some(Effect::Write) => self.side_effect = true,
                Some(Effect::Pin) => self.pins = true,
                None if self.prev_may_call && !describes_node(self.prev_name, self.dialect) => {
                    let id = FunctionId::of(self.prev_name);
                    if !known_read(id, self.dialect) {
                        self.functions.add(id);
                    }
                }
                None if self.prev_may_call => {
                    self.functions.identity |= is_identity(self.prev_name, self.dialect);
                }
                None => {}
            },
            Token::Assign => self.assigns |= self.dialect == Dialect::MySql,
            _ => {}
        }
        let after_as_or_cast = std::mem::replace(
            &mut self.after_as_or_cast,
            match tok {
                Token::Word(word, _) => word.len() == 2 && word.eq_ignore_ascii_case(b"as"),
                Token::Punct(b':') => true,
                _ => false,
            },
        );
        (self.prev_name, self.prev_may_call) = match tok {
            Token::Word(name, Kw::Other) | Token::QuotedIdent(name) => (name, !after_as_or_cast),
            Token::Word(name, _) => (name, false),
            _ => (&[][..], false),
        };
        self.prev_kw = tok.kw();
    }

    fn writes(&self) -> bool {
        self.locks_rows
            || self.into
            || self.modifies
            || self.pending_modify
            || self.side_effect
            || self.assigns
    }

    /// `class` as changed by what the scan found: session locks pin; a read that writes
    /// is a write (SELECT INTO TEMP pins); session state set from a side effect pins.
    pub(super) fn adjust(&self, class: Class) -> Class {
        if self.pins {
            return Class::Pin;
        }
        match class {
            Class::Read if self.into_temp => Class::Pin,
            Class::Read if self.writes() => Class::Write,
            Class::Read if self.node => Class::Node,
            Class::SessionSet | Class::Autocommit(_) if self.writes() => Class::Pin,
            // A serializable session default the session cannot follow (one it follows
            // sends its reads to the writer, `sql::postgres_default_isolation`).
            Class::SessionSet
                if self.serializable
                    && !self.default_isolation
                    && self.dialect == Dialect::Postgres =>
            {
                Class::Pin
            }
            other => other,
        }
    }
}

#[inline(always)]
fn is_serializable(word: &[u8]) -> bool {
    word.len() == 12 && word.eq_ignore_ascii_case(b"serializable")
}
