"""mysql-connector-python (Oracle's Connector/Python; its C extension and its pure-Python
protocol) through switchyard, with server-side prepared statements.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import sys
from decimal import Decimal

import mysql.connector
from mysql.connector import errors

import mysql_common
from common import (DB, HOST, PASSWORD, PORT, SSLMODE, USER, CheckFailed,
                    expect, expect_eq, run_checks)


def connect(use_pure=not mysql.connector.HAVE_CEXT, **overrides):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, connection_timeout=10,
                  autocommit=True, use_pure=use_pure)
    if SSLMODE:
        params.update(ssl_disabled=False, ssl_verify_cert=False, ssl_verify_identity=False)
    else:
        params["ssl_disabled"] = True
    params.update(overrides)
    return mysql.connector.connect(**params)


def check_prepared_statements():
    for use_pure in (False, True) if mysql.connector.HAVE_CEXT else (True,):
        conn = connect(use_pure=use_pure)
        try:
            cur = conn.cursor(prepared=True)
            base = 8000 if use_pure else 8100
            for i in range(5):
                cur.execute("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)",
                            (base + i, f"prep{i}", Decimal("2.25")))
            cur.execute("SELECT name, price FROM items WHERE id = %s", (base + 3,))
            expect_eq(tuple(cur.fetchone()), ("prep3", Decimal("2.25")), f"prepared read (use_pure={use_pure})")
            blob = bytes(range(256)) * 16
            cur.execute("INSERT INTO bins (id, b, n) VALUES (%s, %s, %s)", (base, blob, None))
            cur.execute("SELECT b, n, NULL FROM bins WHERE id = %s", (base,))
            row = cur.fetchone()
            expect_eq((bytes(row[0]), row[1], row[2]), (blob, None, None), "binary protocol blob and NULLs")
            cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)", [(base + 50 + i, "pm") for i in range(20)])
            cur.execute("SELECT COUNT(*) FROM items WHERE id BETWEEN %s AND %s", (base + 50, base + 69))
            expect_eq(cur.fetchone()[0], 20, "prepared executemany")
            try:
                cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (base, "dup"))
                raise CheckFailed("duplicate accepted by a prepared statement")
            except errors.IntegrityError as e:
                expect_eq(e.errno, mysql_common.ER_DUP_ENTRY, "errno from a prepared statement")
                expect_eq(e.sqlstate, "23000", "SQLSTATE from a prepared statement")
            cur.execute("SELECT seq, REPEAT('y', 1000) FROM seq_1_to_10000 WHERE seq > %s", (0,))
            expect_eq(len(cur.fetchall()), 10000, "a large binary-protocol result")
            cur.close()
            conn.start_transaction()
            cur = conn.cursor(prepared=True)
            cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (base + 99, "tx"))
            conn.rollback()
            cur.execute("SELECT COUNT(*) FROM items WHERE id = %s", (base + 99,))
            expect_eq(cur.fetchone()[0], 0, "a prepared insert rolled back")
            cur.close()
        finally:
            conn.close()


def check_multi_statements():
    conn = connect()
    try:
        cur = conn.cursor()
        results = []
        try:  # Connector/Python 9.2+: execute runs every statement, fetchsets() yields each result
            cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi'); SELECT 4")
            for _statement, rows in cur.fetchsets():
                results.append([tuple(r) for r in rows])
        except AttributeError:
            for result in cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi');"
                                      " SELECT 4", multi=True):
                results.append([tuple(r) for r in result.fetchall()] if result.with_rows else [])
        expect_eq(results, [[(1,)], [(2, 3)], [], [(4,)]], "every result")
    finally:
        conn.close()


def check_pure_python_protocol():
    conn = connect(use_pure=True)
    try:
        expect_eq(mysql_common.one(conn, "SELECT %s", ("pure ✓",)), "pure ✓", "the pure-Python protocol")
        conn.cmd_reset_connection()
        expect_eq(mysql_common.one(conn, "SELECT 1"), 1, "after COM_RESET_CONNECTION")
    finally:
        conn.close()


def check_collation():
    conn = connect(charset="utf8mb4")
    try:
        expect("utf8mb4" in mysql_common.one(conn, "SELECT @@collation_connection"), "a utf8mb4 collation")
    finally:
        conn.close()


CHECKS = mysql_common.checks(connect, errors, lambda c: c.server_info) + [
    ("prepared_statements", check_prepared_statements),
    ("multi_statements", check_multi_statements),
    ("pure_python_protocol", check_pure_python_protocol),
    ("collation", check_collation),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"mysql-connector-python {mysql.connector.__version__} "
                        f"(C extension: {mysql.connector.HAVE_CEXT})", CHECKS))
