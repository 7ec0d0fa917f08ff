"""MariaDB Connector/Python (`mariadb`, on MariaDB Connector/C) through switchyard.

What it does that other Python drivers do not: every parameterized `cursor.execute` runs in the
binary protocol (COM_STMT_PREPARE and COM_STMT_EXECUTE sent together, the EXECUTE naming the
statement just prepared by MariaDB's id 0xFFFFFFFF, then COM_STMT_CLOSE), and only statements
without parameters as text; `cursor(prepared=True)` keeps its statement for every execute;
`executemany` sends COM_STMT_BULK_EXECUTE when the server offers MariaDB's bulk operations and
loops over execute otherwise; `cursor(buffered=False)` reads a result as it comes;
`conn.autocommit` is the server status flag of the last OK packet, and a connection starts with
autocommit off (SET AUTOCOMMIT=0) unless told otherwise; `reset()` is COM_RESET_CONNECTION and
`reconnect()` a new login on the same object.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import sys
import threading
import time
from datetime import datetime
from decimal import Decimal

import mariadb
from mariadb.constants import CAPABILITY

import mysql_common
from common import (DB, HOST, PASSWORD, PORT, SSLMODE, THROUGH_PROXY, USER, CheckFailed,
                    expect, expect_eq, run_checks)

one = mysql_common.one

# The driver's own default (autocommit off) when passed as autocommit.
DRIVER_DEFAULT = object()


class Errors:
    """The classes mysql_common catches: the driver's OperationalError (of a killed query) is
    no DatabaseError (its errors all derive from Error alone)."""
    IntegrityError = mariadb.IntegrityError
    ProgrammingError = mariadb.ProgrammingError
    DatabaseError = mariadb.Error


def connect(autocommit=True, **overrides):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, connect_timeout=10)
    if autocommit is not DRIVER_DEFAULT:
        params["autocommit"] = autocommit
    if SSLMODE:
        params.update(ssl=True, ssl_verify_cert=False)
    params.update(overrides)
    return mariadb.connect(**params)


def await_replicated(query, want):
    """Waits until a fresh session's read (on a replica, through the proxy) gives `want`."""
    conn = connect()
    try:
        deadline = time.monotonic() + 30
        while True:
            got = one(conn, query)
            if got == want:
                return
            if time.monotonic() > deadline:
                raise CheckFailed(f"{query} still gives {got!r}, want {want!r}")
            time.sleep(0.02)
    finally:
        conn.close()


def expect_error(kind, errno, sqlstate, what, fn):
    try:
        fn()
    except kind as e:
        expect_eq((e.errno, e.sqlstate), (errno, sqlstate), what)
    else:
        raise CheckFailed(f"{what}: no error")


def check_connect_options():
    conn = connect()
    try:
        if SSLMODE:
            expect(conn.tls_cipher, f"TLS is in use (cipher {conn.tls_cipher!r}, version {conn.tls_version!r})")
        expect_eq(conn.autocommit, True, "autocommit (from the server status)")
        expect_eq(one(conn, "SELECT @@autocommit"), 1, "@@autocommit")
        expect_eq(conn.database, DB, "the default database")
        expect(conn.server_version_info >= (10, 5, 0), f"server version {conn.server_version_info}")
        conn.ping()
        conn.database = "information_schema"  # COM_INIT_DB
        expect_eq(one(conn, "SELECT DATABASE()"), "information_schema", "COM_INIT_DB")
        conn.select_db(DB)
        expect_eq(one(conn, "SELECT DATABASE()"), DB, "COM_INIT_DB back")
    finally:
        conn.close()
    # The driver's default: autocommit switched off at connect.
    conn = connect(autocommit=DRIVER_DEFAULT)
    try:
        expect_eq(conn.autocommit, False, "autocommit by default")
        expect_eq(one(conn, "SELECT @@autocommit"), 0, "@@autocommit by default")
        conn.rollback()
    finally:
        conn.close()


