# shellcheck shell=bash
# benches/lib.sh - what the bench scripts (compare-*.sh, pooling-*.sh,
# idle-clients.sh) share: logging, free ports, waiting for a server, stopping
# processes, the cleanup trap, CPU accounting from /proc/PID/stat, the server
# connections a process holds, switchyard and HAProxy set-up, the interleaved
# rounds and the markdown table. Sourced, never run; the database set-up is in
# lib-postgres.sh and lib-mysql.sh.
#
# The sourcing script sources this file first (without arguments, so that "$@"
# here are the script's own), which sets SCRIPT_DIR (benches/), REPO_ROOT and
# INVOCATION (how the script was run, for its report; a script that re-runs
# itself sets INVOCATION before) and declares the shared state below; it defines:
#   bench_run PORT SECONDS OUTFILE   run the load generator once (via run_client)
#   bench_parse OUTFILE              print "tps<TAB>avg_ms<TAB>p95_ms<TAB>tx<TAB>errors"
#                                    (p95_ms and errors may be NA); fail if unparsable
# and optionally:
#   bench_cleanup_db                 stop the database (called by cleanup, after
#                                    the proxies, before the temp dir is removed)
# and may set, after sourcing:
#   LATENCY_PCT    which percentile bench_parse's third field is (95)
#   REPORT_VS      targets the report gives throughput ratios against (direct haproxy)
#   SERVER_PORT    the database's port: run_rounds then samples the connections each
#                  target holds to it (see sample_conns) and reports the peak
#   NOT_RUN[t]     why target t is left out of the current rounds (shown in the report)

# ----------------------------------------------------------------- places ---
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
if [[ -z ${INVOCATION:-} ]]; then
    INVOCATION=$(printf '%q ' "$0" "$@")
    INVOCATION=${INVOCATION% }
fi

# ------------------------------------------------------------------ state ---
TMP=""                  # temp dir, removed on exit
declare -A PIDS=()      # target name -> pid of the proxy process
declare -A PORT=()      # target name -> port the load generator connects to
TARGETS=()              # targets that are up, in the order of the first round
BENCH_PID=""            # the running load generator, if any
CLEANED=0
CLK_TCK=$(getconf CLK_TCK)
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
HAPROXY_THREADS=""
SWITCHYARD_STATUS=""    # empty while switchyard is usable, else why it is not
DEFAULT_SWITCHYARD_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/switchyard
SWITCHYARD_BIN_SET=${SWITCHYARD_BIN+set}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$DEFAULT_SWITCHYARD_BIN}
RESULTS=""              # per-run TSV, see run_rounds
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)
LATENCY_PCT=95          # the percentile in bench_parse's third field
REPORT_VS=(direct haproxy)
SERVER_PORT=""          # when set, the peak connections to it are sampled per run
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.5}
SAMPLE_PID=""           # the process whose connections are sampled (run_rounds)
SAMPLER_PID=""          # the running sampler, if any
declare -A NOT_RUN=()   # target name -> why it is not in the current rounds

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { # script: print the script's header comment
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$1"
}

no_arguments() { # script arg...: -h/--help prints the header and exits 0; any argument is an error
    (($# == 1)) && return 0
    usage "$1"
    [[ $2 == -h || $2 == --help ]] && exit 0
    exit 2
}
require_uints() { # VAR...: each must be a non-negative integer
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: $v must be a non-negative integer" >&2; exit 2; }
    done
}

require_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "required tool not found: $tool"
    done
}

# raise_nofile WANT: raise this shell's open-files limit (inherited by what it
# starts) to WANT, or to the hard limit when WANT is above it and the hard limit
# cannot be raised (that needs CAP_SYS_RESOURCE, which a container may lack).
raise_nofile() {
    local want=$1 hard
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < want)); then
        ulimit -Hn "$want" 2>/dev/null || want=$hard
    fi
    ulimit -Sn "$want"
}

