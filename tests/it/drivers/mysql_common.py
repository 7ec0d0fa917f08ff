"""Checks every DB-API MySQL driver gets (PyMySQL, mysql-connector-python, mysqlclient).

Each driver script passes a `connect(**overrides)` function and its error module; the
checks use only DB-API calls and SQL, with %s parameters.
"""

import contextlib
import threading
import time
from decimal import Decimal

from common import (DB, HOST, ONE_CONNECTION, PORT, THROUGH_PROXY, USER, CheckFailed, expect,
                    expect_eq)

ER_DUP_ENTRY = 1062
ER_QUERY_INTERRUPTED = 1317


def one(conn, query, params=None):
    cur = conn.cursor()
    try:
        cur.execute(query, params)
        row = cur.fetchone()
        while cur.nextset():  # drain whatever follows
            pass
        return row[0] if row is not None else None
    finally:
        cur.close()


def errno_of(e):
    return e.args[0] if e.args and isinstance(e.args[0], int) else getattr(e, "errno", None)


@contextlib.contextmanager
def killing(killer, own_id):
    """While the block runs, `KILL QUERY own_id` on `killer` every 100 ms (the first after
    100 ms); a KILL that fails fails the check once the block is over."""
    done = threading.Event()
    failures = []

    def keep_killing():
        while not done.wait(0.1):
            try:
                cur = killer.cursor()
                cur.execute(f"KILL QUERY {own_id}")
                cur.close()
            except Exception as e:  # reported below
                failures.append(e)
                return

    thread = threading.Thread(target=keep_killing)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    expect(not failures, f"KILL QUERY failed: {failures and failures[0]}")


