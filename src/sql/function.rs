//! What a called name or a referenced relation says about where a statement may run, beyond
//! the side-effect functions of `keyword`: the rule for objects that describe the node
//! itself (its activity, locks, prepared transactions, replication, transaction ids, this
//! backend), the builtin functions known to only read, and the calls left for the catalog
//! cache to judge, as ids of their lowercased names.

use super::Dialect;

/// A function name as the catalog cache keys it: a 64-bit FNV-1a hash of the name with ASCII
/// letters lowered. PostgreSQL folds unquoted names to lowercase and MySQL ignores the case
/// of function names; a quoted mixed-case PostgreSQL name shares the id of its lowercase
/// spelling, which only makes the cache more careful (every overload of both counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FunctionId(pub u64);

impl FunctionId {
    pub const fn of(name: &[u8]) -> FunctionId {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut i = 0;
        while i < name.len() {
            hash ^= name[i].to_ascii_lowercase() as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        FunctionId(hash)
    }
}

/// At most this many distinct unknown functions are kept per query string; a read calling
/// more is routed as a write without asking the cache.
pub const MAX_CALLS: usize = 6;

/// The functions a query string calls that the classifier cannot judge itself, and whether
/// it changes the set of functions (DDL), after which the catalog cache is out of date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Functions {
    ids: [FunctionId; MAX_CALLS],
    len: u8,
    /// More unknown functions were called than are kept.
    pub overflow: bool,
    /// A CREATE, ALTER or DROP statement (it may define, change or drop a function).
    pub ddl: bool,
    /// A call of the function that tells a client its own connection (`CONNECTION_ID()`,
    /// `pg_backend_pid()`), which a pooled session answers for itself (see `identity`).
    pub identity: bool,
    /// Some statement of a string (or batch) of several is a write, whatever the class they
    /// combine to (`SET …; INSERT …` is a `Pin`): what read-only mode refuses.
    pub writes: bool,
}

impl Functions {
    pub const NONE: Functions = Functions {
        ids: [FunctionId(0); MAX_CALLS],
        len: 0,
        overflow: false,
        ddl: false,
        identity: false,
        writes: false,
    };