# Parameters of every type through the binary protocol, in each parameter style.
def check_binary_protocol():
    conn = connect()
    try:
        cur = conn.cursor()
        when = datetime(2024, 2, 29, 12, 34, 56, 789012)
        blob = bytes(range(256)) * 4096
        cur.execute("SELECT ?, ?, ?, ?, ?, ?, ?", (2**62, 1.5, "héllo 🎉 it's \"quoted\" \\", blob, when, None, 7))
        row = cur.fetchone()
        expect_eq((row[0], row[1], row[2], row[3] == blob, row[4], row[5], row[6]),
                  (2**62, 1.5, "héllo 🎉 it's \"quoted\" \\", True, when, None, 7), "types through the binary protocol")
        cur.execute("SELECT %s * 2, %s", (21, "format"))
        expect_eq(cur.fetchone(), (42, "format"), "the format style")
        cur.execute("SELECT %(a)s + %(b)s, %(a)s", {"a": 40, "b": 2})
        expect_eq(cur.fetchone(), (42, 40), "the pyformat style")
        cur.execute("DROP TABLE IF EXISTS auto")
        cur.execute("CREATE TABLE auto (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), d DECIMAL(10,3), "
                    "t DATETIME(6), b LONGBLOB) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        cur.execute("INSERT INTO auto (v, d, t, b) VALUES (?, ?, ?, ?)", ("first ✓", Decimal("12.345"), when, blob))
        expect_eq((cur.rowcount, cur.lastrowid), (1, 1), "rowcount and lastrowid of an INSERT")
        cur.execute("INSERT INTO auto (v) VALUES (?)", ("second",))
        expect_eq(cur.lastrowid, 2, "lastrowid of the second INSERT")
        cur.execute("SELECT id, v, d, t, b = ?, b IS NULL FROM auto WHERE id IN (?, ?) ORDER BY id", (blob, 1, 2))
        expect_eq(cur.fetchall(), [(1, "first ✓", Decimal("12.345"), when, 1, 0), (2, "second", None, None, None, 1)],
                  "the rows read back")
        expect_eq([d[0] for d in cur.description], ["id", "v", "d", "t", "b = ?", "b IS NULL"], "description")
        cur.execute("UPDATE auto SET v = v WHERE id = ?", (1,))
        expect_eq(cur.rowcount, 0, "rowcount of an UPDATE that changed nothing")
        expect_error(mariadb.DataError, 1406, "22001", "a value too long",
                     lambda: cur.execute("INSERT INTO auto (v) VALUES (?)", ("x" * 21,)))
        expect_eq(one(conn, "SELECT ?", ("the session after errors",)), "the session after errors", "after errors")
    finally:
        conn.close()


# cursor(prepared=True): one statement kept for every execute; many alive at once; errors.
def check_prepared_cursors():
    conn = connect()
    try:
        ins = conn.cursor(prepared=True)
        for i in range(20):
            ins.execute("INSERT INTO items (id, name, price) VALUES (?, ?, ?)", (9000 + i, f"prep{i}", Decimal("2.25")))
            expect_eq(ins.rowcount, 1, f"insert {i}")
        sel = conn.cursor(prepared=True)
        for i in range(20):
            sel.execute("SELECT name, price FROM items WHERE id = ?", (9000 + i,))
            expect_eq(sel.fetchall(), [(f"prep{i}", Decimal("2.25"))], f"row {i}")
        many = [conn.cursor(prepared=True) for _ in range(30)]
        for rnd in range(4):
            for k, cur in enumerate(many):
                cur.execute(f"SELECT ? + {k}", (rnd,))
                expect_eq(cur.fetchone(), (rnd + k,), f"statement {k} round {rnd}")
            if rnd == 1:
                for cur in many[::2]:
                    cur.close()
                many[::2] = [conn.cursor(prepared=True) for _ in many[::2]]
        for cur in many:
            cur.close()
        expect_error(mariadb.IntegrityError, mysql_common.ER_DUP_ENTRY, "23000", "a duplicate key",
                     lambda: ins.execute("INSERT INTO items (id, name, price) VALUES (?, ?, ?)", (9000, "dup", 1)))
        bad = conn.cursor(prepared=True)
        expect_error(mariadb.ProgrammingError, 1146, "42S02", "a missing table",
                     lambda: bad.execute("SELECT * FROM no_such_table WHERE id = ?", (1,)))
        sel.execute("SELECT name, price FROM items WHERE id = ?", (9003,))
        expect_eq(sel.fetchall(), [("prep3", Decimal("2.25"))], "the statement after errors")
        large = conn.cursor(prepared=True)
        for rnd in range(2):
            large.execute("SELECT seq, REPEAT(?, 1000) FROM seq_1_to_10000 WHERE seq > ?", ("y", 0))
            expect_eq(len(large.fetchall()), 10000, f"a large binary-protocol result, round {rnd}")
        expect_eq(one(conn, "SELECT 3"), 3, "the session after the statements")
    finally:
        conn.close()


# Eight connections: a prepared statement of a text all share, one of each connection's own
# text (of other shapes), and parameterized executes of plain cursors; in turns (some in
# transactions), connections closing statements and preparing others midway; then a thread each.
def check_prepared_many_connections():
    await_replicated("SELECT COUNT(*) FROM items WHERE id BETWEEN 9000 AND 9019", 20)
    conns = [connect() for _ in range(8)]
    try:
        def own_text(c):
            return f"SELECT ? * {c}" if c % 2 else f"SELECT CONCAT(?, ' from {c}'), {c} AS client"

        def prepare(c):
            return [conns[c].cursor(prepared=True), conns[c].cursor(prepared=True), conns[c].cursor()]

        cursors = [prepare(c) for c in range(8)]

        def check(c, rnd):
            shared, own, plain = cursors[c]
            shared.execute("SELECT name FROM items WHERE id = ?", (9000 + rnd % 20,))
            expect_eq(shared.fetchall(), [(f"prep{rnd % 20}",)], f"connection {c} round {rnd}: shared text")
            own.execute(own_text(c), (rnd,))
            expect_eq(own.fetchall(), [(rnd * c,)] if c % 2 else [(f"{rnd} from {c}", c)],
                      f"connection {c} round {rnd}: its own text")
            plain.execute(f"SELECT ? + {c}", (rnd,))
            expect_eq(plain.fetchall(), [(rnd + c,)], f"connection {c} round {rnd}: a plain cursor")

        for rnd in range(12):
            for c in range(8):
                in_transaction = (rnd + c) % 3 == 0
                if in_transaction:
                    conns[c].begin()
                check(c, rnd)
                if in_transaction:
                    conns[c].commit()
            if rnd == 4:
                for cur in cursors[3]:
                    cur.close()
                cursors[3] = prepare(3)
                cursors[5][1].close()
                cursors[5][1] = conns[5].cursor(prepared=True)
        failures = []

        def in_thread(c):
            try:
                for i in range(30):
                    check(c, i)
            except Exception as e:  # reported below
                failures.append(f"connection {c}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=in_thread, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(not failures, "; ".join(failures))
    finally:
        for conn in conns:
            conn.close()


# executemany: COM_STMT_BULK_EXECUTE (the proxy offers bulk operations as its writer does);
# rowcount, NULLs and blobs, UPDATE and DELETE, a transaction rolled back, an error.
def check_executemany():
    conn = connect()
    try:
        bulk = bool(conn.extended_server_capabilities & (CAPABILITY.BULK_OPERATIONS >> 32))
        expect(bulk, "bulk operations offered (by the server, and by the proxy as its writer does)")
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS bulk")
        cur.execute("CREATE TABLE bulk (id INT PRIMARY KEY, name VARCHAR(50), n INT NULL, b BLOB) ENGINE=InnoDB "
                    "DEFAULT CHARSET=utf8mb4")
        rows = [(i, f"bulk {i} ✓", None if i % 3 == 0 else i, bytes([i % 256]) * (i % 50)) for i in range(1000)]
        cur.executemany("INSERT INTO bulk VALUES (?, ?, ?, ?)", rows)
        expect_eq(cur.rowcount, 1000, "rowcount of the inserts")
        cur.execute("SELECT id, name, n, b FROM bulk ORDER BY id")
        expect_eq(cur.fetchall() == rows, True, "the rows inserted")
        cur.executemany("UPDATE bulk SET n = ? WHERE id = ?", [(-1, i) for i in range(0, 1000, 2)])
        expect_eq(cur.rowcount, 500, "rowcount of the updates")
        cur.executemany("DELETE FROM bulk WHERE id = ?", [(i,) for i in range(900, 1000)])
        expect_eq(cur.rowcount, 100, "rowcount of the deletes")
        cur.execute("SELECT COUNT(*), SUM(n = -1) FROM bulk")
        expect_eq(cur.fetchone(), (900, 450), "rows left, and rows updated")
        conn.begin()
        cur.executemany("INSERT INTO bulk (id, name) VALUES (?, ?)", [(i, "rolled back") for i in range(2000, 2100)])
        conn.rollback()
        expect_eq(one(conn, "SELECT COUNT(*) FROM bulk WHERE id >= 2000"), 0, "inserts rolled back")
        conn.begin()
        expect_error(mariadb.IntegrityError, mysql_common.ER_DUP_ENTRY, "23000", "a duplicate key in the batch",
                     lambda: cur.executemany("INSERT INTO bulk (id, name) VALUES (?, ?)",
                                             [(3000, "a"), (3001, "b"), (3000, "duplicate")]))
        conn.rollback()
        expect_eq(one(conn, "SELECT COUNT(*) FROM bulk WHERE id >= 3000"), 0, "the failed batch rolled back")
        expect_eq(one(conn, "SELECT ?", (5,)), 5, "the session after executemany")
    finally:
        conn.close()


# cursor(buffered=False): 20,000 rows of ~1 KiB read as they come, in text and in the binary
# protocol; a result left half read when its cursor closes.
def check_unbuffered():
    conn = connect()
    try:
        for params in ((), (0,)):
            protocol = "binary" if params else "text"
            sql = "SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000" + (" WHERE seq > ?" if params else "")
            cur = conn.cursor(buffered=False)
            cur.execute(sql, params)
            n = total = size = 0
            for row in cur:
                n += 1
                total += row[0]
                size += len(row[1])
            expect_eq((n, total, size), (20000, 200010000, 20000 * 1024), f"rows, sum and bytes ({protocol})")
            cur.close()
            cur = conn.cursor(buffered=False)
            cur.execute(sql, params)
            for _ in range(10):
                cur.fetchone()
            cur.close()
            expect_eq(one(conn, "SELECT 5"), 5, f"the session after a result left half read ({protocol})")
        conn.begin()
        cur = conn.cursor(buffered=False)
        cur.execute("SELECT seq FROM seq_1_to_20000 WHERE seq > ?", (0,))
        expect_eq(len(cur.fetchall()), 20000, "rows read unbuffered in a transaction")
        cur.close()
        conn.commit()
    finally:
        conn.close()


# conn.autocommit: SET AUTOCOMMIT, and the status flag of the server's replies.
def check_autocommit():
    conn = connect(autocommit=DRIVER_DEFAULT)
    try:
        cur = conn.cursor()
        expect_eq(conn.autocommit, False, "autocommit by default")
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9100, "autocommit off"))
        expect_eq(one(conn, "SELECT @@in_transaction"), 1, "in a transaction after the first statement")
        expect_eq(one(conn, "SELECT @@read_only"), 0, "a read in the transaction on the primary")
        conn.rollback()
        expect_eq(one(conn, "SELECT COUNT(*) FROM items WHERE id = 9100"), 0, "rolled back")
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9100, "committed"))
        conn.commit()
        conn.autocommit = True
        expect_eq((conn.autocommit, one(conn, "SELECT @@autocommit")), (True, 1), "autocommit switched on")
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9101, "autocommitted"))
        conn.rollback()
        conn.autocommit = False
        expect_eq((conn.autocommit, one(conn, "SELECT @@autocommit")), (False, 0), "autocommit switched off")
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9102, "rolled back"))
        conn.rollback()
        cur.execute("SELECT id FROM items WHERE id BETWEEN ? AND ? ORDER BY id", (9100, 9109))
        expect_eq(cur.fetchall(), [(9100,), (9101,)], "the rows committed")
        conn.commit()
    finally:
        conn.close()
    await_replicated("SELECT COUNT(*) FROM items WHERE id BETWEEN 9100 AND 9109", 2)


