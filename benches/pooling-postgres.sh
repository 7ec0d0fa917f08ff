#!/usr/bin/env bash
# pooling-postgres.sh - transaction pooling on PostgreSQL (issue 13): pgbench
# select-only with named prepared statements and TPC-B with the extended
# protocol, each with few and with many clients, against PostgreSQL directly,
# through switchyard (pool settings from SWITCHYARD_POOL_CONFIG), through
# PgBouncer in transaction mode and through HAProxy (mode tcp), interleaved,
# in one run; prints a markdown report suitable for benches/RESULTS.md.
#
# Per target and cell: tps, average and p99 latency, proxy CPU (and its user-mode part) and
# the machine's idle CPU time per 1k transactions, and the peak number of server
# connections the target held.
#
# Usage:
#   benches/pooling-postgres.sh > report.md
#
# Environment (defaults in brackets):
#   WORKLOADS ["select tpcb"]  cells to run, in order: select = pgbench -S -M
#                      prepared; tpcb = pgbench's TPC-B-like script, -M extended
#   CLIENTS_LIST ["8 500"]     pgbench -c values; every workload runs with each
#   DURATION [15]      seconds per pgbench run
#   ROUNDS [2]         rounds per cell; each round runs every target once,
#                      order rotated
#   THREADS [2]        pgbench -j
#   SCALE [10]         pgbench -i -s
#   WARMUP [3]         seconds of direct select-only pgbench before the first cell
#   LOG_SAMPLING [0.1] share of transactions pgbench logs (--sampling-rate); the
#                      p99 latency is computed from that log
#   SWITCHYARD_POOL_CONFIG ['pool_mode = "transaction"\npool_size = 10']
#                      lines added to switchyard's [server] table (\n separates
#                      lines). A build without transaction mode refuses the key
#                      pool_mode; for its session-mode baseline pass
#                      SWITCHYARD_POOL_CONFIG='pool_size = 600' (one server
#                      connection per client, so the pool must hold them all)
#   PGBOUNCER_POOL_SIZE [10]   PgBouncer default_pool_size (pool_mode = transaction)
#   PGBOUNCER_MAX_PREPARED [200]  PgBouncer max_prepared_statements, set when
#                      PgBouncer is 1.21 or newer; older versions cannot keep
#                      named prepared statements in transaction mode, so the
#                      select cell (-M prepared) leaves PgBouncer out, saying so.
#                      When PGBOUNCER is not set and /usr/sbin/pgbouncer is older
#                      (Debian 12 has 1.18), scripts/build-pgbouncer.sh builds
#                      Debian 13's PgBouncer (1.24) from its source package
#                      into target/bench-tools/ (once; later runs reuse it)
#   PG_MAX_CONNECTIONS [2 * largest CLIENTS_LIST + 100]  PostgreSQL max_connections:
#                      direct and HAProxy need one per client, and a session-mode
#                      switchyard keeps its connections idle in its pool while the
#                      next target runs
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard];
#                      when not set and the default is missing, the script runs
#                      `cargo build --release` in the repo root first.
#   BASELINE_BIN       another switchyard build (or the same one), run as the
#                      extra target "baseline" in the same rounds [none]
#   BASELINE_POOL_CONFIG [SWITCHYARD_POOL_CONFIG]  the baseline's [server] pool
#                      lines: BASELINE_BIN=<the same binary>
#                      BASELINE_POOL_CONFIG='pool_mode = "session"\npool_size = 600'
#                      compares session and transaction mode in one run
#   STARTUP_TIMEOUT [30] seconds to wait for each server to accept connections
#   PG_BIN [/usr/lib/postgresql/15/bin], PGBOUNCER [/usr/sbin/pgbouncer],
#   HAPROXY [/usr/sbin/haproxy]
#   KEEP_TMP_ON_FAILURE  when set, a failed run leaves its temp dir behind
#
# The peak server connections are counted on the client side of each
# connection to PostgreSQL: the established TCP connections the target's
# process holds (for direct, pgbench's own), sampled every SAMPLE_INTERVAL
# [0.5] seconds. So they are that target's alone, even while the other proxies
# keep connections idle in their pools.
#
# Progress goes to stderr, the report to stdout. Everything runs on loopback,
# on free ports, in a temporary directory that is removed on exit. Raises the
# open-files limit (500 clients need about 1,000 descriptors per proxy).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lib-postgres.sh
source "$SCRIPT_DIR/lib-postgres.sh"

no_arguments "${BASH_SOURCE[0]}" "$@"

