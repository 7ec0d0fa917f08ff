//! Measures the SQL classifier on typical statements: it runs once per query on the
//! data path, so it must stay well under a microsecond.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::sql::{Dialect, classify};

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

fn bench_classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for &(name, dialect, sql) in CASES {
        group.bench_function(format!("{name}_{}b", sql.len()), |b| {
            b.iter(|| classify(black_box(sql), black_box(dialect)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
