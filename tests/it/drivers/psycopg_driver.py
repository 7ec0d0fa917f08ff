"""psycopg 3 (libpq) through switchyard: what applications built on it do.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import sys
import threading
import time
import uuid
from decimal import Decimal

import psycopg
from psycopg import errors

from common import (DB, ONE_CONNECTION, CheckFailed, HOST, PASSWORD, PORT, SSLMODE,
                    THROUGH_PROXY, USER, expect, expect_eq, run_checks)


def connect(**kwargs):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB,
                  connect_timeout=10)
    if SSLMODE:
        params["sslmode"] = SSLMODE
    params.update(kwargs)
    return psycopg.connect(**params)


def on_replica(conn):
    return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def check_connect():
    with connect(autocommit=True) as conn:
        expect_eq(conn.execute("SELECT current_user").fetchone()[0], USER, "current_user")
        expect_eq(conn.info.parameter_status("server_encoding"), "UTF8", "server_encoding")
        expect(conn.info.server_version >= 150000, f"server_version {conn.info.server_version}")
        if SSLMODE:
            expect(conn.pgconn.ssl_in_use, "TLS is in use")
        expect(not ONE_CONNECTION
               or conn.info.backend_pid == conn.execute("/* switchyard:writer */ SELECT pg_backend_pid()").fetchone()[0],
               "the pid the client was told is its writer connection's")


def check_setup():
    with connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS items, bins, copied")
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))")
        conn.execute("CREATE TABLE bins (id int PRIMARY KEY, b bytea, j jsonb, a int[], "
                     "t timestamptz, u uuid, f float8, n text)")
        conn.execute("CREATE TABLE copied (id int, name text, data bytea)")


def check_simple_and_extended_queries():
    with connect(autocommit=True) as conn:
        expect_eq(conn.execute("SELECT 1 + 1").fetchone()[0], 2, "extended protocol query")
        expect_eq(conn.execute("SELECT %s::int * 2", (21,)).fetchone()[0], 42, "with a parameter")
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT %s || 'x'", ("a'b",))
        expect_eq(cur.fetchone()[0], "a'bx", "client-side binding over the simple protocol")
        # Several statements in one simple query.
        cur.execute("SELECT 1; SELECT 2")
        expect_eq(cur.fetchone()[0], 1, "first result of a multi-statement query")
        expect(cur.nextset(), "a second result set")
        expect_eq(cur.fetchone()[0], 2, "second result")


def check_prepared_statements():
    with connect(autocommit=True, prepare_threshold=2) as conn:
        for i in range(5):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (i, f"item{i}", Decimal("1.50") * i),
                         prepare=True)
        for i in range(5):
            row = conn.execute("SELECT name, price FROM items WHERE id = %s", (i,), prepare=True).fetchone()
            expect_eq(row, (f"item{i}", Decimal("1.50") * i), f"prepared read of {i}")
        # Automatic preparation after prepare_threshold executions.
        for i in range(4):
            conn.execute("SELECT count(*) FROM items WHERE id >= %s", (i,)).fetchone()
        names = conn.execute("/* switchyard:writer */ SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        expect(names >= 1, f"named statements exist on the writer ({names})")
        conn.execute("DEALLOCATE ALL")
        expect_eq(conn.execute("SELECT count(*) FROM items", prepare=True).fetchone()[0], 5,
                  "prepared again after DEALLOCATE ALL")


def check_transactions():
    with connect() as conn:  # not autocommit: psycopg opens transactions itself
        conn.execute("INSERT INTO items VALUES (100, 'committed', 1)")
        conn.commit()
        conn.execute("INSERT INTO items VALUES (101, 'rolled back', 1)")
        conn.rollback()
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (102, 'outer', 1)")
            try:
                with conn.transaction():  # a savepoint
                    conn.execute("INSERT INTO items VALUES (103, 'inner', 1)")
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            with conn.transaction():
                conn.execute("INSERT INTO items VALUES (104, 'inner kept', 1)")
        conn.commit()
        ids = [r[0] for r in conn.execute("SELECT id FROM items WHERE id >= 100 ORDER BY id")]
        expect_eq(ids, [100, 102, 104], "committed rows")
        conn.commit()


def check_copy():
    with connect(autocommit=True) as conn:
        rows = [(i, f"name {i}\t\\ \n", bytes(range(i % 256)) or None) for i in range(2000)]
        with conn.cursor() as cur:
            with cur.copy("COPY copied (id, name, data) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            expect_eq(cur.rowcount, 2000, "rows copied in (text)")
            with cur.copy("COPY copied (id, name, data) FROM STDIN (FORMAT binary)") as copy:
                copy.set_types(["int4", "text", "bytea"])
                for row in rows:
                    copy.write_row(row)
            expect_eq(conn.execute("SELECT count(*) FROM copied").fetchone()[0], 4000, "rows after COPY FROM")
            out = []
            with cur.copy("COPY (SELECT id, name, data FROM copied WHERE id < 2000 ORDER BY id) TO STDOUT") as copy:
                copy.set_types(["int4", "text", "bytea"])
                out = list(copy.rows())
            expect_eq(len(out), 4000, "rows copied out")
            expect_eq((out[0][0], out[0][1], out[0][2]), (0, "name 0\t\\ \n", None), "first row out")
            expect_eq(bytes(out[-1][2]), bytes(range(1999 % 256)), "bytea out")
            data = b""
            with cur.copy("COPY copied TO STDOUT (FORMAT binary)") as copy:
                for chunk in copy:
                    data += chunk
            expect(data.startswith(b"PGCOPY\n\xff\r\n\0"), "binary COPY TO header")
        # An error in the middle of COPY FROM: the server's error, and the session goes on.
        try:
            with conn.cursor().copy("COPY items (id, name, price) FROM STDIN") as copy:
                copy.write_row((900, "a", 1))
                copy.write_row((900, "dup", 1))
            raise CheckFailed("duplicate in COPY accepted")
        except errors.UniqueViolation:
            pass
        expect_eq(conn.execute("SELECT count(*) FROM items WHERE id = 900").fetchone()[0], 0, "failed COPY left nothing")


def check_listen_notify():
    with connect(autocommit=True) as listener, connect(autocommit=True) as notifier:
        listener.execute("LISTEN chan")
        notifier.execute("NOTIFY chan, 'hello'")
        notifier.execute("SELECT pg_notify('chan', 'second')")
        got = list(listener.notifies(timeout=10, stop_after=2))
        expect_eq([(n.channel, n.payload) for n in got], [("chan", "hello"), ("chan", "second")], "notifications")
        if ONE_CONNECTION:
            expect_eq(got[0].pid, notifier.info.backend_pid, "the notifying pid is the pid the notifier was told")
        # A notification arriving while the listener runs a query comes with its result.
        notifier.execute("NOTIFY chan, 'during'")
        seen = []
        listener.add_notify_handler(lambda n: seen.append(n.payload))
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            listener.execute("SELECT 1")
            if not seen:
                time.sleep(0.05)
        expect_eq(seen, ["during"], "notification delivered with a later query")
        listener.execute("UNLISTEN *")


def cancel_until_done(conn, query, cancel):
    """Runs `query` while another thread cancels it until it ends; returns the error."""
    done = threading.Event()
    failures = []

    def keep_cancelling():
        while not done.wait(0.1):
            try:
                cancel()
            except Exception as e:  # reported by the check below
                failures.append(e)
                return

    thread = threading.Thread(target=keep_cancelling)
    thread.start()
    started = time.monotonic()
    try:
        conn.execute(query)
        error = None
    except errors.QueryCanceled as e:
        error = e
    finally:
        done.set()
        thread.join()
    if failures:
        raise CheckFailed(f"{cancel.__name__}() failed: {failures[0]}")
    return error, time.monotonic() - started


def check_cancel():
    for name, in_transaction in (("a read (on a replica)", False), ("a transaction (on the writer)", True)):
        with connect(autocommit=True) as conn:
            if in_transaction:
                conn.execute("BEGIN")
            for cancel in (conn.cancel, conn.cancel_safe):
                err, took = cancel_until_done(conn, "SELECT pg_sleep(60)", cancel)
                expect(err is not None, f"pg_sleep(60) in {name} was not cancelled ({took:.1f}s)")
                expect_eq(err.sqlstate, "57014", "SQLSTATE of a cancelled query")
                if in_transaction:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN")
                expect_eq(conn.execute("SELECT 7").fetchone()[0], 7, f"the session after a cancel in {name}")


def check_signal_from_a_transaction():
    """pg_cancel_backend() from a connection that does not autocommit (psycopg's default:
    every statement runs in a transaction) cancels the other client's statement, and the
    caller's transaction goes on and commits."""
    with connect(autocommit=True) as victim, connect() as killer:
        victim.execute("BEGIN")
        pid = victim.info.backend_pid
        killer.execute("INSERT INTO items VALUES (6100, 'signaller', 1)")
        answers = []

        def signal():
            answers.append(killer.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0])

        err, took = cancel_until_done(victim, "SELECT pg_sleep(60)", signal)
        expect(err is not None, f"pg_sleep(60) was not cancelled by pg_cancel_backend ({took:.1f}s)")
        expect_eq(err.sqlstate, "57014", "SQLSTATE of a cancelled query")
        expect(answers and all(answers), f"pg_cancel_backend() answered {answers}")
        expect_eq(killer.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS,
                  "the signaller's transaction after pg_cancel_backend()")
        killer.commit()
        victim.execute("ROLLBACK")
        expect_eq(victim.execute("SELECT /* switchyard:writer */ name FROM items WHERE id = 6100").fetchone()[0],
                  "signaller", "the signaller's transaction committed")
        victim.execute("DELETE FROM items WHERE id = 6100")


