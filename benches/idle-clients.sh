#!/usr/bin/env bash
# idle-clients.sh - what idle clients cost switchyard (issue 13): opens CLIENTS
# logged-in connections through it (each runs one SELECT 1, then stays idle),
# and reports the proxy's RSS before and after and per idle client (VmRSS from
# /proc/PID/status), the server connections they take, and the proxy's CPU per
# 1k queries when every idle client runs a few more SELECT 1. The clients are
# opened by benches/idle_clients.py (psycopg / PyMySQL). Prints a markdown
# report suitable for benches/RESULTS.md.
#
# Usage:
#   benches/idle-clients.sh [PROTOCOL...] > report.md
#
#   PROTOCOL       postgres, mysql, or both (the default: postgres mysql), one
#                  after the other, each with its own server and proxy.
#
# Environment (defaults in brackets):
#   CLIENTS [10000]    idle client connections to open
#   CONCURRENCY [32]   connections being opened at a time
#   SWITCHYARD_POOL_CONFIG ['pool_mode = "transaction"\npool_size = 10']
#                      lines added to switchyard's [server] table (\n separates
#                      lines); max_client_connections = CLIENTS + 100 is added
#                      too. A build without transaction mode refuses the key
#                      pool_mode; in session mode every client holds a server
#                      connection, so its baseline needs CLIENTS the server can
#                      take, e.g. CLIENTS=1000 SERVER_MAX_CONNECTIONS=1100
#                      SWITCHYARD_POOL_CONFIG='pool_size = 1100'
#   SERVER_MAX_CONNECTIONS [200]  PostgreSQL max_connections / mariadbd
#                      --max-connections
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard];
#                      when not set and the default is missing, the script runs
#                      `cargo build --release` in the repo root first.
#   STARTUP_TIMEOUT [60] seconds to wait for each server to accept a login
#   PG_BIN [/usr/lib/postgresql/15/bin], MARIADBD [/usr/sbin/mariadbd]
#   KEEP_TMP_ON_FAILURE  when set, a failed run leaves its temp dir behind
#
# Raises the open-files limit for itself and what it starts (the client script
# and the proxy each hold a socket per client). Progress goes to stderr, the
# report to stdout; everything runs on loopback, on free ports, in a temporary
# directory that is removed on exit.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
fi
PROTOCOLS=("$@")
((${#PROTOCOLS[@]} > 0)) || PROTOCOLS=(postgres mysql)
for p in "${PROTOCOLS[@]}"; do
    [[ $p == postgres || $p == mysql ]] || { echo "error: PROTOCOL must be postgres or mysql (got '$p')" >&2; exit 2; }
done
# Each protocol in its own process: lib-postgres.sh and lib-mysql.sh each
# define the database of one run.
if ((${#PROTOCOLS[@]} > 1)); then
    rc=0
    for p in "${PROTOCOLS[@]}"; do
        "${BASH_SOURCE[0]}" "$p" || rc=$?
    done
    exit "$rc"
fi
PROTOCOL=${PROTOCOLS[0]}
INVOCATION=$(printf '%q ' "$0" "$PROTOCOL")
INVOCATION=${INVOCATION% }

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ $PROTOCOL == postgres ]]; then
    # shellcheck source=lib-postgres.sh
    source "$SCRIPT_DIR/lib-postgres.sh"
else
    # shellcheck source=lib-mysql.sh
    source "$SCRIPT_DIR/lib-mysql.sh"
fi

CLIENTS=${CLIENTS:-10000}
CONCURRENCY=${CONCURRENCY:-32}
SWITCHYARD_POOL_CONFIG=${SWITCHYARD_POOL_CONFIG-'pool_mode = "transaction"\npool_size = 10'}
SERVER_MAX_CONNECTIONS=${SERVER_MAX_CONNECTIONS:-200}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
require_uints CLIENTS CONCURRENCY SERVER_MAX_CONNECTIONS STARTUP_TIMEOUT
((CLIENTS > 0 && CONCURRENCY > 0)) || { echo "error: CLIENTS and CONCURRENCY must be > 0" >&2; exit 2; }

if [[ $PROTOCOL == postgres ]]; then
    require_tools "$PG_BIN/initdb" "$PG_BIN/postgres" psql pg_isready runuser python3
    id postgres >/dev/null 2>&1 || die "OS user postgres is missing"
    python3 -c 'import psycopg' 2>/dev/null || die "python3 lacks psycopg (scripts/install-deps.sh installs it)"
else
    require_tools "$MARIADBD" "$MARIADB_INSTALL_DB" mariadb setpriv runuser timeout python3
    id mysql >/dev/null 2>&1 || die "OS user mysql is missing"
    python3 -c 'import pymysql' 2>/dev/null || die "python3 lacks PyMySQL (scripts/install-deps.sh installs it)"
fi
[[ $(id -u) -eq 0 ]] || die "run as root (the database runs as its own OS user)"

install_traps
raise_nofile $((2 * CLIENTS + 4096))
NOFILE=$(ulimit -n)
((NOFILE > CLIENTS + 256)) || die "open-files limit $NOFILE is too low for $CLIENTS clients and cannot be raised"

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chmod 0755 "$TMP"
[[ $PROTOCOL == postgres ]] && chown postgres: "$TMP"
log "work dir $TMP"

resolve_switchyard
[[ -z $SWITCHYARD_STATUS ]] || die "switchyard: $SWITCHYARD_STATUS"

read -r DB_PORT SY_PORT SY_ADMIN_PORT <<<"$(free_ports 3)"
[[ -n $SY_ADMIN_PORT ]] || die "could not pick free ports"
if [[ $PROTOCOL == postgres ]]; then
    PG_PORT=$DB_PORT
    pg_start "$SERVER_MAX_CONNECTIONS"
    count_cmd="psql -X -Atq -h $TMP -p $PG_PORT -U postgres -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = '$DB'\""
else
    maria_start "$SERVER_MAX_CONNECTIONS"
    count_cmd="mariadb --no-defaults --protocol=SOCKET -S $MARIA_DIR/sock -u root -N -B -e \"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '$APP_USER'\""
fi

server_lines="${SWITCHYARD_POOL_CONFIG}\nmax_client_connections = $((CLIENTS + 100))"
write_switchyard_config "$TMP/switchyard.toml" "$PROTOCOL" "$SY_PORT" "$SY_ADMIN_PORT" "$DB_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$server_lines"
start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
[[ -z $SWITCHYARD_STATUS ]] || die "switchyard: $SWITCHYARD_STATUS"
SY_PID=${PIDS[switchyard]}

# ---------------------------------------------------------------- measure ---
log "opening $CLIENTS idle clients through switchyard ($CONCURRENCY at a time)"
rc=0
python3 "$SCRIPT_DIR/idle_clients.py" --protocol "$PROTOCOL" --port "$SY_PORT" \
    --user "$APP_USER" --password "$APP_PASSWORD" --db "$DB" --count "$CLIENTS" \
    --concurrency "$CONCURRENCY" --proxy-pid "$SY_PID" --server-port "$DB_PORT" \
    --count-cmd "$count_cmd" >"$TMP/idle.json" 2>"$TMP/idle.err" || rc=$?
cat "$TMP/idle.err" >&2
[[ -s $TMP/idle.json ]] || die "idle_clients.py failed (exit $rc)"
((rc == 0)) || log "warning: some connections or queries failed (see the report)"
is_alive "$SY_PID" || die "switchyard exited during the run"

# ---------------------------------------------------------------- report ----
pool_lines=$(config_lines "$server_lines")
if [[ $PROTOCOL == postgres ]]; then
    server_version=$("$PG_BIN/postgres" --version)
    driver=$(python3 -c 'import psycopg; print("psycopg", psycopg.__version__)')
else
    server_version="MariaDB $(mariadb_version)"
    driver=$(python3 -c 'import pymysql; print("PyMySQL", pymysql.__version__)')
fi
env_prefix="CLIENTS=$CLIENTS CONCURRENCY=$CONCURRENCY SERVER_MAX_CONNECTIONS=$SERVER_MAX_CONNECTIONS"
env_prefix+=" SWITCHYARD_POOL_CONFIG=$(printf '%q' "$SWITCHYARD_POOL_CONFIG")"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"

cat <<EOF

### Idle clients through switchyard: $PROTOCOL

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- Command: \`$env_prefix $INVOCATION\`
- Machine: $(machine_line); open-files limit $NOFILE
- Versions: ${server_version} (max connections $SERVER_MAX_CONNECTIONS); python3 ${driver}; $(switchyard_version), repo $(repo_revision)
- switchyard \`[server]\` settings: \`${pool_lines}\`

EOF
python3 - "$TMP/idle.json" "$CONCURRENCY" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
concurrency = int(sys.argv[2])
mib = lambda k: "%.1f" % (r[k] / 1024)
rows = [
    ("clients opened (failed)", "%d (%d) in %.1f s" % (r["opened"], r["failed"], r["open_seconds"])),
    ("proxy RSS before", mib("rss_before_kib") + " MiB"),
    ("proxy RSS with the clients idle", "%s MiB (anonymous %s MiB)" % (mib("rss_idle_kib"), mib("rss_anon_idle_kib"))),
    ("RSS per idle client", "%s KiB" % r.get("rss_per_client_kib", "-")),
    ("server connections held by the proxy (before / idle / after a query each)",
     "%d / %d / %d" % (r["server_conns_before"], r["server_conns_idle"], r["server_conns_after_queries"])),
    ("server's own count with the clients idle", r.get("server_count_cmd") or "-"),
    ("then %d rounds of one SELECT 1 per client (%d at a time): time, failed" % (r["query_rounds"], concurrency),
     "%.1f s, %d" % (r["query_round_seconds"], r["query_round_failed"])),
    ("proxy CPU ms / 1k queries in those rounds", r["proxy_cpu_ms_per_1k_queries"]),
    ("proxy RSS after all closed; server connections it then holds",
     "%s MiB; %d" % (mib("rss_after_close_kib"), r["server_conns_after_close"])),
]
print("| measure | value |")
print("|---|---:|")
for k, v in rows:
    print(f"| {k} | {v} |")
if r.get("first_error"):
    print()
    print(f"First connection error: `{r['first_error']}`")
EOF
exit "$rc"
