#!/usr/bin/env bash
# compare-mysql.sh - run the same sysbench load against MariaDB directly,
# through switchyard and through HAProxy (mode tcp: the cost of one bare hop),
# interleaved, in one run, and print a markdown report suitable for
# benches/RESULTS.md.
#
# Usage:
#   benches/compare-mysql.sh [MODE [SYSBENCH_FLAG...]] > report.md
#
#   MODE           sysbench --db-ps-mode: auto (default; server-side prepared
#                  statements) or disable (text protocol). Can also be given as
#                  the MODE environment variable.
#   SYSBENCH_FLAG  extra flags passed to every `sysbench WORKLOAD ... run`,
#                  e.g. --range_selects=off; none by default. Given flags
#                  replace SYSBENCH_FLAGS from the environment. Do not pass
#                  --threads, --time, --tables, --table-size, --db-ps-mode or
#                  --mysql-* here.
#
# Environment (defaults in brackets):
#   WORKLOAD [oltp_point_select]  sysbench test to run, e.g. oltp_read_only;
#                      the tables are always made by `oltp_point_select prepare`
#                      (the schema every bundled oltp_* test uses)
#   DURATION [20]      seconds per sysbench run
#   ROUNDS [3]         rounds; each round runs every target once, order rotated
#   THREADS [8]        sysbench --threads (one connection each)
#   TABLES [4]         sysbench --tables
#   TABLE_SIZE [10000] sysbench --table-size
#   WARMUP [5]         seconds of direct sysbench before the rounds (0: none)
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard];
#                      when not set and the default is missing, the script runs
#                      `cargo build --release` in the repo root first.
#   BASELINE_BIN       another switchyard build (say, of the commit before a
#                      change), run as the extra target "baseline" in the same
#                      rounds [none]
#   STARTUP_TIMEOUT [60] seconds to wait for each server to accept a login
#   MARIADBD [/usr/sbin/mariadbd], MARIADB_INSTALL_DB [mariadb-install-db],
#   HAPROXY [/usr/sbin/haproxy]
#   KEEP_TMP_ON_FAILURE  when set, a failed run leaves its temp dir behind
#
# Progress goes to stderr, the report to stdout. Everything runs on loopback,
# on free ports, in a temporary directory that is removed on exit.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lib-mysql.sh
source "$SCRIPT_DIR/lib-mysql.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    usage "${BASH_SOURCE[0]}"
    exit 0
fi

MODE=${MODE:-auto}
if [[ $# -gt 0 && $1 != -* ]]; then
    MODE=$1
    shift
fi
case $MODE in
    auto | disable) ;;
    *) echo "error: MODE must be auto or disable (got '$MODE')" >&2; exit 2 ;;
esac
if [[ $# -gt 0 ]]; then
    SYSBENCH_FLAGS=("$@")
else
    read -r -a SYSBENCH_FLAGS <<<"${SYSBENCH_FLAGS:-}"
fi

WORKLOAD=${WORKLOAD:-oltp_point_select}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-8}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
WARMUP=${WARMUP:-5}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}

require_uints DURATION ROUNDS THREADS TABLES TABLE_SIZE WARMUP STARTUP_TIMEOUT
((DURATION > 0 && ROUNDS > 0 && THREADS > 0 && TABLES > 0)) ||
    { echo "error: DURATION, ROUNDS, THREADS and TABLES must be > 0" >&2; exit 2; }
[[ $WORKLOAD =~ ^[A-Za-z0-9_./-]+$ ]] || { echo "error: bad WORKLOAD '$WORKLOAD'" >&2; exit 2; }

require_tools "$MARIADBD" "$MARIADB_INSTALL_DB" mariadb sysbench setpriv runuser timeout python3 "$HAPROXY"
[[ $(id -u) -eq 0 ]] || die "run as root (MariaDB is run as the mysql user)"
id mysql >/dev/null 2>&1 || die "OS user mysql is missing"

install_traps

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chmod 0755 "$TMP"
log "work dir $TMP"

# switchyard: build it if the default binary is missing, else use what is given.
resolve_switchyard