# ---------------------------------------------------------------- processes --
is_alive() { # pid: running and not a zombie
    local state
    [[ -r /proc/$1/stat ]] || return 1
    # The process may end between the check and the read: no complaint then.
    state=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${state##*) }
    [[ ${state:0:1} != Z ]]
}

stop_pid() { # pid name [seconds]: TERM, wait up to seconds (5), then KILL; reap
    local pid=$1 name=$2 tenths=$((${3:-5} * 10)) i
    [[ -n $pid ]] || return 0
    if is_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < tenths; i++)); do is_alive "$pid" || break; sleep 0.1; done
        if is_alive "$pid"; then
            log "$name (pid $pid) did not stop on TERM, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? name
    ((CLEANED)) && return 0
    CLEANED=1
    trap - INT TERM
    set +e
    [[ -n $BENCH_PID ]] && stop_pid "$BENCH_PID" "load generator"
    [[ -n $SAMPLER_PID ]] && stop_pid "$SAMPLER_PID" "connection sampler" 1
    for name in "${!PIDS[@]}"; do
        stop_pid "${PIDS[$name]}" "$name"
    done
    declare -F bench_cleanup_db >/dev/null && bench_cleanup_db
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc != 0)) && [[ -n ${KEEP_TMP_ON_FAILURE:-} ]]; then
            log "keeping $TMP for inspection"
        else
            rm -rf -- "$TMP"
        fi
    fi
    return "$rc"
}