def check_pipeline():
    with connect(autocommit=True) as conn:
        with conn.pipeline() as p:
            cur1 = conn.execute("INSERT INTO items VALUES (200, 'p1', 2) RETURNING id")
            cur2 = conn.execute("SELECT name FROM items WHERE id = %s", (200,))
            cur3 = conn.execute("SELECT count(*) FROM items WHERE id >= %s", (200,), prepare=True)
            p.sync()
            expect_eq(cur1.fetchone()[0], 200, "pipelined INSERT RETURNING")
            expect_eq(cur2.fetchone()[0], "p1", "pipelined read of the insert")
            expect_eq(cur3.fetchone()[0], 1, "pipelined prepared read")
        # An error in a pipeline aborts the rest up to the sync; the connection goes on.
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO items VALUES (201, 'ok', 1)")
                conn.execute("INSERT INTO items VALUES (200, 'duplicate', 1)")
                conn.execute("INSERT INTO items VALUES (202, 'skipped', 1)")
            raise CheckFailed("the pipeline's duplicate was accepted")
        except errors.UniqueViolation:
            pass
        ids = [r[0] for r in conn.execute("SELECT id FROM items WHERE id > 200 ORDER BY id")]
        expect_eq(ids, [], "rows from the failed pipeline (one implicit transaction up to the sync)")
        with conn.transaction(), conn.pipeline():
            for i in range(300, 350):
                conn.execute("INSERT INTO items VALUES (%s, 'tx pipeline', 0)", (i,))
        expect_eq(conn.execute("SELECT count(*) FROM items WHERE id BETWEEN 300 AND 349").fetchone()[0], 50,
                  "a pipeline in a transaction")


