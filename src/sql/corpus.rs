//! The classifier's table of real statements for both dialects, each with its expected
//! class and hint, and a sweep that feeds every prefix and random junk to prove that
//! no input makes `classify` panic.

use super::{Class, Dialect, FunctionId, Hint, classify};

const R: Class = Class::Read;
const W: Class = Class::Write;
const P: Class = Class::Pin;
const S: Class = Class::SessionSet;
const E: Class = Class::End;
const B: Class = Class::Begin { read_only: false };
const BRO: Class = Class::Begin { read_only: true };
const AC0: Class = Class::Autocommit(false);
const AC1: Class = Class::Autocommit(true);
const ND: Class = Class::Node;
const N: Option<Hint> = None;
const WR: Option<Hint> = Some(Hint::Writer);
const RD: Option<Hint> = Some(Hint::Reader);

type Case = (&'static str, Class, Option<Hint>);

#[rustfmt::skip]
const POSTGRES: &[Case] = &[
    // Plain reads.
    ("SELECT 1", R, N),
    ("select * from users where id = $1", R, N),
    ("  \n\tSELECT 1", R, N),
    ("SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id LEFT JOIN addresses a ON a.user_id = u.id WHERE u.active AND o.created_at > now() - interval '7 days' ORDER BY o.total DESC LIMIT 50", R, N),
    ("VALUES (1, 'a'), (2, 'b')", R, N),
    ("TABLE users", R, N),
    ("SHOW search_path", R, N),
    ("SHOW ALL", R, N),
    ("show transaction isolation level", R, N),
    ("(SELECT 1) UNION (SELECT 2)", R, N),
    ("((SELECT 1))", R, N),
    ("/* c */ (SELECT 1)", R, N),
    ("-- leading comment\nSELECT 1", R, N),
    ("SELECT count(*) FROM t GROUP BY a HAVING count(*) > 1", R, N),
    ("SELECT * FROM t WHERE x IN (SELECT y FROM u)", R, N),
    ("SELECT pg_sleep(1)", R, N),
    ("SELECT now(), current_user, version()", R, N),
    ("SELECT pg_is_in_recovery()", R, N),
    ("SELECT txid_current_snapshot()", ND, N),
    ("SELECT * FROM generate_series(1, 10)", R, N),
    ("SELECT lower(name), pg_catalog.upper(name) FROM t", R, N),
    ("SELECT 1::int, 'x'::text, $1::int + $2", R, N),
    ("select distinct on (a) a, b from t order by a, b", R, N),
    ("SELECT sum(x) OVER w FROM t WINDOW w AS (PARTITION BY a)", R, N),
    ("SELECT array_agg(x) FILTER (WHERE x > 0) FROM t", R, N),
    ("SELECT jsonb_set(doc, '{a}', '1') FROM t", R, N),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, N),
    ("SELECT substring(s FROM 1 FOR 3) FROM t", R, N),
    ("SELECT overlay(s PLACING 'x' FROM 1 FOR 2) FROM t", R, N),
    ("SELECT * FROM update_log WHERE deleted_at IS NULL", R, N),
    ("SELECT a$b FROM t", R, N),
    ("SELECT my_schema.setval_audit(1)", R, N),
    ("SELECT pg_advisory_lock_info(1)", R, N),
    // Keywords hidden in strings, comments, quoted identifiers and dollar quotes.
    ("SELECT nextval FROM t", R, N),
    ("SELECT 'nextval(' FROM t", R, N),
    (r#"SELECT "for update" FROM t"#, R, N),
    (r#"SELECT "nextval" FROM t"#, R, N),
    (r#"SELECT a FROM "insert""#, R, N),
    (r#"SELECT * FROM t WHERE "update" = 1"#, R, N),
    ("SELECT 'FOR UPDATE' AS x", R, N),
    ("SELECT * FROM t WHERE note LIKE '%for update%'", R, N),
    ("SELECT $$ INSERT INTO t $$", R, N),
    ("SELECT $tag$ DELETE FROM t; $$ still $tag$", R, N),
    ("SELECT $a$ $b$ UPDATE $b$ $a$, 1", R, N),
    (r"SELECT E'it\'s; DELETE FROM t'", R, N),
    (r"SELECT e'\\', 'x'", R, N),
    (r"SELECT * FROM t WHERE a = 'x' AND b = E'\\' AND c = 'FOR UPDATE'", R, N),
    ("SELECT 'it''s; DELETE FROM t'", R, N),
    (r"SELECT 'a\' ; DELETE FROM t; --'", W, N),
    ("SELECT /* DELETE FROM t; */ 1", R, N),
    ("SELECT /* nested /* INSERT */ still comment; UPDATE */ 1", R, N),
    ("SELECT 1 -- ; DELETE FROM t", R, N),
    (r"SELECT U&'d\0061t\+000061' FROM t", R, N),
    (r#"SELECT U&"d\0061t" FROM t"#, R, N),
    ("SELECT B'1010', X'1F'", R, N),
    ("SELECT 'pg_advisory_lock(1)'", R, N),
    ("SELECT /* nextval('s') */ 1", R, N),
    // Locking reads.
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", W, N),
    ("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE OF jobs SKIP LOCKED", W, N),
    ("SELECT * FROM t FOR NO KEY UPDATE", W, N),
    ("SELECT * FROM t FOR SHARE", W, N),
    ("SELECT * FROM t FOR KEY SHARE NOWAIT", W, N),
    ("select * from t for update", W, N),
    ("SELECT * FROM t FOR\nUPDATE", W, N),
    ("SELECT * FROM t FOR /* c */ UPDATE", W, N),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W, N),
    ("SELECT * FROM t WHERE x = 'it''s' FOR UPDATE", W, N),
    ("SELECT 1 FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a FOR UPDATE)", W, N),
    ("(SELECT * FROM t FOR UPDATE)", W, N),
    // SELECT INTO creates a table.
    ("SELECT * INTO new_table FROM t", W, N),
    ("SELECT * INTO UNLOGGED t2 FROM t", W, N),
    ("SELECT * INTO TEMP tmp FROM t", P, N),
    ("SELECT * INTO TEMPORARY TABLE tmp FROM t", P, N),
    ("SELECT * INTO LOCAL TEMP tmp FROM t", P, N),
    // CTEs.
    ("WITH x AS (SELECT 1) SELECT * FROM x", R, N),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", R, N),
    ("with recursive t(n) as (values (1) union all select n+1 from t where n < 3) select sum(n) from t", R, N),
    ("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", R, N),
    ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", R, N),
    ("WITH x AS NOT MATERIALIZED (SELECT 1) SELECT * FROM x", R, N),
    ("WITH a AS (WITH b AS (SELECT 1) SELECT * FROM b) SELECT * FROM a", R, N),
    ("WITH x AS (SELECT 'DELETE FROM t') SELECT * FROM x", R, N),
    ("WITH moved AS (DELETE FROM q WHERE id < 10 RETURNING *) SELECT count(*) FROM moved", W, N),
    ("WITH n AS (INSERT INTO t (a) VALUES (1) RETURNING id) SELECT id FROM n", W, N),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", W, N),
    ("WITH u AS ( /* c */ UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", W, N),
    ("WITH outer_cte AS (WITH inner_cte AS (DELETE FROM t RETURNING id) SELECT id FROM inner_cte) SELECT * FROM outer_cte", W, N),
    ("WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT * FROM m", W, N),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W, N),
    ("WITH x AS (SELECT 1) UPDATE t SET a = 1", W, N),
    ("WITH x AS (SELECT 1) DELETE FROM t", W, N),
    ("WITH s AS (SELECT nextval('seq') AS id) SELECT id FROM s", W, N),
    // Side-effect functions.
    ("SELECT nextval('seq')", W, N),
    ("SELECT NEXTVAL('seq')", W, N),
    ("SELECT nextval ('seq')", W, N),
    ("SELECT pg_catalog.nextval('seq')", W, N),
    (r#"SELECT "pg_catalog"."nextval"('seq')"#, W, N),
    ("SELECT id, nextval('s') FROM t", W, N),
    ("SELECT * FROM t WHERE id = nextval('s')", W, N),
    ("VALUES (nextval('s'))", W, N),
    ("SELECT setval('seq', 42)", W, N),
    ("SELECT currval('seq')", W, N),
    ("SELECT lastval()", W, N),
    ("SELECT pg_advisory_xact_lock(42)", W, N),
    ("SELECT pg_try_advisory_xact_lock(42)", W, N),
    ("SELECT pg_notify('chan', 'payload')", W, N),
    ("SELECT txid_current()", W, N),
    ("SELECT pg_current_xact_id()", W, N),
    ("SELECT set_config('search_path', 'app', false)", W, N),
    ("SELECT lo_create(0)", W, N),
    ("SELECT lo_import('/tmp/x')", W, N),
    ("SELECT lo_unlink(16400)", W, N),
    ("SELECT dblink_exec('conn', 'DELETE FROM t')", W, N),
    ("SELECT pg_terminate_backend(123)", W, N),
    ("SELECT pg_cancel_backend(123)", W, N),
    ("SELECT pg_reload_conf()", W, N),
    ("SELECT pg_switch_wal()", W, N),
    ("SELECT pg_create_restore_point('before')", W, N),
    ("SELECT pg_stat_reset()", W, N),
    ("SELECT pg_stat_reset_shared('bgwriter')", W, N),
    // Session advisory locks pin.
    ("SELECT pg_advisory_lock(42)", P, N),
    ("SELECT pg_try_advisory_lock(1, 2)", P, N),
    ("select PG_ADVISORY_LOCK(hashtext('job'))", P, N),
    ("SELECT pg_advisory_unlock(42)", P, N),
    ("SELECT pg_advisory_unlock_all()", P, N),
    ("SELECT 1 WHERE EXISTS (SELECT pg_advisory_lock(1))", P, N),
    ("UPDATE t SET a = 1 WHERE pg_try_advisory_lock(id)", P, N),
    // EXPLAIN.
    ("EXPLAIN SELECT * FROM t", R, N),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, N),
    ("EXPLAIN ANALYSE SELECT 1", R, N),
    ("EXPLAIN ANALYZE VERBOSE SELECT 1", R, N),
    ("EXPLAIN (FORMAT JSON) SELECT 1", R, N),
    ("EXPLAIN (ANALYZE false) SELECT 1", R, N),
    ("EXPLAIN (SELECT 1)", R, N),
    ("EXPLAIN WITH x AS (SELECT 1) SELECT * FROM x", R, N),
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W, N),
    ("EXPLAIN INSERT INTO t VALUES (1)", W, N),
    ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", W, N),
    ("EXPLAIN (ANALYZE true, VERBOSE) UPDATE t SET a = 1", W, N),
    ("EXPLAIN (ANALYZE off) UPDATE t SET a = 1", W, N),
    ("EXPLAIN SELECT * FROM t FOR UPDATE", W, N),
    ("EXPLAIN ANALYZE SELECT nextval('s')", W, N),
    ("EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W, N),
    ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", P, N),
    ("explain analyze create table t2 as select * from t", W, N),
    ("EXPLAIN", W, N),
    // COPY.
    ("COPY t TO STDOUT", R, N),
    ("COPY t (a, b) TO STDOUT WITH (FORMAT csv, HEADER)", R, N),
    ("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT", R, N),
    ("COPY (SELECT a FROM t JOIN u ON u.id = t.u_id) TO STDOUT (FORMAT binary)", R, N),
    ("copy (select * from t) to stdout with csv header", R, N),
    ("COPY t FROM STDIN", W, N),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, N),
    ("copy t from '/tmp/x'", W, N),
    ("COPY t TO '/tmp/t.csv'", W, N),
    ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", W, N),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", W, N),
    ("COPY (SELECT nextval('s')) TO STDOUT", W, N),
    // Transaction control.
    ("BEGIN", B, N),
    ("begin;", B, N),
    ("BEGIN WORK", B, N),
    ("BEGIN TRANSACTION", B, N),
    ("BEGIN READ ONLY", BRO, N),
    ("BEGIN READ WRITE", B, N),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", B, N),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", B, N),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE", B, N),
    ("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", BRO, N),
    ("START TRANSACTION", B, N),
    ("START TRANSACTION READ ONLY", BRO, N),
    ("start transaction isolation level serializable", B, N),
    ("COMMIT", E, N),
    ("commit work", E, N),
    ("COMMIT TRANSACTION", E, N),
    ("COMMIT AND NO CHAIN", E, N),
    ("END", E, N),
    ("END TRANSACTION", E, N),
    ("ABORT", E, N),
    ("ROLLBACK", E, N),
    ("ROLLBACK WORK", E, N),
    ("COMMIT AND CHAIN", W, N),
    ("ROLLBACK TO SAVEPOINT sp1", W, N),
    ("ROLLBACK TO sp1", W, N),
    ("ROLLBACK WORK TO SAVEPOINT sp1", W, N),
    ("SAVEPOINT sp1", W, N),
    ("RELEASE SAVEPOINT sp1", W, N),
    ("RELEASE sp1", W, N),
    ("PREPARE TRANSACTION 'gid1'", W, N),
    ("COMMIT PREPARED 'gid1'", W, N),
    ("ROLLBACK PREPARED 'gid1'", W, N),
    // Session state.
    ("SET search_path TO app, public", S, N),
    (r#"SET search_path = "$user", public"#, S, N),
    ("SET SESSION statement_timeout = '5s'", S, N),
    ("set time zone 'UTC'", S, N),
    ("SET TIME ZONE LOCAL", S, N),
    ("SET NAMES 'UTF8'", S, N),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", P, N),
    ("SET application_name = 'web'", S, N),
    ("SET myapp.tenant_id = '42'", S, N),
    ("SET ROLE reporting", S, N),
    ("SET SESSION AUTHORIZATION alice", S, N),
    ("SET autocommit = 0", S, N),
    ("RESET search_path", S, N),
    ("RESET ALL", S, N),
    ("SET LOCAL statement_timeout = '1s'", W, N),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, N),
    ("SET TRANSACTION READ ONLY", W, N),
    ("SET CONSTRAINTS ALL DEFERRED", W, N),
    // Session state that pins.
    ("LISTEN jobs", P, N),
    ("UNLISTEN *", P, N),
    ("CREATE TEMP TABLE tmp (id int)", P, N),
    ("CREATE TEMPORARY TABLE tmp AS SELECT * FROM t", P, N),
    ("create local temporary table tmp (a int)", P, N),
    ("CREATE GLOBAL TEMP TABLE tmp (a int)", P, N),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", P, N),
    ("CREATE TEMP SEQUENCE s", P, N),
    ("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", P, N),
    ("PREPARE q AS INSERT INTO t VALUES ($1)", P, N),
    ("DEALLOCATE q", P, N),
    ("DEALLOCATE ALL", P, N),
    ("DEALLOCATE PREPARE q", P, N),
    ("DECLARE c CURSOR FOR SELECT * FROM t", P, N),
    ("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", P, N),
    ("DISCARD ALL", P, N),
    ("DISCARD TEMP", P, N),
    // Writes, DDL and everything else.
    ("NOTIFY jobs, 'x'", W, N),
    ("EXECUTE q(1)", W, N),
    ("FETCH 10 FROM c", W, N),
    ("CLOSE c", W, N),
    ("INSERT INTO t (a, b) VALUES (1, 'x')", W, N),
    ("INSERT INTO t (a) VALUES ($1) RETURNING id", W, N),
    ("insert into t select * from u", W, N),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a", W, N),
    ("INSERT INTO temp VALUES (1)", W, N),
    ("UPDATE t SET a = a + 1 WHERE id = 1", W, N),
    ("DELETE FROM t WHERE id = 1", W, N),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", W, N),
    ("UPSERT INTO t VALUES (1)", W, N),
    ("TRUNCATE t", W, N),
    ("CREATE TABLE t (id bigserial PRIMARY KEY)", W, N),
    ("CREATE UNLOGGED TABLE u (a int)", W, N),
    ("CREATE TABLE t2 AS SELECT * FROM t", W, N),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", W, N),
    ("ALTER TABLE t ADD COLUMN b int", W, N),
    ("DROP TABLE t", W, N),
    ("GRANT SELECT ON t TO r", W, N),
    ("REVOKE ALL ON t FROM r", W, N),
    ("VACUUM ANALYZE t", W, N),
    ("ANALYZE t", W, N),
    ("CHECKPOINT", W, N),
    ("REFRESH MATERIALIZED VIEW mv", W, N),
    ("CLUSTER t USING i", W, N),
    ("REINDEX TABLE t", W, N),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, N),
    ("CALL do_things(1)", W, N),
    ("DO $$ BEGIN PERFORM 1; END $$", W, N),
    ("DO $body$ BEGIN RAISE NOTICE 'SELECT'; END $body$ LANGUAGE plpgsql", W, N),
    ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", W, N),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", W, N),
    ("COMMENT ON TABLE t IS 'SELECT'", W, N),
    ("USE shop", W, N),
    ("DESCRIBE t", W, N),
    ("LOCK TABLES t WRITE", W, N),
    ("SELEC 1", W, N),
    ("garbage", W, N),
    ("'just a string'", W, N),
    ("42", W, N),
    ("(", W, N),
    (")", W, N),
    ("DELETE", W, N),
    // Unterminated input classifies by what came before it.
    ("SELECT 'unterminated", R, N),
    ("SELECT 1 /* unterminated", R, N),
    ("SELECT $$ unterminated", R, N),
    (r#"SELECT "unterminated"#, R, N),
    ("INSERT INTO t VALUES ('unterminated", W, N),
    // Several statements.
    ("SELECT 1; SELECT 2", R, N),
    ("SELECT 1;", R, N),
    ("SELECT ';' ; SELECT 2", R, N),
    ("SELECT 1; INSERT INTO t VALUES (1)", W, N),
    ("BEGIN; UPDATE t SET a = 1; COMMIT;", W, N),
    ("BEGIN READ ONLY; SELECT 1; COMMIT", W, N),
    ("SET search_path TO app; SELECT 1", P, N),
    ("SELECT 1; LISTEN c", P, N),
    // Hints.
    ("/* switchyard:writer */ SELECT 1", R, WR),
    ("SELECT 1 /* switchyard:reader */", R, RD),
    ("/*SWITCHYARD:WRITER*/ SELECT 1", R, WR),
    ("/* switchyard : reader */ SELECT * FROM t", R, RD),
    ("/*\n  switchyard:\treader\n*/ SELECT 1", R, RD),
    ("SELECT 1 -- switchyard:writer", R, WR),
    ("-- switchyard:reader\nINSERT INTO t VALUES (1)", W, RD),
    ("/* a /* switchyard:reader */ b */ SELECT 1", R, RD),
    ("SELECT 1; /* switchyard:writer */ SELECT 2", R, WR),
    ("/* switchyard:reader */ /* switchyard:writer */ SELECT 1", R, WR),
    ("SELECT '/* switchyard:writer */'", R, N),
    (r#"SELECT "switchyard:writer""#, R, N),
    ("SELECT $$ -- switchyard:writer $$", R, N),
    ("/* switchyard:primary */ SELECT 1", R, N),
    ("# switchyard:writer\nSELECT 1", W, N),
    // About the node itself (the session's own writer): statistics and activity views and
    // functions, locks, prepared transactions, replication, WAL and transaction-id
    // positions, this backend, the server process.
    ("SELECT * FROM pg_stat_activity", ND, N),
    ("select pid, state from pg_catalog.pg_stat_activity where datname = current_database()", ND, N),
    ("SELECT * FROM pg_stat_replication", ND, N),
    ("SELECT * FROM pg_stat_ssl WHERE pid = pg_backend_pid()", ND, N),
    ("SELECT relname, heap_blks_read FROM pg_statio_user_tables", ND, N),
    ("SELECT pg_stat_get_backend_pid(1)", ND, N),
    ("SELECT locktype, mode FROM pg_locks WHERE NOT granted", ND, N),
    ("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()", ND, N),
    ("SELECT name FROM pg_prepared_statements", ND, N),
    ("SELECT * FROM pg_cursors", ND, N),
    ("SELECT pg_backend_pid()", ND, N),
    ("SELECT pg_blocking_pids(123)", ND, N),
    ("SELECT slot_name FROM pg_replication_slots", ND, N),
    ("SELECT * FROM pg_replication_origin_status", ND, N),
    ("SELECT pg_current_wal_lsn()", ND, N),
    ("SELECT pg_current_xact_id_if_assigned()", ND, N),
    ("SELECT txid_current_if_assigned()", ND, N),
    ("SELECT txid_status(1234)", ND, N),
    ("SELECT pg_xact_status('1234')", ND, N),
    ("SELECT pg_last_wal_replay_lsn()", ND, N),
    ("SELECT pg_postmaster_start_time(), pg_conf_load_time()", ND, N),
    ("SELECT * FROM pg_control_checkpoint()", ND, N),
    ("SELECT * FROM pg_ls_waldir()", ND, N),
    ("SELECT pg_listening_channels()", ND, N),
    ("SELECT * FROM \"pg_locks\"", ND, N),
    ("WITH a AS (SELECT * FROM pg_stat_activity) SELECT count(*) FROM a", ND, N),
    ("SELECT 1; SELECT * FROM pg_locks", ND, N),
    ("EXPLAIN SELECT * FROM pg_locks", R, N),
    ("EXPLAIN ANALYZE SELECT * FROM pg_locks", ND, N),
    ("/* switchyard:reader */ SELECT * FROM pg_stat_activity", ND, RD),
    // ... unless the statement writes, or it only names such a thing in text.
    ("SELECT pg_stat_reset()", W, N),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x'", W, N),
    ("SELECT * FROM pg_locks FOR UPDATE", W, N),
    ("SELECT 'pg_locks', stat_activity FROM t", R, N),
    ("SELECT * FROM my_pg_locks", R, N),
    // Asking which server answered is a read (answered where it runs).
    ("SELECT pg_is_in_recovery(), inet_server_addr(), inet_server_port(), version()", R, N),
    ("SELECT current_setting('search_path')", R, N),
    ("SELECT * FROM pg_stats WHERE tablename = 't'", R, N),
    // Transactions a hot standby refuses: serializable ones stay on the writer.
    ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", B, N),
    ("begin transaction read only isolation level serializable", B, N),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", B, N),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", BRO, N),
    ("BEGIN READ ONLY", BRO, N),
    ("SET default_transaction_isolation = 'serializable'", P, N),
    ("SET default_transaction_isolation TO serializable", P, N),
    ("SET SESSION default_transaction_isolation = 'SERIALIZABLE'", P, N),
    ("set session characteristics as transaction isolation level serializable, read only", P, N),
    ("SET default_transaction_isolation = 'repeatable read'", S, N),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", S, N),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", W, N),
];

