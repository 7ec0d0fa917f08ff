#!/usr/bin/env bash
# build-pgbouncer.sh - build a PgBouncer new enough to keep named prepared statements in
# transaction mode (max_prepared_statements, 1.21 and later) for benches/pooling-postgres.sh,
# and print the path of its binary on stdout.
#
# Debian 12 ships PgBouncer 1.18. Its next release (13, "trixie") ships 1.24, whose binary
# package needs a newer C library than Debian 12 has; its source package builds against
# Debian 12's libraries. So this script asks Debian's mirror for trixie's source package
# (with its own apt lists and cache under the build directory: the machine's apt sources are
# left as they are), installs the build dependencies from Debian 12 (libevent-dev,
# libssl-dev, pkg-config, make, gcc) and builds the release tarball (which carries its
# libusual) with `./configure && make`. Nothing is installed outside the build directory.
#
# Usage:
#   PGBOUNCER=$(scripts/build-pgbouncer.sh)
#
# Environment (defaults in brackets):
#   BUILD_DIR [<repo>/target/bench-tools/pgbouncer]  where the sources, apt state and build go;
#              a binary already built there is reused
#   DEBIAN_MIRROR [http://deb.debian.org/debian]
#   DEBIAN_SUITE [trixie]
#
# Progress goes to stderr. Needs root (apt-get install of the build dependencies).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO_ROOT/target/bench-tools/pgbouncer}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-trixie}

log() { echo "build-pgbouncer: $*" >&2; }
die() { log "error: $*"; exit 1; }

# A binary built before is reused when it runs.
for built in "$BUILD_DIR"/pgbouncer-*/pgbouncer; do
    if [[ -x $built ]] && "$built" --version >/dev/null 2>&1; then
        log "reusing $built"
        echo "$built"
        exit 0
    fi
done

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get installs the build dependencies)"
mkdir -p "$BUILD_DIR/apt/lists/partial" "$BUILD_DIR/apt/cache/archives/partial" "$BUILD_DIR/src"
cat >"$BUILD_DIR/apt/sources.list" <<EOF
deb-src $DEBIAN_MIRROR $DEBIAN_SUITE main
EOF
apt_private=(-o "Dir::Etc::SourceList=$BUILD_DIR/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$BUILD_DIR/apt/lists" -o "Dir::Cache=$BUILD_DIR/apt/cache")

log "fetching the $DEBIAN_SUITE source index from $DEBIAN_MIRROR"
apt-get "${apt_private[@]}" -q update >"$BUILD_DIR/apt-update.log" 2>&1 ||
    { tail -n 5 "$BUILD_DIR/apt-update.log" >&2; die "apt-get update of $DEBIAN_SUITE's sources failed"; }
log "fetching PgBouncer's source package"
(cd "$BUILD_DIR/src" && apt-get "${apt_private[@]}" -q source --download-only pgbouncer) \
    >"$BUILD_DIR/apt-source.log" 2>&1 ||
    { tail -n 5 "$BUILD_DIR/apt-source.log" >&2; die "apt-get source pgbouncer failed"; }
tarball=$(compgen -G "$BUILD_DIR/src/pgbouncer_*.orig.tar.gz" | sort -V | tail -n 1) ||
    die "no pgbouncer_*.orig.tar.gz in $BUILD_DIR/src"
version=${tarball##*/pgbouncer_}
version=${version%.orig.tar.gz}

missing=()
for pkg in libevent-dev libssl-dev pkg-config make gcc; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    log "installing build dependencies from Debian: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y "${missing[@]}" >"$BUILD_DIR/apt-install.log" 2>&1 ||
        { tail -n 5 "$BUILD_DIR/apt-install.log" >&2; die "apt-get install ${missing[*]} failed"; }
fi

src=$BUILD_DIR/pgbouncer-$version
rm -rf "$src"
tar -xzf "$tarball" -C "$BUILD_DIR"
[[ -x $src/configure ]] || die "$tarball did not unpack to $src"
log "building PgBouncer $version in $src (log: $src/build.log)"
# c-ares and systemd are left out: the benches name their servers by address and start
# PgBouncer themselves.
(cd "$src" && ./configure --without-cares --without-systemd && make -j"$(nproc)") \
    >"$src/build.log" 2>&1 || { tail -n 20 "$src/build.log" >&2; die "building PgBouncer $version failed"; }
"$src/pgbouncer" --version >/dev/null 2>&1 || die "the built $src/pgbouncer does not run"
echo "$src/pgbouncer"
