//! Measures the SQL classifier on typical statements: it runs once per query on the
//! data path, so it must stay well under a microsecond. Also the cached path of a read that
//! calls a user-defined function: classify, then the catalog cache's answer.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::catalog::Catalog;
use switchyard::sql::{Class, Dialect, classify};

const CASES: &[(&str, Dialect, &str)] = &[
    (
        "pg_select_joins",
        Dialect::Postgres,
        "SELECT u.id, u.email, o.total FROM users u JOIN orders o ON o.user_id = u.id \
         LEFT JOIN refunds r ON r.order_id = o.id WHERE u.id = $1 ORDER BY o.created_at DESC",
    ),
    (
        "pg_insert_returning",
        Dialect::Postgres,
        "INSERT INTO events (user_id, kind, payload, created_at) \
         VALUES ($1, 'login', '{\"ip\": \"10.0.0.1\"}', now()) RETURNING id",
    ),
    (
        "pg_select_hint",
        Dialect::Postgres,
        "/* switchyard:writer */ SELECT balance FROM accounts WHERE id = $1 AND currency = 'EUR'",
    ),
    (
        "mysql_select",
        Dialect::MySql,
        "SELECT /*!40001 SQL_NO_CACHE */ `p`.`id`, `p`.`title`, COUNT(c.id) AS comments \
         FROM `posts` p LEFT JOIN `comments` c ON c.post_id = p.id \
         WHERE p.author = ? GROUP BY p.id LIMIT 20",
    ),
];

/// Reads calling user-defined functions, routed by a loaded catalog cache.
const CACHED: &[(&str, Dialect, &str)] = &[
    (
        "pg_select_user_functions_cached",
        Dialect::Postgres,
        "SELECT o.id, app.order_total(o.id), app.format_money(o.total, $2) FROM orders o \
         WHERE o.customer_id = $1 AND o.created_at > now() - interval '30 days'",
    ),
    (
        "mysql_select_stored_function_cached",
        Dialect::MySql,
        "SELECT p.id, shop.price_with_tax(p.price, ?) FROM products p WHERE p.category = ?",
    ),
];

fn bench_classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for &(name, dialect, sql) in CASES {
        group.bench_function(format!("{name}_{}b", sql.len()), |b| {
            b.iter(|| classify(black_box(sql), black_box(dialect)))
        });
    }
    // A catalog the size of a fresh PostgreSQL database's pg_proc (about 3,300 names).
    let catalog = Catalog::default();
    let mut rows: Vec<(Vec<u8>, bool)> = (0..3300)
        .map(|i| (format!("builtin_{i}").into_bytes(), i % 5 != 0))
        .collect();
    for name in ["order_total", "format_money", "price_with_tax"] {
        rows.push((name.as_bytes().to_vec(), true));
    }
    let cached = catalog.install("main", "shop", "app", rows);
    for &(name, dialect, sql) in CACHED {
        assert_eq!(cached.resolve(&classify(sql, dialect)).class, Class::Read);
        group.bench_function(format!("{name}_{}b", sql.len()), |b| {
            b.iter(|| cached.resolve(&classify(black_box(sql), black_box(dialect))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
