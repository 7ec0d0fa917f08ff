#!/usr/bin/env bash
# instructions.sh - what switchyard's data path costs per transaction, counted rather than
# timed: instructions, L1 instruction-cache misses and L1 data-cache misses per transaction,
# from callgrind's cache simulation (a 32 KiB L1i and L1d, as most x86 cores have), against
# a bare tokio relay (examples/tcp_relay.rs: the floor of a tokio proxy) and, when
# BASELINE_BIN is set, another switchyard build. PostgreSQL with pgbench, or MariaDB with
# sysbench (ENGINE). The counts are the same for the same binary and input whatever else
# the machine runs, so they show cuts of a few percent that timing on a shared machine
# hides (benches/RESULTS.md, "Build profile").
#
# Each target runs in transaction mode with `worker_threads = 1` under
#   valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no
# is warmed up (a short run fills its pool), and is counted over one run of the load
# (`callgrind_control -i on|off` around it). PgBouncer is left out: callgrind counts most of
# its instructions in a loop whose count grows with the slowed run's wall time.
#
# Usage:
#   benches/instructions.sh > report.md
#   ENGINE=mysql benches/instructions.sh > report.md
#
# Environment (defaults in brackets):
#   ENGINE [postgres]  postgres (PostgreSQL 15, pgbench) or mysql (MariaDB, sysbench)
#   WORKLOADS          postgres ["tpcb select"]: tpcb = pgbench's TPC-B-like script,
#                      -M extended (7 statements a transaction); select = pgbench -S -M
#                      prepared. mysql ["oltp_point_select oltp_read_write"]: sysbench
#                      tests, --db-ps-mode=auto (server-side prepared statements)
#   CLIENTS [8]        pgbench -c, sysbench --threads
#   TX_TPCB [250]      transactions per client, tpcb
#   TX_SELECT [3000]   transactions per client, select
#   EVENTS_POINT_SELECT [24000]  sysbench --events (all threads), oltp_point_select
#   EVENTS_READ_WRITE [1000]     sysbench --events (all threads), oltp_read_write
#   SCALE [10]         pgbench -i -s
#   TABLES [1], TABLE_SIZE [10000]  sysbench --tables, --table-size
#   SWITCHYARD_BIN     switchyard binary [<repo>/target/release/switchyard]; built with
#                      `cargo build --release` when missing
#   BASELINE_BIN       another switchyard build, counted as the target "baseline" [none]
#   RELAY_BIN          the relay [<repo>/target/release/examples/tcp_relay]; built with
#                      `cargo build --release --example tcp_relay` when missing
#   STARTUP_TIMEOUT [120] seconds to wait for each target (valgrind starts slowly)
#   PROFILE_DIR        when set, each target's callgrind file is kept there as
#                      TARGET-WORKLOAD.callgrind, for `callgrind_annotate --inclusive=yes`
#                      (where the instructions and misses go, function by function) [none]
#
# Needs root (the database runs as its own OS user), valgrind (scripts/install-deps.sh
# installs it), and PostgreSQL 15, pgbench and psql, or MariaDB and sysbench. Progress goes
# to stderr, the report to stdout; everything runs on loopback, on free ports, in a
# temporary directory removed on exit.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENGINE=${ENGINE:-postgres}
case $ENGINE in
    # shellcheck source=lib-postgres.sh
    postgres) source "$SCRIPT_DIR/lib-postgres.sh" ;;
    # shellcheck source=lib-mysql.sh
    mysql) source "$SCRIPT_DIR/lib-mysql.sh" ;;
    *) echo "error: ENGINE must be postgres or mysql (got '$ENGINE')" >&2; exit 2 ;;
esac

no_arguments "${BASH_SOURCE[0]}" "$@"

if [[ $ENGINE == postgres ]]; then
    WORKLOADS=${WORKLOADS:-tpcb select}
    KNOWN_WORKLOADS=" tpcb select "