    /// The unknown functions called, each once.
    pub fn calls(&self) -> &[FunctionId] {
        &self.ids[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflow
    }

    pub(crate) fn add(&mut self, id: FunctionId) {
        if self.calls().contains(&id) {
            return;
        }
        match self.ids.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Both sets together (several statements of one string or one batch).
    pub fn merge(mut self, other: &Functions) -> Functions {
        for &id in other.calls() {
            self.add(id);
        }
        self.overflow |= other.overflow;
        self.ddl |= other.ddl;
        self.identity |= other.identity;
        self.writes |= other.writes;
        self
    }
}

/// Whether a relation or function name (as written, unqualified) names something that
/// describes the server it runs on rather than the data: such a statement runs on the
/// session's own writer connection.
///
/// PostgreSQL: the statistics and activity views and their functions (`pg_stat_*`,
/// `pg_statio_*`), locks, prepared transactions, replication (`pg_replication_*`), WAL and
/// transaction-id positions (`pg_current_*`, `pg_last_*`, `txid_*`, `pg_xact_*`), this
/// backend (`pg_backend_pid`, its cursors, prepared statements, channels, temporary schema)
/// and the server process (start time, configuration load, control data, its files).
/// MySQL: the process list, `performance_schema`, InnoDB's transaction and lock tables, the
/// status tables and `CONNECTION_ID()`.
///
/// Asking *which* server answered (`pg_is_in_recovery()`, `inet_server_addr()`,
/// `@@hostname`, `@@read_only`, `version()`) is not in the rule: it is a read answered by the
/// server that runs it, which is how one sees where a read went.
#[inline(always)]
pub(crate) fn describes_node(name: &[u8], dialect: Dialect) -> bool {
    // Called for every word: most are ruled out here by their first byte and length.
    let first = name.first().map_or(0, |b| b | 0x20);
    match dialect {
        Dialect::Postgres => (first == b'p' || first == b't') && postgres_node(name),
        Dialect::MySql => {
            matches!(first, b'c' | b'g' | b'i' | b'm' | b'p' | b's')
                && (10..=18).contains(&name.len())
                && mysql_node(name)
        }
    }
}

/// Whether `name` is the function that tells a client the id of its own connection:
/// MySQL's `CONNECTION_ID`, PostgreSQL's `pg_backend_pid`.
pub(crate) fn is_identity(name: &[u8], dialect: Dialect) -> bool {
    let identity: &[u8] = match dialect {
        Dialect::Postgres => b"pg_backend_pid",
        Dialect::MySql => b"connection_id",
    };
    name.eq_ignore_ascii_case(identity)
}

fn lowered<const N: usize>(name: &[u8]) -> Option<([u8; N], usize)> {
    if name.len() > N {
        return None;
    }
    let mut buf = [0u8; N];
    for (dst, src) in buf.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    Some((buf, name.len()))
}

const POSTGRES_NODE_PREFIXES: &[&[u8]] = &[
    b"pg_stat_",
    b"pg_statio_",
    b"pg_replication_",
    b"pg_current_",
    b"pg_last_",
    b"pg_xact_",
    b"pg_control_",
    b"pg_ls_",
    b"txid_",
];

const POSTGRES_NODE_NAMES: &[&[u8]] = &[
    b"pg_locks",
    b"pg_blocking_pids",
    b"pg_safe_snapshot_blocking_pids",
    b"pg_prepared_xacts",
    b"pg_prepared_statements",
    b"pg_cursors",
    b"pg_backend_pid",
    b"pg_backend_memory_contexts",
    b"pg_log_backend_memory_contexts",
    b"pg_shmem_allocations",
    b"pg_listening_channels",
    b"pg_notification_queue_usage",
    b"pg_my_temp_schema",
    b"pg_export_snapshot",
    b"pg_postmaster_start_time",
    b"pg_conf_load_time",
    b"pg_current_logfile",
    b"pg_file_settings",
    b"pg_hba_file_rules",
    b"pg_ident_file_mappings",
    b"pg_read_file",
    b"pg_read_binary_file",
    b"pg_get_replication_slots",
];

fn postgres_node(name: &[u8]) -> bool {
    // A cheap filter first: every name of the rule starts with `pg_` or `txid_`.
    let starts = |p: &[u8]| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    if !(starts(b"pg_") || starts(b"txid_")) {
        return false;
    }
    let Some((buf, len)) = lowered::<40>(name) else {
        return POSTGRES_NODE_PREFIXES
            .iter()
            .any(|p| name[..p.len().min(name.len())].eq_ignore_ascii_case(p));
    };
    let name = &buf[..len];
    POSTGRES_NODE_PREFIXES.iter().any(|p| name.starts_with(p))
        || POSTGRES_NODE_NAMES.contains(&name)
}

const MYSQL_NODE_NAMES: &[&[u8]] = &[
    b"processlist",
    b"performance_schema",
    b"connection_id",
    b"innodb_trx",
    b"innodb_locks",
    b"innodb_lock_waits",
    b"global_status",
    b"session_status",
    b"metadata_lock_info",
];

fn mysql_node(name: &[u8]) -> bool {
    if !(10..=18).contains(&name.len()) {
        return false;
    }
    let Some((buf, len)) = lowered::<18>(name) else {
        return false;
    };
    MYSQL_NODE_NAMES.contains(&&buf[..len])
}

/// Whether a name followed by `(` is known not to need the catalog: a builtin function that
/// only reads (including the volatile ones such as `random()` or `pg_sleep()`), or a keyword
/// that takes a parenthesis (`IN (`, `VALUES (`, `OVER (`, a type such as `numeric(10, 2)`).
#[inline]
pub(crate) fn known_read(id: FunctionId, dialect: Dialect) -> bool {
    let table: &KnownTable = match dialect {
        Dialect::Postgres => &POSTGRES_KNOWN,
        Dialect::MySql => &MYSQL_KNOWN,
    };
    let mut slot = (id.0 >> (64 - KNOWN_BITS)) as usize;
    loop {
        let candidate = table[slot];
        if candidate == id.0 {
            return true;
        }
        if candidate == 0 {
            return false;
        }
        slot = (slot + 1) % KNOWN_SIZE;
    }
}

const KNOWN_BITS: u32 = 11;
const KNOWN_SIZE: usize = 1 << KNOWN_BITS;
type KnownTable = [u64; KNOWN_SIZE];

/// An open-addressing set of name ids, at most a quarter full, built at compile time.
const fn known_table(lists: &[&[&str]]) -> KnownTable {
    let mut table = [0u64; KNOWN_SIZE];
    let mut count = 0;
    let mut l = 0;
    while l < lists.len() {
        let list = lists[l];
        let mut i = 0;
        while i < list.len() {
            let id = FunctionId::of(list[i].as_bytes()).0;
            assert!(id != 0);
            let mut slot = (id >> (64 - KNOWN_BITS)) as usize;
            while table[slot] != 0 && table[slot] != id {
                slot = (slot + 1) % KNOWN_SIZE;
            }
            if table[slot] == 0 {
                count += 1;
            }
            table[slot] = id;
            i += 1;
        }
        l += 1;
    }
    assert!(count * 4 < KNOWN_SIZE);
    table
}

static POSTGRES_KNOWN: KnownTable = known_table(&[KEYWORDS_WITH_PARENS, POSTGRES_READS]);
static MYSQL_KNOWN: KnownTable = known_table(&[KEYWORDS_WITH_PARENS, MYSQL_READS]);

/// Keywords, types and constructs of both dialects that a `(` may follow.
#[rustfmt::skip]
const KEYWORDS_WITH_PARENS: &[&str] = &[
    "all", "and", "any", "array", "as", "between", "by", "case", "cast", "collate", "cube",
    "distinct", "else", "except", "exists", "filter", "from", "group", "grouping", "having",
    "in", "intersect", "is", "join", "lateral", "like", "ilike", "limit", "not", "offset", "on",
    "only", "or", "over", "partition", "recursive", "returning", "rollup", "row", "rows",
    "select", "sets", "similar", "some", "table", "then", "union", "using", "values", "when",
    "where", "window", "with", "within", "unnest", "xmlelement", "xmlforest", "xmlagg",
    // Types with a modifier or used as a cast.
    "bit", "bool", "boolean", "bigint", "char", "character", "date", "datetime", "dec",
    "decimal", "double", "float", "float4", "float8", "int", "int2", "int4", "int8", "integer",
    "interval", "json", "jsonb", "numeric", "real", "signed", "smallint", "text", "time",
    "timestamp", "timestamptz", "timetz", "unsigned", "uuid", "varbit", "varchar", "binary",
    "varbinary", "nchar", "nvarchar",
];

/// PostgreSQL builtins that only read, the most used ones: aggregates, window functions,
/// string, number, date, JSON, array and catalog-information functions, and the volatile
/// ones that still write nothing (`random`, `clock_timestamp`, `gen_random_uuid`,
/// `pg_sleep`, the size functions). Any other call is judged by the catalog cache.
#[rustfmt::skip]
const POSTGRES_READS: &[&str] = &[
    // Aggregates and window functions.
    "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
    "json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr",
    "percentile_cont", "percentile_disc", "mode", "row_number", "rank", "dense_rank",
    "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
    "nth_value", "xmlagg",
    // Conditionals and comparison.
    "coalesce", "nullif", "greatest", "least", "num_nonnulls", "num_nulls",
    // Strings.
    "lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
    "bit_length", "substring", "substr", "position", "strpos", "overlay", "trim", "btrim",
    "ltrim", "rtrim", "lpad", "rpad", "left", "right", "replace", "translate", "reverse",
    "repeat", "concat", "concat_ws", "format", "split_part", "string_to_array",
    "array_to_string", "regexp_replace", "regexp_match", "regexp_matches",
    "regexp_split_to_array", "regexp_split_to_table", "regexp_like", "regexp_count",
    "regexp_substr", "starts_with", "md5", "sha224", "sha256", "sha384", "sha512", "encode",
    "decode", "convert_from", "convert_to", "to_hex", "ascii", "chr", "quote_ident",
    "quote_literal", "quote_nullable", "to_char", "to_number", "to_date", "to_timestamp",
    "unistr", "normalize", "string_to_table", "parse_ident",
    // Numbers.
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "power", "pow", "sqrt", "cbrt",
    "exp", "ln", "log", "log10", "sign", "div", "pi", "degrees", "radians", "sin", "cos", "tan",
    "width_bucket", "random", "setseed", "gcd", "lcm", "factorial", "scale",
    // Dates and times.
    "now", "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
    "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
    "date_trunc", "date_part", "date_bin", "extract", "age", "make_date", "make_time",
    "make_timestamp", "make_timestamptz", "make_interval", "justify_days", "justify_hours",
    "justify_interval", "isfinite", "to_timestamp", "timezone", "generate_series",
    "generate_subscripts",
    // JSON and arrays.
    "json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array",
    "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_object", "jsonb_object",
    "json_array_elements", "jsonb_array_elements", "json_array_elements_text",
    "jsonb_array_elements_text", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
    "json_extract_path", "jsonb_extract_path", "json_extract_path_text",
    "jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys", "json_typeof",
    "jsonb_typeof", "json_array_length", "jsonb_array_length", "jsonb_set", "jsonb_insert",
    "jsonb_pretty", "jsonb_strip_nulls", "json_strip_nulls", "jsonb_path_query",
    "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_array", "jsonb_path_query_first",
    "json_populate_record", "jsonb_populate_record", "json_to_record", "jsonb_to_record",
    "json_to_recordset", "jsonb_to_recordset", "array_length", "array_lower", "array_upper",
    "array_ndims", "array_dims", "array_position", "array_positions", "array_append",
    "array_prepend", "array_cat", "array_remove", "array_replace", "cardinality", "array_fill",
    "trim_array",
    // Identity of the answering server and session settings (replayed on readers).
    "version", "current_setting", "pg_is_in_recovery", "inet_server_addr", "inet_server_port",
    "inet_client_addr", "inet_client_port", "current_database", "current_catalog",
    "current_schema", "current_schemas", "current_user", "session_user", "current_role", "user",
    "host", "hostmask", "masklen", "network", "family", "text",
    // Catalog information.
    "pg_typeof", "format_type", "to_regclass", "to_regproc", "to_regprocedure", "to_regtype",
    "to_regnamespace", "to_regrole", "obj_description", "col_description", "shobj_description",
    "pg_get_viewdef", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_functiondef",
    "pg_get_function_arguments", "pg_get_function_result", "pg_get_function_identity_arguments",
    "pg_get_triggerdef", "pg_get_ruledef", "pg_get_expr", "pg_get_userbyid",
    "pg_get_serial_sequence", "pg_get_keywords", "pg_get_statisticsobjdef", "pg_get_partkeydef",
    "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "pg_has_role",
    "has_table_privilege", "has_column_privilege", "has_schema_privilege",
    "has_database_privilege", "has_function_privilege", "has_sequence_privilege",
    "has_any_column_privilege", "pg_encoding_to_char", "pg_char_to_encoding", "pg_size_pretty",
    "pg_size_bytes", "pg_column_size", "pg_database_size", "pg_relation_size",
    "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_tablespace_size",
    "pg_relation_filenode", "pg_relation_filepath", "pg_tablespace_location", "pg_sleep",
    "pg_sleep_for", "pg_sleep_until", "pg_jit_available", "pg_input_is_valid",
    // Volatile but writing nothing.
    "gen_random_uuid", "uuid_generate_v4", "uuid_generate_v1", "uuid_generate_v1mc",
    // Full text search.
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery",
    "ts_rank", "ts_rank_cd", "ts_headline", "setweight",
];

/// MySQL and MariaDB builtins that only read, the most used ones. Builtins are not stored
/// routines, so the catalog cache would find them absent (a read) anyway; knowing them here
/// keeps them on the readers before the cache has loaded.
#[rustfmt::skip]
const MYSQL_READS: &[&str] = &[
    "count", "sum", "avg", "min", "max", "group_concat", "json_arrayagg", "json_objectagg",
    "bit_and", "bit_or", "bit_xor", "std", "stddev", "stddev_pop", "stddev_samp", "variance",
    "var_pop", "var_samp", "row_number", "rank", "dense_rank", "percent_rank", "cume_dist",
    "ntile", "lag", "lead", "first_value", "last_value", "nth_value", "coalesce", "ifnull",
    "nullif", "if", "isnull", "greatest", "least", "interval", "lower", "upper", "lcase",
    "ucase", "length", "char_length", "character_length", "octet_length", "bit_length",
    "substring", "substr", "substring_index", "mid", "left", "right", "locate", "instr",
    "position", "trim", "ltrim", "rtrim", "lpad", "rpad", "replace", "reverse", "repeat",
    "space", "concat", "concat_ws", "format", "insert", "field", "find_in_set", "elt",
    "make_set", "export_set", "soundex", "strcmp", "quote", "hex", "unhex", "ascii", "ord",
    "char", "conv", "bin", "oct", "md5", "sha", "sha1", "sha2", "crc32", "to_base64",
    "from_base64", "regexp_replace", "regexp_substr", "regexp_instr", "regexp_like", "abs",
    "ceil", "ceiling", "floor", "round", "truncate", "mod", "pow", "power", "sqrt", "exp", "ln",
    "log", "log2", "log10", "sign", "pi", "degrees", "radians", "sin", "cos", "tan", "rand",
    "crc32c", "now", "sysdate", "curdate", "curtime", "current_date", "current_time",
    "current_timestamp", "localtime", "localtimestamp", "utc_date", "utc_time", "utc_timestamp",
    "unix_timestamp", "from_unixtime", "date", "time", "year", "month", "day", "dayofmonth",
    "dayofweek", "dayofyear", "hour", "minute", "second", "microsecond", "week", "weekday",
    "weekofyear", "yearweek", "quarter", "monthname", "dayname", "last_day", "date_add",
    "date_sub", "adddate", "subdate", "addtime", "subtime", "datediff", "timediff",
    "timestampadd", "timestampdiff", "date_format", "time_format", "str_to_date", "makedate",
    "maketime", "extract", "to_days", "to_seconds", "from_days", "sec_to_time", "time_to_sec",
    "convert_tz", "period_add", "period_diff", "get_format", "convert", "cast", "binary",
    "json_extract", "json_unquote", "json_object", "json_array", "json_contains",
    "json_contains_path", "json_keys", "json_length", "json_type", "json_valid", "json_value",
    "json_query", "json_search", "json_set", "json_insert", "json_replace", "json_remove",
    "json_merge", "json_merge_patch", "json_merge_preserve", "json_quote", "json_depth",
    "json_pretty", "json_table", "json_exists", "database", "schema", "user", "current_user",
    "session_user", "system_user", "version", "current_role", "charset", "collation",
    "coercibility", "uuid", "sys_guid", "sleep", "benchmark", "inet_aton", "inet_ntoa",
    "inet6_aton", "inet6_ntoa", "is_ipv4", "is_ipv6", "match", "against", "char_length",
    "weight_string", "decode", "encode", "aes_encrypt", "aes_decrypt", "compress", "uncompress",
    "uncompressed_length", "random_bytes", "nvl", "nvl2", "decode_oracle", "to_char",
    "natural_sort_key", "format_bytes",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_ignore_ascii_case() {
        assert_eq!(FunctionId::of(b"My_Func"), FunctionId::of(b"my_func"));
        assert_ne!(FunctionId::of(b"my_func"), FunctionId::of(b"my_fund"));
    }

    #[test]
    fn every_known_name_is_known_in_any_case() {
        for (dialect, lists) in [
            (Dialect::Postgres, [KEYWORDS_WITH_PARENS, POSTGRES_READS]),
            (Dialect::MySql, [KEYWORDS_WITH_PARENS, MYSQL_READS]),
        ] {
            for name in lists.iter().flat_map(|l| l.iter()) {
                let upper = name.to_ascii_uppercase();
                assert!(
                    known_read(FunctionId::of(upper.as_bytes()), dialect),
                    "{name}"
                );
            }
        }
        assert!(!known_read(FunctionId::of(b"my_func"), Dialect::Postgres));
        assert!(!known_read(FunctionId::of(b"nextval"), Dialect::Postgres));
        assert!(!known_read(
            FunctionId::of(b"pg_is_in_recovery"),
            Dialect::MySql
        ));
    }

    #[test]
    fn the_node_rule() {
        let pg = |name: &str| describes_node(name.as_bytes(), Dialect::Postgres);
        for name in [
            "pg_stat_activity",
            "PG_STAT_REPLICATION",
            "pg_stat_get_backend_pid",
            "pg_statio_user_tables",
            "pg_locks",
            "pg_prepared_xacts",
            "pg_backend_pid",
            "pg_replication_slots",
            "pg_current_wal_lsn",
            "pg_current_xact_id_if_assigned",
            "txid_current_if_assigned",
            "txid_current_snapshot",
            "pg_xact_status",
            "pg_last_wal_replay_lsn",
            "pg_postmaster_start_time",
            "pg_conf_load_time",
            "pg_control_checkpoint",
            "pg_ls_waldir",
            "pg_stat_reset_shared_with_a_name_longer_than_forty_bytes",
        ] {
            assert!(pg(name), "{name}");
        }
        for name in [
            "pg_is_in_recovery",
            "inet_server_addr",
            "pg_get_viewdef",
            "pg_class",
            "pg_stats",
            "pg_",
            "txid_",
            "users",
            "pg_size_pretty",
        ] {
            assert!(!pg(name), "{name}");
        }
        let my = |name: &str| describes_node(name.as_bytes(), Dialect::MySql);
        assert!(my("PROCESSLIST") && my("performance_schema") && my("Connection_Id"));
        assert!(!my("pg_locks") && !my("processlists") && !my("users"));
        assert!(!pg("processlist"));
    }

    #[test]
    fn functions_keep_each_id_once_and_overflow() {
        let mut f = Functions::NONE;
        assert!(f.is_empty());
        for i in 0..MAX_CALLS as u64 {
            f.add(FunctionId(i + 1));
            f.add(FunctionId(i + 1));
        }
        assert_eq!(f.calls().len(), MAX_CALLS);
        assert!(!f.overflow);
        f.add(FunctionId(99));
        assert!(f.overflow && !f.is_empty());
        let mut g = Functions::NONE;
        g.add(FunctionId(1));
        g.ddl = true;
        let merged = Functions::NONE.merge(&g);
        assert_eq!(merged.calls(), &[FunctionId(1)]);
        assert!(merged.ddl);
    }
}
