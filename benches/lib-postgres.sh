# shellcheck shell=bash
# benches/lib-postgres.sh - the PostgreSQL side the bench scripts share: a
# throw-away server in the temp dir (run as the postgres user), the app login,
# pgbench's tables and PgBouncer. Sourced after lib.sh, never run.
#
# The sourcing script sets TMP (owned by postgres), PG_PORT and PG_BIN, calls
# install_traps (this file defines lib.sh's bench_cleanup_db hook), then
# pg_start MAX_CONNECTIONS.

# shellcheck disable=SC2034 # used by the sourcing scripts
APP_USER=app
APP_PASSWORD=app-secret
DB=bench
PGDATA_DIR=""
PG_RUNUSER_PID=""
PGBOUNCER_SET=${PGBOUNCER+set}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

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

pg_super() { # psql as the superuser over the unix socket
    psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres "$@"
}

app_login() { # port: an authenticated query as app through 127.0.0.1:PORT
    PGPASSWORD=$APP_PASSWORD PGCONNECT_TIMEOUT=2 psql -X -Atq -h 127.0.0.1 -p "$1" \
        -U "$APP_USER" -d "$DB" -c 'select 1'
}

# pg_start MAX_CONNECTIONS: initdb, start PostgreSQL on PG_PORT (SCRAM on TCP,
# no durability: the data is thrown away), create the app role and database.
pg_start() {
    PGDATA_DIR=$TMP/pgdata
    log "initdb"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$TMP/initdb.log" 2>&1 ||
        { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# --- benches/lib-postgres.sh ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
max_connections = $1
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
}

# pgbench_init SCALE: pgbench's tables, vacuumed and analyzed.
pgbench_init() {
    log "pgbench -i -s $1"
    PGPASSWORD=$APP_PASSWORD pgbench -i -q -s "$1" -h 127.0.0.1 -p "$PG_PORT" -U "$APP_USER" "$DB" \
        >"$TMP/pgbench-init.log" 2>&1 || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
    pg_super -d "$DB" -c 'VACUUM ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history'
}

pgbouncer_version() { # "1.18.0"
    "$PGBOUNCER" --version 2>&1 | awk '/^PgBouncer / {print $2; exit}'
}

# version_at_least VERSION MIN: dotted numeric versions, VERSION >= MIN.
version_at_least() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1) == "$2" ]]
}

# start_pgbouncer PORT POOL_MODE POOL_SIZE MAX_CLIENTS [EXTRA_LINES]: PgBouncer in
# front of the bench database (SCRAM, the plaintext password in its auth_file),
# as the target "pgbouncer"; dies if it does not start. EXTRA_LINES go into
# [pgbouncer] (printf %b escapes expanded).
start_pgbouncer() {
    cat >"$TMP/userlist.txt" <<EOF
"$APP_USER" "$APP_PASSWORD"
EOF
    cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/userlist.txt
pool_mode = $2
default_pool_size = $3
max_client_conn = $4
logfile = $TMP/pgbouncer.log
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
$(printf '%b' "${5:-}")
EOF
    chown postgres: "$TMP/userlist.txt" "$TMP/pgbouncer.ini"
    chmod 0600 "$TMP/userlist.txt"
    log "starting pgbouncer"
    "$PGBOUNCER" -u postgres "$TMP/pgbouncer.ini" </dev/null >>"$TMP/pgbouncer.out" 2>&1 &
    PIDS["pgbouncer"]=$!
    PORT["pgbouncer"]=$1
    wait_for pgbouncer "${PIDS["pgbouncer"]}" app_login "$1" ||
        { tail -n 20 "$TMP/pgbouncer.log" "$TMP/pgbouncer.out" >&2 || true; die "pgbouncer did not start"; }
    TARGETS+=(pgbouncer)
}
