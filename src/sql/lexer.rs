//! Splits SQL text into the few token kinds the classifier needs, skipping comments,
//! string bodies, quoted identifiers and dollar-quoted bodies so that no keyword inside
//! them is ever seen, and picking routing hints out of comments on the way.
//!
//! It works on bytes (in any client encoding), so no input can make it panic; an
//! unterminated string or comment simply runs to the end of the input.

use super::keyword::{Kw, keyword_at};
use super::{Dialect, Hint};

/// One token. Slices borrow the input; escapes are left as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// An unquoted identifier or keyword, and the keyword it spells (`Kw::Other` if none).
    Word(&'a [u8], Kw),
    /// The body of a quoted identifier: `"x"` (PostgreSQL) or `` `x` `` (MySQL).
    QuotedIdent(&'a [u8]),
    /// The body of a string literal, including E'', B'', X'', U&'' and `$tag$` bodies.
    String(&'a [u8]),
    /// A numeric literal.
    Number(&'a [u8]),
    /// A PostgreSQL positional parameter (`$1`): its digits.
    Param(&'a [u8]),
    /// `:=`
    Assign,
    /// Any other byte: punctuation, operators, `;`.
    Punct(u8),
}

impl Token<'_> {
    /// The keyword this token spells; `Kw::Other` if it is not a keyword.
    pub(crate) fn kw(self) -> Kw {
        match self {
            Token::Word(_, kw) => kw,
            _ => Kw::Other,
        }
    }

    pub(crate) fn is(self, kw: Kw) -> bool {
        self.kw() == kw
    }

    pub(crate) fn is_punct(self, byte: u8) -> bool {
        self == Token::Punct(byte)
    }
}

/// A cursor over SQL text that yields tokens.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    dialect: Dialect,
    /// Inside a MySQL `/*! ... */` comment, whose body is code.
    in_version_comment: bool,
    hint: Option<Hint>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(sql: &'a [u8], dialect: Dialect) -> Self {
        Lexer {
            src: sql,
            pos: 0,
            dialect,
            in_version_comment: false,
            hint: None,
        }
    }

    /// The routing hint found in the comments passed so far (`Writer` wins over `Reader`).
    pub(crate) fn hint(&self) -> Option<Hint> {
        self.hint
    }

    /// Where the next token starts looking: the end of the last token returned.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    fn mysql(&self) -> bool {
        self.dialect == Dialect::MySql
    }

    fn byte_at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    /// The tokens of each statement of the input, split at `;` (empty statements left out).
    /// For the few callers that read a whole statement at a time (not the classifier).
    pub(crate) fn statements(mut self) -> Vec<Vec<Token<'a>>> {
        let mut out = Vec::new();
        let mut current = Vec::new();
        while let Some(tok) = self.next_token() {
            if tok.is_punct(b';') {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            } else {
                current.push(tok);
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }

    /// The next token, or `None` at the end of the input.
    #[inline(always)]
    pub(crate) fn next_token(&mut self) -> Option<Token<'a>> {
        loop {
            let start = self.pos;
            let b = self.byte_at(start)?;
            let class = CLASS[usize::from(b)];
            if class & SPACE != 0 {
                self.pos = start + 1;
            } else if class & WORD_START != 0 {
                return Some(self.word(start));
            } else if class & SPECIAL == 0 {
                self.pos = start + 1;
                return Some(Token::Punct(b));
            } else if let Some(token) = self.special(start, b) {
                return Some(token);
            }
        }
    }

    /// The token at a byte of the `SPECIAL` class, or `None` after skipping a comment
    /// or entering or leaving a MySQL version comment, whose body is code.
    fn special(&mut self, start: usize, b: u8) -> Option<Token<'a>> {
        let next = self.byte_at(start + 1);
        let token = match b {
            b'\'' => {
                self.pos = start + 1;
                Token::String(self.quoted(b'\'', self.mysql()))
            }
            b'"' if self.mysql() => {
                self.pos = start + 1;
                Token::String(self.quoted(b'"', true))
            }
            b'"' => {
                self.pos = start + 1;
                Token::QuotedIdent(self.quoted(b'"', false))
            }
            b'`' if self.mysql() => {
                self.pos = start + 1;
                Token::QuotedIdent(self.quoted(b'`', false))
            }
            b'$' if self.mysql() => self.word(start),
            b'$' => self.dollar(),
            b'0'..=b'9' => {
                self.pos = self.scan_while(start + 1, NUMBER);
                Token::Number(&self.src[start..self.pos])
            }
            b':' if next == Some(b'=') => {
                self.pos = start + 2;
                Token::Assign
            }
            b'-' if next == Some(b'-') && self.dash_comment_at(start) => {
                self.line_comment(start + 2);
                return None;
            }
            b'#' if self.mysql() => {
                self.line_comment(start + 1);
                return None;
            }
            b'/' if next == Some(b'*') => {
                self.block_comment();
                return None;
            }
            b'*' if self.in_version_comment && next == Some(b'/') => {
                self.in_version_comment = false;
                self.pos = start + 2;
                return None;
            }
            _ => {
                self.pos = start + 1;
                Token::Punct(b)
            }
        };
        Some(token)
    }

    /// An unquoted word; in PostgreSQL `E'...'` is an escape string, not a word.
    #[inline(always)]
    fn word(&mut self, start: usize) -> Token<'a> {
        self.pos = self.scan_while(start + 1, WORD);
        let len = self.pos - start;
        if len == 1
            && self.src[start] | 0x20 == b'e'
            && !self.mysql()
            && self.byte_at(self.pos) == Some(b'\'')
        {
            self.pos += 1;
            return Token::String(self.quoted(b'\'', true));
        }
        Token::Word(&self.src[start..self.pos], keyword_at(self.src, start, len))
    }

    /// The body of a quoted token whose opening quote was just consumed. A doubled
    /// quote is an escaped quote; with `backslash`, `\` escapes the next byte.
    fn quoted(&mut self, quote: u8, backslash: bool) -> &'a [u8] {
        let start = self.pos;
        let mut i = start;
        while let Some(c) = self.byte_at(i) {
            if backslash && c == b'\\' {
                i += 2;
            } else if c != quote {
                i += 1;
            } else if self.byte_at(i + 1) == Some(quote) {
                i += 2;
            } else {
                self.pos = i + 1;
                return &self.src[start..i];
            }
        }
        self.pos = self.src.len();
        &self.src[start..]
    }

    /// At a `$` in PostgreSQL: a parameter `$1`, a dollar-quoted string `$tag$...$tag$`,
    /// or a lone `$`.
    fn dollar(&mut self) -> Token<'a> {
        let start = self.pos;
        if self.byte_at(start + 1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos = self.scan_while(start + 1, DIGIT);
            return Token::Param(&self.src[start + 1..self.pos]);
        }
        let tag_end = match self.byte_at(start + 1) {
            Some(b'$') => start + 1,
            Some(b) if CLASS[usize::from(b)] & WORD_START != 0 => self.scan_while(start + 1, TAG),
            _ => start,
        };
        if tag_end == start || self.byte_at(tag_end) != Some(b'$') {
            self.pos = start + 1;
            return Token::Punct(b'$');
        }
        let tag = &self.src[start..=tag_end];
        let body_start = tag_end + 1;
        match find(&self.src[body_start..], tag) {
            Some(len) => {
                self.pos = body_start + len + tag.len();
                Token::String(&self.src[body_start..body_start + len])
            }
            None => {
                self.pos = self.src.len();
                Token::String(&self.src[body_start..])
            }
        }
    }

    /// In MySQL `--` starts a comment only when followed by whitespace, a control
    /// character or the end of input (`1--1` is arithmetic).
    fn dash_comment_at(&self, at: usize) -> bool {
        !self.mysql() || self.byte_at(at + 2).is_none_or(|b| b <= b' ')
    }

    fn line_comment(&mut self, body_start: usize) {
        let end = self.src[body_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.src.len(), |n| body_start + n);
        self.note_hint(&self.src[body_start..end]);
        self.pos = end;
    }

    /// At `/*`: a MySQL version comment (`/*!`, `/*!50100`, MariaDB `/*M!100100`),
    /// whose body is code, or a comment — nested in PostgreSQL, not in MySQL.
    fn block_comment(&mut self) {
        let body_start = self.pos + 2;
        if self.mysql() && !self.in_version_comment {
            let bang = match self.byte_at(body_start) {
                Some(b'!') => Some(body_start + 1),
                Some(b'M') if self.byte_at(body_start + 1) == Some(b'!') => Some(body_start + 2),
                _ => None,
            };
            if let Some(after_bang) = bang {
                let digits_end = self.scan_while(after_bang, DIGIT);
                self.pos = digits_end.min(after_bang + 6);
                self.in_version_comment = true;
                return;
            }
        }
        let mut depth = 1u32;
        let mut i = body_start;
        while i < self.src.len() {
            match (self.src[i], self.byte_at(i + 1)) {
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    if depth == 0 {
                        self.note_hint(&self.src[body_start..i]);
                        self.pos = i + 2;
                        return;
                    }
                    i += 2;
                }
                (b'/', Some(b'*')) if !self.mysql() => {
                    depth += 1;
                    i += 2;
                }
                _ => i += 1,
            }
        }
        self.note_hint(&self.src[body_start..]);
        self.pos = self.src.len();
    }

    fn note_hint(&mut self, comment: &[u8]) {
        self.hint = match (self.hint, hint_in(comment)) {
            (Some(Hint::Writer), _) | (_, Some(Hint::Writer)) => Some(Hint::Writer),
            (old, None) => old,
            (_, new) => new,
        };
    }

    /// The first index at or after `from` whose byte is not in the class `keep`.
    #[inline(always)]
    fn scan_while(&self, from: usize, keep: u8) -> usize {
        let mut i = from.min(self.src.len());
        while let Some(&b) = self.src.get(i) {
            if CLASS[usize::from(b)] & keep == 0 {
                break;
            }
            i += 1;
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.next_token()
    }
}

