#!/usr/bin/env bash
# pooling-mysql.sh - transaction pooling on MySQL (issue 13): sysbench
# oltp_point_select and oltp_read_write, each with few and with many threads,
# against MariaDB directly, through switchyard (pool settings from
# SWITCHYARD_POOL_CONFIG) and through HAProxy (mode tcp), interleaved, in one
# run; prints a markdown report suitable for benches/RESULTS.md.
#
# Per target and cell: tps, average and p99 latency, proxy CPU (and its user-mode part) and
# the machine's idle CPU time per 1k transactions, and the peak number of server
# connections the target held.
#
# Usage:
#   benches/pooling-mysql.sh > report.md
#
# Environment (defaults in brackets):
#   WORKLOADS ["oltp_point_select oltp_read_write"]  sysbench tests, in order
#   THREADS_LIST ["8 500"]  sysbench --threads values (one connection each);
#                      every workload runs with each
#   DURATION [15]      seconds per sysbench run
#   ROUNDS [2]         rounds per cell; each round runs every target once,
#                      order rotated
#   MODE [auto]        sysbench --db-ps-mode: auto (server-side prepared
#                      statements, COM_STMT_*) or disable (text protocol)
#   TABLES [4]         sysbench --tables
#   TABLE_SIZE [10000] sysbench --table-size
#   WARMUP [3]         seconds of direct oltp_point_select before the first cell
#   SWITCHYARD_POOL_CONFIG ['pool_mode = "transaction"\npool_size = 10']
#                      lines added to switchyard's [server] table (\n separates
#                      lines). A build without transaction mode refuses the key
#                      pool_mode; for its session-mode baseline pass
#                      SWITCHYARD_POOL_CONFIG='pool_size = 600'
#   MAX_CONNECTIONS [2 * largest THREADS_LIST + 100]  mariadbd --max-connections:
#                      direct and HAProxy need one per thread, and a session-mode
#                      switchyard keeps its connections idle in its pool while the
#                      next target runs
#   MAX_PREPARED_STMT_COUNT [max(16382, 100 * largest THREADS_LIST)]  mariadbd
#                      --max-prepared-stmt-count: oltp_read_write prepares 38
#                      statements per thread (4 tables), so 500 threads directly
#                      (or through HAProxy) pass the server's default of 16382
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard];
#                      when not set and the default is missing, the script runs
#                      `cargo build --release` in the repo root first.
#   BASELINE_BIN       another switchyard build (or the same one), run as the
#                      extra target "baseline" in the same rounds [none]
#   BASELINE_POOL_CONFIG [SWITCHYARD_POOL_CONFIG]  the baseline's [server] pool
#                      lines: BASELINE_BIN=<the same binary>
#                      BASELINE_POOL_CONFIG='pool_mode = "session"\npool_size = 600'
#                      compares session and transaction mode in one run
#   STARTUP_TIMEOUT [60] seconds to wait for each server to accept a login
#   MARIADBD [/usr/sbin/mariadbd], MARIADB_INSTALL_DB [mariadb-install-db],
#   HAPROXY [/usr/sbin/haproxy]
#   KEEP_TMP_ON_FAILURE  when set, a failed run leaves its temp dir behind
#
# The peak server connections are counted on the client side of each
# connection to MariaDB: the established TCP connections the target's process
# holds (for direct, sysbench's own), sampled every SAMPLE_INTERVAL [0.5]
# seconds. So they are that target's alone, even while switchyard keeps
# connections idle in its pool.
#
# Progress goes to stderr, the report to stdout. Everything runs on loopback,
# on free ports, in a temporary directory that is removed on exit. Raises the
# open-files limit (500 threads need about 1,000 descriptors per proxy).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lib-mysql.sh
source "$SCRIPT_DIR/lib-mysql.sh"

no_arguments "${BASH_SOURCE[0]}" "$@"

WORKLOADS=${WORKLOADS:-oltp_point_select oltp_read_write}
THREADS_LIST=${THREADS_LIST:-8 500}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
MODE=${MODE:-auto}
TABLES=${TABLES:-4}
TABLE_SIZE=${TABLE_SIZE:-10000}
WARMUP=${WARMUP:-3}
SWITCHYARD_POOL_CONFIG=${SWITCHYARD_POOL_CONFIG-'pool_mode = "transaction"\npool_size = 10'}
BASELINE_POOL_CONFIG=${BASELINE_POOL_CONFIG-$SWITCHYARD_POOL_CONFIG}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}