#[rustfmt::skip]
const MYSQL: &[Case] = &[
    // Plain reads.
    ("SELECT 1", R, N),
    ("select * from users where id = ?", R, N),
    ("SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.active = 1 ORDER BY o.total DESC LIMIT 10", R, N),
    ("TABLE t", R, N),
    ("VALUES ROW(1, 2), ROW(3, 4)", R, N),
    ("(SELECT 1) UNION ALL (SELECT 2)", R, N),
    ("WITH cte AS (SELECT 1 AS a) SELECT a FROM cte", R, N),
    ("WITH RECURSIVE c (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT * FROM c", R, N),
    ("SELECT SLEEP(1)", R, N),
    ("SELECT UUID_SHORT()", R, N),
    ("SELECT UUID(), NOW(), RAND()", R, N),
    ("SELECT INSERT('Quadratic', 3, 4, 'What')", R, N),
    ("SELECT REPLACE(name, 'a', 'b') FROM t", R, N),
    ("SELECT IF(a > 1, 'x', 'y') FROM t", R, N),
    ("SELECT @a", R, N),
    ("SELECT @@version, @@session.sql_mode", R, N),
    ("SELECT nextval FROM t", R, N),
    ("SELECT pg_advisory_lock(1)", R, N),
    ("SELECT 1--1", R, N),
    ("SELECT 5 - -1", R, N),
    // Keywords hidden in strings, comments and identifiers.
    ("SELECT `select`, `from` FROM `order`", R, N),
    ("SELECT `for update` FROM t", R, N),
    (r#"SELECT 'FOR UPDATE', "INTO OUTFILE""#, R, N),
    (r"SELECT 'it\'s; DELETE FROM t'", R, N),
    (r#"SELECT "a\"; DELETE FROM t""#, R, N),
    ("SELECT 'it''s; DELETE FROM t'", R, N),
    (r#"SELECT "it""s; DELETE FROM t""#, R, N),
    ("SELECT `a``b; DELETE FROM t` FROM t", R, N),
    ("SELECT 1 # comment; DELETE FROM t", R, N),
    ("SELECT 1 -- comment; DELETE FROM t", R, N),
    ("SELECT /* DELETE */ 1", R, N),
    ("SELECT 'LAST_INSERT_ID()'", R, N),
    ("SELECT `LAST_INSERT_ID` FROM t", R, N),
    ("SELECT /* GET_LOCK('x', 1) */ 1", R, N),
    ("SELECT $$ FROM t", R, N),
    // Version comments are code; optimizer hints are comments.
    ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", R, N),
    ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", R, N),
    ("SELECT /*+ BKA(t1) NO_BKA(t2) */ * FROM t1 JOIN t2", R, N),
    ("SELECT 1 /*!, 2 */", R, N),
    ("/*M!100100 SELECT 1 */", R, N),
    ("SELECT * FROM t /*!50100 FOR UPDATE */", W, N),
    ("/*!40101 SET NAMES utf8 */", S, N),
    ("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;", S, N),
    ("/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;", S, N),
    ("/*!50001 CREATE ALGORITHM=UNDEFINED VIEW v AS SELECT 1 */", W, N),
    ("/*!40000 ALTER TABLE `t` DISABLE KEYS */;", W, N),
    // SHOW, DESCRIBE, EXPLAIN.
    ("SHOW TABLES", R, N),
    ("SHOW FULL PROCESSLIST", ND, N),
    ("SHOW VARIABLES LIKE 'autocommit'", R, N),
    ("SHOW CREATE TABLE t", R, N),
    ("SHOW WARNINGS", R, N),
    ("show databases", R, N),
    ("DESCRIBE t", R, N),
    ("DESC t", R, N),
    ("DESC t col", R, N),
    ("EXPLAIN t", R, N),
    ("EXPLAIN FOR CONNECTION 42", R, N),
    ("EXPLAIN SELECT * FROM t", R, N),
    ("EXPLAIN FORMAT=JSON SELECT * FROM t", R, N),
    ("EXPLAIN FORMAT = TREE SELECT 1", R, N),
    ("EXPLAIN EXTENDED SELECT 1", R, N),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, N),
    ("EXPLAIN ANALYZE FORMAT=TREE SELECT * FROM t", R, N),
    ("DESCRIBE SELECT * FROM t", R, N),
    ("EXPLAIN TABLE t", R, N),
    ("EXPLAIN UPDATE t SET a = 1", W, N),
    ("EXPLAIN SELECT * FROM t FOR UPDATE", W, N),
    ("EXPLAIN ANALYZE SELECT LAST_INSERT_ID()", W, N),
    // Locking reads and SELECT INTO.
    ("SELECT * FROM t WHERE a = 'x' LOCK IN SHARE MODE", W, N),
    ("SELECT * FROM t FOR UPDATE", W, N),
    ("SELECT * FROM t FOR SHARE SKIP LOCKED", W, N),
    ("select * from t where id = 1 for update nowait", W, N),
    ("SELECT a INTO @x FROM t LIMIT 1", W, N),
    ("SELECT a FROM t INTO @x", W, N),
    ("SELECT * FROM t INTO OUTFILE '/tmp/t.csv'", W, N),
    ("SELECT * INTO DUMPFILE '/tmp/x' FROM t", W, N),
    // Side-effect functions.
    ("SELECT LAST_INSERT_ID()", W, N),
    ("select last_insert_id()", W, N),
    ("SELECT FOUND_ROWS()", W, N),
    ("SELECT ROW_COUNT()", W, N),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", W, N),
    ("SELECT RELEASE_LOCK('job')", W, N),
    ("SELECT RELEASE_ALL_LOCKS()", W, N),
    ("SELECT IS_USED_LOCK('job')", W, N),
    ("SELECT IS_FREE_LOCK('job')", W, N),
    ("SELECT NEXT VALUE FOR s", W, N),
    ("SELECT PREVIOUS VALUE FOR s", W, N),
    ("SELECT NEXTVAL(s)", W, N),
    ("SELECT LASTVAL(s)", W, N),
    ("SELECT SETVAL(s, 100)", W, N),
    ("SELECT @rownum := @rownum + 1 AS n FROM t", W, N),
    ("SELECT GET_LOCK('job', 10)", P, N),
    ("SELECT get_lock('job', 10) AS ok", P, N),
    ("DO GET_LOCK('job', 10)", P, N),
    // Transaction control.
    ("BEGIN", B, N),
    ("BEGIN WORK", B, N),
    ("START TRANSACTION", B, N),
    ("START TRANSACTION READ ONLY", BRO, N),
    ("start transaction read only", BRO, N),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT", B, N),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", BRO, N),
    ("START TRANSACTION READ WRITE", B, N),
    ("COMMIT", E, N),
    ("COMMIT WORK", E, N),
    ("ROLLBACK", E, N),
    ("ROLLBACK WORK", E, N),
    ("COMMIT AND NO CHAIN NO RELEASE", E, N),
    ("COMMIT AND CHAIN", W, N),
    ("ROLLBACK TO SAVEPOINT sp", W, N),
    ("ROLLBACK WORK TO sp", W, N),
    ("SAVEPOINT sp", W, N),
    ("RELEASE SAVEPOINT sp", W, N),
    ("BEGIN NOT ATOMIC SELECT 1; END", W, N),
    ("START SLAVE", W, N),
    ("START REPLICA", W, N),
    ("XA START 'x'", W, N),
    ("END", W, N),
    // Autocommit.
    ("SET autocommit = 0", AC0, N),
    ("SET autocommit=1", AC1, N),
    ("SET AUTOCOMMIT = ON", AC1, N),
    ("set autocommit = off", AC0, N),
    ("SET autocommit = true", AC1, N),
    ("SET autocommit = FALSE", AC0, N),
    ("SET autocommit = 'OFF'", AC0, N),
    ("SET autocommit := 0", AC0, N),
    ("SET @@autocommit = 0", AC0, N),
    ("SET @@session.autocommit = 1", AC1, N),
    ("SET @@SESSION.AUTOCOMMIT=0", AC0, N),
    ("SET SESSION autocommit = 0", AC0, N),
    ("SET LOCAL autocommit = 1", AC1, N),
    ("/*!40101 SET autocommit=0 */", AC0, N),
    ("SET autocommit = @saved", P, N),
    ("SET autocommit = 0, sql_mode = ''", P, N),
    ("SET GLOBAL autocommit = 0", W, N),
    ("SET @autocommit = 0", S, N),
    // Session state.
    ("SET NAMES utf8mb4", S, N),
    ("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", S, N),
    ("SET CHARACTER SET utf8", S, N),
    ("SET sql_mode = 'STRICT_TRANS_TABLES'", S, N),
    ("SET SESSION sql_mode = ''", S, N),
    ("SET LOCAL sql_mode = ''", S, N),
    ("SET @@session.time_zone = '+00:00'", S, N),
    ("SET time_zone = 'UTC'", S, N),
    ("SET @uservar = 42", S, N),
    ("SET @a := 1, @b := 'x'", S, N),
    ("SET @`quoted var` = 1", S, N),
    ("SET @global = 1", S, N),
    ("SET @n = (SELECT COUNT(*) FROM t)", S, N),
    ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", S, N),
    ("SET ROLE ALL", S, N),
    ("USE shop", S, N),
    ("use `my-db`", S, N),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, N),
    ("SET TRANSACTION READ ONLY", W, N),
    ("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", W, N),
    ("SET GLOBAL max_connections = 500", W, N),
    ("SET @@global.read_only = 1", W, N),
    ("SET PERSIST max_connections = 500", W, N),
    ("SET GLOBAL a = 1, b = 2", W, N),
    ("SET GLOBAL a = 1, SESSION b = 2", P, N),
    ("SET @@global.a = 1, b = 2", P, N),
    ("SET GLOBAL a = 1, @global = 2", P, N),
    ("SET PASSWORD = 'x'", W, N),
    ("SET PASSWORD FOR 'u'@'%' = 'x'", W, N),
    ("SET DEFAULT ROLE ALL TO 'u'@'%'", W, N),
    ("SET @id = LAST_INSERT_ID()", P, N),
    ("SET @got = GET_LOCK('x', 1)", P, N),
    ("SET STATEMENT max_statement_time = 1 FOR SELECT * FROM t", R, N),
    ("SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1", W, N),
    // Session state that pins.
    ("LOCK TABLES t WRITE", P, N),
    ("LOCK TABLES t READ, u WRITE", P, N),
    ("UNLOCK TABLES", P, N),
    ("LOCK INSTANCE FOR BACKUP", P, N),
    ("FLUSH TABLES WITH READ LOCK", P, N),
    ("FLUSH TABLES t FOR EXPORT", P, N),
    ("CREATE TEMPORARY TABLE tmp (id INT)", P, N),
    ("CREATE TEMPORARY TABLE IF NOT EXISTS tmp SELECT * FROM t", P, N),
    ("CREATE OR REPLACE TEMPORARY TABLE tmp (a INT)", P, N),
    ("PREPARE stmt FROM 'SELECT * FROM t WHERE id = ?'", P, N),
    ("DEALLOCATE PREPARE stmt", P, N),
    ("DROP PREPARE stmt", P, N),
    ("HANDLER t OPEN", P, N),
    ("HANDLER t READ FIRST", P, N),
    // Writes and everything else.
    ("FLUSH PRIVILEGES", W, N),
    ("EXECUTE stmt USING @id", W, N),
    ("INSERT INTO t (a) VALUES (1)", W, N),
    ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)", W, N),
    ("INSERT IGNORE INTO t SET a = 1", W, N),
    ("REPLACE INTO t VALUES (1)", W, N),
    ("UPDATE t SET a = 1 WHERE id = 2", W, N),
    ("DELETE FROM t WHERE id = 1", W, N),
    ("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t", W, N),
    ("CALL proc(1)", W, N),
    ("DO SLEEP(1)", W, N),
    ("CREATE TABLE t (id INT PRIMARY KEY)", W, N),
    ("ALTER TABLE t ADD COLUMN b INT", W, N),
    ("DROP TABLE t", W, N),
    ("DROP TEMPORARY TABLE tmp", W, N),
    ("TRUNCATE TABLE t", W, N),
    ("RENAME TABLE a TO b", W, N),
    ("GRANT SELECT ON db.* TO 'u'@'%'", W, N),
    ("ANALYZE TABLE t", W, N),
    ("OPTIMIZE TABLE t", W, N),
    ("KILL 42", W, N),
    ("RESET MASTER", W, N),
    ("CREATE PROCEDURE p() BEGIN SELECT 1; END", W, N),
    ("COPY t TO STDOUT", W, N),
    ("LISTEN x", W, N),
    ("INSERT INTO t VALUES ('x", W, N),
    // Unterminated input classifies by what came before it.
    ("SELECT 'abc", R, N),
    ("SELECT `abc", R, N),
    ("SELECT /*!40001 1", R, N),
    ("SELECT /* abc", R, N),
    // Several statements.
    ("SELECT 1; SELECT 2", R, N),
    ("select 1; insert into t values (1)", W, N),
    ("SET NAMES utf8; SELECT 1", P, N),
    ("START TRANSACTION; SELECT 1; COMMIT", W, N),
    // Hints.
    ("/* switchyard:writer */ SELECT 1", R, WR),
    ("SELECT 1 # switchyard:reader", R, RD),
    ("SELECT 1 -- switchyard:writer", R, WR),
    ("SELECT /*+ switchyard:reader */ 1", R, RD),
    ("/*!40001 SELECT 1 */ /* switchyard:reader */", R, RD),
    ("UPDATE t SET a = 1 /* SwitchYard:Reader */", W, RD),
    ("SELECT '# switchyard:writer'", R, N),
    ("SELECT `switchyard:writer`", R, N),
    ("SELECT 1 --switchyard:writer", R, N),
    // About the node itself (the session's own writer).
    ("SHOW PROCESSLIST", ND, N),
    ("show full processlist", ND, N),
    ("SHOW STATUS LIKE 'Threads%'", ND, N),
    ("SHOW GLOBAL STATUS", ND, N),
    ("SHOW SESSION STATUS LIKE 'Com_select'", ND, N),
    ("SHOW ENGINE INNODB STATUS", ND, N),
    ("SHOW MASTER STATUS", ND, N),
    ("SHOW BINARY LOGS", ND, N),
    ("SHOW BINLOG EVENTS", ND, N),
    ("SHOW SLAVE STATUS", ND, N),
    ("SHOW REPLICA STATUS", ND, N),
    ("SHOW ALL SLAVES STATUS", ND, N),
    ("SHOW SLAVE HOSTS", ND, N),
    ("SHOW OPEN TABLES", ND, N),
    ("SHOW PROFILES", ND, N),
    ("SHOW EXPLAIN FOR 12", ND, N),
    ("SELECT CONNECTION_ID()", ND, N),
    ("SELECT * FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()", ND, N),
    ("SELECT * FROM performance_schema.threads", ND, N),
    ("SELECT * FROM `performance_schema`.`events_statements_current`", ND, N),
    ("SELECT * FROM information_schema.INNODB_TRX", ND, N),
    ("SELECT * FROM information_schema.GLOBAL_STATUS", ND, N),
    ("KILL 12", W, N),
    ("KILL QUERY 12", W, N),
    // Not about the node: the data dictionary, variables, the answering server's identity.
    ("SHOW TABLE STATUS", R, N),
    ("SHOW ENGINES", R, N),
    ("SHOW GLOBAL VARIABLES LIKE 'read_only'", R, N),
    ("SHOW FULL TABLES", R, N),
    ("SELECT @@hostname, @@server_id, @@read_only, @@port, VERSION()", R, N),
    ("SELECT 'processlist' FROM t", R, N),
    // Serializable is fine on a MySQL replica.
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", BRO, N),
    ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", S, N),
];

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