// Byte classes, as bits of `CLASS`.
/// Whitespace; control bytes are treated as whitespace too.
const SPACE: u8 = 1;
/// Starts an unquoted identifier: letters, `_`, bytes ≥ 0x80 (parts of non-ASCII
/// letters). MySQL's `$` is handled as a special byte.
const WORD_START: u8 = 2;
/// Continues an unquoted identifier: a word start, a digit or `$`.
const WORD: u8 = 4;
/// Continues a dollar-quote tag: a word byte other than `$`.
const TAG: u8 = 8;
/// Continues a number: digits, `.`, exponents, `0x`/`0b` prefixes, `_` separators
/// (and, harmlessly, MySQL identifiers that start with a digit).
const NUMBER: u8 = 16;
const DIGIT: u8 = 32;
/// May start a token other than a word or a single punctuation byte, or a comment.
const SPECIAL: u8 = 64;

static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
        let mut bits = 0;
        if b <= b' ' {
            bits |= SPACE;
        }
        if alpha {
            bits |= WORD_START | WORD | TAG;
        }
        if b.is_ascii_digit() {
            bits |= WORD | TAG | DIGIT | SPECIAL;
        }
        if b == b'$' {
            bits |= WORD;
        }
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            bits |= NUMBER;
        }
        if matches!(
            b,
            b'\'' | b'"' | b'`' | b'$' | b':' | b'-' | b'#' | b'/' | b'*'
        ) {
            bits |= SPECIAL;
        }
        class[i] = bits;
        i += 1;
    }
    class
};

