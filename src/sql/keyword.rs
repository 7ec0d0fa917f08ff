//! Recognizes the keywords and function names the classifier acts on, case-insensitively
//! and without allocating: a word is packed into an integer and looked up in a hash
//! table built at compile time; function names are lowered into a stack buffer.

use super::Dialect;

/// Keywords are at most this long (a longer word is never one).
const MAX_LEN: usize = 16;

/// Folds ASCII case: `b | 0x20` maps `A`-`Z` onto `a`-`z`. Applied to a word's bytes
/// (letters, digits, `_`, `$`, bytes ≥ 0x80) it equals a keyword's folded bytes
/// (lowercase letters and `_`) exactly when the two are equal ignoring ASCII case.
const FOLD: u128 = u128::from_le_bytes([0x20; 16]);

/// A keyword packed into a `u128`, first byte lowest, case folded.
const fn pack(text: &[u8]) -> u128 {
    let mut key = 0u128;
    let mut i = 0;
    while i < text.len() {
        key |= ((text[i] | 0x20) as u128) << (8 * i);
        i += 1;
    }
    key
}

const TABLE_BITS: u32 = 9;
const TABLE_SIZE: usize = 1 << TABLE_BITS;

/// The slot a packed key hashes to.
const fn slot_of(key: u128) -> usize {
    let mixed = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_BITS)) as usize
}

/// An open-addressing hash table of packed keywords (`KEYS`, with the keyword of each
/// slot in `KWS`), built at compile time. It is at most a sixth full, so probe runs
/// are short and an empty slot (key 0) ends every search.
static KEYS: [u128; TABLE_SIZE] = TABLE.0;
static KWS: [Kw; TABLE_SIZE] = TABLE.1;
const TABLE: ([u128; TABLE_SIZE], [Kw; TABLE_SIZE]) = {
    assert!(KEYWORDS.len() * 6 < TABLE_SIZE);
    let mut keys = [0u128; TABLE_SIZE];
    let mut kws = [Kw::Other; TABLE_SIZE];
    let mut i = 0;
    while i < KEYWORDS.len() {
        let (text, kw) = KEYWORDS[i];
        assert!(!text.is_empty() && text.len() <= MAX_LEN);
        let key = pack(text);
        let mut slot = slot_of(key);
        while keys[slot] != 0 {
            slot = (slot + 1) % TABLE_SIZE;
        }
        keys[slot] = key;
        kws[slot] = kw;
        i += 1;
    }
    (keys, kws)
};

/// `MASKS[n]` keeps the low `n` bytes of a `u128`.
static MASKS: [u128; MAX_LEN + 1] = {
    let mut masks = [0u128; MAX_LEN + 1];
    let mut n = 1;
    while n <= MAX_LEN {
        masks[n] = (masks[n - 1] << 8) | 0xff;
        n += 1;
    }
    masks
};

/// `INITIALS[n]` has bit `c - 'a'` set when some keyword of `n` bytes starts with `c`:
/// most identifiers are ruled out by this one test, before any hashing.
static INITIALS: [u32; MAX_LEN + 1] = {
    let mut initials = [0u32; MAX_LEN + 1];
    let mut i = 0;
    while i < KEYWORDS.len() {
        let text = KEYWORDS[i].0;
        assert!(text[0].is_ascii_lowercase());
        initials[text.len()] |= 1 << (text[0] - b'a');
        i += 1;
    }
    initials
};

/// The keyword spelled by the word `src[start..start + len]`, ignoring ASCII case.
/// Reading 16 bytes at once from `src` (when there are that many) makes this a few
/// instructions; callers pass only word bytes in the range.
#[inline(always)]
pub(crate) fn keyword_at(src: &[u8], start: usize, len: usize) -> Kw {
    if len == 0 || len > MAX_LEN {
        return Kw::Other;
    }
    let initial = src
        .get(start)
        .map_or(u8::MAX, |&b| (b | 0x20).wrapping_sub(b'a'));
    if initial >= 26 || INITIALS[len] & (1 << initial) == 0 {
        return Kw::Other;
    }
    let raw = match src
        .get(start..)
        .and_then(|rest| rest.first_chunk::<MAX_LEN>())
    {
        Some(chunk) => u128::from_le_bytes(*chunk),
        None => {
            let mut buf = [0u8; MAX_LEN];
            let word = src.get(start..start + len).unwrap_or_default();
            buf[..word.len()].copy_from_slice(word);
            u128::from_le_bytes(buf)
        }
    };
    let key = (raw | FOLD) & MASKS[len];
    let mut slot = slot_of(key);
    loop {
        let candidate = KEYS[slot];
        if candidate == key {
            return KWS[slot];
        }
        if candidate == 0 {
            return Kw::Other;
        }
        slot = (slot + 1) % TABLE_SIZE;
    }
}

