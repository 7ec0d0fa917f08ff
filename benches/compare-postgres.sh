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

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
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
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
DEFAULT_SWITCHYARD_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/switchyard
SWITCHYARD_BIN_SET=${SWITCHYARD_BIN+set}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$DEFAULT_SWITCHYARD_BIN}

for v in DURATION ROUNDS CLIENTS THREADS SCALE WARMUP STARTUP_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: $v must be a non-negative integer" >&2; exit 2; }
done
((DURATION > 0 && ROUNDS > 0)) || { echo "error: DURATION and ROUNDS must be > 0" >&2; exit 2; }

APP_USER=app
APP_PASSWORD=app-secret
DB=bench
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/postgres" pgbench psql pg_isready runuser python3 "$PGBOUNCER" "$HAPROXY"; do
    command -v "$tool" >/dev/null || die "required tool not found: $tool"
done
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are run as the postgres user via runuser)"
id postgres >/dev/null 2>&1 || die "OS user postgres is missing"

# ---------------------------------------------------------------- cleanup ---
TMP=""
PGDATA_DIR=""
declare -A PIDS=()     # target name -> pid of the proxy process
BENCH_PID=""
PG_RUNUSER_PID=""
CLEANED=0

is_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(<"/proc/$1/stat") || return 1
    state=${state##*) }
    [[ ${state:0:1} != Z ]]
}