read -r -a workloads <<<"$WORKLOADS"
read -r -a threads_list <<<"$THREADS_LIST"
max_threads=0
for n in "${threads_list[@]}"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "error: THREADS_LIST must hold positive integers (got '$n')" >&2; exit 2; }
    ((n > max_threads)) && max_threads=$n
done
((${#threads_list[@]} > 0)) || { echo "error: THREADS_LIST is empty" >&2; exit 2; }
for w in "${workloads[@]}"; do
    [[ $w =~ ^[A-Za-z0-9_./-]+$ ]] || { echo "error: bad workload '$w'" >&2; exit 2; }
done
((${#workloads[@]} > 0)) || { echo "error: WORKLOADS is empty" >&2; exit 2; }
case $MODE in
    auto | disable) ;;
    *) echo "error: MODE must be auto or disable (got '$MODE')" >&2; exit 2 ;;
esac
MAX_CONNECTIONS=${MAX_CONNECTIONS:-$((2 * max_threads + 100))}
MAX_PREPARED_STMT_COUNT=${MAX_PREPARED_STMT_COUNT:-$((100 * max_threads > 16382 ? 100 * max_threads : 16382))}
require_uints DURATION ROUNDS TABLES TABLE_SIZE WARMUP STARTUP_TIMEOUT MAX_CONNECTIONS MAX_PREPARED_STMT_COUNT
((DURATION > 0 && ROUNDS > 0 && TABLES > 0)) ||
    { echo "error: DURATION, ROUNDS and TABLES must be > 0" >&2; exit 2; }

require_tools "$MARIADBD" "$MARIADB_INSTALL_DB" mariadb sysbench setpriv runuser timeout python3 "$HAPROXY"
[[ $(id -u) -eq 0 ]] || die "run as root (MariaDB is run as the mysql user)"
id mysql >/dev/null 2>&1 || die "OS user mysql is missing"

install_traps
# Each proxy holds a client and a server socket per sysbench thread; mariadbd
# a socket and table files per connection.
raise_nofile $((4 * max_threads + 4096))
NOFILE=$(ulimit -n)
((NOFILE > 2 * max_threads + 64)) || die "open-files limit $NOFILE is too low for $max_threads threads and cannot be raised"
STARTED_AT=$SECONDS

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chmod 0755 "$TMP"
log "work dir $TMP"

resolve_switchyard

read -r DB_PORT SY_PORT SY_ADMIN_PORT HAPROXY_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 6)"
[[ -n $HAPROXY_PORT ]] || die "could not pick free ports"
log "ports: mariadb=$DB_PORT switchyard=$SY_PORT (admin $SY_ADMIN_PORT) haproxy=$HAPROXY_PORT"

maria_start "$MAX_CONNECTIONS" --max-prepared-stmt-count="$MAX_PREPARED_STMT_COUNT"

sysbench_prepare

write_haproxy_config "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$DB_PORT" $((max_threads + 1000))
write_switchyard_config "$TMP/switchyard.toml" mysql "$SY_PORT" "$SY_ADMIN_PORT" "$DB_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$SWITCHYARD_POOL_CONFIG"
write_switchyard_config "$TMP/baseline.toml" mysql "$BASE_PORT" "$BASE_ADMIN_PORT" "$DB_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$BASELINE_POOL_CONFIG"

PORT=([direct]=$DB_PORT)
TARGETS=(direct)
start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
start_baseline "$TMP/baseline.toml" "$BASE_PORT" app_login
start_haproxy "$TMP/haproxy.cfg" "$HAPROXY_PORT" app_login
SERVER_PORT=$DB_PORT
LATENCY_PCT=99

# ---------------------------------------------------------------- bench -----
CELL_WORKLOAD=""
CELL_THREADS=0

bench_run() { # port seconds outfile
    local conn
    mapfile -t conn < <(sysbench_conn "$1")
    run_client "$3" sysbench "$CELL_WORKLOAD" "${conn[@]}" --threads="$CELL_THREADS" --time="$2" \
        --db-ps-mode="$MODE" --percentile=99 run
}

# sysbench 1.0 prints, among others:
#     transactions:                        123456 (24686.43 per sec.)
#     ignored errors:                      0      (0.00 per sec.)
#     total number of events:              123456
# Latency (ms):
#          avg:                                    0.32
#          99th percentile:                        0.50
#          sum:                                39871.55
bench_parse() { sysbench_parse "$1" 99; } # outfile -> tps, avg ms, p99 ms, transactions, ignored errors

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s direct"
    CELL_WORKLOAD=oltp_point_select
    CELL_THREADS=${threads_list[0]}
    bench_run "$DB_PORT" "$WARMUP" "$TMP/warmup.out" || { cat "$TMP/warmup.out" >&2; die "warm-up sysbench failed"; }
fi

CELLS=()
for w in "${workloads[@]}"; do
    for n in "${threads_list[@]}"; do
        cell="$w-t$n"
        CELL_WORKLOAD=$w
        CELL_THREADS=$n
        log "cell $cell: sysbench $w --threads=$n (${TARGETS[*]})"
        run_rounds "$ROUNDS" "$DURATION" "sysbench-$cell"
        mv -- "$RESULTS" "$TMP/results-$cell.tsv"
        mv -- "$RESULTS.failed" "$TMP/results-$cell.tsv.failed"
        CELLS+=("$cell")
    done
done

# ---------------------------------------------------------------- report ----
sysbench_version=$(sysbench --version | sed -n 1p)
client_lib=$(ldd "$(command -v sysbench)" 2>/dev/null | awk '/libmariadb|libmysqlclient/ {print $1; exit}')
haproxy_version=$("$HAPROXY" -v 2>&1 | sed -n 1p)
pool_note="\`$(config_lines "$SWITCHYARD_POOL_CONFIG")\`"
[[ -n ${BASELINE_BIN:-} ]] && pool_note+="; baseline: \`$(config_lines "$BASELINE_POOL_CONFIG")\`"

env_prefix="WORKLOADS='$WORKLOADS' THREADS_LIST='$THREADS_LIST' DURATION=$DURATION ROUNDS=$ROUNDS MODE=$MODE TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE WARMUP=$WARMUP"
env_prefix+=" SWITCHYARD_POOL_CONFIG=$(printf '%q' "$SWITCHYARD_POOL_CONFIG")"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"
[[ -n ${BASELINE_BIN:-} ]] && env_prefix+=" BASELINE_BIN=$(printf '%q' "$BASELINE_BIN") BASELINE_POOL_CONFIG=$(printf '%q' "$BASELINE_POOL_CONFIG")"
mapfile -t shown_conn < <(sysbench_conn PORT)
run_line=$(printf '%s ' sysbench WORKLOAD "${shown_conn[@]}" --threads=THREADS --time="$DURATION" \
    --db-ps-mode="$MODE" --percentile=99 run)

cat <<EOF
### MySQL (MariaDB) pooling: direct vs switchyard vs HAProxy

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); whole run $((SECONDS - STARTED_AT)) s
- Command: \`$env_prefix $INVOCATION\`
- sysbench per run: \`${run_line% }\` (${ROUNDS} round(s) per cell, order rotated each round, ${WARMUP}s direct warm-up)
- Machine: $(machine_line); open-files limit $NOFILE
- Versions: MariaDB $(mariadb_version) (mariadbd ${STORAGE[*]} --max-connections=$MAX_CONNECTIONS --max-prepared-stmt-count=$MAX_PREPARED_STMT_COUNT); ${sysbench_version}${client_lib:+ with $client_lib}; ${haproxy_version} (mode tcp, ${HAPROXY_THREADS:-?} threads); $(switchyard_version), repo $(repo_revision)
- switchyard \`[server]\` pool settings: ${pool_note}
$(baseline_note)
- Medians over the rounds; p99 = sysbench's 99th percentile latency (\`--percentile=99\`, from its histogram), median over rounds; peak server conns = most TCP connections to MariaDB the target's process held (sysbench's own for direct), sampled every ${SAMPLE_INTERVAL}s, median over rounds; errors = sysbench's ignored errors (deadlocks it retried), summed (a run sysbench aborts is left out and logged); machine idle = the CPU time all the machine's CPUs left idle during the run, per 1k transactions (client, proxy and server share them: in this closed loop, idle time is work none of them could do, each waiting for another)
EOF
for cell in "${CELLS[@]}"; do
    RESULTS=$TMP/results-$cell.tsv
    echo
    echo "#### sysbench ${cell%-t*}, ${cell##*-t} threads"
    echo
    report_table 1 direct switchyard baseline haproxy
done