macro_rules! keywords {
    ($($variant:ident = $text:literal,)*) => {
        /// A keyword the classifier acts on; `Other` for every other word and token.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kw {
            $($variant,)*
            Other,
        }

        /// Every keyword with its lowercase spelling.
        const KEYWORDS: &[(&[u8], Kw)] = &[$(($text, Kw::$variant),)*];
    };
}

impl Kw {
    /// The keyword `word` spells, ignoring ASCII case (`word` holds word bytes only).
    #[cfg(test)]
    pub(crate) fn of(word: &[u8]) -> Kw {
        keyword_at(word, 0, word.len())
    }
}

keywords! {
    Abort = b"abort",
    Alter = b"alter",
    Analyse = b"analyse",
    Analyze = b"analyze",
    And = b"and",
    Autocommit = b"autocommit",
    Begin = b"begin",
    Chain = b"chain",
    Commit = b"commit",
    Constraints = b"constraints",
    Copy = b"copy",
    Create = b"create",
    Cursor = b"cursor",
    Deallocate = b"deallocate",
    Declare = b"declare",
    Default = b"default",
    Delete = b"delete",
    Desc = b"desc",
    Describe = b"describe",
    Discard = b"discard",
    Drop = b"drop",
    End = b"end",
    Explain = b"explain",
    Export = b"export",
    Extended = b"extended",
    False = b"false",
    Flush = b"flush",
    For = b"for",
    Format = b"format",
    From = b"from",
    Global = b"global",
    Handler = b"handler",
    In = b"in",
    Insert = b"insert",
    Into = b"into",
    Key = b"key",
    Listen = b"listen",
    Local = b"local",
    Lock = b"lock",
    Merge = b"merge",
    Next = b"next",
    No = b"no",
    Not = b"not",
    Off = b"off",
    On = b"on",
    Only = b"only",
    Or = b"or",
    Partitions = b"partitions",
    Password = b"password",
    Persist = b"persist",
    PersistOnly = b"persist_only",
    Prepare = b"prepare",
    Prepared = b"prepared",
    Previous = b"previous",
    Read = b"read",
    Replace = b"replace",
    Reset = b"reset",
    Resource = b"resource",
    Rollback = b"rollback",
    Select = b"select",
    Session = b"session",
    Set = b"set",
    Share = b"share",
    Show = b"show",
    Start = b"start",
    Statement = b"statement",
    Stdout = b"stdout",
    Table = b"table",
    Temp = b"temp",
    Temporary = b"temporary",
    To = b"to",
    Transaction = b"transaction",
    True = b"true",
    Unlisten = b"unlisten",
    Unlock = b"unlock",
    Update = b"update",
    Use = b"use",
    Value = b"value",
    Values = b"values",
    Verbose = b"verbose",
    With = b"with",
    Write = b"write",
}

/// What calling a function does to routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes data or server state, or depends on this session's earlier writes.
    Write,
    /// Takes session-level state (a lock, a named connection) that must stay put.
    Pin,
}

/// How a function name is matched against a table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Exact,
    Prefix,
}

use Effect::{Pin, Write};
use Match::{Exact, Prefix};