# conn.reset(): COM_RESET_CONNECTION ends the transaction and clears the session's variables
# and statements; the connection goes on.
def check_reset():
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SET @v = 42")
        expect_eq(one(conn, "SELECT @v"), 42, "a user variable")
        prepared = conn.cursor(prepared=True)
        prepared.execute("SELECT ? + 1", (1,))
        expect_eq(prepared.fetchall(), [(2,)], "a prepared statement")
        conn.begin()
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9200, "reset"))
        conn.reset()
        expect_eq(one(conn, "SELECT @v"), None, "the user variable after reset")
        expect_eq(one(conn, "SELECT @@in_transaction"), 0, "no transaction after reset")
        expect_eq(one(conn, "/* switchyard:writer */ SELECT COUNT(*) FROM items WHERE id = 9200"), 0,
                  "the transaction rolled back by reset")
        expect_eq(one(conn, "SELECT ? * 2", (21,)), 42, "a parameterized query after reset")
        again = conn.cursor(prepared=True)
        again.execute("SELECT ? + 2", (1,))
        expect_eq(again.fetchall(), [(3,)], "a statement prepared after reset")
        conn.reset()
        expect_eq(one(conn, "SELECT DATABASE()"), DB, "the default database after reset")
    finally:
        conn.close()
    # Autocommit switched off (the driver's default), then reset: the server's default again,
    # in the status flag and in the session.
    conn = connect(autocommit=DRIVER_DEFAULT)
    try:
        expect_eq((conn.autocommit, one(conn, "SELECT @@autocommit")), (False, 0), "autocommit before reset")
        conn.rollback()
        conn.reset()
        # (The OK of COM_RESET_CONNECTION still carries the old status, so the flag is read after
        # the next statement.)
        expect_eq((one(conn, "SELECT @@autocommit"), conn.autocommit), (1, True),
                  "@@autocommit and the status flag after reset")
        cur = conn.cursor()
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9201, "autocommitted after reset"))
        expect_eq(one(conn, "SELECT @@in_transaction"), 0, "no transaction after an insert")
    finally:
        conn.close()
    await_replicated("SELECT COUNT(*) FROM items WHERE id = 9201", 1)


