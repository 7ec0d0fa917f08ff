#!/usr/bin/env bash
# pgo-train.sh - the training run of a profile-guided build (scripts/build-release.sh calls
# it; not meant to be run alone): an instrumented switchyard binary serves real load against
# a throw-away database, so that its profile says which code runs for each statement.
#
# Usage:
#   scripts/pgo-train.sh postgres|mysql INSTRUMENTED_BIN PROFILE_DIR
#
# Each configuration below starts the binary (LLVM_PROFILE_FILE in PROFILE_DIR), runs its
# loads for TRAIN_SECONDS each and stops it with SIGTERM: the profile is written when the
# process exits, so a binary that does not stop within 30 s fails the training.
#   transaction mode (the default): PostgreSQL pgbench select-only -M prepared (8 and 64
#     clients: the pool's wait line), TPC-B -M extended, -M simple, -M prepared; MariaDB
#     sysbench oltp_point_select and oltp_read_write with server-side prepared statements
#     (8 and 64 threads), oltp_read_write with text statements
#   session mode: select-only / point select and TPC-B / read-write
#   TLS on both sides (a certificate made for the run): select-only / point select
# Code no load runs (a cutover, a failover, the admin API) is laid out as cold: it still
# works, as fast as it needs to.
#
# Environment: TRAIN_SECONDS [5]. Needs root, PostgreSQL 15 and pgbench or MariaDB and
# sysbench, openssl (scripts/install-deps.sh installs them). Progress goes to stderr.
set -euo pipefail

ENGINE=${1:-}
INSTRUMENTED_BIN=${2:-}
PROFILE_DIR=${3:-}
[[ ($ENGINE == postgres || $ENGINE == mysql) && -x $INSTRUMENTED_BIN && -d $PROFILE_DIR ]] || {
    echo "usage: $0 postgres|mysql INSTRUMENTED_BIN PROFILE_DIR" >&2
    exit 2
}
shift 3

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../benches/lib.sh"
if [[ $ENGINE == postgres ]]; then
    # shellcheck source=benches/lib-postgres.sh
    source "$SCRIPT_DIR/lib-postgres.sh"
else
    # shellcheck source=benches/lib-mysql.sh
    source "$SCRIPT_DIR/lib-mysql.sh"
fi
TRAIN_SECONDS=${TRAIN_SECONDS:-5}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# shellcheck disable=SC2034 # sysbench's tables (lib-mysql.sh)
TABLES=2 TABLE_SIZE=10000
require_uints TRAIN_SECONDS
if [[ $ENGINE == postgres ]]; then
    require_tools "$PG_BIN/initdb" "$PG_BIN/postgres" pgbench psql pg_isready runuser openssl
    DB_USER=postgres
else
    require_tools "$MARIADBD" "$MARIADB_INSTALL_DB" mariadb sysbench setpriv runuser openssl
    DB_USER=mysql
fi
[[ $(id -u) -eq 0 ]] || die "run as root (the database is run as the $DB_USER user)"
install_traps

TMP=$(mktemp -d -t switchyard-pgo.XXXXXX)
chown "$DB_USER": "$TMP"
chmod 0755 "$TMP"
read -r DB_PORT PROXY_PORT ADMIN_PORT <<<"$(free_ports 3)"
[[ -n $ADMIN_PORT ]] || die "could not pick free ports"

# A certificate for the run, for the database's TLS and for the proxy's own.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$TMP/tls.key" -out "$TMP/tls.crt" >"$TMP/openssl.log" 2>&1 ||
    { cat "$TMP/openssl.log" >&2; die "openssl could not make a certificate"; }
mkdir "$TMP/client"
cp "$TMP/tls.key" "$TMP/client/client-key.pem"
cp "$TMP/tls.crt" "$TMP/client/client-cert.pem"
cp "$TMP/tls.crt" "$TMP/client/cacert.pem"
chown "$DB_USER": "$TMP/tls.key" "$TMP/tls.crt"
chmod 0600 "$TMP/tls.key"

if [[ $ENGINE == postgres ]]; then
    # shellcheck disable=SC2034 # the port lib-postgres.sh starts the server on
    PG_PORT=$DB_PORT
    pg_start 200
    pg_super -d postgres -c "ALTER SYSTEM SET ssl_cert_file = '$TMP/tls.crt'" \
        -c "ALTER SYSTEM SET ssl_key_file = '$TMP/tls.key'" -c "ALTER SYSTEM SET ssl = on" \
        -c "SELECT pg_reload_conf()" >/dev/null
    pgbench_init 5
else
    maria_start 200 --ssl-cert="$TMP/tls.crt" --ssl-key="$TMP/tls.key"
    sysbench_prepare