read -r DB_PORT SY_PORT SY_ADMIN_PORT HAPROXY_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 6)"
[[ -n $HAPROXY_PORT ]] || die "could not pick free ports"
log "ports: mariadb=$DB_PORT switchyard=$SY_PORT (admin $SY_ADMIN_PORT) haproxy=$HAPROXY_PORT"

maria_start 300

sysbench_prepare

# HAProxy, a bare TCP hop; switchyard with the server as its only backend.
write_haproxy_config "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$DB_PORT"
write_switchyard_config "$TMP/switchyard.toml" mysql "$SY_PORT" "$SY_ADMIN_PORT" "$DB_PORT" "$APP_USER" "$APP_PASSWORD"
write_switchyard_config "$TMP/baseline.toml" mysql "$BASE_PORT" "$BASE_ADMIN_PORT" "$DB_PORT" "$APP_USER" "$APP_PASSWORD"

PORT=([direct]=$DB_PORT)
TARGETS=(direct)
start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
start_baseline "$TMP/baseline.toml" "$BASE_PORT" app_login
start_haproxy "$TMP/haproxy.cfg" "$HAPROXY_PORT" app_login

# ---------------------------------------------------------------- bench -----
bench_run() { # port seconds outfile
    local conn
    mapfile -t conn < <(sysbench_conn "$1")
    run_client "$3" sysbench "$WORKLOAD" "${conn[@]}" --threads="$THREADS" --time="$2" \
        --db-ps-mode="$MODE" "${SYSBENCH_FLAGS[@]}" run
}

# sysbench 1.0 prints, among others:
#     transactions:                        123456 (24686.43 per sec.)
#     ignored errors:                      0      (0.00 per sec.)
#     total number of events:              123456
# Latency (ms):
#          avg:                                    0.32
#          95th percentile:                        0.50
#          sum:                                39871.55
bench_parse() { sysbench_parse "$1" 95; } # outfile -> tps, avg ms, p95 ms, transactions, ignored errors

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s direct"
    bench_run "$DB_PORT" "$WARMUP" "$TMP/warmup.out" || { cat "$TMP/warmup.out" >&2; die "warm-up sysbench failed"; }
fi

run_rounds "$ROUNDS" "$DURATION" sysbench

# ---------------------------------------------------------------- report ----
mariadb_version=$(mariadb_version)
sysbench_version=$(sysbench --version | sed -n 1p)
client_lib=$(ldd "$(command -v sysbench)" 2>/dev/null | awk '/libmariadb|libmysqlclient/ {print $1; exit}')
haproxy_version=$("$HAPROXY" -v 2>&1 | sed -n 1p)

env_prefix="DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE WARMUP=$WARMUP WORKLOAD=$WORKLOAD MODE=$MODE"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"
mapfile -t shown_conn < <(sysbench_conn PORT)
run_line=$(printf '%s ' sysbench "$WORKLOAD" "${shown_conn[@]}" --threads="$THREADS" --time="$DURATION" \
    --db-ps-mode="$MODE" "${SYSBENCH_FLAGS[@]}" run)

cat <<EOF
### MySQL (MariaDB): direct vs switchyard vs HAProxy

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- Command: \`$env_prefix $INVOCATION\`
- sysbench per run: \`${run_line% }\` (${ROUNDS} round(s), order rotated each round, ${WARMUP}s direct warm-up)
- Machine: $(machine_line)
- Versions: MariaDB ${mariadb_version} (mariadbd ${STORAGE[*]} --max-connections=300); ${sysbench_version}${client_lib:+ with $client_lib}; ${haproxy_version} (mode tcp, defaults, ${HAPROXY_THREADS:-?} threads); $(switchyard_version), repo $(repo_revision)
$(baseline_note)
- Medians over the rounds; errors = sysbench's ignored errors, summed over the rounds; machine idle = the CPU time all the machine's CPUs left idle during the run, per 1k transactions (client, proxy and server share them: in this closed loop, idle time is work none of them could do, each waiting for another)

EOF
report_table 1 direct switchyard baseline haproxy