WORKLOADS=${WORKLOADS:-select tpcb}
CLIENTS_LIST=${CLIENTS_LIST:-8 500}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
WARMUP=${WARMUP:-3}
LOG_SAMPLING=${LOG_SAMPLING:-0.1}
SWITCHYARD_POOL_CONFIG=${SWITCHYARD_POOL_CONFIG-'pool_mode = "transaction"\npool_size = 10'}
BASELINE_POOL_CONFIG=${BASELINE_POOL_CONFIG-$SWITCHYARD_POOL_CONFIG}
PGBOUNCER_POOL_SIZE=${PGBOUNCER_POOL_SIZE:-10}
PGBOUNCER_MAX_PREPARED=${PGBOUNCER_MAX_PREPARED:-200}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

read -r -a workloads <<<"$WORKLOADS"
read -r -a clients_list <<<"$CLIENTS_LIST"
max_clients=0
for c in "${clients_list[@]}"; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || { echo "error: CLIENTS_LIST must hold positive integers (got '$c')" >&2; exit 2; }
    ((c > max_clients)) && max_clients=$c
done
((${#clients_list[@]} > 0)) || { echo "error: CLIENTS_LIST is empty" >&2; exit 2; }
for w in "${workloads[@]}"; do
    [[ $w == select || $w == tpcb ]] || { echo "error: WORKLOADS may hold select and tpcb (got '$w')" >&2; exit 2; }
done
((${#workloads[@]} > 0)) || { echo "error: WORKLOADS is empty" >&2; exit 2; }
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-$((2 * max_clients + 100))}
require_uints DURATION ROUNDS THREADS SCALE WARMUP STARTUP_TIMEOUT PGBOUNCER_POOL_SIZE PGBOUNCER_MAX_PREPARED PG_MAX_CONNECTIONS
((DURATION > 0 && ROUNDS > 0 && THREADS > 0)) || { echo "error: DURATION, ROUNDS and THREADS must be > 0" >&2; exit 2; }
[[ $LOG_SAMPLING =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || { echo "error: LOG_SAMPLING must be in (0, 1]" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are run as the postgres user via runuser)"
# A PgBouncer that keeps named prepared statements in transaction mode, unless one was named.
if [[ -z $PGBOUNCER_SET ]] && ! version_at_least "$(pgbouncer_version)" 1.21; then
    log "PgBouncer $(pgbouncer_version) has no max_prepared_statements: building a newer one (scripts/build-pgbouncer.sh)"
    if built=$("$REPO_ROOT/scripts/build-pgbouncer.sh"); then
        PGBOUNCER=$built
    else
        log "could not build a newer PgBouncer; the select cell leaves PgBouncer $(pgbouncer_version) out"
    fi
fi
require_tools "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/postgres" pgbench psql pg_isready runuser python3 "$PGBOUNCER" "$HAPROXY"
id postgres >/dev/null 2>&1 || die "OS user postgres is missing"

install_traps
# Each proxy holds a client and a server socket per pgbench client.
raise_nofile $((4 * max_clients + 1024))
NOFILE=$(ulimit -n)
((NOFILE > 2 * max_clients + 64)) || die "open-files limit $NOFILE is too low for $max_clients clients and cannot be raised"
STARTED_AT=$SECONDS

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chown postgres: "$TMP"
chmod 0755 "$TMP"
log "work dir $TMP"

resolve_switchyard

read -r PG_PORT SY_PORT SY_ADMIN_PORT BOUNCER_PORT HAPROXY_PORT BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 7)"
[[ -n $HAPROXY_PORT ]] || die "could not pick free ports"
log "ports: postgres=$PG_PORT switchyard=$SY_PORT (admin $SY_ADMIN_PORT) pgbouncer=$BOUNCER_PORT haproxy=$HAPROXY_PORT"

pg_start "$PG_MAX_CONNECTIONS"
pgbench_init "$SCALE"

write_haproxy_config "$TMP/haproxy.cfg" "$HAPROXY_PORT" "$PG_PORT" $((max_clients + 1000))
write_switchyard_config "$TMP/switchyard.toml" postgres "$SY_PORT" "$SY_ADMIN_PORT" "$PG_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$SWITCHYARD_POOL_CONFIG"
write_switchyard_config "$TMP/baseline.toml" postgres "$BASE_PORT" "$BASE_ADMIN_PORT" "$PG_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$BASELINE_POOL_CONFIG"

PORT=([direct]=$PG_PORT)
TARGETS=(direct)
start_switchyard "$TMP/switchyard.toml" "$SY_PORT" app_login
start_baseline "$TMP/baseline.toml" "$BASE_PORT" app_login

# PgBouncer in transaction mode; max_prepared_statements (1.21+) lets named
# prepared statements follow the client from server connection to connection.
BOUNCER_VERSION=$(pgbouncer_version)
BOUNCER_PREPARED=0
bouncer_extra=""
if version_at_least "${BOUNCER_VERSION:-0}" 1.21; then
    BOUNCER_PREPARED=1
    bouncer_extra="max_prepared_statements = $PGBOUNCER_MAX_PREPARED"
fi
start_pgbouncer "$BOUNCER_PORT" transaction "$PGBOUNCER_POOL_SIZE" $((max_clients + 100)) "$bouncer_extra"

start_haproxy "$TMP/haproxy.cfg" "$HAPROXY_PORT" app_login
SERVER_PORT=$PG_PORT
LATENCY_PCT=99
REPORT_VS=(direct pgbouncer haproxy)
ALL_TARGETS=("${TARGETS[@]}")

# ---------------------------------------------------------------- bench -----
CELL_FLAGS=()   # pgbench flags of the current cell
CELL_CLIENTS=0

workload_flags() { # workload -> pgbench flags, one per line
    case $1 in
        select) printf '%s\n' -S -M prepared ;;
        tpcb) printf '%s\n' -M extended ;;
    esac
}

bench_run() { # port seconds outfile
    run_client "$3" env PGPASSWORD="$APP_PASSWORD" pgbench -h 127.0.0.1 -p "$1" -U "$APP_USER" \
        -n "${CELL_FLAGS[@]}" -c "$CELL_CLIENTS" -j "$THREADS" -T "$2" \
        --log --log-prefix="$3.log" --sampling-rate="$LOG_SAMPLING" "$DB"
}

# pgbench's per-transaction log (--log): "client_id transaction_no time ...",
# time being the latency in microseconds; one file per thread.
p99_from_log() { # outfile -> p99 latency in ms of the logged transactions (empty if none)
    local files=("$1".log.*)
    [[ -e ${files[0]} ]] || return 0
    awk '{print $3}' "${files[@]}" | sort -n |
        awk '{v[NR] = $1} END {if (NR) {i = int(NR * 0.99); if (i < NR * 0.99) i++; printf "%.3f", v[i] / 1000}}'
    rm -f -- "${files[@]}"
}

bench_parse() { # outfile -> tps, avg latency ms, p99 latency ms, transactions, failed transactions
    local out=$1 tps lat tx failed p99
    tps=$(awk '/^tps = / && /(without initial|excluding)/ {print $3; exit}' "$out")
    [[ -n $tps ]] || tps=$(awk '/^tps = / {print $3; exit}' "$out")
    lat=$(awk '/^latency average = / {print $4; exit}' "$out")
    tx=$(awk -F': *' '/^number of transactions actually processed/ {print $2; exit}' "$out")
    tx=${tx%%/*}
    failed=$(awk -F': *' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$out")
    p99=$(p99_from_log "$out")
    [[ -n $tps && -n $lat && -n $tx ]] || return 1
    printf '%s\t%s\t%s\t%s\t%s\n' "$tps" "$lat" "${p99:-NA}" "$tx" "${failed:-NA}"
}

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s direct"
    CELL_FLAGS=(-S -M prepared)
    CELL_CLIENTS=${clients_list[0]}
    bench_run "$PG_PORT" "$WARMUP" "$TMP/warmup.out" || { cat "$TMP/warmup.out" >&2; die "warm-up pgbench failed"; }
    rm -f -- "$TMP"/warmup.out.log.*
fi

# One cell per workload and client count; each keeps its results, targets and
# the reasons for targets left out, for the report.
CELLS=()
declare -A CELL_TARGETS=() CELL_NOT_RUN=()
BOUNCER_NO_PREPARED="PgBouncer $BOUNCER_VERSION has no max_prepared_statements (added in 1.21): before it, named prepared statements (pgbench -M prepared) are not supported in transaction mode"
for w in "${workloads[@]}"; do
    mapfile -t CELL_FLAGS < <(workload_flags "$w")
    for c in "${clients_list[@]}"; do
        cell="$w-c$c"
        CELL_CLIENTS=$c
        TARGETS=()
        NOT_RUN=()
        for t in "${ALL_TARGETS[@]}"; do
            if [[ $t == pgbouncer && $w == select ]] && ((!BOUNCER_PREPARED)); then
                NOT_RUN[pgbouncer]=$BOUNCER_NO_PREPARED
                continue
            fi
            TARGETS+=("$t")
        done
        log "cell $cell: pgbench ${CELL_FLAGS[*]} -c $c (${TARGETS[*]})"
        run_rounds "$ROUNDS" "$DURATION" "pgbench-$cell"
        mv -- "$RESULTS" "$TMP/results-$cell.tsv"
        mv -- "$RESULTS.failed" "$TMP/results-$cell.tsv.failed"
        CELLS+=("$cell")
        CELL_TARGETS[$cell]="${TARGETS[*]}"
        CELL_NOT_RUN[$cell]=${NOT_RUN[pgbouncer]:-}
    done
done

# ---------------------------------------------------------------- report ----
TARGETS=("${ALL_TARGETS[@]}")
pg_version=$("$PG_BIN/postgres" --version)
haproxy_version=$("$HAPROXY" -v 2>&1 | sed -n 1p)
pgbench_version=$(pgbench --version)
bouncer_settings="transaction pooling, default_pool_size $PGBOUNCER_POOL_SIZE"
if ((BOUNCER_PREPARED)); then
    bouncer_settings+=", max_prepared_statements $PGBOUNCER_MAX_PREPARED"
else
    bouncer_settings+=", no max_prepared_statements (needs 1.21+)"
fi
pool_note="\`$(config_lines "$SWITCHYARD_POOL_CONFIG")\`"
[[ -n ${BASELINE_BIN:-} ]] && pool_note+="; baseline: \`$(config_lines "$BASELINE_POOL_CONFIG")\`"

env_prefix="WORKLOADS='$WORKLOADS' CLIENTS_LIST='$CLIENTS_LIST' DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS SCALE=$SCALE WARMUP=$WARMUP LOG_SAMPLING=$LOG_SAMPLING"
env_prefix+=" SWITCHYARD_POOL_CONFIG=$(printf '%q' "$SWITCHYARD_POOL_CONFIG")"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"
[[ -n ${BASELINE_BIN:-} ]] && env_prefix+=" BASELINE_BIN=$(printf '%q' "$BASELINE_BIN") BASELINE_POOL_CONFIG=$(printf '%q' "$BASELINE_POOL_CONFIG")"

cat <<EOF
### PostgreSQL pooling: direct vs switchyard vs PgBouncer (transaction) vs HAProxy

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); whole run $((SECONDS - STARTED_AT)) s
- Command: \`$env_prefix $INVOCATION\`
- pgbench per run: \`pgbench -h 127.0.0.1 -p PORT -U $APP_USER -n FLAGS -c CLIENTS -j $THREADS -T $DURATION --log --sampling-rate=$LOG_SAMPLING $DB\` (scale $SCALE, ${ROUNDS} round(s) per cell, order rotated each round, ${WARMUP}s direct warm-up)
- Machine: $(machine_line); open-files limit $NOFILE
- Versions: ${pg_version} (max_connections $PG_MAX_CONNECTIONS); ${pgbench_version}; PgBouncer ${BOUNCER_VERSION} (${bouncer_settings}, SCRAM); ${haproxy_version} (mode tcp, ${HAPROXY_THREADS:-?} threads); $(switchyard_version), repo $(repo_revision)
- switchyard \`[server]\` pool settings: ${pool_note}
$(baseline_note)
- Medians over the rounds; avg = pgbench's latency average (clients × run time / transactions: it includes the time pgbench's own threads wait for a CPU); p99 = 99th percentile of the per-transaction latencies pgbench logged (query sent to result read; a $LOG_SAMPLING sample of the transactions), median over rounds; peak server conns = most TCP connections to PostgreSQL the target's process held (pgbench's own for direct), sampled every ${SAMPLE_INTERVAL}s, median over rounds; errors = pgbench's failed transactions, summed (a run pgbench aborts is left out and logged); machine idle = the CPU time all the machine's CPUs left idle during the run, per 1k transactions (client, proxy and server share them: in this closed loop, idle time is work none of them could do, each waiting for another)
EOF
for cell in "${CELLS[@]}"; do
    w=${cell%-c*}
    c=${cell##*-c}
    RESULTS=$TMP/results-$cell.tsv
    read -r -a TARGETS <<<"${CELL_TARGETS[$cell]}"
    NOT_RUN=()
    [[ -n ${CELL_NOT_RUN[$cell]} ]] && NOT_RUN[pgbouncer]=${CELL_NOT_RUN[$cell]}
    mapfile -t flags < <(workload_flags "$w")
    echo
    echo "#### pgbench ${flags[*]}$([[ $w == tpcb ]] && printf ' (TPC-B-like)'), $c clients"
    echo
    report_table 1 direct switchyard baseline pgbouncer haproxy
done
