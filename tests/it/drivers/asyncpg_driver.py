"""asyncpg (its own protocol code, always extended protocol) through switchyard.

Run by tests/drivers.rs; see common.py for the environment it reads.
"""

import asyncio
import io
import json
import sys
import time
import uuid
from decimal import Decimal

import asyncpg

from common import (DB, ONE_CONNECTION, CheckFailed, HOST, PASSWORD, PORT, SSLMODE,
                    THROUGH_PROXY, USER, expect, expect_eq, run_checks)


async def connect(**kwargs):
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, timeout=10)
    if SSLMODE:
        params["ssl"] = SSLMODE
    params.update(kwargs)
    return await asyncpg.connect(**params)


async def check_connect():
    conn = await connect()
    try:
        expect_eq(await conn.fetchval("SELECT current_user"), USER, "current_user")
        expect(conn.get_server_version().major >= 15, f"server version {conn.get_server_version()}")
        if SSLMODE:
            expect(conn._transport.get_extra_info("ssl_object") is not None, "TLS is in use")
        pid = await conn.fetchval("/* switchyard:writer */ SELECT pg_backend_pid()")
        if ONE_CONNECTION:
            expect_eq(pid, conn.get_server_pid(), "the pid the client was told is its writer connection's")
    finally:
        await conn.close()


async def check_setup():
    conn = await connect()
    try:
        await conn.execute("""
            DROP TABLE IF EXISTS items, bins, copied;
            DROP TYPE IF EXISTS mood;
            CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
            CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), m mood);
            CREATE TABLE bins (id int PRIMARY KEY, b bytea, j jsonb, a int[], t timestamptz, u uuid,
                               f float8, n text);
            CREATE TABLE copied (id int, name text, data bytea);
        """)
    finally:
        await conn.close()


async def check_queries_and_prepared_statements():
    conn = await connect()
    try:
        expect_eq(await conn.fetchval("SELECT $1::int + 1", 41), 42, "a parameter")
        for i in range(5):
            await conn.execute("INSERT INTO items VALUES ($1, $2, $3, $4)", i, f"item{i}", Decimal(i), "ok")
        stmt = await conn.prepare("SELECT name, m FROM items WHERE id = $1")
        for i in range(5):
            row = await stmt.fetchrow(i)
            expect_eq((row["name"], row["m"]), (f"item{i}", "ok"), f"prepared read of {i} (enum introspected)")
        expect_eq([a.name for a in stmt.get_attributes()], ["name", "m"], "statement attributes")
        expect_eq(await stmt.fetchval(2), "item2", "fetchval of a prepared statement")
        # The statement cache: the same text again reuses the server-side statement.
        for _ in range(3):
            expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE price >= $1", Decimal(0)), 5,
                      "cached statement")
        # A statement whose result type changed under the cache: asyncpg re-prepares it.
        await conn.execute("ALTER TABLE items ADD COLUMN extra int DEFAULT 7")
        try:
            row = await conn.fetchrow("SELECT * FROM items WHERE id = $1", 1)
        except asyncpg.exceptions.InvalidCachedStatementError:
            row = await conn.fetchrow("SELECT * FROM items WHERE id = $1", 1)
        expect_eq(row["extra"], 7, "the new column after re-preparing")
    finally:
        await conn.close()


async def check_transactions():
    conn = await connect()
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO items (id, name) VALUES (100, 'committed')")
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute("INSERT INTO items (id, name) VALUES (101, 'inner')")
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO items (id, name) VALUES (102, 'rolled back')")
        await tx.rollback()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE id >= 100"), 1,
                      "a read-only transaction sees the commit")
        ids = [r[0] for r in await conn.fetch("SELECT id FROM items WHERE id >= 100 ORDER BY id")]
        expect_eq(ids, [100], "committed rows")
    finally:
        await conn.close()


