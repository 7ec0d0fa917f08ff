# shellcheck shell=bash
# benches/lib-mysql.sh - the MariaDB side the bench scripts share: a throw-away
# server in the temp dir (run as the mysql user), the app login and sysbench's
# connection options. Sourced after lib.sh, never run.
#
# The sourcing script sets TMP and DB_PORT (and TABLES, TABLE_SIZE for
# sysbench_conn), calls install_traps (this file defines lib.sh's
# bench_cleanup_db hook), then maria_start MAX_CONNECTIONS.

# shellcheck disable=SC2034 # used by the sourcing scripts
APP_USER=app
APP_PASSWORD=app-secret
DB=bench
MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
MARIADB_INSTALL_DB=${MARIADB_INSTALL_DB:-mariadb-install-db}
# Both for mariadb-install-db and mariadbd: the data is thrown away, so no
# fsync per commit, and a buffer pool that holds every table.
STORAGE=(--innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2)
MARIA_DIR=""
MARIADB_PID=""

bench_cleanup_db() { # called by cleanup (lib.sh) after the proxies are stopped
    # SIGTERM is mariadbd's clean shutdown; the data goes anyway, so 30s at most.
    [[ -n $MARIADB_PID ]] && stop_pid "$MARIADB_PID" mariadbd 30
    return 0
}

maria_root() { # mariadb as root over the unix socket
    mariadb --no-defaults --protocol=SOCKET -S "$MARIA_DIR/sock" -u root "$@"
}

app_login() { # port: an authenticated query as app through 127.0.0.1:PORT
    timeout 5 mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$1" --skip-ssl \
        --connect-timeout=2 -u "$APP_USER" --password="$APP_PASSWORD" -D "$DB" -e 'select 1'
}

# sysbench's options for one target (its port), minus the workload and command.
sysbench_conn() {
    printf '%s\n' --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" \
        --mysql-user="$APP_USER" --mysql-password="$APP_PASSWORD" --mysql-db="$DB" \
        --mysql-ssl=off --tables="$TABLES" --table-size="$TABLE_SIZE"
}

# sysbench_prepare: sysbench's TABLES tables of TABLE_SIZE rows, made directly on DB_PORT.
sysbench_prepare() {
    local -a conn
    log "sysbench prepare ($TABLES tables of $TABLE_SIZE rows)"
    mapfile -t conn < <(sysbench_conn "$DB_PORT")
    sysbench oltp_point_select "${conn[@]}" prepare >"$TMP/sysbench-prepare.log" 2>&1 ||
        { tail -n 30 "$TMP/sysbench-prepare.log" >&2; die "sysbench prepare failed"; }
}

# sysbench_parse OUTFILE PERCENTILE -> tps, avg latency ms, the PERCENTILE-th
# percentile latency ms, transactions, ignored errors (tab-separated) from sysbench's
# report; avg has 2 decimals only there, so it is taken as sum / events when it can be.
sysbench_parse() {
    awk -v pct="$2" '
        /^ *transactions:/ { tx = $2; tps = $3; sub(/^\(/, "", tps) }
        /^ *ignored errors:/ { errors = $3 }
        /^ *total number of events:/ { events = $5 }
        /^ *avg:/ { avg = $2 }
        $1 == pct "th" && $2 == "percentile:" { latency = $3 }
        /^ *sum:/ { sum = $2 }
        END {
            if (tx == "" || tps == "" || avg == "") exit 1
            if (sum != "" && events > 0) avg = sprintf("%.4f", sum / events)
            printf "%s\t%s\t%s\t%s\t%s\n", tps, avg, (latency == "" ? "NA" : latency), tx, (errors == "" ? "NA" : errors)
        }' "$1"
}

# maria_start MAX_CONNECTIONS [MARIADBD_OPTION...]: a fresh MariaDB on DB_PORT,
# run as mysql from the start (mariadbd run as root wants --user), with its own
# temp dir and socket; setpriv execs, so the pid is mariadbd's own. Then the app
# user and database.
maria_start() {
    local account anonymous
    MARIA_DIR=$TMP/mariadb
    mkdir -p "$MARIA_DIR/tmp"
    chown -R mysql: "$MARIA_DIR"
    chmod 0750 "$MARIA_DIR"
    log "mariadb-install-db"
    (cd "$MARIA_DIR" && runuser -u mysql -- "$MARIADB_INSTALL_DB" --no-defaults \
        --datadir="$MARIA_DIR/data" --tmpdir="$MARIA_DIR/tmp" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        "${STORAGE[@]}") >"$TMP/install-db.log" 2>&1 ||
        { tail -n 30 "$TMP/install-db.log" >&2; die "mariadb-install-db failed"; }
    log "starting mariadbd"
    (cd "$MARIA_DIR" && exec setpriv --reuid=mysql --regid=mysql --init-groups -- \
        "$MARIADBD" --no-defaults --datadir="$MARIA_DIR/data" --tmpdir="$MARIA_DIR/tmp" \
        --socket="$MARIA_DIR/sock" --pid-file="$MARIA_DIR/mariadbd.pid" \
        --log-error="$MARIA_DIR/error.log" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --max-connections="$1" "${STORAGE[@]}" "${@:2}") \
        </dev/null >"$TMP/mariadbd.out" 2>&1 &
    MARIADB_PID=$!
    wait_for mariadbd "$MARIADB_PID" maria_root -e 'select 1' ||
        { tail -n 20 "$MARIA_DIR/error.log" "$TMP/mariadbd.out" >&2 || true; die "mariadbd did not start on port $DB_PORT"; }

    # The anonymous accounts install-db makes (''@localhost, ...) would match
    # before app@'%' for connections from 127.0.0.1.
    mapfile -t anonymous < <(maria_root -N -B -e "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user WHERE user = ''")
    for account in "${anonymous[@]}"; do
        maria_root -e "DROP USER $account"
    done
    maria_root <<EOF
CREATE DATABASE \`$DB\`;
CREATE USER '$APP_USER'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$APP_PASSWORD');
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$APP_USER'@'%';
EOF
    wait_for mariadb "" app_login "$DB_PORT" || die "cannot log in as $APP_USER directly"
}

mariadb_version() { # "10.11.19"
    local v
    v=$("$MARIADBD" --version | sed -n 1p)
    v=${v#*Ver }
    echo "${v%% *}"
}
