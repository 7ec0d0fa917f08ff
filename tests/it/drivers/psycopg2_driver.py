"""psycopg2 (libpq, the psycopg2-binary wheel) through switchyard: what Django, SQLAlchemy
and the many applications written on it do.

psycopg2 has no extended protocol of its own: it binds parameters on the client and sends
every statement as a simple query. Unless autocommit is on, it sends `BEGIN` on its own
before the first statement of each transaction.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import io
import select
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg2
import psycopg2.errors as errors
import psycopg2.extensions as ext
import psycopg2.extras as extras

from common import (DB, ONE_CONNECTION, CheckFailed, HOST, PASSWORD, PORT, SSLMODE,
                    THROUGH_PROXY, USER, expect, expect_eq, run_checks)

extras.register_uuid()


def connect(autocommit=False, **kwargs):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB, connect_timeout=10)
    if SSLMODE:
        params["sslmode"] = SSLMODE
    params.update(kwargs)
    conn = psycopg2.connect(**params)
    conn.autocommit = autocommit
    return conn


class connected:
    """`with connected(...) as conn`: a connection closed at the end (psycopg2's own
    `with conn` ends a transaction and leaves the connection open)."""

    def __init__(self, autocommit=False, **kwargs):
        self.conn = connect(autocommit, **kwargs)

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        return row[0] if row is not None and len(row) == 1 else row


def pgcode_of(call):
    """The SQLSTATE of the error `call()` raises, or None."""
    try:
        call()
    except psycopg2.Error as e:
        return e.pgcode
    return None


def await_replicated(query, want):
    """Waits until a fresh session's reads (on the replicas, through the proxy) of `query`
    give `want`: what another session wrote reaches the replicas a moment later. Several
    reads in a row must give it, so that each replica has it."""
    deadline = time.monotonic() + 30
    with connected(autocommit=True) as conn:
        in_a_row = 0
        while in_a_row < 8:
            try:
                got = one(conn, query)
            except psycopg2.Error as e:  # e.g. the table not there yet
                got = f"error {e.pgcode}"
            in_a_row = in_a_row + 1 if got == want else 0
            if in_a_row == 0:
                expect(time.monotonic() < deadline, f"{query} still gives {got!r}, want {want!r}")
                time.sleep(0.02)


def check_connect():
    with connected(autocommit=True) as conn:
        expect_eq(one(conn, "SELECT current_user"), USER, "current_user")
        expect_eq(conn.info.parameter_status("server_encoding"), "UTF8", "server_encoding")
        expect(conn.info.parameter_status("DateStyle").startswith("ISO"),
               f"DateStyle {conn.info.parameter_status('DateStyle')} (psycopg2 would SET it otherwise)")
        expect(conn.server_version >= 150000, f"server_version {conn.server_version}")
        expect_eq(conn.info.ssl_in_use, bool(SSLMODE), "TLS in use")
        if ONE_CONNECTION:
            expect_eq(conn.get_backend_pid(), one(conn, "/* switchyard:writer */ SELECT pg_backend_pid()"),
                      "the pid the client was told is its writer connection's")


def check_setup():
    with connected(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS items, bins, copied")
        cur.execute("DROP SCHEMA IF EXISTS tenant CASCADE")
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))")
        cur.execute("CREATE TABLE bins (id int PRIMARY KEY, b bytea, j jsonb, a int[], t timestamptz, "
                    "u uuid, f float8, n text)")
        cur.execute("CREATE TABLE copied (id int, name text, data bytea)")
        cur.execute("CREATE SCHEMA tenant")
        cur.execute("CREATE TABLE tenant.marker (v text)")
        cur.execute("INSERT INTO tenant.marker VALUES ('in schema tenant')")
    await_replicated("SELECT count(*) FROM tenant.marker", 1)


def check_parameters_and_types():
    blob = bytes(range(256)) * 64
    doc = {"k": [1, None, "é"], "n": {"deep": True}}
    when = datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    u = uuid.UUID(int=12345)
    with connected(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (1, "one", Decimal("1.50")))
        cur.execute("SELECT name, price FROM items WHERE id = %(id)s", {"id": 1})
        expect_eq(cur.fetchone(), ("one", Decimal("1.50")), "named parameters, Decimal")
        cur.execute("INSERT INTO bins VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (1, psycopg2.Binary(blob), extras.Json(doc), [1, None, 3], when, u, float("inf"), None))
        cur.execute("SELECT id, b, j, a, t, u, f, n FROM bins WHERE id = 1")
        row = cur.fetchone()
        expect_eq(bytes(row[1]), blob, "bytea")
        expect_eq((row[0],) + tuple(row[2:]), (1, doc, [1, None, 3], when, u, float("inf"), None), "types")
        expect_eq([d.name for d in cur.description], ["id", "b", "j", "a", "t", "u", "f", "n"], "description")
        expect_eq(one(conn, "SELECT %s::uuid = %s", (str(u), u)), True, "uuid parameter")
        expect_eq(one(conn, "SELECT NULL::int, NULL::text, NULL::bytea, %s::text", (None,)), (None,) * 4, "NULLs")
        expect_eq(one(conn, "SELECT %s || '✓'", ("héllo wörld 'quoted' \\ ",)), "héllo wörld 'quoted' \\ ✓",
                  "UTF-8 and quoting")
        expect_eq(one(conn, "SELECT %s = ANY(%s)", (3, [1, 2, 3])), True, "an array parameter")
        expect_eq(one(conn, "SELECT 1 WHERE 'a%%b' LIKE %s", ("a%b",)), 1, "a literal percent sign")


def check_transactions():
    with connected() as conn:  # not autocommit: psycopg2 sends BEGIN before the first statement
        cur = conn.cursor()
        expect_eq(conn.get_transaction_status(), ext.TRANSACTION_STATUS_IDLE, "idle before a statement")
        cur.execute("INSERT INTO items VALUES (100, 'committed', 1)")
        expect_eq(conn.get_transaction_status(), ext.TRANSACTION_STATUS_INTRANS, "in a transaction (BEGIN sent)")
        conn.commit()
        cur.execute("INSERT INTO items VALUES (101, 'rolled back', 1)")
        conn.rollback()
        cur.execute("INSERT INTO items VALUES (102, 'outer', 1)")
        cur.execute("SAVEPOINT sp")
        cur.execute("INSERT INTO items VALUES (103, 'inner', 1)")
        cur.execute("ROLLBACK TO SAVEPOINT sp")
        cur.execute("INSERT INTO items VALUES (104, 'inner kept', 1)")
        cur.execute("RELEASE SAVEPOINT sp")
        conn.commit()
        # `with conn`: commit at the end of the block, rollback on an exception.
        with conn:
            cur.execute("INSERT INTO items VALUES (105, 'with block', 1)")
        try:
            with conn:
                cur.execute("INSERT INTO items VALUES (106, 'with block rolled back', 1)")
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass
        cur.execute("SELECT id FROM items WHERE id >= 100 ORDER BY id")
        expect_eq([r[0] for r in cur.fetchall()], [100, 102, 104, 105], "committed rows")
        expect_eq(one(conn, "SELECT pg_is_in_recovery()"), False, "a transaction runs on the primary")
        conn.commit()
        # Autocommit mode: each statement on its own, no BEGIN.
        conn.autocommit = True
        cur.execute("INSERT INTO items VALUES (107, 'autocommitted', 1)")
        expect_eq(conn.get_transaction_status(), ext.TRANSACTION_STATUS_IDLE, "autocommit: idle after a statement")
        expect_eq(one(conn, "SELECT name FROM items WHERE id = 107"), "autocommitted", "read your write")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO items VALUES (108, 'explicit BEGIN', 1)")
        cur.execute("ROLLBACK")
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id = 108"), 0, "an explicit transaction rolled back")
        # A read-only session: psycopg2 begins each transaction READ ONLY.
        conn.autocommit = False
        conn.set_session(readonly=True)
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id >= 100"), 5, "a read-only transaction reads")
        expect_eq(pgcode_of(lambda: cur.execute("INSERT INTO items VALUES (109, 'x', 1)")), "25006",
                  "a write in a read-only transaction")
        conn.rollback()
        conn.set_session(readonly=False)
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id = 109"), 0, "nothing written read-only")
        conn.commit()


def check_errors():
    with connected(autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO items VALUES (5000, 'x', 1)")
        try:
            cur.execute("INSERT INTO items VALUES (5000, 'again', 1)")
            raise CheckFailed("duplicate key accepted")
        except errors.UniqueViolation as e:
            expect_eq(e.pgcode, "23505", "SQLSTATE")
            expect_eq(e.diag.constraint_name, "items_pkey", "constraint name")
            expect_eq(e.diag.table_name, "items", "table name")
            expect_eq(e.diag.severity, "ERROR", "severity")
            expect("Key (id)=(5000) already exists" in (e.diag.message_detail or ""), f"detail {e.diag.message_detail}")
        expect_eq(one(conn, "SELECT 1"), 1, "the session after an error")
        expect_eq(pgcode_of(lambda: cur.execute("SELECT * FROM no_such_table")), "42P01", "a missing table")
        expect_eq(pgcode_of(lambda: cur.execute("SELECT 1/0")), "22012", "division by zero")
        expect_eq(pgcode_of(lambda: cur.execute("SELEC 1")), "42601", "a syntax error")
        expect_eq(one(conn, "SELECT 2"), 2, "the session after errors")
    with connected() as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO items VALUES (5001, 'x', 1)")
        expect_eq(pgcode_of(lambda: cur.execute("INSERT INTO items VALUES (5001, 'x', 1)")), "23505", "duplicate")
        expect_eq(conn.get_transaction_status(), ext.TRANSACTION_STATUS_INERROR, "the transaction failed")
        try:
            cur.execute("SELECT 1")
            raise CheckFailed("a query in a failed transaction ran")
        except errors.InFailedSqlTransaction as e:
            expect_eq(e.pgcode, "25P02", "SQLSTATE in a failed transaction")
        conn.rollback()
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id = 5001"), 0, "rolled back")
        # A savepoint saves the transaction from an error.
        cur.execute("INSERT INTO items VALUES (5002, 'kept', 1)")
        cur.execute("SAVEPOINT s")
        expect_eq(pgcode_of(lambda: cur.execute("INSERT INTO items VALUES (5002, 'x', 1)")), "23505", "duplicate")
        cur.execute("ROLLBACK TO SAVEPOINT s")
        conn.commit()
        expect_eq(one(conn, "SELECT name FROM items WHERE id = 5002"), "kept", "committed after a savepoint")
        conn.commit()


def check_batches():
    with connected() as conn:
        cur = conn.cursor()
        # execute_batch: pages of statements joined by ';', one simple query each.
        extras.execute_batch(cur, "INSERT INTO items VALUES (%s, %s, %s)",
                             [(i, f"batch{i}", i) for i in range(1000, 1250)], page_size=100)
        # execute_values: one INSERT with many VALUES rows per page, RETURNING fetched.
        ids = extras.execute_values(cur, "INSERT INTO items VALUES %s RETURNING id",
                                    [(i, f"values{i}", i) for i in range(1250, 1500)], page_size=100, fetch=True)
        expect_eq(sorted(r[0] for r in ids), list(range(1250, 1500)), "execute_values RETURNING")
        cur.executemany("INSERT INTO items VALUES (%s, %s, %s)", [(i, f"many{i}", i) for i in range(1500, 1600)])
        expect_eq(cur.rowcount, 100, "executemany rowcount")
        conn.commit()
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id BETWEEN 1000 AND 1599"), 600, "batched rows")
        conn.commit()
        # In autocommit mode a page is one implicit transaction: a duplicate in it undoes the
        # page, not the pages before it.
        conn.autocommit = True
        try:
            extras.execute_batch(cur, "INSERT INTO items VALUES (%s, %s, %s)",
                                 [(3000, "a", 1), (3001, "b", 1), (3002, "c", 1), (3003, "d", 1), (1000, "dup", 1),
                                  (3005, "f", 1)], page_size=3)
            raise CheckFailed("execute_batch with a duplicate accepted")
        except errors.UniqueViolation:
            pass
        cur.execute("SELECT id FROM items WHERE id BETWEEN 3000 AND 3999 ORDER BY id")
        expect_eq([r[0] for r in cur.fetchall()], [3000, 3001, 3002], "the pages before the failed one")
        expect_eq(one(conn, "SELECT 3"), 3, "the session after a failed batch")


def check_copy():
    with connected(autocommit=True) as conn:
        cur = conn.cursor()
        text = "".join(f"{i}\tname {i}\\t\\\\\t\\\\x{i:04x}\n" for i in range(3000))
        cur.copy_expert("COPY copied (id, name, data) FROM STDIN", io.StringIO(text))
        expect_eq(cur.rowcount, 3000, "rows copied in (copy_expert)")
        cur.copy_from(io.StringIO("3000\tfrom copy_from\t\\N\n3001\tsecond\t\\N\n"), "copied",
                      columns=("id", "name", "data"))
        expect_eq(one(conn, "SELECT count(*) FROM copied"), 3002, "rows after COPY FROM")
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT id, name, data FROM copied WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)",
                        out)
        expect_eq(out.getvalue().splitlines(), ['0,name 0\t\\,\\x0000', '1,name 1\t\\,\\x0001', '2,name 2\t\\,\\x0002'],
                  "COPY TO STDOUT csv")
        out = io.BytesIO()
        cur.copy_expert("COPY copied TO STDOUT (FORMAT binary)", out)
        expect(out.getvalue().startswith(b"PGCOPY\n\xff\r\n\0"), "binary COPY TO header")
        expect(len(out.getvalue()) > 50_000, f"binary COPY size {len(out.getvalue())}")
        out = io.StringIO()
        cur.copy_to(out, "copied", columns=("id",))
        expect_eq(len(out.getvalue().splitlines()), 3002, "copy_to rows")
        # The server's error in the middle of COPY FROM: the session goes on.
        try:
            cur.copy_expert("COPY items (id, name, price) FROM STDIN", io.StringIO("900\ta\t1\n900\tdup\t1\n"))
            raise CheckFailed("duplicate in COPY accepted")
        except errors.UniqueViolation:
            pass
        expect_eq(one(conn, "SELECT count(*) FROM items WHERE id = 900"), 0, "a failed COPY left nothing")
        try:
            cur.copy_expert("COPY items (id, name, price) FROM STDIN", io.StringIO("901\ta\tnot a number\n"))
            raise CheckFailed("a bad number in COPY accepted")
        except errors.InvalidTextRepresentation:
            pass

        # The client's error while it sends COPY data: psycopg2 ends the COPY with CopyFail.
        class FailingFile(io.StringIO):
            def read(self, *args):
                raise ValueError("the file broke")
        try:
            cur.copy_expert("COPY items (id, name, price) FROM STDIN", FailingFile())
            raise CheckFailed("a COPY whose file failed succeeded")
        except (ValueError, errors.QueryCanceled):
            pass
        expect_eq(one(conn, "SELECT 4"), 4, "the session after a failed COPY")
    with connected() as conn:  # COPY in a transaction, and its error aborting it
        cur = conn.cursor()
        cur.copy_expert("COPY copied (id, name) FROM STDIN", io.StringIO("5000\tin a transaction\n"))
        expect(pgcode_of(lambda: cur.copy_expert("COPY items (id, name, price) FROM STDIN",
                                                 io.StringIO("902\ta\t1\n902\tdup\t1\n"))) == "23505",
               "a duplicate in COPY in a transaction")
        expect_eq(pgcode_of(lambda: cur.execute("SELECT 1")), "25P02", "after a COPY error in a transaction")
        conn.rollback()
        expect_eq(one(conn, "SELECT count(*) FROM copied WHERE id = 5000"), 0, "the transaction rolled back")
        conn.commit()


def check_named_cursors():
    query = "SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 20000) i"
    with connected() as conn:
        # A named cursor is DECLARE … CURSOR in the transaction, read with FETCH FORWARD itersize.
        with conn.cursor(name="big") as cur:
            cur.itersize = 1000
            cur.execute(query)
            n = total = 0
            for row in cur:
                n += 1
                total += len(row[1])
            expect_eq((n, total), (20000, 20000 * 1024), "rows and bytes through a named cursor")
        with conn.cursor(name="pieces") as cur:
            cur.execute("SELECT generate_series(1, 100)")
            expect_eq([r[0] for r in cur.fetchmany(3)], [1, 2, 3], "fetchmany")
            cur.scroll(10)
            expect_eq(cur.fetchone(), (14,), "after scroll")
            expect_eq(len(cur.fetchall()), 86, "fetchall of the rest")
        expect_eq(one(conn, "SELECT count(*) FROM pg_cursors"), 0, "cursors closed")
        conn.commit()
        # WITH HOLD: the cursor outlives the transaction (until closed).
        cur = conn.cursor(name="held", withhold=True)
        cur.itersize = 500
        cur.execute("SELECT generate_series(1, 2000)")
        conn.commit()
        expect_eq(sum(1 for _ in cur), 2000, "rows of a WITH HOLD cursor after its transaction")
        cur.close()
        conn.commit()
        # A plain (client-side) cursor gets the whole result at once.
        with conn.cursor() as cur:
            cur.execute(query)
            expect_eq(len(cur.fetchall()), 20000, "rows of a ~20 MB result")
        conn.commit()


def wait_for_notifies(conn, count, timeout=10):
    deadline = time.monotonic() + timeout
    got = []
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if select.select([conn], [], [], left) == ([], [], []):
            continue
        conn.poll()
        while conn.notifies:
            got.append(conn.notifies.pop(0))
    return got


def check_listen_notify():
    with connected(autocommit=True) as listener, connected(autocommit=True) as notifier:
        listener.cursor().execute("LISTEN chan")
        notifier.cursor().execute("NOTIFY chan, 'hello'")
        notifier.cursor().execute("SELECT pg_notify('chan', %s)", ("second",))
        got = wait_for_notifies(listener, 2)
        expect_eq([(n.channel, n.payload) for n in got], [("chan", "hello"), ("chan", "second")], "notifications")
        if ONE_CONNECTION:
            expect_eq(got[0].pid, notifier.get_backend_pid(), "the notifying pid is the pid the notifier was told")
        # A notification arriving while the listener runs queries comes with their results.
        notifier.cursor().execute("NOTIFY chan, 'during'")
        deadline = time.monotonic() + 10
        while not listener.notifies and time.monotonic() < deadline:
            listener.cursor().execute("SELECT 1")
            if not listener.notifies:
                time.sleep(0.05)
        expect_eq([n.payload for n in listener.notifies], ["during"], "notification delivered with a later query")
        del listener.notifies[:]
        # A notification sent in a transaction arrives at its commit.
        with connected() as tx:
            tx.cursor().execute("NOTIFY chan, 'committed'")
            tx.cursor().execute("NOTIFY chan, 'also committed'")
            tx.commit()
            tx.cursor().execute("NOTIFY chan, 'rolled back'")
            tx.rollback()
        got = wait_for_notifies(listener, 2)
        expect_eq([n.payload for n in got], ["committed", "also committed"], "notifications of a commit")
        listener.cursor().execute("UNLISTEN *")
        expect_eq(one(listener, "SELECT 5"), 5, "the listener after UNLISTEN")


def cancel_until_done(conn, query):
    """Runs `query` while another thread calls conn.cancel() until it ends; returns the
    error it ended with (None if it succeeded)."""
    done = threading.Event()
    failures = []

    def keep_cancelling():
        while not done.wait(0.1):
            try:
                conn.cancel()
            except Exception as e:  # reported by the check below
                failures.append(e)
                return

    thread = threading.Thread(target=keep_cancelling)
    thread.start()
    try:
        conn.cursor().execute(query)
        error = None
    except errors.QueryCanceled as e:
        error = e
    finally:
        done.set()
        thread.join()
    if failures:
        raise CheckFailed(f"cancel() failed: {failures[0]}")
    return error


def check_cancel():
    for name, autocommit in (("a read (on a replica)", True), ("a transaction (on the writer)", False)):
        with connected(autocommit=autocommit) as conn:
            if not autocommit:
                conn.cursor().execute("INSERT INTO items VALUES (7000, 'before the cancel', 1)")
            for _ in range(2):
                err = cancel_until_done(conn, "SELECT pg_sleep(60)")
                expect(err is not None, f"pg_sleep(60) in {name} was not cancelled")
                expect_eq(err.pgcode, "57014", "SQLSTATE of a cancelled query")
                if not autocommit:
                    expect_eq(conn.get_transaction_status(), ext.TRANSACTION_STATUS_INERROR,
                              "the transaction after a cancel")
                    conn.rollback()
                expect_eq(one(conn, "SELECT 7"), 7, f"the session after a cancel in {name}")
            conn.rollback()
            expect_eq(one(conn, "SELECT count(*) FROM items WHERE id = 7000"), 0, "the cancelled transaction's write")
            conn.rollback()


# What the settings made at connect show, as one row: a read of each setting, of a table found
# through search_path, and of a timestamptz in the time zone.
SETTINGS = ("SELECT current_setting('TimeZone'), replace(current_setting('search_path'), ' ', ''), "
            "(SELECT v FROM marker), "
            "'2024-02-29 12:00:00+00'::timestamptz::text, pg_is_in_recovery()")
WANT_SETTINGS = ("Asia/Kolkata", "tenant,public", "in schema tenant", "2024-02-29 17:30:00+05:30")


def check_set_at_connect():
    """SET statements an application sends right after connecting (an ORM's or a pool's
    connect hook: the time zone, a tenant's search_path) hold in the session wherever its
    statements run: on replicas and in transactions, in every session at once, after many
    transactions."""
    sessions = []
    try:
        # Two sent in autocommit mode, and two as psycopg2 runs them by default: in a
        # transaction (BEGIN, SET, SET, COMMIT).
        for autocommit in (True, True, False, False):
            conn = connect(autocommit=autocommit)
            sessions.append(conn)
            cur = conn.cursor()
            cur.execute("SET TIME ZONE 'Asia/Kolkata'")
            cur.execute("SET search_path TO tenant, public")
            conn.commit()
        # And as libpq's startup options.
        sessions.append(connect(options="-c TimeZone=Asia/Kolkata -c search_path=tenant,public"))
        for round in range(4):
            for c, conn in enumerate(sessions):
                conn.autocommit = True
                # The reader hint: a read right after a COMMIT goes to the writer for a moment.
                got = one(conn, "/* switchyard:reader */ " + SETTINGS)
                expect_eq(got, WANT_SETTINGS + (THROUGH_PROXY,), f"session {c} round {round} (a read)")
                conn.autocommit = False
                got = one(conn, SETTINGS)
                expect_eq(got, WANT_SETTINGS + (False,), f"session {c} round {round} in a transaction")
                conn.commit()
        expect_eq(one(sessions[0], "SELECT %s::timestamptz", (datetime(2024, 2, 29, 12, tzinfo=timezone.utc),)),
                  datetime(2024, 2, 29, 12, tzinfo=timezone.utc), "a timestamptz parameter")
        sessions[0].commit()
    finally:
        for conn in sessions:
            conn.close()
    # Other sessions keep the server's settings.
    with connected(autocommit=True) as conn:
        expect(one(conn, "SELECT current_setting('TimeZone')") != "Asia/Kolkata", "a new session's time zone")
        expect_eq(pgcode_of(lambda: conn.cursor().execute("SELECT v FROM marker")), "42P01",
                  "a new session's search_path")


def check_sql_prepare():
    """psycopg2 has no protocol-level prepare: applications PREPARE in SQL."""
    with connected() as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO items VALUES (8000, 'prepared', 8)")
        cur.execute("PREPARE by_id(int) AS SELECT name, price FROM items WHERE id = $1")
        conn.commit()
        for round in range(3):
            cur.execute("EXECUTE by_id(%s)", (8000,))
            expect_eq(cur.fetchone(), ("prepared", Decimal(8)), f"EXECUTE in transaction {round}")
            conn.commit()
        conn.autocommit = True
        cur.execute("PREPARE bump(int) AS UPDATE items SET price = price + 1 WHERE id = $1")
        for _ in range(3):
            cur.execute("EXECUTE bump(8000)")
            expect_eq(cur.rowcount, 1, "rows updated by EXECUTE")
            cur.execute("EXECUTE by_id(8000)")
        expect_eq(cur.fetchone(), ("prepared", Decimal(11)), "EXECUTE in autocommit mode")
        expect_eq(one(conn, "SELECT count(*) FROM pg_prepared_statements WHERE name IN ('by_id', 'bump')"), 2,
                  "the session's prepared statements")
        cur.execute("DEALLOCATE bump")
        conn.autocommit = False
        cur.execute("DEALLOCATE by_id")
        conn.commit()
        expect_eq(pgcode_of(lambda: cur.execute("EXECUTE by_id(8000)")), "26000", "EXECUTE after DEALLOCATE")
        conn.rollback()
        conn.autocommit = True
        expect_eq(pgcode_of(lambda: cur.execute("EXECUTE bump(8000)")), "26000", "EXECUTE after DEALLOCATE")
        expect_eq(one(conn, "SELECT count(*) FROM pg_prepared_statements"), 0, "no prepared statements left")


def held_by(conn, key):
    """Whether the session of `conn` holds advisory lock `key` (pg_locks on its own pid)."""
    return one(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted "
                     "AND pid = pg_backend_pid()", (key,)) == 1


def check_advisory_lock():
    """A session-level advisory lock (a job runner's mutex) pins the session to its server
    connection: it holds across transactions, other sessions wait for it, and it unlocks."""
    key = 4242
    with connected(autocommit=True) as holder, connected(autocommit=True) as other:
        expect_eq(one(holder, "SELECT pg_advisory_lock(%s)", (key,)), "", "pg_advisory_lock")
        for round in range(3):
            expect(held_by(holder, key), f"the lock held (round {round})")
            expect_eq(one(other, "SELECT pg_try_advisory_lock(%s)", (key,)), False,
                      f"another session cannot take it (round {round})")
            holder.autocommit = False
            holder.cursor().execute("INSERT INTO items VALUES (%s, 'under the lock', 1)", (9000 + round,))
            holder.commit()
            holder.autocommit = True
        # Another session waits for the lock; it gets it once the holder unlocks.
        waited = []

        def wait_for_lock():
            try:
                waited.append(one(other, "SELECT pg_advisory_lock(%s)", (key,)))
            except Exception as e:  # reported below
                waited.append(e)

        thread = threading.Thread(target=wait_for_lock)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while one(holder, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                              "AND NOT granted", (key,)) != 1:
                expect(time.monotonic() < deadline, "the other session waits for the lock")
                time.sleep(0.02)
            expect_eq(one(holder, "SELECT pg_advisory_unlock(%s)", (key,)), True, "pg_advisory_unlock")
        finally:
            thread.join(30)
        expect(not thread.is_alive(), "the waiting session got the lock after the unlock")
        expect_eq(waited, [""], "the waiting session's pg_advisory_lock")
        expect(held_by(other, key), "the lock is the other session's now")
        expect(not held_by(holder, key), "the holder's lock is gone")
        expect_eq(one(other, "SELECT pg_advisory_unlock(%s)", (key,)), True, "the other session unlocks")
        expect_eq(one(holder, "SELECT pg_try_advisory_lock(%s)", (key,)), True, "the lock is free again")
        expect_eq(one(holder, "SELECT pg_advisory_unlock_all()"), "", "pg_advisory_unlock_all")
        expect_eq(one(holder, "SELECT count(*) FROM items WHERE id >= 9000 AND id < 9003"), 3,
                  "the writes made under the lock")


def check_routing():
    with connected(autocommit=True) as fresh:
        expect_eq(one(fresh, "SELECT pg_is_in_recovery()"), THROUGH_PROXY, "a fresh session's read runs on a replica")
    with connected() as conn:
        expect_eq(one(conn, "SELECT pg_is_in_recovery()"), False, "a transaction runs on the primary")
        conn.commit()
        conn.autocommit = True
        conn.cursor().execute("INSERT INTO items VALUES (6000, 'routed', 1)")
        # Read-your-writes: the session sees its write at once.
        expect_eq(one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write")
        conn.cursor().execute("UPDATE items SET name = 'updated' WHERE id = 6000")
        expect_eq(one(conn, "SELECT name FROM items WHERE id = 6000"), "updated", "read your update")


def check_notices():
    with connected(autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("DO $$ BEGIN RAISE NOTICE 'first notice'; RAISE WARNING 'a warning'; END $$")
        cur.execute("SET client_min_messages = warning")
        cur.execute("DO $$ BEGIN RAISE NOTICE 'not shown'; END $$")
        expect_eq([n.strip() for n in conn.notices], ["NOTICE:  first notice", "WARNING:  a warning"], "notices")
        cur.execute("RESET client_min_messages")


def check_large_objects():
    """conn.lobject(): large objects through libpq's fast-path function calls, in a transaction."""
    data = bytes(range(256)) * 1024
    with connected() as conn:
        lob = conn.lobject(0, "wb")
        oid = lob.oid
        expect_eq(lob.write(data), len(data), "bytes written")
        lob.close()
        conn.commit()
        lob = conn.lobject(oid, "rb")
        expect_eq(lob.read(), data, "bytes read back")
        lob.seek(1000)
        expect_eq(lob.read(10), data[1000:1010], "bytes read after a seek")
        lob.unlink()
        conn.commit()
        expect_eq(one(conn, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = %s", (oid,)), 0,
                  "the large object unlinked")
        conn.commit()


def check_threaded_pool():
    """psycopg2.pool.ThreadedConnectionPool: threads taking and giving back connections, each
    left in a transaction of its own (psycopg2's default) until it commits."""
    from psycopg2.pool import ThreadedConnectionPool
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB, connect_timeout=10)
    if SSLMODE:
        params["sslmode"] = SSLMODE
    pool = ThreadedConnectionPool(1, 8, **params)
    failures = []

    def work(t):
        try:
            for i in range(10):
                conn = pool.getconn()
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (20000 + t * 100 + i, f"thread {t}", i))
                        cur.execute("SELECT count(*) FROM items WHERE name = %s", (f"thread {t}",))
                        expect_eq(cur.fetchone()[0], i + 1, f"thread {t} sees its rows")
                    conn.commit()
                finally:
                    pool.putconn(conn)
        except Exception as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        pool.closeall()
    expect(not failures, f"pooled threads failed: {failures[:1]}")
    await_replicated("SELECT count(*) FROM items WHERE id >= 20000 AND id < 21000", 80)


def check_reset():
    """conn.reset(): psycopg2 sends ABORT (in a transaction), RESET ALL and SET SESSION
    AUTHORIZATION DEFAULT; the session's settings are the server's again."""
    with connected() as conn:
        cur = conn.cursor()
        cur.execute("SET TIME ZONE 'Asia/Kolkata'")
        conn.commit()
        expect_eq(one(conn, "SELECT current_setting('TimeZone')"), "Asia/Kolkata", "before reset")
        conn.reset()
        expect(one(conn, "SELECT current_setting('TimeZone')") != "Asia/Kolkata", "the time zone after reset")
        conn.commit()
        conn.autocommit = True
        expect_eq(one(conn, "SELECT current_user"), USER, "the user after reset")


CHECKS = [
    ("connect", check_connect),
    ("setup", check_setup),
    ("parameters_and_types", check_parameters_and_types),
    ("transactions", check_transactions),
    ("errors", check_errors),
    ("batches", check_batches),
    ("copy", check_copy),
    ("named_cursors", check_named_cursors),
    ("listen_notify", check_listen_notify),
    ("cancel", check_cancel),
    ("set_at_connect", check_set_at_connect),
    ("sql_prepare", check_sql_prepare),
    ("advisory_lock", check_advisory_lock),
    ("notices", check_notices),
    ("large_objects", check_large_objects),
    ("threaded_pool", check_threaded_pool),
    ("reset", check_reset),
    ("routing", check_routing),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"psycopg2 {psycopg2.__version__} (libpq {ext.libpq_version()})", CHECKS))
