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

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lib-postgres.sh
source "$SCRIPT_DIR/lib-postgres.sh"

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

require_uints DURATION ROUNDS CLIENTS THREADS SCALE WARMUP STARTUP_TIMEOUT
((DURATION > 0 && ROUNDS > 0)) || { echo "error: DURATION and ROUNDS must be > 0" >&2; exit 2; }

require_tools "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/postgres" pgbench psql pg_isready runuser python3 "$PGBOUNCER" "$HAPROXY"
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are run as the postgres user via runuser)"
id postgres >/dev/null 2>&1 || die "OS user postgres is missing"

install_traps

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chown postgres: "$TMP"
chmod 0755 "$TMP"
log "work dir $TMP"

# switchyard: build it if the default binary is missing, else use what is given.
resolve_switchyard

read -r PG_PORT SY_PORT SY_ADMIN_PORT BOUNCER_PORT HAPROXY_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 7)"
[[ -n $HAPROXY_PORT ]] || die "could not pick free ports"
log "ports: postgres=$PG_PORT switchyard=$SY_PORT (admin $SY_ADMIN_PORT) pgbouncer=$BOUNCER_PORT haproxy=$HAPROXY_PORT"

pg_start 100
pgbench_init "$SCALE"

# HAProxy, a bare TCP hop; switchyard with the primary as its only backend.
write_haproxy_config "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$PG_PORT"
write_switchyard_config "$TMP/switchyard.toml" postgres "$SY_PORT" "$SY_ADMIN_PORT" "$PG_PORT" "$APP_USER" "$APP_PASSWORD"
write_switchyard_config "$TMP/baseline.toml" postgres "$BASE_PORT" "$BASE_ADMIN_PORT" "$PG_PORT" "$APP_USER" "$APP_PASSWORD"
chown postgres: "$TMP"/haproxy.cfg "$TMP"/switchyard.toml

PORT=([direct]=$PG_PORT)
TARGETS=(direct)

start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
start_baseline "$TMP/baseline.toml" "$BASE_PORT" app_login

start_pgbouncer "$BOUNCER_PORT" session 20 200

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
- Medians over the rounds; errors = pgbench's failed transactions, summed over the rounds; machine idle = the CPU time all the machine's CPUs left idle during the run, per 1k transactions (client, proxy and server share them: in this closed loop, idle time is work none of them could do, each waiting for another)

EOF
report_table 0 direct switchyard baseline pgbouncer haproxy