fn is_word_byte(b: u8) -> bool {
    CLASS[usize::from(b)] & WORD != 0
}

/// The offset of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The hint in a comment body: `switchyard` `:` `writer`|`reader`, case-insensitive,
/// with optional whitespace around the colon. `Writer` wins if both are present.
pub(crate) fn hint_in(comment: &[u8]) -> Option<Hint> {
    const MARK: &[u8] = b"switchyard";
    let mut found = None;
    let mut i = 0;
    while i + MARK.len() <= comment.len() {
        if (comment[i] | 0x20) != b's' || !comment[i..i + MARK.len()].eq_ignore_ascii_case(MARK) {
            i += 1;
            continue;
        }
        i += MARK.len();
        let rest = trim_start(&comment[i..]);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = trim_start(rest);
        let hint = if starts_with_word(rest, b"writer") {
            Hint::Writer
        } else if starts_with_word(rest, b"reader") {
            Hint::Reader
        } else {
            continue;
        };
        if hint == Hint::Writer {
            return Some(Hint::Writer);
        }
        found = Some(hint);
    }
    found
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// Whether `s` starts with `word` (case-insensitive) not followed by an identifier byte.
fn starts_with_word(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len()
        && s[..word.len()].eq_ignore_ascii_case(word)
        && s.get(word.len()).is_none_or(|&b| !is_word_byte(b))
}

#[cfg(test)]
mod tests {
    use super::Token::*;
    use super::*;

    fn pg(sql: &str) -> Vec<Token<'_>> {
        Lexer::new(sql.as_bytes(), Dialect::Postgres).collect()
    }

    fn my(sql: &str) -> Vec<Token<'_>> {
        Lexer::new(sql.as_bytes(), Dialect::MySql).collect()
    }

    fn w(text: &[u8]) -> Token<'_> {
        Word(text, Kw::of(text))
    }

    #[test]
    fn words_numbers_and_punctuation() {
        assert_eq!(
            pg("SELECT a1, 2.5e3 FROM t;"),
            [
                w(b"SELECT"),
                w(b"a1"),
                Punct(b','),
                Number(b"2.5e3"),
                w(b"FROM"),
                w(b"t"),
                Punct(b';'),
            ]
        );
        assert_eq!(pg("select"), [Word(b"select", Kw::Select)]);
        assert_eq!(pg("selects"), [Word(b"selects", Kw::Other)]);
        assert_eq!(pg("x:=1"), [w(b"x"), Assign, Number(b"1")]);
        assert_eq!(pg("a::int"), [w(b"a"), Punct(b':'), Punct(b':'), w(b"int")]);
        assert_eq!(pg("naïve"), [w("naïve".as_bytes())]);
    }

    #[test]
    fn postgres_comments_nest_and_are_skipped() {
        assert_eq!(pg("-- c\nSELECT"), [w(b"SELECT")]);
        assert_eq!(pg("/* a /* b */ still */ x"), [w(b"x")]);
        assert_eq!(pg("/* a /* b */ x"), []);
        assert_eq!(pg("a -- b"), [w(b"a")]);
        assert_eq!(pg("a#b"), [w(b"a"), Punct(b'#'), w(b"b")]);
        assert_eq!(pg("1--1"), [Number(b"1")]);
    }

    #[test]
    fn postgres_strings() {
        assert_eq!(pg("'it''s'"), [String(b"it''s")]);
        assert_eq!(pg(r"'a\' x"), [String(br"a\"), w(b"x")]);
        assert_eq!(pg(r"E'a\'b' x"), [String(br"a\'b"), w(b"x")]);
        assert_eq!(pg(r"e'\\' x"), [String(br"\\"), w(b"x")]);
        assert_eq!(
            pg("B'01' X'ff'"),
            [w(b"B"), String(b"01"), w(b"X"), String(b"ff")]
        );
        assert_eq!(
            pg("U&'d\\0061t'"),
            [w(b"U"), Punct(b'&'), String(b"d\\0061t")]
        );
        assert_eq!(pg("'open"), [String(b"open")]);
        assert_eq!(pg("ee'x'"), [w(b"ee"), String(b"x")]);
    }

    #[test]
    fn postgres_quoted_identifiers() {
        assert_eq!(pg(r#""a""b" c"#), [QuotedIdent(br#"a""b"#), w(b"c")]);
        assert_eq!(pg(r#""for update""#), [QuotedIdent(b"for update")]);
        assert_eq!(pg("`x`"), [Punct(b'`'), w(b"x"), Punct(b'`')]);
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        assert_eq!(pg("$$a;b$$ x"), [String(b"a;b"), w(b"x")]);
        assert_eq!(pg("$fn$ $$ $x$ $fn$;"), [String(b" $$ $x$ "), Punct(b';')]);
        assert_eq!(pg("$1 + $23"), [Param(b"1"), Punct(b'+'), Param(b"23")]);
        assert_eq!(pg("$a"), [Punct(b'$'), w(b"a")]);
        assert_eq!(pg("$"), [Punct(b'$')]);
        assert_eq!(pg("a$$b"), [w(b"a$$b")]);
        assert_eq!(pg("$q$ open"), [String(b" open")]);
        assert_eq!(pg("$é$x$é$"), [String(b"x")]);
    }

    #[test]
    fn mysql_comments() {
        assert_eq!(my("# c\nx"), [w(b"x")]);
        assert_eq!(my("-- c\nx"), [w(b"x")]);
        assert_eq!(my("--\tc\nx"), [w(b"x")]);
        assert_eq!(
            my("1--1"),
            [Number(b"1"), Punct(b'-'), Punct(b'-'), Number(b"1")]
        );
        assert_eq!(my("/* a /* b */ x"), [w(b"x")]);
        assert_eq!(my("/*+ BKA(t) */ x"), [w(b"x")]);
    }

    #[test]
    fn mysql_version_comments_are_code() {
        assert_eq!(my("/*!40101 SET */ x"), [w(b"SET"), w(b"x")]);
        assert_eq!(my("/*! SET*/x"), [w(b"SET"), w(b"x")]);
        assert_eq!(my("/*M!100100 a */"), [w(b"a")]);
        assert_eq!(my("/*!40001 a"), [w(b"a")]);
        assert_eq!(my("a */"), [w(b"a"), Punct(b'*'), Punct(b'/')]);
        assert_eq!(pg("/*!40101 SET */ x"), [w(b"x")]);
    }

    #[test]
    fn mysql_strings_and_identifiers() {
        assert_eq!(my(r"'a\'b' x"), [String(br"a\'b"), w(b"x")]);
        assert_eq!(my(r#""a\"b""c" x"#), [String(br#"a\"b""c"#), w(b"x")]);
        assert_eq!(my("`a``b` x"), [QuotedIdent(b"a``b"), w(b"x")]);
        assert_eq!(my(r"`a\` x"), [QuotedIdent(br"a\"), w(b"x")]);
        assert_eq!(
            my("@@session.x"),
            [
                Punct(b'@'),
                Punct(b'@'),
                w(b"session"),
                Punct(b'.'),
                w(b"x")
            ]
        );
        assert_eq!(my("$x"), [w(b"$x")]);
        assert_eq!(my(r"'\"), [String(br"\")]);
    }

    #[test]
    fn hints_come_from_comments_only() {
        let hint = |sql: &str, dialect| {
            let mut lexer = Lexer::new(sql.as_bytes(), dialect);
            lexer.by_ref().for_each(drop);
            lexer.hint()
        };
        let pg = Dialect::Postgres;
        assert_eq!(hint("/* switchyard:writer */ x", pg), Some(Hint::Writer));
        assert_eq!(hint("x /*SwitchYard : Reader*/", pg), Some(Hint::Reader));
        assert_eq!(hint("x -- switchyard:reader", pg), Some(Hint::Reader));
        assert_eq!(
            hint("x /* app=1 switchyard:reader */", pg),
            Some(Hint::Reader)
        );
        assert_eq!(hint("'/* switchyard:writer */'", pg), None);
        assert_eq!(hint("/* switchyard:readers */", pg), None);
        assert_eq!(hint("/* switchyard */ /* writer */", pg), None);
        assert_eq!(
            hint("/* switchyard:reader */ /* switchyard:writer */", pg),
            Some(Hint::Writer)
        );
        assert_eq!(
            hint("/* switchyard:writer */ /* switchyard:reader */", pg),
            Some(Hint::Writer)
        );
        assert_eq!(
            hint("# switchyard:writer", Dialect::MySql),
            Some(Hint::Writer)
        );
        assert_eq!(hint("/* switchyard:", pg), None);
    }
}