/// PostgreSQL functions with side effects, lowercase.
const POSTGRES_FUNCTIONS: &[(&[u8], Match, Effect)] = &[
    // Session-level advisory locks (not the xact ones) and named dblink connections.
    (b"pg_advisory_lock", Exact, Pin),
    (b"pg_advisory_lock_shared", Exact, Pin),
    (b"pg_try_advisory_lock", Exact, Pin),
    (b"pg_try_advisory_lock_shared", Exact, Pin),
    (b"pg_advisory_unlock", Exact, Pin),
    (b"pg_advisory_unlock_shared", Exact, Pin),
    (b"pg_advisory_unlock_all", Exact, Pin),
    (b"dblink_connect", Exact, Pin),
    (b"dblink_connect_u", Exact, Pin),
    // Sequences (currval/lastval read this session's nextval, made on the writer).
    (b"nextval", Exact, Write),
    (b"setval", Exact, Write),
    (b"currval", Exact, Write),
    (b"lastval", Exact, Write),
    (b"pg_advisory_xact_lock", Exact, Write),
    (b"pg_advisory_xact_lock_shared", Exact, Write),
    (b"pg_try_advisory_xact_lock", Exact, Write),
    (b"pg_try_advisory_xact_lock_shared", Exact, Write),
    (b"pg_notify", Exact, Write),
    (b"txid_current", Exact, Write),
    (b"pg_current_xact_id", Exact, Write),
    (b"set_config", Exact, Write),
    // Large objects: lo_create, lo_import, lo_unlink, lo_open, ... and loread/lowrite.
    (b"lo_", Prefix, Write),
    (b"loread", Exact, Write),
    (b"lowrite", Exact, Write),
    (b"dblink", Prefix, Write),
    (b"pg_terminate_backend", Exact, Write),
    (b"pg_cancel_backend", Exact, Write),
    (b"pg_reload_conf", Exact, Write),
    (b"pg_rotate_logfile", Exact, Write),
    (b"pg_switch_wal", Exact, Write),
    (b"pg_switch_xlog", Exact, Write),
    (b"pg_create_restore_point", Exact, Write),
    (b"pg_stat_reset", Prefix, Write),
    (b"pg_promote", Exact, Write),
    (b"pg_backup_start", Exact, Write),
    (b"pg_backup_stop", Exact, Write),
    (b"pg_start_backup", Exact, Write),
    (b"pg_stop_backup", Exact, Write),
    (b"pg_logical_emit_message", Exact, Write),
    (b"pg_create_logical_replication_slot", Exact, Write),
    (b"pg_create_physical_replication_slot", Exact, Write),
    (b"pg_drop_replication_slot", Exact, Write),
    (b"pg_replication_slot_advance", Exact, Write),
    (b"pg_logical_slot_get_changes", Exact, Write),
    (b"pg_logical_slot_get_binary_changes", Exact, Write),
    (b"pg_replication_origin_", Prefix, Write),
];

/// MySQL and MariaDB functions with side effects, lowercase. The lock-inspection
/// functions go to the writer, where the lock holder is.
const MYSQL_FUNCTIONS: &[(&[u8], Match, Effect)] = &[
    (b"get_lock", Exact, Pin),
    (b"last_insert_id", Exact, Write),
    (b"found_rows", Exact, Write),
    (b"row_count", Exact, Write),
    (b"release_lock", Exact, Write),
    (b"release_all_locks", Exact, Write),
    (b"is_used_lock", Exact, Write),
    (b"is_free_lock", Exact, Write),
    (b"nextval", Exact, Write),
    (b"lastval", Exact, Write),
    (b"setval", Exact, Write),
];

/// Every listed name (and every name a prefix matches) has at least this many bytes.
const MIN_FUNCTION_LEN: usize = 6;
/// Names longer than this are looked up by their first this many bytes: every exact
/// name is shorter, so only prefix entries can match them.
const MAX_FUNCTION_LEN: usize = 40;