else
    WORKLOADS=${WORKLOADS:-oltp_point_select oltp_read_write}
    KNOWN_WORKLOADS=" oltp_point_select oltp_read_write "
fi
CLIENTS=${CLIENTS:-8}
TX_TPCB=${TX_TPCB:-250}
TX_SELECT=${TX_SELECT:-3000}
EVENTS_POINT_SELECT=${EVENTS_POINT_SELECT:-24000}
EVENTS_READ_WRITE=${EVENTS_READ_WRITE:-1000}
SCALE=${SCALE:-10}
TABLES=${TABLES:-1}
TABLE_SIZE=${TABLE_SIZE:-10000}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-120}
if [[ -n ${PROFILE_DIR:-} ]]; then
    mkdir -p "$PROFILE_DIR"
    PROFILE_DIR=$(cd "$PROFILE_DIR" && pwd)
fi
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RELAY_BIN=${RELAY_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/tcp_relay}

read -r -a workloads <<<"$WORKLOADS"
for w in "${workloads[@]}"; do
    [[ $KNOWN_WORKLOADS == *" $w "* ]] || { echo "error: WORKLOADS may hold$KNOWN_WORKLOADS(got '$w')" >&2; exit 2; }
done
((${#workloads[@]} > 0)) || { echo "error: WORKLOADS is empty" >&2; exit 2; }
require_uints CLIENTS TX_TPCB TX_SELECT EVENTS_POINT_SELECT EVENTS_READ_WRITE SCALE TABLES TABLE_SIZE STARTUP_TIMEOUT
((CLIENTS > 0 && TX_TPCB > 0 && TX_SELECT > 0 && EVENTS_POINT_SELECT > 0 && EVENTS_READ_WRITE > 0 && TABLES > 0)) ||
    { echo "error: CLIENTS, TX_TPCB, TX_SELECT, EVENTS_POINT_SELECT, EVENTS_READ_WRITE and TABLES must be > 0" >&2; exit 2; }

if [[ $ENGINE == postgres ]]; then
    require_tools "$PG_BIN/initdb" "$PG_BIN/postgres" pgbench psql pg_isready runuser valgrind callgrind_control
    DB_USER=postgres
else
    require_tools "$MARIADBD" "$MARIADB_INSTALL_DB" mariadb sysbench setpriv runuser timeout valgrind callgrind_control
    DB_USER=mysql
fi
[[ $(id -u) -eq 0 ]] || die "run as root (the database is run as the $DB_USER user)"
id "$DB_USER" >/dev/null 2>&1 || die "OS user $DB_USER is missing"

install_traps
STARTED_AT=$SECONDS

# ------------------------------------------------------------------ setup ---
TMP=$(mktemp -d -t switchyard-instr.XXXXXX)
[[ $ENGINE == postgres ]] && chown postgres: "$TMP"
chmod 0755 "$TMP"
log "work dir $TMP"

resolve_switchyard
[[ -z $SWITCHYARD_STATUS ]] || die "switchyard: $SWITCHYARD_STATUS"
if [[ ! -x $RELAY_BIN ]]; then
    log "building the relay (cargo build --release --example tcp_relay)"
    (cd "$REPO_ROOT" && cargo build --release --example tcp_relay) >"$TMP/relay-build.log" 2>&1 ||
        { tail -n 20 "$TMP/relay-build.log" >&2; die "could not build the relay"; }
fi

read -r DB_PORT TARGET_PORT ADMIN_PORT <<<"$(free_ports 3)"
[[ -n $ADMIN_PORT ]] || die "could not pick free ports"
if [[ $ENGINE == postgres ]]; then
    PG_PORT=$DB_PORT
    pg_start $((CLIENTS + 50))
    pgbench_init "$SCALE"
else
    maria_start $((CLIENTS + 50))
    sysbench_prepare
fi

POOL_CONFIG='pool_mode = "transaction"\npool_size = 10\nworker_threads = 1'
write_switchyard_config "$TMP/switchyard.toml" "$ENGINE" "$TARGET_PORT" "$ADMIN_PORT" "$DB_PORT" \
    "$APP_USER" "$APP_PASSWORD" "$POOL_CONFIG"

declare -A BIN=([switchyard]=$SWITCHYARD_BIN [relay]=$RELAY_BIN)
TARGET_LIST=(relay switchyard)
if [[ -n ${BASELINE_BIN:-} ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN $BASELINE_BIN is not executable"
    BIN[baseline]=$BASELINE_BIN
    TARGET_LIST+=(baseline)
fi

# load WORKLOAD warm|count OUTFILE: one run of the load through TARGET_PORT.
load() {
    local -a flags conn
    if [[ $ENGINE == postgres ]]; then
        case $1 in
            tpcb) flags=(-M extended -t "$TX_TPCB") ;;
            select) flags=(-S -M prepared -t "$TX_SELECT") ;;
        esac
        # The warm-up: the pool's connections opened, statements prepared, code paged in.
        [[ $2 == warm ]] && flags=("${flags[@]:0:${#flags[@]}-1}" 20)
        PGPASSWORD=$APP_PASSWORD pgbench -h 127.0.0.1 -p "$TARGET_PORT" -U "$APP_USER" -n \
            "${flags[@]}" -c "$CLIENTS" -j 2 "$DB" >"$3" 2>&1
    else
        local events=$EVENTS_READ_WRITE
        [[ $1 == oltp_point_select ]] && events=$EVENTS_POINT_SELECT
        [[ $2 == warm ]] && events=$((CLIENTS * 20))
        mapfile -t conn < <(sysbench_conn "$TARGET_PORT")
        sysbench "$1" "${conn[@]}" --threads="$CLIENTS" --events="$events" --time=0 \
            --db-ps-mode=auto run >"$3" 2>&1
    fi
}

transactions() { # outfile of a counted run -> its transactions
    if [[ $ENGINE == postgres ]]; then
        awk -F'[:/ ]+' '/actually processed/ {print $(NF-1)}' "$1"
    else
        awk '/^ *transactions:/ {print $2}' "$1"
    fi
}

# count TARGET WORKLOAD: start TARGET under callgrind, warm it up, count one run; prints
# "transactions Ir I1mr D1mr+D1mw" (empty when the load failed).
count() {
    local target=$1 workload=$2 out="$TMP/$1-$2.callgrind" pid tx
    local -a cmd=("${BIN[$target]}")
    if [[ $target == relay ]]; then
        cmd+=("127.0.0.1:$TARGET_PORT" "127.0.0.1:$DB_PORT")
    else
        cmd+=(serve -c "$TMP/switchyard.toml")
    fi
    log "$target, $workload: starting under callgrind"
    valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no --callgrind-out-file="$out" \
        "${cmd[@]}" </dev/null >"$TMP/$target-$workload.log" 2>&1 &
    pid=$!
    PIDS[$target]=$pid
    wait_for "$target" "$pid" app_login "$TARGET_PORT" ||
        { tail -n 20 "$TMP/$target-$workload.log" >&2; die "$target did not start"; }
    load "$workload" warm "$TMP/$target-$workload.warm" ||
        { cat "$TMP/$target-$workload.warm" >&2; die "$target: the warm-up run failed"; }
    callgrind_control -i on "$pid" >/dev/null
    load "$workload" count "$TMP/$target-$workload.run" ||
        { cat "$TMP/$target-$workload.run" >&2; die "$target: the counted run failed"; }
    callgrind_control -i off "$pid" >/dev/null
    stop_pid "$pid" "$target" 30
    [[ -n ${PROFILE_DIR:-} ]] && cp "$out" "$PROFILE_DIR/"
    unset "PIDS[$target]"
    tx=$(transactions "$TMP/$target-$workload.run")
    # callgrind writes one file per thread with --separate-threads only; one file here.
    awk -v tx="$tx" '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^(summary|totals):/ {
            for (i = 2; i <= NF; i++) v[i - 1] = $i
            ir = v[col["Ir"]]; i1 = v[col["I1mr"]]; d1 = v[col["D1mr"]] + v[col["D1mw"]]
        }
        END { if (tx > 0 && ir > 0) printf "%d %d %d %d\n", tx, ir, i1, d1 }
    ' "$out"
}

declare -A RESULT
for workload in "${workloads[@]}"; do
    for target in "${TARGET_LIST[@]}"; do
        RESULT[$target,$workload]=$(count "$target" "$workload")
        log "$target, $workload: ${RESULT[$target,$workload]:-no count} (transactions Ir I1mr D1)"
    done
done

# ----------------------------------------------------------------- report ---
per_tx() { # count total -> per transaction, one decimal
    awk -v n="$1" -v t="$2" 'BEGIN {if (t > 0) printf "%.1f", n / t}'
}
workload_title() {
    case $1 in
        tpcb) echo "pgbench TPC-B \`-M extended\` (7 statements a transaction)" ;;
        select) echo "pgbench \`-S -M prepared\` (1 statement a transaction)" ;;
        oltp_point_select) echo "sysbench \`oltp_point_select\` (1 statement a transaction)" ;;
        oltp_read_write) echo "sysbench \`oltp_read_write\` (20 statements a transaction, BEGIN and COMMIT among them)" ;;
    esac
}