async def check_copy():
    conn = await connect()
    try:
        records = [(i, f"name {i}\t\\", bytes(range(i % 256)) or None) for i in range(3000)]
        await conn.copy_records_to_table("copied", records=records, columns=["id", "name", "data"])
        text = "".join(f"{i}\tcsv {i}\t\\\\x{i:04x}\n" for i in range(3000, 4000))
        await conn.copy_to_table("copied", source=io.BytesIO(text.encode()), columns=["id", "name", "data"])
        expect_eq(await conn.fetchval("SELECT count(*) FROM copied"), 4000, "rows after COPY FROM")
        out = io.BytesIO()
        await conn.copy_from_query("SELECT id, name FROM copied WHERE id < $1 ORDER BY id", 10, output=out,
                                   format="csv")
        expect_eq(out.getvalue().decode().splitlines()[1], "1,name 1\t\\", "copy_from_query csv")
        out = io.BytesIO()
        await conn.copy_from_table("copied", output=out, format="binary")
        expect(out.getvalue().startswith(b"PGCOPY\n\xff\r\n\0"), "binary copy_from_table")
        expect(len(out.getvalue()) > 300_000, f"binary copy size {len(out.getvalue())}")
        try:
            await conn.copy_records_to_table("items", records=[(900, "a"), (900, "dup")], columns=["id", "name"])
            raise CheckFailed("duplicate in COPY accepted")
        except asyncpg.exceptions.UniqueViolationError:
            pass
        expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE id = 900"), 0, "a failed COPY left nothing")
    finally:
        await conn.close()


async def check_listen_notify():
    listener = await connect()
    notifier = await connect()
    try:
        got = asyncio.Queue()
        await listener.add_listener("chan", lambda c, pid, channel, payload: got.put_nowait((pid, channel, payload)))
        await notifier.execute("NOTIFY chan, 'hello'")
        await notifier.execute("SELECT pg_notify('chan', $1)", "second")
        first = await asyncio.wait_for(got.get(), 10)
        second = await asyncio.wait_for(got.get(), 10)
        expect_eq([first[1:], second[1:]], [("chan", "hello"), ("chan", "second")], "notifications")
        if ONE_CONNECTION:
            expect_eq(first[0], notifier.get_server_pid(), "the notifying pid is the pid the notifier was told")
        expect_eq(await listener.fetchval("SELECT 1"), 1, "the listener runs queries")
    finally:
        await listener.close()
        await notifier.close()


async def check_timeout_cancel():
    conn = await connect()
    try:
        for name, in_transaction in (("a read (on a replica)", False), ("a transaction (on the writer)", True)):
            tx = conn.transaction() if in_transaction else None
            if tx:
                await tx.start()
            started = time.monotonic()
            try:
                await conn.fetch("SELECT pg_sleep(60)", timeout=0.5)
                raise CheckFailed(f"pg_sleep(60) in {name} was not cancelled")
            except asyncio.TimeoutError:
                pass
            took = time.monotonic() - started
            # The query would have run 60 s: it ended because the cancel reached it.
            expect(took < 30, f"the cancel of {name} took {took:.1f}s")
            if tx:
                await tx.rollback()
            expect_eq(await conn.fetchval("SELECT 7"), 7, f"the connection after a cancel in {name}")
    finally:
        await conn.close()


async def check_executemany():
    conn = await connect()
    try:
        await conn.executemany("INSERT INTO items (id, name) VALUES ($1, $2)",
                               [(i, f"many{i}") for i in range(1000, 1500)])
        expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE id >= 1000"), 500, "executemany rows")
        try:
            await conn.executemany("INSERT INTO items (id, name) VALUES ($1, $2)",
                                   [(2000, "a"), (2001, "b"), (1000, "dup"), (2002, "c")])
            raise CheckFailed("executemany with a duplicate accepted")
        except asyncpg.exceptions.UniqueViolationError:
            pass
        expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE id >= 2000"), 0,
                  "a failed executemany is atomic")
    finally:
        await conn.close()


async def check_large_results():
    conn = await connect()
    try:
        query = "SELECT i, repeat(md5(i::text), 32) AS s FROM generate_series(1, 20000) i"
        rows = await conn.fetch(query)
        expect_eq(len(rows), 20000, "rows of a ~20 MB result")
        expect_eq(sum(len(r["s"]) for r in rows), 20000 * 1024, "bytes of a ~20 MB result")
        async with conn.transaction():
            n = 0
            async for _ in conn.cursor(query, prefetch=500):  # Execute with a row limit, portal suspended
                n += 1
            expect_eq(n, 20000, "rows through a cursor")
            cur = await conn.cursor("SELECT generate_series(1, 100)")
            expect_eq([r[0] for r in await cur.fetch(3)], [1, 2, 3], "cursor fetch")
            await cur.forward(10)
            expect_eq(await cur.fetchrow(), (14,), "cursor after forward")
    finally:
        await conn.close()


