"""aiomysql (asyncio, built on PyMySQL's protocol code) through switchyard: what FastAPI and
SQLAlchemy's async engine do with it.

aiomysql connects with autocommit off unless told otherwise: it sends `SET AUTOCOMMIT = 0`
at connect (after its `init_command` and a `COMMIT`), so such a session runs everything in
transactions. The checks of mysql_common.py are written for blocking DB-API drivers; these
are their asynchronous equivalents.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import asyncio
import contextlib
import os
import ssl
import sys
import tempfile
from datetime import datetime
from decimal import Decimal

import aiomysql
import pymysql

from common import (DB, HOST, ONE_CONNECTION, PASSWORD, PORT, SSLMODE, THROUGH_PROXY, USER, CheckFailed,
                    expect, expect_eq, run_checks)

# aiomysql 0.3.2 escapes a bytes parameter with PyMySQL's escape_bytes_prefixed, which
# PyMySQL 1.2.3 and later keep as a placeholder string only (aio-libs/aiomysql#1080: every
# bytes parameter fails with "'str' object is not callable"). Until aiomysql has its own
# (aio-libs/aiomysql#1081), it gets what PyMySQL's own Connection.escape sends for bytes.
if not callable(aiomysql.connection.escape_bytes_prefixed):
    aiomysql.connection.escape_bytes_prefixed = lambda value: f"_binary X'{bytes(value).hex()}'"

ER_DUP_ENTRY = 1062
ER_NO_SUCH_TABLE = 1146
ER_QUERY_INTERRUPTED = 1317


def params(**overrides):
    p = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, db=DB, connect_timeout=10, charset="utf8mb4")
    if SSLMODE:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        p["ssl"] = ctx
    p.update(overrides)
    return p


@contextlib.asynccontextmanager
async def connected(**overrides):
    conn = await aiomysql.connect(**params(**overrides))
    try:
        yield conn
    finally:
        await conn.ensure_closed()


async def one(conn, query, args=None):
    async with conn.cursor() as cur:
        await cur.execute(query, args)
        row = await cur.fetchone()
        while await cur.nextset():  # drain whatever follows
            pass
    if row is None:
        return None
    return row[0] if len(row) == 1 else tuple(row)


async def errno_of(coro):
    """The MySQL error number of what `coro` raises, or None."""
    try:
        await coro
    except aiomysql.Error as e:
        return e.args[0] if e.args and isinstance(e.args[0], int) else None
    return None


async def check_connect():
    async with connected(autocommit=True) as conn:
        expect_eq((await one(conn, "SELECT CURRENT_USER()")).split("@")[0], USER, "current user")
        expect_eq(await one(conn, "SELECT DATABASE()"), DB, "default database")
        version = await one(conn, "SELECT VERSION()")
        expect("MariaDB" in version, f"a MariaDB server ({version})")
        # MariaDB's greeting prefixes its version with "5.5.5-" for old clients.
        expect_eq(conn.get_server_info().removeprefix("5.5.5-"), version, "the greeting's version")
        expect_eq(conn._writer.get_extra_info("ssl_object") is not None, bool(SSLMODE), "TLS in use")
        expect_eq(await one(conn, "SELECT @@character_set_client, @@character_set_results"), ("utf8mb4", "utf8mb4"),
                  "the character set")
        await conn.ping(reconnect=False)
    async with connected() as conn:  # autocommit off: a transaction on the writer
        own = await one(conn, "SELECT CONNECTION_ID()")
        if ONE_CONNECTION:
            expect_eq(conn.thread_id(), own, "the greeting's connection id is the writer's")
        expect_eq(conn.get_autocommit(), False, "autocommit off (aiomysql's default)")
        await conn.rollback()


async def check_setup():
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE IF EXISTS items, bins")
        await cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2)) "
                          "ENGINE=InnoDB")
        await cur.execute("CREATE TABLE bins (id INT PRIMARY KEY, b LONGBLOB, t DATETIME(6), d DOUBLE, "
                          "s VARCHAR(50) CHARACTER SET utf8mb4, n INT) ENGINE=InnoDB")


async def check_queries():
    async with connected(autocommit=True) as conn:
        expect_eq(int(await one(conn, "SELECT %s + 1", (41,))), 42, "a parameter")
        expect_eq(await one(conn, "SELECT %s", ("it's \"quoted\" \\ ✓",)), "it's \"quoted\" \\ ✓", "escaping")
        expect_eq(await one(conn, "SELECT %(a)s * %(b)s", {"a": 6, "b": 7}), 42, "named parameters")
        async with conn.cursor() as cur:
            await cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (1, "one", Decimal("1.50")))
            expect_eq(cur.rowcount, 1, "rowcount")
            await cur.execute("SELECT id, name, price FROM items")
            expect_eq(await cur.fetchall(), ((1, "one", Decimal("1.50")),), "the row")
            expect_eq([d[0] for d in cur.description], ["id", "name", "price"], "description")
        async with conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute("SELECT id, name FROM items WHERE id = %s", (1,))
            expect_eq(await cur.fetchone(), {"id": 1, "name": "one"}, "a DictCursor row")


async def check_nulls_and_binary():
    blob = bytes(range(256)) * 4096  # 1 MiB with every byte value
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO bins VALUES (%s, %s, %s, %s, %s, %s)",
                          (1, blob, datetime(2024, 2, 29, 12, 34, 56, 789012), 1.5, "héllo 🎉", None))
        await cur.execute("SELECT b, t, d, s, n, NULL FROM bins WHERE id = 1")
        row = await cur.fetchone()
        expect_eq(bytes(row[0]), blob, "1 MiB blob")
        expect_eq(tuple(row[1:]), (datetime(2024, 2, 29, 12, 34, 56, 789012), 1.5, "héllo 🎉", None, None),
                  "types and NULLs")


async def check_transactions():
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        await conn.begin()
        await cur.execute("INSERT INTO items VALUES (100, 'committed', 1)")
        await conn.commit()
        await conn.begin()
        await cur.execute("INSERT INTO items VALUES (101, 'rolled back', 1)")
        await conn.rollback()
        await conn.begin()
        await cur.execute("INSERT INTO items VALUES (102, 'outer', 1)")
        await cur.execute("SAVEPOINT sp")
        await cur.execute("INSERT INTO items VALUES (103, 'inner', 1)")
        await cur.execute("ROLLBACK TO SAVEPOINT sp")
        await cur.execute("RELEASE SAVEPOINT sp")
        expect_eq(conn.get_transaction_status(), True, "in a transaction")
        await conn.commit()
        expect_eq(conn.get_transaction_status(), False, "not in a transaction after COMMIT")
        await cur.execute("SELECT id FROM items WHERE id >= 100 ORDER BY id")
        expect_eq([r[0] for r in await cur.fetchall()], [100, 102], "committed rows")
    # aiomysql's default: autocommit off, every statement in a transaction until commit().
    async with connected() as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO items VALUES (104, 'implicit transaction', 1)")
        await conn.rollback()
        await cur.execute("INSERT INTO items VALUES (105, 'implicit, committed', 1)")
        await conn.commit()
        expect_eq(await one(conn, "SELECT COUNT(*) FROM items WHERE id IN (104, 105)"), 1, "implicit transactions")
        await conn.commit()
        # Switched to autocommit and back.
        await conn.autocommit(True)
        await cur.execute("INSERT INTO items VALUES (106, 'autocommitted', 1)")
        await conn.autocommit(False)
        await cur.execute("INSERT INTO items VALUES (107, 'rolled back', 1)")
        await conn.rollback()
        expect_eq(await one(conn, "SELECT COUNT(*) FROM items WHERE id IN (106, 107)"), 1, "after autocommit(True)")
        await conn.commit()


async def check_executemany():
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        # INSERT … VALUES: aiomysql sends multi-row INSERTs.
        await cur.executemany("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)",
                              [(i, f"many{i}", i) for i in range(1000, 1500)])
        expect_eq(cur.rowcount, 500, "executemany rowcount")
        expect_eq(await one(conn, "SELECT COUNT(*) FROM items WHERE id >= 1000"), 500, "executemany rows")
        await cur.executemany("UPDATE items SET price = %s WHERE id = %s", [(7, 1000), (8, 1001)])
        expect_eq(await one(conn, "SELECT SUM(price) FROM items WHERE id IN (1000, 1001)"), Decimal(15),
                  "executemany updates")
        # In a transaction, and a failing one rolled back.
        await conn.begin()
        await cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)", [(2000, "a"), (2001, "b")])
        expect_eq(await errno_of(cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)",
                                                 [(2002, "c"), (1000, "dup")])), ER_DUP_ENTRY,
                  "executemany with a duplicate")
        await conn.rollback()
        expect_eq(await one(conn, "SELECT COUNT(*) FROM items WHERE id >= 2000"), 0, "a rolled back executemany")


async def check_large_results():
    async with connected(autocommit=True) as conn:
        async with conn.cursor() as cur:
            await cur.execute("SELECT seq, REPEAT(MD5(seq), 32) FROM seq_1_to_20000")
            rows = await cur.fetchall()
            expect_eq(len(rows), 20000, "rows of a ~20 MB result")
            expect_eq(sum(len(r[1]) for r in rows), 20000 * 1024, "bytes of a ~20 MB result")
        # Unbuffered: rows read from the socket as they are fetched.
        async with conn.cursor(aiomysql.SSCursor) as cur:
            await cur.execute("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_20000")
            n = total = 0
            async for row in cur:
                n += 1
                total += len(row[1])
            expect_eq((n, total), (20000, 20000 * 1000), "rows and bytes streamed unbuffered")
        async with conn.cursor(aiomysql.SSCursor) as cur:
            await cur.execute("SELECT seq FROM seq_1_to_20000")
            expect_eq([r[0] for r in await cur.fetchmany(3)], [1, 2, 3], "fetchmany of an unbuffered result")
        # Closing it early read the rest off: the session goes on.
        expect_eq(await one(conn, "SELECT 5"), 5, "the session after streaming")


async def check_errors():
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO items (id, name) VALUES (5000, 'x')")
        try:
            await cur.execute("INSERT INTO items (id, name) VALUES (5000, 'again')")
            raise CheckFailed("duplicate key accepted")
        except aiomysql.IntegrityError as e:
            expect_eq(e.args[0], ER_DUP_ENTRY, "errno of a duplicate key")
            expect("Duplicate entry '5000'" in e.args[1], f"message {e.args[1]!r}")
        expect_eq(await one(conn, "SELECT 1"), 1, "the session after an error")
        try:
            await cur.execute("SELECT * FROM no_such_table")
            raise CheckFailed("a missing table accepted")
        except aiomysql.ProgrammingError as e:
            expect_eq(e.args[0], ER_NO_SUCH_TABLE, "errno of a missing table")
        expect_eq(await one(conn, "SELECT 2"), 2, "the session after another error")
        # An error does not end a MySQL transaction: the rest of it commits.
        await conn.begin()
        await cur.execute("INSERT INTO items (id, name) VALUES (5001, 'kept')")
        expect_eq(await errno_of(cur.execute("INSERT INTO items (id, name) VALUES (5000, 'dup')")), ER_DUP_ENTRY,
                  "a duplicate in a transaction")
        await conn.commit()
        expect_eq(await one(conn, "SELECT name FROM items WHERE id = 5001"), "kept", "the transaction after an error")


async def check_kill_query():
    for name, autocommit in (("a read (on a replica)", True), ("a transaction (on the writer)", False)):
        async with connected(autocommit=autocommit) as conn, connected(autocommit=True) as killer:
            if not autocommit:
                await conn.begin()
            own_id = await one(conn, "SELECT CONNECTION_ID()")
            done = asyncio.Event()

            async def keep_killing():
                while not done.is_set():
                    async with killer.cursor() as kcur:
                        await kcur.execute(f"KILL QUERY {own_id}")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(done.wait(), 0.1)

            killing = asyncio.create_task(keep_killing())
            try:
                result = await one(conn, "SELECT SLEEP(60)")
                interrupted = result == 1
            except aiomysql.OperationalError as e:
                interrupted = e.args[0] == ER_QUERY_INTERRUPTED
            finally:
                done.set()
                await killing  # raises what KILL QUERY failed with
            expect(interrupted, f"SLEEP(60) in {name} was interrupted")
            if not autocommit:
                await conn.rollback()
            expect_eq(await one(conn, "SELECT 3"), 3, f"the session after KILL QUERY in {name}")


async def check_pool():
    """A pool of up to 16 connections with 16 tasks at once, each in its own transactions
    (aiomysql's default, autocommit off), and the connections reused."""
    async with aiomysql.create_pool(minsize=1, maxsize=16, **params()) as pool:
        all_in = asyncio.Event()
        holding = 0

        async def work(i):
            nonlocal holding
            async with pool.acquire() as conn:
                holding += 1
                if holding == 16:
                    all_in.set()
                await asyncio.wait_for(all_in.wait(), 30)  # all 16 connections in use at once
                async with conn.cursor() as cur:
                    for j in range(5):
                        await cur.execute("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)",
                                          (10000 + i * 10 + j, f"task {i}", j))
                        await conn.commit()
                    await cur.execute("SELECT COUNT(*), SUM(price) FROM items WHERE name = %s", (f"task {i}",))
                    got = await cur.fetchone()
                    await conn.commit()
                    return got

        results = await asyncio.gather(*(work(i) for i in range(16)))
        expect_eq(results, [(5, Decimal(10))] * 16, "each task's rows")
        expect_eq(pool.size, 16, "connections the pool opened")
        # The pool's connections, reused by more tasks than it has.
        async def reuse(i):
            async with pool.acquire() as conn:
                got = await one(conn, "SELECT COUNT(*) FROM items WHERE id >= 10000 AND id < 10160")
                await conn.rollback()
                return got

        expect_eq(await asyncio.gather(*(reuse(i) for i in range(40))), [80] * 40, "reads by reused connections")
        expect_eq(pool.size, 16, "no more connections opened")


# What the time zone set at connect shows: the setting, a TIMESTAMP of the epoch in it,
# and where the read ran.
SETTINGS = "SELECT @@SESSION.time_zone, CAST(FROM_UNIXTIME(0) AS CHAR), @@read_only"
WANT_SETTINGS = ("+05:30", "1970-01-01 05:30:00")


async def check_set_at_connect():
    """init_command's SET holds wherever the session's statements run: on replicas, in
    transactions, in every session at once, after many transactions."""
    init = "SET time_zone = '+05:30'"
    sessions = []
    try:
        for _ in range(4):
            sessions.append(await aiomysql.connect(**params(init_command=init, autocommit=True)))
        for round in range(4):
            for c, conn in enumerate(sessions):
                # The reader hint: aiomysql's COMMIT after init_command keeps reads on the
                # writer for a moment (read-your-writes).
                got = await one(conn, SETTINGS.replace("SELECT", "SELECT /* switchyard:reader */", 1))
                expect_eq(got, WANT_SETTINGS + (int(THROUGH_PROXY),), f"session {c} round {round} (a read)")
                await conn.begin()
                expect_eq(await one(conn, SETTINGS), WANT_SETTINGS + (0,), f"session {c} round {round} in a transaction")
                await conn.commit()
        # With autocommit off (SET AUTOCOMMIT = 0 after init_command): on the writer.
        async with connected(init_command=init) as conn:
            expect_eq(await one(conn, SETTINGS), WANT_SETTINGS + (0,), "with autocommit off")
            await conn.commit()
    finally:
        for conn in sessions:
            await conn.ensure_closed()
    async with connected(autocommit=True) as conn:
        expect(await one(conn, "SELECT @@SESSION.time_zone") != "+05:30", "a new session's time zone")


async def check_routing():
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        expect_eq(int(await one(conn, "SELECT @@read_only")), int(THROUGH_PROXY), "a fresh session's read on a replica")
        await conn.begin()
        expect_eq(int(await one(conn, "SELECT @@read_only")), 0, "a transaction on the primary")
        await conn.commit()
        await cur.execute("INSERT INTO items (id, name) VALUES (6000, 'routed')")
        expect_eq(await one(conn, "SELECT name FROM items WHERE id = 6000"), "routed", "read your write")
        await cur.execute("UPDATE items SET name = 'updated' WHERE id = 6000")
        expect_eq(await one(conn, "SELECT name FROM items WHERE id = 6000"), "updated", "read your update")
    async with connected() as conn:  # autocommit off: every read in a transaction
        expect_eq(int(await one(conn, "SELECT @@read_only")), 0, "a read with autocommit off on the primary")
        await conn.commit()


async def check_multi_statements():
    """aiomysql always asks for CLIENT_MULTI_STATEMENTS: several statements in one query, each
    result read with nextset(), and a stored procedure's results."""
    async with connected(autocommit=True) as conn, conn.cursor() as cur:
        await cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO items (id, name) VALUES (7000, 'multi'); SELECT 4")
        results = [await cur.fetchall()]
        while await cur.nextset():
            results.append(await cur.fetchall())
        expect_eq([tuple(map(tuple, r)) for r in results], [((1,),), ((2, 3),), (), ((4,),)], "every result")
        expect_eq(await one(conn, "SELECT name FROM items WHERE id = 7000"), "multi", "the insert in the batch")
        await cur.execute("DROP PROCEDURE IF EXISTS two_results")
        await cur.execute("CREATE PROCEDURE two_results(IN n INT) BEGIN SELECT n; SELECT n * 2, 'x'; END")
        await cur.callproc("two_results", (21,))
        results = [await cur.fetchall()]
        while await cur.nextset():
            results.append(await cur.fetchall())
        expect_eq([tuple(map(tuple, r)) for r in results if r], [((21,),), ((42, "x"),)], "a procedure's results")
        expect_eq(await one(conn, "SELECT 6"), 6, "the session after a procedure")


async def check_load_data_local():
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write("".join(f"{i}\tloaded {i}\t{i}.25\n" for i in range(8000, 8500)))
    try:
        async with connected(autocommit=True, local_infile=True) as conn, conn.cursor() as cur:
            await cur.execute(f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE items")
            expect_eq(cur.rowcount, 500, "rows loaded")
            expect_eq(await one(conn, "SELECT COUNT(*), SUM(price) FROM items WHERE id >= 8000 AND id < 8500"),
                      (500, Decimal("4124875.00")), "the loaded rows")
    finally:
        os.unlink(f.name)


async def check_select_db():
    async with connected(autocommit=True) as conn:
        await conn.select_db("information_schema")
        expect_eq(await one(conn, "SELECT DATABASE()"), "information_schema", "COM_INIT_DB")
        await conn.select_db(DB)
        expect_eq(await one(conn, "SELECT DATABASE()"), DB, "back in the test database")


def sync(check):
    return lambda: asyncio.run(asyncio.wait_for(check(), 60))


CHECKS = [(name, sync(check)) for name, check in [
    ("connect", check_connect),
    ("setup", check_setup),
    ("queries", check_queries),
    ("nulls_and_binary", check_nulls_and_binary),
    ("transactions", check_transactions),
    ("executemany", check_executemany),
    ("large_results", check_large_results),
    ("errors", check_errors),
    ("kill_query", check_kill_query),
    ("pool", check_pool),
    ("set_at_connect", check_set_at_connect),
    ("multi_statements", check_multi_statements),
    ("load_data_local", check_load_data_local),
    ("select_db", check_select_db),
    ("routing", check_routing),
]]

if __name__ == "__main__":
    sys.exit(run_checks(f"aiomysql {aiomysql.__version__} (PyMySQL {pymysql.__version__})", CHECKS))
