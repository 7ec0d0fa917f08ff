//! Recognizes the keywords and function names the classifier acts on, case-insensitively
//! and without allocating: a word is packed into an integer and matched against
//! constants, and function names are lowered into a stack buffer.

use super::Dialect;

/// Packs up to 16 bytes into a `u128`, first byte lowest. Neither keywords nor the
/// words looked up contain a zero byte, so different words never pack to one value.
const fn pack(text: &[u8]) -> u128 {
    let mut key = 0u128;
    let mut i = 0;
    while i < text.len() {
        key |= (text[i] as u128) << (8 * i);
        i += 1;
    }
    key
}

/// `pack` of the ASCII-lowercased word, or `None` if it is longer than any keyword
/// or holds a zero byte.
fn pack_lower(word: &[u8]) -> Option<u128> {
    if word.len() > 16 {
        return None;
    }
    let mut key = 0u128;
    for (i, &b) in word.iter().enumerate() {
        if b == 0 {
            return None;
        }
        key |= u128::from(b.to_ascii_lowercase()) << (8 * i);
    }
    Some(key)
}

macro_rules! keywords {
    ($($variant:ident = $text:literal,)*) => {
        /// A keyword the classifier acts on; `Other` for every other word and token.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kw {
            $($variant,)*
            Other,
        }

        #[allow(non_upper_case_globals)]
        mod packed {
            $(pub(super) const $variant: u128 = super::pack($text);)*
        }

        impl Kw {
            /// The keyword `word` spells, ignoring ASCII case.
            pub(crate) fn of(word: &[u8]) -> Kw {
                match pack_lower(word) {
                    $(Some(packed::$variant) => Kw::$variant,)*
                    _ => Kw::Other,
                }
            }
        }
    };
}

keywords! {
    Abort = b"abort",
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

/// The effect of calling the function `name` (unqualified, as written), if it is one
/// of the known side-effect functions of `dialect`.
pub(crate) fn function_effect(name: &[u8], dialect: Dialect) -> Option<Effect> {
    const MAX: usize = 40;
    if name.len() < 3 {
        return None;
    }
    // Longer names are truncated: that only matters for prefix matches, since every
    // exact name is shorter than MAX.
    let mut buf = [0u8; MAX];
    let len = name.len().min(MAX);
    for (dst, src) in buf.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    let lowered = &buf[..len];
    match dialect {
        Dialect::Postgres => postgres_function(lowered),
        Dialect::MySql => mysql_function(lowered),
    }
}

fn postgres_function(name: &[u8]) -> Option<Effect> {
    match name {
        // Session-level advisory locks (the non-xact ones) and named dblink connections.
        b"pg_advisory_lock"
        | b"pg_advisory_lock_shared"
        | b"pg_try_advisory_lock"
        | b"pg_try_advisory_lock_shared"
        | b"pg_advisory_unlock"
        | b"pg_advisory_unlock_shared"
        | b"pg_advisory_unlock_all"
        | b"dblink_connect"
        | b"dblink_connect_u" => Some(Effect::Pin),
        b"nextval"
        | b"setval"
        | b"currval"
        | b"lastval"
        | b"pg_advisory_xact_lock"
        | b"pg_advisory_xact_lock_shared"
        | b"pg_try_advisory_xact_lock"
        | b"pg_try_advisory_xact_lock_shared"
        | b"pg_notify"
        | b"txid_current"
        | b"pg_current_xact_id"
        | b"set_config"
        | b"loread"
        | b"lowrite"
        | b"pg_terminate_backend"
        | b"pg_cancel_backend"
        | b"pg_reload_conf"
        | b"pg_rotate_logfile"
        | b"pg_switch_wal"
        | b"pg_switch_xlog"
        | b"pg_create_restore_point"
        | b"pg_promote"
        | b"pg_backup_start"
        | b"pg_backup_stop"
        | b"pg_start_backup"
        | b"pg_stop_backup"
        | b"pg_logical_emit_message"
        | b"pg_create_logical_replication_slot"
        | b"pg_create_physical_replication_slot"
        | b"pg_drop_replication_slot"
        | b"pg_replication_slot_advance"
        | b"pg_logical_slot_get_changes"
        | b"pg_logical_slot_get_binary_changes" => Some(Effect::Write),
        _ if name.starts_with(b"lo_")
            || name.starts_with(b"dblink")
            || name.starts_with(b"pg_stat_reset")
            || name.starts_with(b"pg_replication_origin_") =>
        {
            Some(Effect::Write)
        }
        _ => None,
    }
}

fn mysql_function(name: &[u8]) -> Option<Effect> {
    match name {
        b"get_lock" => Some(Effect::Pin),
        b"last_insert_id"
        | b"found_rows"
        | b"row_count"
        | b"release_lock"
        | b"release_all_locks"
        | b"is_used_lock"
        | b"is_free_lock"
        | b"nextval"
        | b"lastval"
        | b"setval" => Some(Effect::Write),
        _ => None,
    }
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
        assert_eq!(Kw::of(b"select\0"), Kw::Other);
        assert_eq!(Kw::of(b"a_very_long_identifier_name"), Kw::Other);
        assert_eq!(Kw::of("sélect".as_bytes()), Kw::Other);
    }

    #[test]
    fn side_effect_functions_by_dialect() {
        let pg = Dialect::Postgres;
        let my = Dialect::MySql;
        assert_eq!(function_effect(b"NEXTVAL", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"pg_advisory_lock", pg), Some(Effect::Pin));
        assert_eq!(function_effect(b"pg_advisory_xact_lock", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"lo_import", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"pg_stat_reset_single_table_counters", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"pg_stat_reset_shared_with_a_name_longer_than_forty", pg), Some(Effect::Write));
        assert_eq!(function_effect(b"now", pg), None);
        assert_eq!(function_effect(b"lower", pg), None);
        assert_eq!(function_effect(b"get_lock", pg), None);
        assert_eq!(function_effect(b"GET_LOCK", my), Some(Effect::Pin));
        assert_eq!(function_effect(b"Last_Insert_Id", my), Some(Effect::Write));
        assert_eq!(function_effect(b"sleep", my), None);
        assert_eq!(function_effect(b"uuid_short", my), None);
        assert_eq!(function_effect(b"pg_advisory_lock", my), None);
    }
}