def check_executemany():
    with connect() as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"many{i}", i) for i in range(1000, 1500)])
            cur.executemany("INSERT INTO items VALUES (%s, %s, %s) RETURNING id",
                            [(i, "ret", i) for i in range(1500, 1503)], returning=True)
            got = []
            while True:
                got.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            expect_eq(got, [1500, 1501, 1502], "executemany RETURNING")
        conn.commit()
        expect_eq(conn.execute("SELECT count(*) FROM items WHERE id >= 1000").fetchone()[0], 503, "executemany rows")
        conn.commit()


def check_large_results():
    with connect(autocommit=True) as conn:
        query = "SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i"
        rows = conn.execute(query).fetchall()
        expect_eq(len(rows), 20000, "rows of a ~20 MB result")
        expect_eq(sum(len(r[1]) for r in rows), 20000 * 1024, "bytes of a ~20 MB result")
        # Row by row (single-row mode) and a server-side cursor.
        n = sum(1 for _ in conn.cursor().stream(query))
        expect_eq(n, 20000, "streamed rows")
        with conn.transaction():
            with conn.cursor(name="big") as cur:
                cur.itersize = 1000
                cur.execute(query)
                expect_eq(sum(1 for _ in cur), 20000, "rows through a named cursor")
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT i, repeat('x', 1000)::bytea FROM generate_series(1, 5000) i")
            expect_eq(len(cur.fetchall()), 5000, "binary-format rows")


