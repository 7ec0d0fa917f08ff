"""mysqlclient (MySQLdb, on MariaDB Connector/C) through switchyard.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import sys

import MySQLdb
import MySQLdb.cursors
from MySQLdb.constants import CLIENT

import mysql_common
from common import (DB, HOST, PASSWORD, PORT, SSLMODE, USER, expect_eq,
                    run_checks)



class Errors:
    IntegrityError = MySQLdb.IntegrityError
    ProgrammingError = MySQLdb.ProgrammingError
    DatabaseError = MySQLdb.DatabaseError


def connect(autocommit=True, **overrides):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, connect_timeout=10,
                  charset="utf8mb4", autocommit=autocommit)
    if SSLMODE:
        params["ssl"] = {"ca": None}  # TLS without verification (Connector/C)
    params.update(overrides)
    return MySQLdb.connect(**params)


def check_multi_statements():
    conn = connect(client_flag=CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi'); SELECT 4")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        expect_eq([tuple(map(tuple, r)) for r in results], [((1,),), ((2, 3),), (), ((4,),)], "every result")
    finally:
        conn.close()


def check_streaming():
    conn = connect(cursorclass=MySQLdb.cursors.SSCursor)
    try:
        cur = conn.cursor()
        cur.execute("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_20000")
        expect_eq(sum(1 for _ in cur), 20000, "rows streamed unbuffered")
        cur.close()
        conn.ping()
        expect_eq(mysql_common.one(conn, "SELECT 5"), 5, "the session after streaming and ping")
    finally:
        conn.close()


CHECKS = mysql_common.checks(connect, Errors, lambda c: c.get_server_info()) + [
    ("multi_statements", check_multi_statements),
    ("streaming", check_streaming),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"mysqlclient {'.'.join(map(str, MySQLdb.version_info[:3]))}", CHECKS))
