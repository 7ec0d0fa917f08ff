#!/usr/bin/env python3
"""Open many logged-in, idle client connections to a proxy and measure what they cost it.

Run by benches/idle-clients.sh (which starts the database and the proxy); prints one JSON
object on stdout. Steps: the proxy's RSS at rest; COUNT connections opened (CONCURRENCY at
a time), each running one `SELECT 1`, then left idle; after SETTLE seconds the proxy's RSS
again, the connections it holds to the server (its established TCP connections to
SERVER_PORT) and, when --count-cmd is given, what that command prints (the server's own
count); then every client runs QUERY_ROUNDS more `SELECT 1` (the proxy's CPU time for them,
per 1,000 queries); then all close and the RSS is read once more.

Drivers: psycopg (PostgreSQL) and PyMySQL (MySQL), both installed by
scripts/install-deps.sh.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_kib(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, RssAnon, ...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid):
    """utime + stime of all the process's threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def conns_to_port(pid, port):
    """Established TCP connections of process PID to PORT (as lib.sh's conns_to_port)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    suffix = ":%04X" % port
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "01" and cols[2].endswith(suffix) and cols[9] in inodes:
                        count += 1
        except FileNotFoundError:
            pass
    return count


def connector(args):
    """A function opening one logged-in connection, and one running SELECT 1 on it."""
    if args.protocol == "postgres":
        import psycopg

        def connect():
            return psycopg.connect(
                host=args.host, port=args.port, user=args.user, password=args.password,
                dbname=args.db, autocommit=True, connect_timeout=30, sslmode="disable",
            )

        def query(conn):
            conn.execute("SELECT 1").fetchall()

    else:
        import pymysql

        def connect():
            return pymysql.connect(
                host=args.host, port=args.port, user=args.user, password=args.password,
                database=args.db, autocommit=True, connect_timeout=30,
            )

        def query(conn):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()

    return connect, query


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=["postgres", "mysql"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the proxy's port")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    p.add_argument("--query-rounds", type=int, default=5, help="rounds of one SELECT 1 per client")
    p.add_argument("--proxy-pid", type=int, required=True)
    p.add_argument("--server-port", type=int, required=True)
    p.add_argument("--count-cmd", help="shell command printing the server's connection count")
    args = p.parse_args()

    connect, query = connector(args)
    pid = args.proxy_pid
    out = {"protocol": args.protocol, "clients": args.count}
    out["rss_before_kib"] = status_kib(pid, "VmRSS")
    out["server_conns_before"] = conns_to_port(pid, args.server_port)

    def open_one(_):
        try:
            conn = connect()
            query(conn)
            return conn, None
        except Exception as e:  # reported, not raised: the count of failures is a result
            return None, f"{type(e).__name__}: {e}".strip()

    started = time.monotonic()
    conns, errors = [], []
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for conn, err in pool.map(open_one, range(args.count)):
            if conn is not None:
                conns.append(conn)
            else:
                errors.append(err)
    out["open_seconds"] = round(time.monotonic() - started, 2)
    out["opened"] = len(conns)
    out["failed"] = len(errors)
    out["first_error"] = errors[0][:300] if errors else None
    print(f"idle_clients: {len(conns)} open, {len(errors)} failed in {out['open_seconds']} s",
          file=sys.stderr)

    time.sleep(args.settle)
    out["rss_idle_kib"] = status_kib(pid, "VmRSS")
    out["rss_anon_idle_kib"] = status_kib(pid, "RssAnon")
    out["server_conns_idle"] = conns_to_port(pid, args.server_port)
    if args.count_cmd:
        res = subprocess.run(args.count_cmd, shell=True, capture_output=True, text=True)
        out["server_count_cmd"] = res.stdout.strip() if res.returncode == 0 else None
    if conns:
        out["rss_per_client_kib"] = round((out["rss_idle_kib"] - out["rss_before_kib"]) / len(conns), 2)

    # QUERY_ROUNDS more SELECT 1 on every idle client: the proxy's CPU for them.
    cpu0 = cpu_seconds(pid)
    started = time.monotonic()
    failed = 0
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for _ in range(args.query_rounds):
            for ok in pool.map(lambda c: _try(query, c), conns):
                failed += 0 if ok else 1
    queries = len(conns) * args.query_rounds
    out["query_rounds"] = args.query_rounds
    out["query_round_seconds"] = round(time.monotonic() - started, 2)
    out["query_round_failed"] = failed
    out["proxy_cpu_ms_per_1k_queries"] = (
        round((cpu_seconds(pid) - cpu0) * 1000 * 1000 / queries, 1) if queries else None
    )
    out["server_conns_after_queries"] = conns_to_port(pid, args.server_port)

    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass
    time.sleep(args.settle)
    out["rss_after_close_kib"] = status_kib(pid, "VmRSS")
    out["server_conns_after_close"] = conns_to_port(pid, args.server_port)
    print(json.dumps(out))
    return 0 if not errors and failed == 0 else 1


def _try(query, conn):
    try:
        query(conn)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
