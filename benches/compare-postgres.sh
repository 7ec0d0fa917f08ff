#!/usr/bin/env bash
# compare-postgres.sh - run the same pgbench load against PostgreSQL directly,
# through switchyard, through PgBouncer (session pooling) and through HAProxy
# (mode tcp: the cost of one bare hop), interleaved, in one run, and print a
# markdown report suitable for benches/RESULTS.md.
#
# Usage:
#   benches/compare-postgres.sh [MODE [PGBENCH_FLAG...]] > report.md
#
#   MODE           pgbench query mode: prepared (default), simple or extended.
#                  Can also be given as the MODE environment variable.
#   PGBENCH_FLAG   workload flags passed to pgbench; default "-S" (select-only).
#                  Given flags replace the default (PGBENCH_FLAGS env does too).
#                  Do not pass -M, -c, -j, -T, -h, -p, -U here.
#
# Environment (defaults in brackets):
#   DURATION [20]      seconds per pgbench run
#   ROUNDS [3]         rounds; each round runs every target once, order rotated
#   CLIENTS [8]        pgbench -c
#   THREADS [2]        pgbench -j
#   SCALE [10]         pgbench -i -s
#   WARMUP [5]         seconds of direct pgbench before the rounds (0: none)
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard];
#                      when not set and the default is missing, the script runs
#                      `cargo build --release` in the repo root first.
#   BASELINE_BIN       another switchyard build (say, of the commit before a
#                      change), run as the extra target "baseline" in the same
#                      rounds [none]
#   STARTUP_TIMEOUT [30] seconds to wait for each server to accept connections
#   PG_BIN [/usr/lib/postgresql/15/bin]
#
# Progress goes to stderr, the report to stdout. Everything runs on loopback,
# on free ports, in a temporary directory that is removed on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
INVOCATION=$(printf '%q ' "$0" "$@")
INVOCATION=${INVOCATION% }

# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    usage "${BASH_SOURCE[0]}"
    exit 0
fi

MODE=${MODE:-prepared}
if [[ $# -gt 0 && $1 != -* ]]; then
    MODE=$1
    shift
fi
case $MODE in
    prepared | simple | extended) ;;
    *) echo "error: MODE must be prepared, simple or extended (got '$MODE')" >&2; exit 2 ;;