echo "### Instructions and cache misses per transaction (callgrind, $ENGINE)"
echo
echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); whole run $((SECONDS - STARTED_AT)) s"
if [[ $ENGINE == postgres ]]; then
    echo "- Command: \`$INVOCATION\` (ENGINE=postgres WORKLOADS='$WORKLOADS' CLIENTS=$CLIENTS TX_TPCB=$TX_TPCB TX_SELECT=$TX_SELECT SCALE=$SCALE)"
else
    echo "- Command: \`$INVOCATION\` (ENGINE=mysql WORKLOADS='$WORKLOADS' CLIENTS=$CLIENTS EVENTS_POINT_SELECT=$EVENTS_POINT_SELECT EVENTS_READ_WRITE=$EVENTS_READ_WRITE TABLES=$TABLES TABLE_SIZE=$TABLE_SIZE, --db-ps-mode=auto)"
fi
echo "- $(machine_line)"
echo "- $(valgrind --version); switchyard $(repo_revision), \`[server]\` $(config_lines "$POOL_CONFIG")"
baseline_note
echo "- relay: \`examples/tcp_relay.rs\`, bytes relayed on a current-thread tokio runtime, no protocol work"
echo "- counted: the target's own instructions (not the kernel's) over one run of the load after a warm-up; L1i and L1d as callgrind simulates them"
for workload in "${workloads[@]}"; do
    echo
    echo "#### $(workload_title "$workload"), $CLIENTS clients"
    echo
    echo "| target | transactions | instructions / tx | L1i misses / tx | L1d misses / tx | instructions ÷ relay's |"
    echo "|---|---:|---:|---:|---:|---:|"
    read -r _ relay_ir _ _ <<<"${RESULT[relay,$workload]:-0 0 0 0}"
    relay_tx=${RESULT[relay,$workload]%% *}
    for target in "${TARGET_LIST[@]}"; do
        read -r tx ir i1 d1 <<<"${RESULT[$target,$workload]:-0 0 0 0}"
        if ((tx == 0)); then
            echo "| $target | no count | | | | |"
            continue
        fi
        vs=$(awk -v a="$ir" -v ta="$tx" -v b="$relay_ir" -v tb="${relay_tx:-0}" \
            'BEGIN {if (b > 0 && tb > 0) printf "%.2f", (a / ta) / (b / tb)}')
        echo "| $target | $tx | $(per_tx "$ir" "$tx") | $(per_tx "$i1" "$tx") | $(per_tx "$d1" "$tx") | ${vs:--} |"
    done
done
