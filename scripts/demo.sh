#!/usr/bin/env bash
# demo.sh - the README's first command: installs the database servers from Debian's packages
# (when missing) and runs `switchyard demo`, a live migration from an old to a new cluster
# under an application's load, ending with a report. Exits with the demo's status.
#
#   bash scripts/demo.sh                  # PostgreSQL
#   bash scripts/demo.sh mysql            # the MySQL protocol, on MariaDB
#   bash scripts/demo.sh postgres --duration 60s --keep
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${1:-postgres}
case $engine in
postgres | mysql) ;;
*)
    echo "usage: bash scripts/demo.sh [postgres|mysql] [--duration 30s] [--keep]" >&2
    exit 2
    ;;
esac
shift $(($# > 0 ? 1 : 0))

bash scripts/install-deps.sh

# Four servers initdb'd or installed in the temp dir: on tmpfs that takes a fraction of the
# time it takes on disk. Use /dev/shm when the caller chose no TMPDIR and it has room.
shm_free_kb=$(df --output=avail -k /dev/shm 2>/dev/null | awk 'NR == 2 { print $1 }') || true
if [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm && ${shm_free_kb:-0} -gt 1000000 ]]; then
    export TMPDIR=/dev/shm
fi

exec cargo run --release -- demo --engine "$engine" "$@"