esac
if [[ $# -gt 0 ]]; then
    PGBENCH_FLAGS=("$@")
else
    read -r -a PGBENCH_FLAGS <<<"${PGBENCH_FLAGS:--S}"
fi

DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
WARMUP=${WARMUP:-5}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

require_uints DURATION ROUNDS CLIENTS THREADS SCALE WARMUP STARTUP_TIMEOUT
((DURATION > 0 && ROUNDS > 0)) || { echo "error: DURATION and ROUNDS must be > 0" >&2; exit 2; }

APP_USER=app
APP_PASSWORD=app-secret
DB=bench

require_tools "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/postgres" pgbench psql pg_isready runuser python3 "$PGBOUNCER" "$HAPROXY"
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are run as the postgres user via runuser)"
id postgres >/dev/null 2>&1 || die "OS user postgres is missing"

# ---------------------------------------------------------------- cleanup ---
PGDATA_DIR=""
PG_RUNUSER_PID=""

bench_cleanup_db() { # called by cleanup (lib.sh) after the proxies are stopped
    local pid
    if [[ -n $PGDATA_DIR && -f $PGDATA_DIR/postmaster.pid ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -t 20 -w stop >/dev/null 2>&1
        if [[ -f $PGDATA_DIR/postmaster.pid ]]; then
            pid=$(head -n1 "$PGDATA_DIR/postmaster.pid")
            if [[ $pid =~ ^[0-9]+$ ]] && is_alive "$pid"; then
                log "postgres did not stop, sending SIGQUIT/SIGKILL to $pid"
                kill -QUIT "$pid" 2>/dev/null
                sleep 1
                kill -KILL "$pid" 2>/dev/null
            fi
        fi
    fi
    [[ -n $PG_RUNUSER_PID ]] && stop_pid "$PG_RUNUSER_PID" "runuser postgres"
    return 0
}
install_traps

# ---------------------------------------------------------------- helpers ---
pg_super() { # psql as the superuser over the unix socket
    psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres "$@"
}

app_login() { # port: an authenticated query as app through 127.0.0.1:PORT
    PGPASSWORD=$APP_PASSWORD PGCONNECT_TIMEOUT=2 psql -X -Atq -h 127.0.0.1 -p "$1" \
        -U "$APP_USER" -d "$DB" -c 'select 1'
}

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chown postgres: "$TMP"
chmod 0755 "$TMP"
PGDATA_DIR=$TMP/pgdata
log "work dir $TMP"

# switchyard: build it if the default binary is missing, else use what is given.
resolve_switchyard

read -r PG_PORT SY_PORT SY_ADMIN_PORT BOUNCER_PORT HAPROXY_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 7)"
[[ -n $HAPROXY_PORT ]] || die "could not pick free ports"
log "ports: postgres=$PG_PORT switchyard=$SY_PORT (admin $SY_ADMIN_PORT) pgbouncer=$BOUNCER_PORT haproxy=$HAPROXY_PORT"

# PostgreSQL primary.
log "initdb"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# --- compare-postgres.sh ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
max_connections = 100
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
cat >"$PGDATA_DIR/pg_hba.conf" <<EOF
local all all                   trust
host  all postgres 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
EOF
chown postgres: "$PGDATA_DIR/postgresql.conf" "$PGDATA_DIR/pg_hba.conf"
log "starting postgres"
# Started as our child (runuser forks and reaps the postmaster), not through
# pg_ctl start, so no orphaned postmaster is left for init to reap.
runuser -u postgres -- "$PG_BIN/postgres" -D "$PGDATA_DIR" </dev/null >"$TMP/postgres.log" 2>&1 &
PG_RUNUSER_PID=$!
wait_for postgres "$PG_RUNUSER_PID" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" ||
    { tail -n 20 "$TMP/postgres.log" >&2; die "postgres did not start on port $PG_PORT"; }
pg_super -d postgres -c "CREATE ROLE $APP_USER LOGIN PASSWORD '$APP_PASSWORD'"
pg_super -d postgres -c "CREATE DATABASE $DB OWNER $APP_USER"
wait_for postgres "" app_login "$PG_PORT" || die "cannot log in as $APP_USER directly"

log "pgbench -i -s $SCALE"
PGPASSWORD=$APP_PASSWORD pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$DB" \
    >"$TMP/pgbench-init.log" 2>&1 || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
pg_super -d "$DB" -c 'VACUUM ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history'

# PgBouncer, session pooling, SCRAM with the plaintext password in auth_file.
cat >"$TMP/userlist.txt" <<EOF
"$APP_USER" "$APP_PASSWORD"
EOF
cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/userlist.txt
pool_mode = session
default_pool_size = 20
max_client_conn = 200
logfile = $TMP/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF

# HAProxy, a bare TCP hop; switchyard with the primary as its only backend.
write_haproxy_config "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$PG_PORT"
write_switchyard_config "$TMP/switchyard.toml" postgres "$SY_PORT" "$SY_ADMIN_PORT" "$PG_PORT" "$APP_USER" "$APP_PASSWORD"
write_switchyard_config "$TMP/baseline.toml" postgres "$BASE_PORT" "$BASE_ADMIN_PORT" "$PG_PORT" "$APP_USER" "$APP_PASSWORD"
chown postgres: "$TMP"/userlist.txt "$TMP"/pgbouncer.ini "$TMP"/haproxy.cfg "$TMP"/switchyard.toml
chmod 0600 "$TMP/userlist.txt"

PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT)
TARGETS=(direct)

start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
start_baseline "$TMP/baseline.toml" "$BASE_PORT" app_login

log "starting pgbouncer"
"$PGBOUNCER" -u postgres "$TMP/pgbouncer.ini" </dev/null >>"$TMP/pgbouncer.out" 2>&1 &
PIDS[pgbouncer]=$!
wait_for pgbouncer "${PIDS[pgbouncer]}" app_login "$BOUNCER_PORT" ||
    { tail -n 20 "$TMP/pgbouncer.log" "$TMP/pgbouncer.out" >&2 || true; die "pgbouncer did not start"; }
TARGETS+=(pgbouncer)

start_haproxy "$TMP/haproxy.cfg" "$HAPROXY_PORT" app_login

# ---------------------------------------------------------------- bench -----
PGBENCH_ARGS=(-n "${PGBENCH_FLAGS[@]}" -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$DURATION")

bench_run() { # port seconds outfile
    run_client "$3" env PGPASSWORD="$APP_PASSWORD" pgbench -h 127.0.0.1 -p "$1" -U "$APP_USER" \
        -n "${PGBENCH_FLAGS[@]}" -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$2" "$DB"
}

bench_parse() { # outfile -> tps, avg latency ms, p95 (NA), transactions, failed transactions
    local out=$1 tps lat tx failed
    # pgbench 15: "tps = N (without initial connection time)"; older:
    # "tps = N (excluding connections establishing)" next to an "including" line.
    tps=$(awk '/^tps = / && /(without initial|excluding)/ {print $3; exit}' "$out")
    [[ -n $tps ]] || tps=$(awk '/^tps = / {print $3; exit}' "$out")
    lat=$(awk '/^latency average = / {print $4; exit}' "$out")
    tx=$(awk -F': *' '/^number of transactions actually processed/ {print $2; exit}' "$out")
    tx=${tx%%/*}
    failed=$(awk -F': *' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$out")
    [[ -n $tps && -n $lat && -n $tx ]] || return 1
    printf '%s\t%s\tNA\t%s\t%s\n' "$tps" "$lat" "$tx" "${failed:-NA}"
}

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s direct"
    bench_run "$PG_PORT" "$WARMUP" "$TMP/warmup.out" || { cat "$TMP/warmup.out" >&2; die "warm-up pgbench failed"; }
fi

run_rounds "$ROUNDS" "$DURATION" pgbench

# ---------------------------------------------------------------- report ----
pg_version=$("$PG_BIN/postgres" --version)
bouncer_version=$("$PGBOUNCER" --version 2>&1 | sed -n 1p)
haproxy_version=$("$HAPROXY" -v 2>&1 | sed -n 1p)
pgbench_version=$(pgbench --version)

env_prefix="DURATION=$DURATION ROUNDS=$ROUNDS CLIENTS=$CLIENTS THREADS=$THREADS SCALE=$SCALE WARMUP=$WARMUP MODE=$MODE"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"

cat <<EOF
### PostgreSQL: direct vs switchyard vs PgBouncer vs HAProxy

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- Command: \`$env_prefix $INVOCATION\`
- pgbench per run: \`pgbench -h 127.0.0.1 -p PORT -U $APP_USER $(printf '%s ' "${PGBENCH_ARGS[@]}")$DB\` (scale $SCALE, ${ROUNDS} round(s), order rotated each round, ${WARMUP}s direct warm-up)
- Machine: $(machine_line)
- Versions: ${pg_version}; ${pgbench_version}; ${bouncer_version} (session pooling, default_pool_size 20, SCRAM); ${haproxy_version} (mode tcp, defaults, ${HAPROXY_THREADS:-?} threads); $(switchyard_version), repo $(repo_revision)
$(baseline_note)
- Medians over the rounds; errors = pgbench's failed transactions, summed over the rounds

EOF
report_table 0 direct switchyard baseline pgbouncer haproxy