stop_pid() { # pid name
    local pid=$1 name=$2 i
    [[ -n $pid ]] || return 0
    if is_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do is_alive "$pid" || break; sleep 0.1; done
        if is_alive "$pid"; then
            log "$name (pid $pid) did not stop on TERM, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid name
    ((CLEANED)) && return 0
    CLEANED=1
    trap - INT TERM
    set +e
    [[ -n $BENCH_PID ]] && stop_pid "$BENCH_PID" pgbench
    for name in "${!PIDS[@]}"; do
        stop_pid "${PIDS[$name]}" "$name"
    done
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
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc != 0)) && [[ -n ${KEEP_TMP_ON_FAILURE:-} ]]; then
            log "keeping $TMP for inspection"
        else
            rm -rf -- "$TMP"
        fi
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers ---
free_ports() { # n -> n distinct free loopback ports, space separated
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

pg_super() { # psql as the superuser over the unix socket
    psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres "$@"
}

# wait_ready NAME PORT PID: poll until an authenticated query as app works
# through 127.0.0.1:PORT, the process PID dies, or STARTUP_TIMEOUT passes.
wait_ready() {
    local name=$1 port=$2 pid=$3 deadline=$((SECONDS + STARTUP_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [[ -n $pid ]] && ! is_alive "$pid"; then
            log "$name exited during startup"
            return 1
        fi
        if PGPASSWORD=$APP_PASSWORD PGCONNECT_TIMEOUT=2 psql -X -Atq -h 127.0.0.1 -p "$port" \
            -U "$APP_USER" -d "$DB" -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "$name did not accept connections within ${STARTUP_TIMEOUT}s"
    return 1
}

cpu_ticks() { # pid -> utime+stime in clock ticks (all threads)
    local stat f
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

median() { # numbers on stdin -> median (empty if none)
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) exit
        if (NR % 2) printf "%.6f\n", v[(NR + 1) / 2]
        else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-bench.XXXXXX)
chown postgres: "$TMP"
chmod 0755 "$TMP"
PGDATA_DIR=$TMP/pgdata
log "work dir $TMP"

# switchyard: build it if the default binary is missing, else use what is given.
SWITCHYARD_STATUS=""
if [[ ! -x $SWITCHYARD_BIN && -z $SWITCHYARD_BIN_SET ]]; then
    if command -v cargo >/dev/null && [[ -f $REPO_ROOT/Cargo.toml ]]; then
        log "building switchyard (cargo build --release in $REPO_ROOT), log: $TMP/cargo-build.log"
        if ! (cd "$REPO_ROOT" && cargo build --release) >"$TMP/cargo-build.log" 2>&1; then
            tail -n 20 "$TMP/cargo-build.log" >&2
            SWITCHYARD_STATUS="cargo build --release failed"
        fi
    else
        SWITCHYARD_STATUS="no cargo or no Cargo.toml in $REPO_ROOT"
    fi
fi
if [[ -z $SWITCHYARD_STATUS && ! -x $SWITCHYARD_BIN ]]; then
    SWITCHYARD_STATUS="binary $SWITCHYARD_BIN not found"
fi

read -r PG_PORT SY_PORT SY_ADMIN_PORT BOUNCER_PORT HAPROXY_PORT <<<"$(free_ports 5)"
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
deadline=$((SECONDS + STARTUP_TIMEOUT))
until pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; do
    is_alive "$PG_RUNUSER_PID" || { tail -n 20 "$TMP/postgres.log" >&2; die "postgres exited during startup"; }
    ((SECONDS < deadline)) || { tail -n 20 "$TMP/postgres.log" >&2; die "postgres not ready on port $PG_PORT"; }
    sleep 0.2
done
pg_super -d postgres -c "CREATE ROLE $APP_USER LOGIN PASSWORD '$APP_PASSWORD'"
pg_super -d postgres -c "CREATE DATABASE $DB OWNER $APP_USER"
wait_ready postgres "$PG_PORT" "" || die "cannot log in as $APP_USER directly"

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

# HAProxy, a bare TCP hop.
cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend pg
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend pg

backend pg
    server primary 127.0.0.1:$PG_PORT
EOF

cat >"$TMP/switchyard.toml" <<EOF
[server]
protocol = "postgres"
listen = "127.0.0.1:$SY_PORT"

[admin]
listen = "127.0.0.1:$SY_ADMIN_PORT"
token = "bench"

[[users]]
name = "$APP_USER"
password = "$APP_PASSWORD"

[clusters.old]
writer = "127.0.0.1:$PG_PORT"
readers = []

[routing]
active = "old"
EOF
chown postgres: "$TMP"/userlist.txt "$TMP"/pgbouncer.ini "$TMP"/haproxy.cfg "$TMP"/switchyard.toml
chmod 0600 "$TMP/userlist.txt"

declare -A PORT=([direct]=$PG_PORT [switchyard]=$SY_PORT [pgbouncer]=$BOUNCER_PORT [haproxy]=$HAPROXY_PORT)
TARGETS=(direct)

if [[ -z $SWITCHYARD_STATUS ]]; then
    log "starting switchyard ($SWITCHYARD_BIN)"
    "$SWITCHYARD_BIN" serve -c "$TMP/switchyard.toml" </dev/null >"$TMP/switchyard.log" 2>&1 &
    PIDS[switchyard]=$!
    if wait_ready switchyard "$SY_PORT" "${PIDS[switchyard]}"; then
        TARGETS+=(switchyard)
    else
        tail -n 20 "$TMP/switchyard.log" >&2
        stop_pid "${PIDS[switchyard]}" switchyard
        unset 'PIDS[switchyard]'
        SWITCHYARD_STATUS="did not start or accept connections (see its log above)"
    fi
fi
if [[ -n $SWITCHYARD_STATUS ]]; then
    log "switchyard: not available ($SWITCHYARD_STATUS)"
fi

log "starting pgbouncer"
"$PGBOUNCER" -u postgres "$TMP/pgbouncer.ini" </dev/null >>"$TMP/pgbouncer.out" 2>&1 &
PIDS[pgbouncer]=$!
wait_ready pgbouncer "$BOUNCER_PORT" "${PIDS[pgbouncer]}" ||
    { tail -n 20 "$TMP/pgbouncer.log" "$TMP/pgbouncer.out" >&2 || true; die "pgbouncer did not start"; }
TARGETS+=(pgbouncer)

log "starting haproxy"
"$HAPROXY" -db -f "$TMP/haproxy.cfg" </dev/null >"$TMP/haproxy.log" 2>&1 &
PIDS[haproxy]=$!
wait_ready haproxy "$HAPROXY_PORT" "${PIDS[haproxy]}" ||
    { tail -n 20 "$TMP/haproxy.log" >&2; die "haproxy did not start"; }
TARGETS+=(haproxy)
HAPROXY_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/${PIDS[haproxy]}/status")

# ---------------------------------------------------------------- bench -----
PGBENCH_ARGS=(-n "${PGBENCH_FLAGS[@]}" -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$DURATION")

run_pgbench() { # port seconds outfile
    local rc=0
    PGPASSWORD=$APP_PASSWORD pgbench -h 127.0.0.1 -p "$1" -U "$APP_USER" \
        -n "${PGBENCH_FLAGS[@]}" -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$2" "$DB" \
        </dev/null >"$3" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    return "$rc"
}

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s direct"
    run_pgbench "$PG_PORT" "$WARMUP" "$TMP/warmup.out" || { cat "$TMP/warmup.out" >&2; die "warm-up pgbench failed"; }
fi

RESULTS=$TMP/results.tsv # round target tps latency_ms transactions cpu_seconds
: >"$RESULTS"
n=${#TARGETS[@]}
for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        t=${TARGETS[$(((i + r) % n))]}
        pid=${PIDS[$t]:-}
        out="$TMP/pgbench-r$((r + 1))-$t.out"
        log "round $((r + 1))/$ROUNDS: $t (${DURATION}s)"
        before=""
        [[ -n $pid ]] && before=$(cpu_ticks "$pid")
        if ! run_pgbench "${PORT[$t]}" "$DURATION" "$out"; then
            log "pgbench against $t failed:"
            tail -n 20 "$out" >&2
            continue
        fi
        cpu=NA
        if [[ -n $pid ]]; then
            after=$(cpu_ticks "$pid") || after=""
            [[ -n $after ]] && cpu=$(awk -v a="$after" -v b="$before" -v hz="$CLK_TCK" 'BEGIN {printf "%.3f", (a - b) / hz}')
        fi
        # pgbench 15: "tps = N (without initial connection time)"; older:
        # "tps = N (excluding connections establishing)" next to an "including" line.
        tps=$(awk '/^tps = / && /(without initial|excluding)/ {print $3; exit}' "$out")
        [[ -n $tps ]] || tps=$(awk '/^tps = / {print $3; exit}' "$out")
        lat=$(awk '/^latency average = / {print $4; exit}' "$out")
        tx=$(awk -F': *' '/^number of transactions actually processed/ {print $2; exit}' "$out")
        tx=${tx%%/*}
        failed=$(awk -F': *' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$out")
        if [[ -z $tps || -z $lat || -z $tx ]]; then
            log "could not parse pgbench output for $t:"
            cat "$out" >&2
            continue
        fi
        [[ ${failed:-0} == 0 ]] || log "warning: $failed failed transactions against $t"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$((r + 1))" "$t" "$tps" "$lat" "$tx" "$cpu" >>"$RESULTS"
        log "  tps=$tps latency=${lat}ms tx=$tx proxy_cpu_s=$cpu"
    done
done

# ---------------------------------------------------------------- report ----
col_median() { # target column -> median of that column over the target's runs
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t && $c != "NA" {print $c}' "$RESULTS" | median
}
cpu_per_1k_median() { # target -> median over runs of proxy CPU ms per 1000 tx
    awk -F'\t' -v t="$1" '$2 == t && $6 != "NA" && $5 > 0 {printf "%.6f\n", $6 * 1000 * 1000 / $5}' "$RESULTS" | median
}
fmt() { # printf-format value -> formatted, or "-" when empty
    if [[ -n $2 ]]; then awk -v f="$1" -v v="$2" 'BEGIN {printf f, v}'; else printf -- '-'; fi
}
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b}'; }

declare -A MED_TPS MED_LAT
for t in "${TARGETS[@]}"; do
    MED_TPS[$t]=$(col_median "$t" 3)
    MED_LAT[$t]=$(col_median "$t" 4)
done

pg_version=$("$PG_BIN/postgres" --version)
bouncer_version=$("$PGBOUNCER" --version 2>&1 | sed -n 1p)
haproxy_version=$("$HAPROXY" -v 2>&1 | sed -n 1p)
pgbench_version=$(pgbench --version)
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ $git_rev != "no commit" ]] && ! git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null; then git_rev+=" (dirty)"; fi
sy_version="-"
if [[ " ${TARGETS[*]} " == *" switchyard "* ]]; then
    sy_version=$("$SWITCHYARD_BIN" --version 2>/dev/null | sed -n 1p || true)
    sy_version=${sy_version:-unknown}
fi

env_prefix="DURATION=$DURATION ROUNDS=$ROUNDS CLIENTS=$CLIENTS THREADS=$THREADS SCALE=$SCALE WARMUP=$WARMUP MODE=$MODE"
[[ -n $SWITCHYARD_BIN_SET ]] && env_prefix+=" SWITCHYARD_BIN=$(printf '%q' "$SWITCHYARD_BIN")"

cat <<EOF
### PostgreSQL: direct vs switchyard vs PgBouncer vs HAProxy

- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')
- Command: \`$env_prefix $INVOCATION\`
- pgbench per run: \`pgbench -h 127.0.0.1 -p PORT -U $APP_USER $(printf '%s ' "${PGBENCH_ARGS[@]}")$DB\` (scale $SCALE, ${ROUNDS} round(s), order rotated each round, ${WARMUP}s direct warm-up)
- Machine: $(nproc) CPUs, ${model:-unknown}, $(uname -sr); client, proxies and server share these CPUs
- Versions: ${pg_version}; ${pgbench_version}; ${bouncer_version} (session pooling, default_pool_size 20, SCRAM); ${haproxy_version} (mode tcp, defaults, ${HAPROXY_THREADS:-?} threads); switchyard ${sy_version}, repo ${git_rev}

| target | median tps | vs direct | vs haproxy | avg latency ms | added latency ms | proxy CPU ms / 1k tx |
|---|---:|---:|---:|---:|---:|---:|
EOF
for t in direct switchyard pgbouncer haproxy; do
    if [[ " ${TARGETS[*]} " != *" $t "* ]]; then
        [[ $t == switchyard ]] && echo "| switchyard | not available | | | | | |"
        continue
    fi
    tps=${MED_TPS[$t]}
    lat=${MED_LAT[$t]}
    if [[ -z $tps ]]; then
        echo "| $t | failed | | | | | |"
        continue
    fi
    added=""
    [[ -n $lat && -n ${MED_LAT[direct]} ]] && added=$(awk -v a="$lat" -v b="${MED_LAT[direct]}" 'BEGIN {printf "%+.3f", a - b}')
    cpu=""
    [[ $t != direct ]] && cpu=$(cpu_per_1k_median "$t")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" \
        "$(fmt '%.0f' "$tps")" \
        "$(fmt '%s' "$(ratio "$tps" "${MED_TPS[direct]}")")" \
        "$(fmt '%s' "$(ratio "$tps" "${MED_TPS[haproxy]:-}")")" \
        "$(fmt '%.3f' "$lat")" \
        "$(if [[ $t == direct ]]; then printf '0'; else fmt '%s' "$added"; fi)" \
        "$(if [[ $t == direct ]]; then printf 'n/a'; else fmt '%.1f' "$cpu"; fi)"
done
echo
if [[ -n $SWITCHYARD_STATUS ]]; then
    echo "switchyard: not available ($SWITCHYARD_STATUS)"
    echo
fi
echo "Per run (round, target, tps, avg latency ms, transactions, proxy CPU s):"
echo
echo '```'
column -t -s$'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
echo '```'