# conn.reconnect(): a new connection for the same object; the old session's state is gone.
# Connector/C refuses once while the server status says a transaction is open ("Server has gone
# away"), then reconnects.
def check_reconnect():
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SET @v = 1")
        expect_eq(one(conn, "SELECT @v"), 1, "a user variable")
        conn.reconnect()
        expect_eq(one(conn, "SELECT @v"), None, "the user variable after reconnect")
        expect_eq(one(conn, "SELECT DATABASE()"), DB, "the default database after reconnect")
        conn.begin()
        cur = conn.cursor()
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9300, "never committed"))
        expect_error(mariadb.InterfaceError, 2006, "HY000", "reconnect in a transaction", conn.reconnect)
        conn.reconnect()
        expect_eq(one(conn, "/* switchyard:writer */ SELECT COUNT(*) FROM items WHERE id = ?", (9300,)), 0,
                  "the transaction of the old connection")
        prepared = conn.cursor(prepared=True)
        for i in range(3):
            prepared.execute("SELECT ? * 3", (i,))
            expect_eq(prepared.fetchall(), [(i * 3,)], f"a prepared statement after reconnect ({i})")
    finally:
        conn.close()
    # Autocommit switched off at connect (the driver's default): a new login has the server's.
    conn = connect(autocommit=DRIVER_DEFAULT)
    try:
        conn.reconnect()
        expect_eq((conn.autocommit, one(conn, "SELECT @@autocommit")), (True, 1), "autocommit after reconnect")
    finally:
        conn.close()