fi

# serve NAME SERVER_LINES CLUSTER_LINES: start the instrumented binary with this config.
serve() {
    local name=$1
    write_switchyard_config "$TMP/$name.toml" "$ENGINE" "$PROXY_PORT" "$ADMIN_PORT" "$DB_PORT" \
        "$APP_USER" "$APP_PASSWORD" "$2" "$3"
    log "training: $name"
    LLVM_PROFILE_FILE="$PROFILE_DIR/$ENGINE-$name-%p.profraw" "$INSTRUMENTED_BIN" serve \
        -c "$TMP/$name.toml" </dev/null >"$TMP/$name.log" 2>&1 &
    PIDS[switchyard]=$!
    wait_for "$name" "${PIDS[switchyard]}" app_login "$PROXY_PORT" ||
        { tail -n 20 "$TMP/$name.log" >&2; die "the instrumented switchyard did not start ($name)"; }
}

# stop: SIGTERM, and the profile must be there once it exited.
stop() {
    local pid=${PIDS[switchyard]}
    stop_pid "$pid" switchyard 30
    unset 'PIDS[switchyard]'
    compgen -G "$PROFILE_DIR/$ENGINE-*-$pid.profraw" >/dev/null ||
        die "switchyard (pid $pid) wrote no profile: it did not exit by itself"
}

# train CLIENTS ARGS...: one load through the proxy; a failed transaction fails the training.
train() {
    local clients=$1 out=$TMP/load.out
    shift
    if [[ $ENGINE == postgres ]]; then
        if ! PGPASSWORD=$APP_PASSWORD PGSSLMODE=${SSLMODE:-disable} pgbench -h 127.0.0.1 \
            -p "$PROXY_PORT" -U "$APP_USER" -n -c "$clients" -j 2 -T "$TRAIN_SECONDS" "$@" "$DB" \
            >"$out" 2>&1 || ! grep -q '^number of failed transactions: 0 ' "$out"; then
            tail -n 20 "$out" >&2
            die "pgbench $* failed"
        fi
    else
        local -a conn
        mapfile -t conn < <(sysbench_conn "$PROXY_PORT")
        # sysbench's --mysql-ssl=on reads client-key.pem, client-cert.pem and cacert.pem
        # from its working directory (the run's certificate, see below).
        [[ -n ${SSLMODE:-} ]] && conn=("${conn[@]/--mysql-ssl=off/--mysql-ssl=on}")
        # Deadlocks sysbench retries (its "ignored errors") are the database's, not failures.
        (cd "$TMP/client" && sysbench "$1" "${conn[@]}" --threads="$clients" \
            --time="$TRAIN_SECONDS" "${@:2}" run) >"$out" 2>&1 ||
            { tail -n 20 "$out" >&2; die "sysbench $* failed"; }
    fi
}

# backend_tls: the pool's connections to the database are TLS ones (the tls configuration).
backend_tls() {
    local n
    if [[ $ENGINE == postgres ]]; then
        n=$(pg_super -d postgres -Atc "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
            WHERE ssl AND usename = '$APP_USER'")
    else
        n=$(maria_root -N -B -e "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'" | awk '{print $2}')
    fi
    ((n > 0)) || die "the tls training reached the database without TLS"
}

transaction='pool_mode = "transaction"\npool_size = 10'
session='pool_mode = "session"'
tls="tls_mode = \"prefer\"\ntls_cert = \"$TMP/tls.crt\"\ntls_key = \"$TMP/tls.key\""
if [[ $ENGINE == postgres ]]; then
    serve transaction "$transaction" ""
    train 8 -S -M prepared
    train 64 -S -M prepared
    train 8 -M extended
    train 8 -M simple
    train 8 -M prepared
    stop
    serve session "$session" ""
    train 8 -S -M prepared
    train 8 -M extended
    stop
    serve tls "$transaction\n$tls" 'tls = "require"'
    SSLMODE=require train 8 -S -M prepared
    backend_tls
    stop
else
    serve transaction "$transaction" ""
    train 8 oltp_point_select --db-ps-mode=auto
    train 64 oltp_point_select --db-ps-mode=auto
    train 8 oltp_read_write --db-ps-mode=auto
    train 8 oltp_read_write --db-ps-mode=disable
    stop
    serve session "$session" ""
    train 8 oltp_point_select --db-ps-mode=auto
    train 8 oltp_read_write --db-ps-mode=auto
    stop
    serve tls "$transaction\n$tls" 'tls = "require"'
    SSLMODE=require train 8 oltp_point_select --db-ps-mode=auto
    backend_tls
    stop
fi
log "training on $ENGINE done"