/// The effect of calling the function `name` (unqualified, as written), if it is one
/// of the known side-effect functions of `dialect`.
pub(crate) fn function_effect(name: &[u8], dialect: Dialect) -> Option<Effect> {
    // A cheap filter first: common calls (`count(`, `now(`, `IN (`, `VALUES (`) stop here.
    let (table, initials): (_, &[u8]) = match dialect {
        Dialect::Postgres => (POSTGRES_FUNCTIONS, b"cdlnpst"),
        Dialect::MySql => (MYSQL_FUNCTIONS, b"fgilnrs"),
    };
    match name.first() {
        Some(first) if name.len() >= MIN_FUNCTION_LEN && initials.contains(&(first | 0x20)) => {}
        _ => return None,
    }
    let mut buf = [0u8; MAX_FUNCTION_LEN];
    let len = name.len().min(MAX_FUNCTION_LEN);
    for (dst, src) in buf.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    let lowered = &buf[..len];
    table.iter().find_map(|&(entry, how, effect)| {
        let hit = match how {
            Exact => lowered == entry,
            Prefix => lowered.starts_with(entry),
        };
        hit.then_some(effect)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_ignoring_case_only() {
        assert_eq!(Kw::of(b"select"), Kw::Select);
        assert_eq!(Kw::of(b"SeLeCt"), Kw::Select);
        assert_eq!(Kw::of(b"PERSIST_ONLY"), Kw::PersistOnly);
        assert_eq!(Kw::of(b"selects"), Kw::Other);
        assert_eq!(Kw::of(b"selec"), Kw::Other);
        assert_eq!(Kw::of(b""), Kw::Other);
        assert_eq!(Kw::of(b"persist_onlyx"), Kw::Other);
        assert_eq!(Kw::of(b"SELECT_"), Kw::Other);
        assert_eq!(Kw::of(b"_elect"), Kw::Other);
        assert_eq!(Kw::of(b"a_very_long_identifier_name"), Kw::Other);
        assert_eq!(Kw::of("sélect".as_bytes()), Kw::Other);
    }

    #[test]
    fn every_keyword_is_found_in_any_case_and_position() {
        for &(text, kw) in KEYWORDS {
            assert_eq!(Kw::of(text), kw);
            let upper = text.to_ascii_uppercase();
            assert_eq!(Kw::of(&upper), kw);
            // Inside a longer buffer, where the 16-byte read sees the bytes after it.
            let mut src = b"xx ".to_vec();
            src.extend_from_slice(&upper);
            src.extend_from_slice(b" yyyyyyyyyyyyyyyyyyyy");
            assert_eq!(keyword_at(&src, 3, text.len()), kw);
            assert_ne!(keyword_at(&src, 3, text.len() - 1), kw);
        }
    }

    #[test]
    fn every_listed_function_is_found_in_any_case() {
        for (dialect, table) in [
            (Dialect::Postgres, POSTGRES_FUNCTIONS),
            (Dialect::MySql, MYSQL_FUNCTIONS),
        ] {
            for &(name, how, effect) in table {
                assert!(name.len() < MAX_FUNCTION_LEN, "{name:?}");
                let mut name = name.to_ascii_uppercase();
                if how == Prefix {
                    name.extend_from_slice(b"xyz");
                }
                assert_eq!(function_effect(&name, dialect), Some(effect), "{name:?}");
            }
        }
    }

    #[test]
    fn side_effect_functions_by_dialect() {
        let pg = Dialect::Postgres;
        let my = Dialect::MySql;
        assert_eq!(function_effect(b"NEXTVAL", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"pg_advisory_lock", pg), Some(Effect::Pin));
        assert_eq!(
            function_effect(b"pg_advisory_xact_lock", pg),
            Some(Effect::Write)
        );
        assert_eq!(function_effect(b"lo_import", pg), Some(Effect::Write));
        assert_eq!(
            function_effect(b"pg_stat_reset_single_table_counters", pg),
            Some(Effect::Write)
        );
        assert_eq!(
            function_effect(b"pg_stat_reset_shared_with_a_name_longer_than_forty", pg),
            Some(Effect::Write)
        );
        assert_eq!(function_effect(b"now", pg), None);
        assert_eq!(function_effect(b"LO_GET", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"DBLINK", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"values", pg), None);
        assert_eq!(function_effect(b"lower", pg), None);
        assert_eq!(function_effect(b"get_lock", pg), None);
        assert_eq!(function_effect(b"GET_LOCK", my), Some(Effect::Pin));
        assert_eq!(function_effect(b"Last_Insert_Id", my), Some(Effect::Write));
        assert_eq!(function_effect(b"sleep", my), None);
        assert_eq!(function_effect(b"uuid_short", my), None);
        assert_eq!(function_effect(b"pg_advisory_lock", my), None);
    }
}