def checks(connect, errors, server_info):
    """The shared checks; `server_info(conn)` is the version the greeting carried."""

    def check_connect():
        conn = connect()
        try:
            expect_eq(one(conn, "SELECT CURRENT_USER()").split("@")[0], USER, "current user")
            expect_eq(one(conn, "SELECT DATABASE()"), DB, "default database")
            expect("MariaDB" in one(conn, "SELECT VERSION()"), "a MariaDB server")
        finally:
            conn.close()

    def check_greeting_version():
        conn = connect()
        try:
            # MariaDB's greeting prefixes its version with "5.5.5-" for old clients.
            expect_eq(server_info(conn).removeprefix("5.5.5-"), one(conn, "SELECT VERSION()"),
                      "the greeting's version")
        finally:
            conn.close()

    def check_setup():
        conn = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("DROP TABLE IF EXISTS items, bins")
            cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2)) "
                        "ENGINE=InnoDB")
            cur.execute("CREATE TABLE bins (id INT PRIMARY KEY, b LONGBLOB, t DATETIME(6), d DOUBLE, "
                        "s VARCHAR(50) CHARACTER SET utf8mb4, n INT) ENGINE=InnoDB")
        finally:
            conn.close()

    def check_queries():
        conn = connect(autocommit=True)
        try:
            expect_eq(int(one(conn, "SELECT %s + 1", (41,))), 42, "a parameter")
            expect_eq(one(conn, "SELECT %s", ("it's \"quoted\" \\ ✓",)), "it's \"quoted\" \\ ✓", "escaping")
            cur = conn.cursor()
            cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (1, "one", Decimal("1.50")))
            expect_eq(cur.rowcount, 1, "rowcount")
            cur.execute("SELECT id, name, price FROM items")
            expect_eq(tuple(cur.fetchall()[0]), (1, "one", Decimal("1.50")), "the row")
            expect_eq([d[0] for d in cur.description], ["id", "name", "price"], "description")
        finally:
            conn.close()

    def check_transactions():
        conn = connect(autocommit=False)
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO items VALUES (100, 'committed', 1)")
            conn.commit()
            cur.execute("INSERT INTO items VALUES (101, 'rolled back', 1)")
            conn.rollback()
            cur.execute("INSERT INTO items VALUES (102, 'outer', 1)")
            cur.execute("SAVEPOINT sp")
            cur.execute("INSERT INTO items VALUES (103, 'inner', 1)")
            cur.execute("ROLLBACK TO SAVEPOINT sp")
            cur.execute("RELEASE SAVEPOINT sp")
            conn.commit()
            cur.execute("SELECT id FROM items WHERE id >= 100 ORDER BY id")
            expect_eq([r[0] for r in cur.fetchall()], [100, 102], "committed rows")
            conn.commit()
        finally:
            conn.close()

    def check_executemany():
        conn = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)",
                            [(i, f"many{i}", i) for i in range(1000, 1500)])
            expect_eq(one(conn, "SELECT COUNT(*) FROM items WHERE id >= 1000"), 500, "executemany rows")
            cur.executemany("UPDATE items SET price = %s WHERE id = %s", [(7, 1000), (8, 1001)])
            expect_eq(one(conn, "SELECT SUM(price) FROM items WHERE id IN (1000, 1001)"), Decimal(15),
                      "executemany updates")
        finally:
            conn.close()

    def check_large_results():
        conn = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000")
            rows = cur.fetchall()
            expect_eq(len(rows), 20000, "rows of a ~20 MB result")
            expect_eq(sum(len(r[1]) for r in rows), 20000 * 1024, "bytes of a ~20 MB result")
        finally:
            conn.close()

    def check_nulls_and_binary():
        blob = bytes(range(256)) * 4096  # 1 MiB with every byte value
        conn = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO bins VALUES (%s, %s, %s, %s, %s, %s)",
                        (1, blob, "2024-02-29 12:34:56.789012", 1.5, "héllo 🎉", None))
            cur.execute("SELECT b, t, d, s, n, NULL FROM bins WHERE id = 1")
            row = cur.fetchone()
            expect_eq(bytes(row[0]), blob, "1 MiB blob")
            expect_eq((str(row[1]), row[2], row[3], row[4], row[5]),
                      ("2024-02-29 12:34:56.789012", 1.5, "héllo 🎉", None, None), "types and NULLs")
        finally:
            conn.close()

    def check_errors():
        conn = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO items (id, name) VALUES (5000, 'x')")
            try:
                cur.execute("INSERT INTO items (id, name) VALUES (5000, 'again')")
                raise CheckFailed("duplicate key accepted")
            except errors.IntegrityError as e:
                expect_eq(errno_of(e), ER_DUP_ENTRY, "errno of a duplicate key")
                sqlstate = getattr(e, "sqlstate", None)
                expect(sqlstate in (None, "23000"), f"SQLSTATE {sqlstate}")
            expect_eq(one(conn, "SELECT 1"), 1, "the session after an error")
            try:
                cur.execute("SELECT * FROM no_such_table")
                raise CheckFailed("a missing table accepted")
            except errors.ProgrammingError as e:
                expect_eq(errno_of(e), 1146, "errno of a missing table")
            expect_eq(one(conn, "SELECT 2"), 2, "the session after another error")
        finally:
            conn.close()

    def check_kill_query():
        conn = connect(autocommit=False)
        killer = connect(autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute("START TRANSACTION")
            own_id = one(conn, "SELECT CONNECTION_ID()")
            started = time.monotonic()
            with killing(killer, own_id):
                try:
                    cur.execute("SELECT SLEEP(60)")
                    result = cur.fetchone()[0]
                    interrupted = result == 1
                except errors.DatabaseError as e:
                    interrupted = errno_of(e) == ER_QUERY_INTERRUPTED
            expect(interrupted and time.monotonic() - started < 30, "SLEEP(60) was interrupted")
            conn.rollback()
            expect_eq(one(conn, "SELECT 3"), 3, "the session after KILL QUERY")
        finally:
            conn.close()
            killer.close()

    def check_thread_id():
        conn = connect(autocommit=False)
        try:
            cur = conn.cursor()
            cur.execute("START TRANSACTION")
            own = one(conn, "SELECT CONNECTION_ID()")
            if ONE_CONNECTION:
                expect_eq(conn.thread_id() if callable(getattr(conn, "thread_id", None)) else conn.connection_id,
                          own, "the greeting's connection id is the writer's")
            conn.rollback()
        finally:
            conn.close()

    def check_routing():
        conn = connect(autocommit=True)
        try:
            expect_eq(int(one(conn, "SELECT @@read_only")), int(THROUGH_PROXY), "a fresh session's read on a replica")
            cur = conn.cursor()
            cur.execute("START TRANSACTION")
            expect_eq(int(one(conn, "SELECT @@read_only")), 0, "a transaction on the primary")
            cur.execute("COMMIT")
            cur.execute("INSERT INTO items (id, name) VALUES (6000, 'routed')")
            expect_eq(one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write")
        finally:
            conn.close()

    return [
        ("connect", check_connect),
        ("greeting_version", check_greeting_version),
        ("setup", check_setup),
        ("queries", check_queries),
        ("transactions", check_transactions),
        ("executemany", check_executemany),
        ("large_results", check_large_results),
        ("nulls_and_binary", check_nulls_and_binary),
        ("errors", check_errors),
        ("kill_query", check_kill_query),
        ("thread_id", check_thread_id),
        ("routing", check_routing),
    ]