async def check_nulls_and_types():
    blob = bytes(range(256)) * 64
    conn = await connect()
    try:
        values = (1, blob, json.dumps({"k": [1, None, "é"]}), [1, None, 3], None, uuid.UUID(int=12345),
                  float("inf"), None)
        await conn.execute("INSERT INTO bins VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *values)
        row = await conn.fetchrow("SELECT id, b, j, a, t, u, f, n FROM bins WHERE id = 1")
        expect_eq(row["b"], blob, "bytea")
        expect_eq(json.loads(row["j"]), {"k": [1, None, "é"]}, "jsonb")
        expect_eq((row["a"], row["t"], row["u"], row["f"], row["n"]), values[3:], "types")
        row = await conn.fetchrow("SELECT NULL::int, NULL::text, NULL::bytea, $1::text", None)
        expect_eq(tuple(row), (None,) * 4, "NULLs")
        expect_eq(await conn.fetchval("SELECT $1::text", "héllo wörld ✓"), "héllo wörld ✓", "UTF-8 text")
    finally:
        await conn.close()


async def check_errors():
    conn = await connect()
    try:
        await conn.execute("INSERT INTO items (id, name) VALUES (5000, 'x')")
        try:
            await conn.execute("INSERT INTO items (id, name) VALUES (5000, 'again')")
            raise CheckFailed("duplicate key accepted")
        except asyncpg.exceptions.UniqueViolationError as e:
            expect_eq(e.sqlstate, "23505", "SQLSTATE")
            expect_eq(e.constraint_name, "items_pkey", "constraint name")
        expect_eq(await conn.fetchval("SELECT 1"), 1, "the session after an error")
        try:
            await conn.fetch("SELECT $1::int / 0", 1)
            raise CheckFailed("division by zero accepted")
        except asyncpg.exceptions.DivisionByZeroError:
            pass
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO items (id, name) VALUES (5001, 'x')")
                await conn.execute("INSERT INTO items (id, name) VALUES (5001, 'x')")
        except asyncpg.exceptions.UniqueViolationError:
            pass
        expect_eq(await conn.fetchval("SELECT count(*) FROM items WHERE id = 5001"), 0, "rolled back")
    finally:
        await conn.close()


async def check_pool():
    params = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, min_size=2, max_size=3)
    if SSLMODE:
        params["ssl"] = SSLMODE
    async with asyncpg.create_pool(**params) as pool:
        async def work(i):
            async with pool.acquire() as conn:
                await conn.execute("SET application_name = 'pooled'")
                await conn.execute("LISTEN pooled")
                return await conn.fetchval("SELECT $1::int * 2", i)
        results = await asyncio.gather(*(work(i) for i in range(20)))
        expect_eq(results, [i * 2 for i in range(20)], "pooled work")
        async with pool.acquire() as conn:  # released connections were reset
            expect_eq(await conn.fetchval("SHOW application_name"), "", "RESET ALL on release")


async def check_reads_on_replicas():
    conn = await connect()
    try:
        expect_eq(await conn.fetchval("SELECT pg_is_in_recovery()"), THROUGH_PROXY,
                  "a fresh session's read runs on a replica")
    finally:
        await conn.close()


async def check_routing():
    conn = await connect()
    try:
        async with conn.transaction():
            expect_eq(await conn.fetchval("SELECT pg_is_in_recovery()"), False, "a transaction runs on the primary")
        await conn.execute("INSERT INTO items (id, name) VALUES (6000, 'routed')")
        expect_eq(await conn.fetchval("SELECT name FROM items WHERE id = 6000"), "routed", "read your write")
    finally:
        await conn.close()


def sync(check):
    return lambda: asyncio.run(asyncio.wait_for(check(), 60))


CHECKS = [(name, sync(check)) for name, check in [
    ("connect", check_connect),
    ("setup", check_setup),
    ("queries_and_prepared_statements", check_queries_and_prepared_statements),
    ("transactions", check_transactions),
    ("copy", check_copy),
    ("listen_notify", check_listen_notify),
    ("timeout_cancel", check_timeout_cancel),
    ("executemany", check_executemany),
    ("large_results", check_large_results),
    ("nulls_and_types", check_nulls_and_types),
    ("errors", check_errors),
    ("pool", check_pool),
    ("routing", check_routing),
    ("reads_on_replicas", check_reads_on_replicas),
]]

if __name__ == "__main__":
    sys.exit(run_checks(f"asyncpg {asyncpg.__version__}", CHECKS))