install_traps() {
    trap cleanup EXIT
    trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# run_client OUTFILE CMD...: run CMD in the background with its output in
# OUTFILE and wait for it, so that INT/TERM reach the traps at once and
# cleanup can stop it. With SERVER_PORT set, the connections that SAMPLE_PID
# (or, when empty, CMD itself: the direct target) holds to it are sampled
# meanwhile into OUTFILE.conns.
run_client() {
    local out=$1 rc=0
    shift
    "$@" </dev/null >"$out" 2>&1 &
    BENCH_PID=$!
    if [[ -n $SERVER_PORT ]]; then
        sample_conns "${SAMPLE_PID:-$BENCH_PID}" "$SERVER_PORT" >"$out.conns" &
        SAMPLER_PID=$!
    fi
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if [[ -n $SAMPLER_PID ]]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
    fi
    return "$rc"
}

# conns_to_port PID PORT: how many established TCP connections process PID (all
# its threads) has to PORT on this host, from its socket fds and /proc/net/tcp*.
# Counted on the client side, so each proxy's (or the load generator's) share of
# the server's connections is its own, whatever the other targets keep idle.
conns_to_port() {
    local pid=$1 port
    port=$(printf ':%04X' "$2")
    find "/proc/$pid/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null |
        awk -v port="$port" '
            FILENAME == "-" { gsub(/[^0-9]/, ""); inode[$0] = 1; next }
            $4 == "01" && substr($3, length($3) - 4) == port && ($10 in inode) { n++ }
            END { print n + 0 }' - /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# sample_conns PID PORT: print conns_to_port every SAMPLE_INTERVAL seconds while
# PID lives (run in the background and killed by run_client).
sample_conns() {
    while is_alive "$1"; do
        conns_to_port "$1" "$2" || true
        sleep "$SAMPLE_INTERVAL"
    done
}

# ------------------------------------------------------------------ helpers --
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

# wait_for NAME PID CMD...: poll CMD until it succeeds, the process PID (if not
# empty) dies, or STARTUP_TIMEOUT seconds pass.
wait_for() {
    local name=$1 pid=$2 deadline=$((SECONDS + STARTUP_TIMEOUT))
    shift 2
    while ((SECONDS < deadline)); do
        if [[ -n $pid ]] && ! is_alive "$pid"; then
            log "$name exited during startup"
            return 1
        fi
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "$name did not accept connections within ${STARTUP_TIMEOUT}s"
    return 1
}

cpu_ticks() { # pid -> "utime stime" in clock ticks (all threads)
    local stat f
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo "${f[11]} ${f[12]}"
}

machine_idle_ticks() { # -> clock ticks all CPUs spent idle (or waiting for I/O) since boot
    awk '/^cpu / {print $5 + $6; exit}' /proc/stat
}

median() { # numbers on stdin -> median (empty if none)
    sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) exit
        if (NR % 2) printf "%.6f\n", v[(NR + 1) / 2]
        else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- proxies ---
# resolve_switchyard: build switchyard when SWITCHYARD_BIN is not set and the
# default binary is missing; sets SWITCHYARD_STATUS when there is none to run.
resolve_switchyard() {
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
    return 0
}

# write_switchyard_config FILE PROTOCOL PORT ADMIN_PORT DB_PORT USER PASSWORD [SERVER_LINES [CLUSTER_LINES]]
# SERVER_LINES: more [server] keys, one per line (printf %b escapes such as \n
# are expanded, so 'pool_mode = "transaction"\npool_size = 10' works); CLUSTER_LINES
# likewise for the cluster's table ('tls = "require"').
write_switchyard_config() {
    cat >"$1" <<EOF
[server]
protocol = "$2"
listen = "127.0.0.1:$3"
$(printf '%b' "${8:-}")

[admin]
listen = "127.0.0.1:$4"
token = "bench"

[[users]]
name = "$6"
password = "$7"

[clusters.old]
writer = "127.0.0.1:$5"
readers = []
$(printf '%b' "${9:-}")

[routing]
active = "old"
EOF
}

# write_haproxy_config FILE PORT DB_PORT [MAXCONN]: a bare TCP hop; MAXCONN
# (1000) client connections at most.
write_haproxy_config() {
    cat >"$1" <<EOF
global
    maxconn ${4:-1000}

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend db
    bind 127.0.0.1:$2
    default_backend db

backend db
    server primary 127.0.0.1:$3
EOF
}

# start_switchyard CONFIG PORT PROBE...: start it and wait until PROBE PORT (an
# authenticated query through it) works; on success it joins TARGETS, else
# SWITCHYARD_STATUS says why not. Never fails the script.
start_switchyard() {
    local config=$1 port=$2
    shift 2
    if [[ -z $SWITCHYARD_STATUS ]]; then
        log "starting switchyard ($SWITCHYARD_BIN)"
        "$SWITCHYARD_BIN" serve -c "$config" </dev/null >"$TMP/switchyard.log" 2>&1 &
        PIDS[switchyard]=$!
        PORT[switchyard]=$port
        if wait_for switchyard "${PIDS[switchyard]}" "$@" "$port"; then
            TARGETS+=(switchyard)
        else
            tail -n 20 "$TMP/switchyard.log" >&2
            if is_alive "${PIDS[switchyard]}"; then
                SWITCHYARD_STATUS="did not accept a login within ${STARTUP_TIMEOUT}s"
            else
                SWITCHYARD_STATUS="exited at startup"
            fi
            # The log's last line is usually the reason (a config problem, say).
            local last
            last=$(awk 'NF {l = $0} END {sub(/^[ \t-]+/, "", l); print substr(l, 1, 200)}' "$TMP/switchyard.log")
            [[ -n $last ]] && SWITCHYARD_STATUS+=": $last"
            stop_pid "${PIDS[switchyard]}" switchyard
            unset 'PIDS[switchyard]'
        fi
    fi
    if [[ -n $SWITCHYARD_STATUS ]]; then
        log "switchyard: not available ($SWITCHYARD_STATUS)"
    fi
    return 0
}

# start_baseline CONFIG PORT PROBE...: with BASELINE_BIN set (another switchyard
# build, such as the commit before a change), start it as the target "baseline",
# so one run compares both builds under the same load; dies if it does not start.
start_baseline() {
    local config=$1 port=$2
    shift 2
    [[ -n ${BASELINE_BIN:-} ]] || return 0
    log "starting baseline switchyard ($BASELINE_BIN)"
    "$BASELINE_BIN" serve -c "$config" </dev/null >"$TMP/baseline.log" 2>&1 &
    PIDS[baseline]=$!
    PORT[baseline]=$port
    wait_for baseline "${PIDS[baseline]}" "$@" "$port" ||
        { tail -n 20 "$TMP/baseline.log" >&2; die "the baseline switchyard did not start"; }
    TARGETS+=(baseline)
}

# baseline_note: the report line naming the baseline build, when there is one.
baseline_note() {
    [[ -n ${BASELINE_BIN:-} ]] || return 0
    echo "- baseline: \`$BASELINE_BIN\` ($("$BASELINE_BIN" --version 2>/dev/null | head -n 1)), another switchyard build run as its own target in the same rounds"
}

# start_haproxy CONFIG PORT PROBE...: like start_switchyard, but dies on failure.
start_haproxy() {
    local config=$1 port=$2
    shift 2
    log "starting haproxy"
    "$HAPROXY" -db -f "$config" </dev/null >"$TMP/haproxy.log" 2>&1 &
    PIDS[haproxy]=$!
    PORT[haproxy]=$port
    wait_for haproxy "${PIDS[haproxy]}" "$@" "$port" ||
        { tail -n 20 "$TMP/haproxy.log" >&2; die "haproxy did not start"; }
    TARGETS+=(haproxy)
    # shellcheck disable=SC2034 # for the sourcing script's report
    HAPROXY_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/${PIDS[haproxy]}/status")
}

# ------------------------------------------------------------------ rounds ---
# run_rounds ROUNDS DURATION OUTPREFIX: every target once per round, the order
# rotated each round; the proxy's CPU time is read from /proc before and after.
# Writes to RESULTS (emptied first) one line per successful run, and to
# RESULTS.failed "round target first-error-line" per failed one:
#   round target tps avg_ms pNN_ms transactions proxy_cpu_s errors peak_conns proxy_user_s idle_s
# (pNN is LATENCY_PCT; peak_conns is NA unless SERVER_PORT is set; proxy_user_s is the
# user-mode part of proxy_cpu_s; idle_s is the CPU time the whole machine left idle during
# the run, summed over its CPUs: in a closed loop, what the client, proxy and server could
# not use because each waited for another).
run_rounds() {
    local rounds=$1 duration=$2 prefix=$3 n=${#TARGETS[@]} r i t pid out before after cpu user parsed
    local tps lat p95 tx errors peak idle_before idle
    RESULTS=$TMP/results.tsv
    : >"$RESULTS"
    : >"$RESULTS.failed"
    for ((r = 0; r < rounds; r++)); do
        for ((i = 0; i < n; i++)); do
            t=${TARGETS[$(((i + r) % n))]}
            pid=${PIDS[$t]:-}
            out="$TMP/$prefix-r$((r + 1))-$t.out"
            log "round $((r + 1))/$rounds: $t (${duration}s)"
            before=""
            [[ -n $pid ]] && before=$(cpu_ticks "$pid")
            SAMPLE_PID=$pid
            idle_before=$(machine_idle_ticks)
            if ! bench_run "${PORT[$t]}" "$duration" "$out"; then
                log "$prefix against $t failed:"
                tail -n 20 "$out" >&2
                printf '%s\t%s\t%s\n' "$((r + 1))" "$t" \
                    "$({ grep -m 1 -i 'error' "$out" || grep -m 1 -iE 'fatal|abort' "$out" || tail -n 1 "$out"; } | cut -c 1-200)" >>"$RESULTS.failed"
                continue
            fi
            idle=$(awk -v a="$(machine_idle_ticks)" -v b="$idle_before" -v hz="$CLK_TCK" 'BEGIN {printf "%.3f", (a - b) / hz}')
            cpu=NA user=NA
            if [[ -n $pid ]]; then
                after=$(cpu_ticks "$pid") || after=""
                if [[ -n $after && -n $before ]]; then
                    read -r cpu user < <(awk -v a="$after" -v b="$before" -v hz="$CLK_TCK" 'BEGIN {
                        split(a, x, " "); split(b, y, " ")
                        printf "%.3f %.3f\n", (x[1] + x[2] - y[1] - y[2]) / hz, (x[1] - y[1]) / hz }')
                fi
            fi
            if ! parsed=$(bench_parse "$out"); then
                log "could not parse $prefix output for $t:"
                cat "$out" >&2
                printf '%s\t%s\t%s\n' "$((r + 1))" "$t" \
                    "no result in the output, whose last line is: $(awk 'NF {l = $0} END {print substr(l, 1, 150)}' "$out")" >>"$RESULTS.failed"
                continue
            fi
            IFS=$'\t' read -r tps lat p95 tx errors <<<"$parsed"
            [[ $errors == 0 || $errors == NA ]] || log "warning: $errors errors against $t"
            peak=NA
            [[ -s $out.conns ]] && peak=$(sort -n "$out.conns" | tail -n 1)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$((r + 1))" "$t" "$tps" "$lat" "$p95" "$tx" "$cpu" "$errors" "$peak" "$user" "$idle" >>"$RESULTS"
            log "  tps=$tps latency=${lat}ms$([[ $p95 == NA ]] || printf ' p%s=%sms' "$LATENCY_PCT" "$p95") tx=$tx proxy_cpu_s=$cpu errors=$errors$([[ $peak == NA ]] || printf ' peak_server_conns=%s' "$peak")"
        done
    done
}

# ------------------------------------------------------------------ report ---
col_median() { # target column -> median of that column over the target's runs
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t && $c != "NA" {print $c}' "$RESULTS" | median
}
col_sum() { # target column -> sum over the target's runs (empty if none)
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t && $c != "NA" {s += $c; n++} END {if (n) print s}' "$RESULTS"
}
cpu_per_1k_median() { # target [column] -> median over runs of proxy CPU ms per 1000 tx
    # (column 7: all of it; 10: user mode only; 11: the machine's idle CPU time)
    awk -F'\t' -v t="$1" -v c="${2:-7}" '$2 == t && $c != "NA" && $c != "" && $6 > 0 {printf "%.6f\n", $c * 1000 * 1000 / $6}' "$RESULTS" | median
}
fmt() { # printf-format value -> formatted, or "-" when empty
    if [[ -n $2 ]]; then awk -v f="$1" -v v="$2" 'BEGIN {printf f, v}'; else printf -- '-'; fi
}
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b}'; }
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

machine_line() {
    local model
    model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    echo "$(nproc) CPUs, ${model:-unknown}, $(uname -sr); client, proxies and server share these CPUs; load average (1/5/15 min) at start ${LOAD_AT_START:-?}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
}

config_lines() { # LINES (printf %b escapes) -> the non-empty lines joined by "; "
    printf '%b' "$1" | awk 'NF {printf "%s%s", sep, $0; sep = "; "}'
}

repo_revision() { # short commit of REPO_ROOT, "(dirty)" when it has changes
    local rev
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) || { echo "no commit"; return 0; }
    git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || rev+=" (dirty)"
    echo "$rev"
}

switchyard_version() { # "switchyard X.Y.Z", or "-" when it did not run
    local v=""
    if has_target switchyard; then
        v=$("$SWITCHYARD_BIN" --version 2>/dev/null | sed -n 1p) || true
    fi
    if [[ -z $v ]]; then
        v="switchyard not run"
        has_target switchyard && v="switchyard (unknown version)"
    fi
    echo "$v"
}

# report_table WITH_PCT TARGET...: the markdown table (medians over runs; errors
# summed over runs) and the per-run lines, targets in the given order; WITH_PCT:
# show the LATENCY_PCT column. Ratios are against each of REPORT_VS; with
# SERVER_PORT set, a column gives the median over runs of the peak connections
# the target held to the server. Targets that did not start are left out, except
# switchyard ("not available") and those NOT_RUN names ("not run").
report_table() {
    local with_p95=$1 t v tps lat p95 added cpu errors ncols idle
    shift
    local with_peak=0
    [[ -n $SERVER_PORT ]] && with_peak=1
    local -A med_tps=() med_lat=()
    for t in "$@"; do
        has_target "$t" || continue
        med_tps[$t]=$(col_median "$t" 3)
        med_lat[$t]=$(col_median "$t" 4)
    done
    local head="| target | median tps |" rule="|---|---:|"
    for v in "${REPORT_VS[@]}"; do head+=" vs $v |"; rule+="---:|"; done
    head+=" avg latency ms |"; rule+="---:|"
    ((with_p95)) && { head+=" p$LATENCY_PCT latency ms |"; rule+="---:|"; }
    head+=" added latency ms | proxy CPU ms / 1k tx (user) | machine idle ms / 1k tx |"; rule+="---:|---:|---:|"
    ((with_peak)) && { head+=" peak server conns |"; rule+="---:|"; }
    head+=" errors |"; rule+="---:|"
    echo "$head"
    echo "$rule"
    ncols=$(($(tr -cd '|' <<<"$rule" | wc -c) - 1))
    local blanks="" i
    for ((i = 2; i < ncols; i++)); do blanks+=" |"; done
    for t in "$@"; do
        if ! has_target "$t"; then
            if [[ -n ${NOT_RUN[$t]:-} ]]; then
                echo "| $t | not run |$blanks"
            elif [[ $t == switchyard ]]; then
                echo "| switchyard | not available |$blanks"
            fi
            continue
        fi
        tps=${med_tps[$t]}
        lat=${med_lat[$t]}
        if [[ -z $tps ]]; then
            echo "| $t | failed |$blanks"
            continue
        fi
        added=""
        [[ -n $lat && -n ${med_lat[direct]:-} ]] && added=$(awk -v a="$lat" -v b="${med_lat[direct]}" 'BEGIN {printf "%+.3f", a - b}')
        cpu="" user=""
        [[ $t != direct ]] && cpu=$(cpu_per_1k_median "$t") && user=$(cpu_per_1k_median "$t" 10)
        idle=$(cpu_per_1k_median "$t" 11)
        errors=$(col_sum "$t" 8)
        printf '| %s | %s |' "$t" "$(fmt '%.0f' "$tps")"
        for v in "${REPORT_VS[@]}"; do
            printf ' %s |' "$(fmt '%s' "$(ratio "$tps" "${med_tps[$v]:-}")")"
        done
        printf ' %s |' "$(fmt '%.3f' "$lat")"
        if ((with_p95)); then
            p95=$(col_median "$t" 5)
            printf ' %s |' "$(fmt '%.3f' "$p95")"
        fi
        printf ' %s | %s |' \
            "$(if [[ $t == direct ]]; then printf '0'; else fmt '%s' "$added"; fi)" \
            "$(if [[ $t == direct ]]; then printf 'n/a'; else fmt '%.1f' "$cpu"; [[ -z $user ]] || printf ' (%s)' "$(fmt '%.1f' "$user")"; fi)"
        printf ' %s |' "$(fmt '%.1f' "$idle")"
        ((with_peak)) && printf ' %s |' "$(fmt '%.0f' "$(col_median "$t" 9)")"
        printf ' %s |\n' "$(fmt '%s' "$errors")"
    done
    echo
    if [[ -n $SWITCHYARD_STATUS ]]; then
        echo "switchyard: not available ($SWITCHYARD_STATUS)"
        echo
    fi
    for t in "$@"; do
        has_target "$t" || [[ -z ${NOT_RUN[$t]:-} ]] || { echo "$t: not run (${NOT_RUN[$t]})"; echo; }
    done
    if [[ -s $RESULTS.failed ]]; then
        echo "Failed runs (left out above; round, target, first error line):"
        echo
        awk -F'\t' '{printf "- round %s, %s: `%s`\n", $1, $2, $3}' "$RESULTS.failed"
        echo
    fi
    local cols='1,2,3,4,6,7,8' header='round target tps avg_ms tx proxy_cpu_s errors'
    ((with_p95)) && cols='1-8' header="round target tps avg_ms p${LATENCY_PCT}_ms tx proxy_cpu_s errors"
    ((with_peak)) && cols+=',9' header+=' peak_conns'
    cols+=',10,11' header+=' proxy_user_s idle_s'
    echo "Per run (round, target, tps, avg latency ms$( ((with_p95)) && printf ', p%s latency ms' "$LATENCY_PCT"), transactions, proxy CPU s, errors$( ((with_peak)) && printf ', peak server connections'), proxy user-mode CPU s, machine idle CPU s):"
    echo
    echo '```'
    { tr ' ' '\t' <<<"$header"; cut -f"$cols" "$RESULTS"; } | { column -t -s$'\t' 2>/dev/null || cat; }
    echo '```'
}
