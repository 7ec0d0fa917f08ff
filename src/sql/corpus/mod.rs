//! The classifier's table of real statements for both dialects, each with its expected
//! class and hint, and a sweep that feeds every prefix and random junk to prove that
//! no input makes `classify` panic.

mod mysql;
mod postgres;

use super::{Class, Dialect, FunctionId, Hint, classify};
use mysql::MYSQL;
use postgres::POSTGRES;

pub(super) const R: Class = Class::Read;
pub(super) const W: Class = Class::Write;
pub(super) const P: Class = Class::Pin;
pub(super) const S: Class = Class::SessionSet;
pub(super) const E: Class = Class::End;
pub(super) const B: Class = Class::Begin { read_only: false };
pub(super) const BRO: Class = Class::Begin { read_only: true };
pub(super) const AC0: Class = Class::Autocommit(false);
pub(super) const AC1: Class = Class::Autocommit(true);
pub(super) const ND: Class = Class::Node;
pub(super) const N: Option<Hint> = None;
pub(super) const WR: Option<Hint> = Some(Hint::Writer);
pub(super) const RD: Option<Hint> = Some(Hint::Reader);

pub(super) type Case = (&'static str, Class, Option<Hint>);

fn check(cases: &[Case], dialect: Dialect) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(sql, class, hint)| {
            let got = classify(sql, dialect);
            let ok = got.class == class && got.hint == hint;
            (!ok).then(|| {
                format!(
                    "{sql:?}: want {class:?} {hint:?}, got {:?} {:?}",
                    got.class, got.hint
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{dialect:?}:\n{}", failures.join("\n"));
}

#[test]
fn postgres_corpus() {
    assert!(POSTGRES.len() >= 170, "{} cases", POSTGRES.len());
    check(POSTGRES, Dialect::Postgres);
}

#[test]
fn mysql_corpus() {
    assert!(MYSQL.len() >= 110, "{} cases", MYSQL.len());
    check(MYSQL, Dialect::MySql);
}

const PG: Dialect = Dialect::Postgres;
const MY: Dialect = Dialect::MySql;

/// The calls left for the catalog cache (user-defined or unknown functions, in any order)
/// and whether the string has DDL. Builtins known to read, keywords and types before `(`,
/// aliases with column lists, casts, known side-effect and node functions are not left.
#[rustfmt::skip]
const CALLS: &[(&str, Dialect, &[&str], bool)] = &[
    ("SELECT my_func()", PG, &["my_func"], false),
    ("SELECT app.My_Func(1), other(2) FROM t", PG, &["my_func", "other"], false),
    ("SELECT \"MyFunc\"(1)", PG, &["myfunc"], false),
    ("SELECT f(1), f(2), F(3)", PG, &["f"], false),
    ("SELECT * FROM t WHERE x IN (1, 2) AND EXISTS (SELECT 1) AND y = ANY (ARRAY[1])", PG, &[], false),
    ("SELECT count(*), coalesce(a, 0), lower(b), now(), random(), pg_is_in_recovery() FROM t", PG, &[], false),
    ("SELECT x::numeric(10, 2), CAST(y AS varchar(10)) FROM t", PG, &[], false),
    ("SELECT g.i FROM generate_series(1, 3) AS g(i)", PG, &[], false),
    ("WITH w(a, b) AS (SELECT 1, 2) SELECT * FROM w", PG, &["w"], false),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", PG, &[], false),
    ("SELECT nextval('s'), pg_backend_pid(), pg_advisory_lock(1)", PG, &[], false),
    ("SELECT 'f(1)', $$g(2)$$ -- h(3)", PG, &[], false),
    ("INSERT INTO t (a) VALUES (my_func())", PG, &["t", "my_func"], false),
    ("SELECT a(), b(), c(), d(), e(), f(), g()", PG, &["a", "b", "c", "d", "e", "f"], false),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", PG, &["f"], true),
    ("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", PG, &["f"], true),
    ("ALTER FUNCTION f() STABLE", PG, &["f"], true),
    ("drop function f(int)", PG, &["f"], true),
    ("SELECT 1; DROP TABLE t", PG, &[], true),
    ("SELECT my_func(), IFNULL(a, 0), DATABASE(), CAST(? AS SIGNED) FROM t", MY, &["my_func"], false),
    ("SELECT `db`.`stored_fn`(1)", MY, &["stored_fn"], false),
    ("SELECT CONVERT(x, DECIMAL(10, 2)), GROUP_CONCAT(y) FROM t", MY, &[], false),
    ("CREATE FUNCTION f() RETURNS INT RETURN 1", MY, &["f"], true),
];

#[test]
fn calls_left_for_the_catalog() {
    let failures: Vec<String> = CALLS
        .iter()
        .filter_map(|&(sql, dialect, names, ddl)| {
            let got = classify(sql, dialect).functions;
            let mut want: Vec<FunctionId> =
                names.iter().map(|n| FunctionId::of(n.as_bytes())).collect();
            let mut calls = got.calls().to_vec();
            want.sort();
            calls.sort();
            let overflow = names.len() > crate::sql::MAX_CALLS;
            let ok = calls == want
                && got.ddl == ddl
                && got.overflow == (sql.matches("()").count() > crate::sql::MAX_CALLS)
                && !overflow;
            (!ok).then(|| format!("{sql:?}: want {names:?} ddl={ddl}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Checks what must hold for any input, and that classifying it does not panic.
fn check_invariants(sql: &str) {
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        let got = classify(sql, dialect);
        assert!(got.count as usize <= sql.len(), "{sql:?}");
        if got.count == 0 {
            assert_eq!(got.class, Class::Read, "{sql:?}");
        }
    }
}

#[test]
fn every_prefix_of_every_case_classifies_without_panic() {
    for &(sql, _, _) in POSTGRES.iter().chain(MYSQL) {
        for end in (0..=sql.len()).filter(|&end| sql.is_char_boundary(end)) {
            check_invariants(&sql[..end]);
            check_invariants(&sql[end..]);
        }
    }
}

#[test]
fn deep_nesting_is_bounded() {
    let explain = "EXPLAIN ".repeat(200_000) + "SELECT 1";
    assert_eq!(classify(&explain, Dialect::Postgres).class, Class::Write);
    assert_eq!(
        classify("EXPLAIN EXPLAIN SELECT 1", Dialect::Postgres).class,
        Class::Read
    );
    let set = "SET STATEMENT a = 1 FOR ".repeat(200_000) + "SELECT 1";
    assert_eq!(classify(&set, Dialect::MySql).class, Class::Write);
    let parens = "(".repeat(1_000_000) + "SELECT 1";
    assert_eq!(classify(&parens, Dialect::Postgres).class, Class::Read);
    let comments = "/*".repeat(100_000) + "SELECT 1" + &"*/".repeat(100_000) + " SELECT 2";
    assert_eq!(classify(&comments, Dialect::Postgres).count, 1);
}

#[test]
fn random_input_classifies_without_panic() {
    const PIECES: &[&str] = &[
        "'",
        "\"",
        "`",
        "$",
        "$$",
        "$a$",
        "$1",
        "/*",
        "*/",
        "/*!",
        "/*!40101",
        "/*M!",
        "--",
        "-- ",
        "#",
        "\\",
        ";",
        "(",
        ")",
        ",",
        "=",
        ":=",
        "@",
        "@@",
        " ",
        "\n",
        "E'",
        "U&'",
        "é",
        "\u{0}",
        "SELECT",
        "select",
        "INSERT",
        "INTO",
        "FOR",
        "UPDATE",
        "SHARE",
        "WITH",
        "AS",
        "SET",
        "autocommit",
        "0",
        "1",
        "ON",
        "BEGIN",
        "READ",
        "ONLY",
        "EXPLAIN",
        "ANALYZE",
        "COPY",
        "TO",
        "STDOUT",
        "FROM",
        "nextval",
        "GET_LOCK",
        "CREATE",
        "TEMP",
        "switchyard:writer",
        "LOCK",
        "IN",
        "NEXT",
        "VALUE",
        "ROLLBACK",
        "CHAIN",
        "STATEMENT",
        "PREPARE",
        "x",
    ];
    // A fixed-seed xorshift generator keeps the test deterministic.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sql = String::new();
    let mut bytes = Vec::new();
    for _ in 0..20_000 {
        sql.clear();
        for _ in 0..next() % 24 {
            sql.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        check_invariants(&sql);
        bytes.clear();
        bytes.extend((0..next() % 48).map(|_| next() as u8));
        check_invariants(&String::from_utf8_lossy(&bytes));
    }
}