def check_nulls_and_types():
    blob = bytes(range(256)) * 64
    values = (1, blob, {"k": [1, None, "é"]}, [1, None, 3], None, uuid.UUID(int=12345), float("inf"), None)
    with connect(autocommit=True) as conn:
        conn.execute("INSERT INTO bins VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s)",
                     (values[0], values[1], psycopg.types.json.Jsonb(values[2]), values[3], values[4], values[5],
                      values[6], values[7]))
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                row = cur.execute("SELECT id, b, j, a, t, u, f, n FROM bins WHERE id = 1").fetchone()
                expect_eq(bytes(row[1]), blob, f"bytea (binary={binary})")
                expect_eq((row[0],) + tuple(row[2:]), (values[0],) + values[2:], f"types (binary={binary})")
        row = conn.execute("SELECT NULL::int, NULL::text, NULL::bytea, %s::text, %s::int", (None, None)).fetchone()
        expect_eq(row, (None,) * 5, "NULLs")
        expect_eq(conn.execute("SELECT 'héllo wörld ✓'").fetchone()[0], "héllo wörld ✓", "UTF-8 text")


def check_errors():
    with connect(autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (5000, 'x', 1)")
        try:
            conn.execute("INSERT INTO items VALUES (5000, 'again', 1)")
            raise CheckFailed("duplicate key accepted")
        except errors.UniqueViolation as e:
            expect_eq(e.sqlstate, "23505", "SQLSTATE")
            expect_eq(e.diag.constraint_name, "items_pkey", "constraint name")
            expect_eq(e.diag.table_name, "items", "table name")
        expect_eq(conn.execute("SELECT 1").fetchone()[0], 1, "session after an error")
        try:
            conn.execute("SELECT * FROM no_such_table")
        except errors.UndefinedTable as e:
            expect_eq(e.sqlstate, "42P01", "SQLSTATE of a missing table")
        try:
            conn.execute("SELECT 1/0", prepare=True)
        except errors.DivisionByZero:
            pass
    with connect() as conn:
        conn.execute("INSERT INTO items VALUES (5001, 'x', 1)")
        try:
            conn.execute("INSERT INTO items VALUES (5001, 'x', 1)")
        except errors.UniqueViolation:
            pass
        try:
            conn.execute("SELECT 1")
            raise CheckFailed("a query in a failed transaction ran")
        except errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        expect_eq(conn.execute("SELECT count(*) FROM items WHERE id = 5001").fetchone()[0], 0, "rolled back")
        conn.rollback()


def check_routing():
    with connect(autocommit=True) as fresh:
        expect_eq(on_replica(fresh), THROUGH_PROXY, "a fresh session's read runs on a replica")
        with fresh.transaction():
            expect_eq(on_replica(fresh), False, "a transaction runs on the primary")
        fresh.execute("INSERT INTO items VALUES (6000, 'routed', 1)")
        # Read-your-writes: the session sees its write at once.
        expect_eq(fresh.execute("SELECT name FROM items WHERE id = 6000").fetchone()[0], "routed", "read your write")


def check_node_functions():
    """Functions that describe the node run where a client expects them: on the primary."""
    with connect(autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        expect(lsn is not None, "pg_current_wal_lsn() runs on the primary")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        if ONE_CONNECTION:
            expect_eq(pid, conn.info.backend_pid, "pg_backend_pid() is the pid the client was told")


CHECKS = [
    ("connect", check_connect),
    ("setup", check_setup),
    ("simple_and_extended_queries", check_simple_and_extended_queries),
    ("prepared_statements", check_prepared_statements),
    ("transactions", check_transactions),
    ("copy", check_copy),
    ("listen_notify", check_listen_notify),
    ("cancel", check_cancel),
    ("signal_from_a_transaction", check_signal_from_a_transaction),
    ("pipeline", check_pipeline),
    ("executemany", check_executemany),
    ("large_results", check_large_results),
    ("nulls_and_types", check_nulls_and_types),
    ("errors", check_errors),
    ("routing", check_routing),
    ("node_functions", check_node_functions),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
                        CHECKS))
