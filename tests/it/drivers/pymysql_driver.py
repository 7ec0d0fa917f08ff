"""PyMySQL (pure Python) through switchyard.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import sys

import pymysql
from pymysql.constants import CLIENT

import mysql_common
from common import (DB, HOST, PASSWORD, PORT, SSLMODE, USER, expect_eq,
                    run_checks)



def connect(**overrides):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, connect_timeout=10,
                  charset="utf8mb4", autocommit=True)
    if SSLMODE:
        params["ssl"] = {"check_hostname": False}
        params["ssl_verify_cert"] = False
    params.update(overrides)
    return pymysql.connect(**params)


def check_multi_statements():
    conn = connect(client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi'); SELECT 4")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        expect_eq([tuple(map(tuple, r)) for r in results], [((1,),), ((2, 3),), (), ((4,),)], "every result")
        cur.execute("SELECT name FROM items WHERE id = 7000")
        expect_eq(cur.fetchone()[0], "multi", "the insert in the batch")
    finally:
        conn.close()


def check_streaming():
    conn = connect(cursorclass=pymysql.cursors.SSCursor)
    try:
        cur = conn.cursor()
        cur.execute("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_20000")
        expect_eq(sum(1 for _ in cur), 20000, "rows streamed unbuffered")
        cur.close()
        expect_eq(mysql_common.one(conn, "SELECT 5"), 5, "the session after streaming")
    finally:
        conn.close()


def check_ping_and_change_db():
    conn = connect()
    try:
        conn.ping(reconnect=False)
        conn.select_db("information_schema")
        expect_eq(mysql_common.one(conn, "SELECT DATABASE()"), "information_schema", "COM_INIT_DB")
        conn.select_db(DB)
    finally:
        conn.close()


CHECKS = mysql_common.checks(connect, pymysql.err, lambda c: c.get_server_info()) + [
    ("multi_statements", check_multi_statements),
    ("streaming", check_streaming),
    ("ping_and_change_db", check_ping_and_change_db),
]

if __name__ == "__main__":
    sys.exit(run_checks(f"PyMySQL {pymysql.__version__}", CHECKS))