# KILL QUERY of a SELECT SLEEP(?) sent in the binary protocol, on a replica and in a transaction.
def check_kill_binary():
    for name, in_transaction in (("a read", False), ("a transaction", True)):
        conn = connect()
        killer = connect()
        try:
            if in_transaction:
                conn.begin()
            own = one(conn, "SELECT CONNECTION_ID()")
            started = time.monotonic()
            with mysql_common.killing(killer, own):
                try:
                    cur = conn.cursor()
                    cur.execute("SELECT SLEEP(?)", (60,))
                    result = cur.fetchone()
                    interrupted = result == (1,)
                except mariadb.OperationalError as e:
                    result = e
                    interrupted = e.errno == mysql_common.ER_QUERY_INTERRUPTED
            expect(interrupted and time.monotonic() - started < 30,
                   f"SLEEP(?) in {name} was not interrupted: {result!r}")
            if in_transaction:
                conn.rollback()
            expect_eq(one(conn, "SELECT ?", (3,)), 3, f"the session after KILL QUERY in {name}")
        finally:
            conn.close()
            killer.close()


def check_routing_binary():
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@read_only, ?", ("fresh",))
        expect_eq(cur.fetchone(), (int(THROUGH_PROXY), "fresh"), "a fresh session's parameterized read")
        conn.begin()
        cur.execute("SELECT @@read_only, ?", ("in a transaction",))
        expect_eq(cur.fetchone(), (0, "in a transaction"), "a parameterized read in a transaction")
        conn.commit()
        cur.execute("INSERT INTO items (id, name) VALUES (?, ?)", (9400, "routed"))
        cur.execute("SELECT name FROM items WHERE id = ?", (9400,))
        expect_eq(cur.fetchone(), ("routed",), "read your write")
        prepared = conn.cursor(prepared=True)
        prepared.execute("SELECT name FROM items WHERE id = ?", (9400,))
        prepared.fetchall()
        cur.execute("UPDATE items SET name = ? WHERE id = ?", ("updated", 9400))
        prepared.execute("SELECT name FROM items WHERE id = ?", (9400,))
        expect_eq(prepared.fetchall(), [("updated",)], "read your write with a prepared cursor")
    finally:
        conn.close()


CHECKS = mysql_common.checks(connect, Errors, lambda c: c.server_info) + [
    ("connect_options", check_connect_options),
    ("binary_protocol", check_binary_protocol),
    ("prepared_cursors", check_prepared_cursors),
    ("prepared_many_connections", check_prepared_many_connections),
    ("executemany_bulk", check_executemany),
    ("unbuffered", check_unbuffered),
    ("autocommit", check_autocommit),
    ("reset", check_reset),
    ("reconnect", check_reconnect),
    ("kill_binary", check_kill_binary),
    ("routing_binary", check_routing_binary),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"MariaDB Connector/Python {mariadb.__version__} "
                        f"(Connector/C {mariadb.mariadbapi_version})", CHECKS))
