#!/usr/bin/env bash
# build-release.sh - the switchyard binary to ship: a release build laid out by a profile of
# real load (profile-guided optimization), and print its path on stdout.
#
# The proxy's time per statement is bound by instruction-cache misses: the code one
# statement runs spans more than a core's L1i holds. A profile of the load tells the
# compiler which branches are taken and which functions run together, so it inlines and lays
# out the hot path contiguously and moves the rest out of the way: about half the L1i
# misses and a sixth fewer instructions per transaction than `cargo build --release`
# (benches/RESULTS.md, "Profile-guided build"). The source and its behaviour are the same;
# only the layout differs.
#
# Steps (each logged):
#   1. llvm-profdata of the toolchain's own LLVM (rustup component llvm-tools, added when
#      missing: a profile must be read by the LLVM that wrote it)
#   2. cargo build --release with -Cprofile-generate  -> <target>/pgo-instrumented
#   3. scripts/pgo-train.sh postgres, then mysql: the instrumented binary under pgbench and
#      sysbench against throw-away PostgreSQL and MariaDB servers (about 2 minutes)
#   4. llvm-profdata merge
#   5. cargo build --release with -Cprofile-use        -> <target>/pgo/release/switchyard
# `cargo build --release` alone is untouched (its own target directory), and so are tests.
#
# Usage:
#   BIN=$(scripts/build-release.sh)
#   scripts/build-release.sh --check   steps 1 to 4 only, with the instrumented binary built
#                                      in the dev profile and 1 s per training load: that the
#                                      training runs and its profile merges (scripts/test.sh,
#                                      in about 3 minutes rather than 10)
#
# Environment (defaults in brackets):
#   CARGO_TARGET_DIR [<repo>/target]  the two builds go to its pgo-instrumented/ and pgo/
#   TRAIN_SECONDS [5]                 seconds per training load (scripts/pgo-train.sh)
#   RUSTFLAGS                         passed on to both builds, before the PGO flag
#
# Needs root, the Rust toolchain through rustup, and what scripts/install-deps.sh installs
# (PostgreSQL 15, pgbench, MariaDB, sysbench, openssl). Two fat-LTO builds: about 10 minutes
# on 2 cores.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute: rustc runs in each crate's directory, and the profile paths are given to it.
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$REPO_ROOT/target}")
CHECK=false
case ${1:-} in
    "") ;;
    --check) CHECK=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
if $CHECK; then
    INSTRUMENTED_DIR=$TARGET_DIR/pgo-check
    PROFILE_DIR=$TARGET_DIR/pgo-check-profile
    export TRAIN_SECONDS=1
else
    INSTRUMENTED_DIR=$TARGET_DIR/pgo-instrumented
    PROFILE_DIR=$TARGET_DIR/pgo-profile
fi
FINAL_DIR=$TARGET_DIR/pgo

log() { printf '[%(%H:%M:%S)T] build-release: %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (the training runs PostgreSQL and MariaDB as their own users)"

# 1. The toolchain's llvm-profdata.
host=$(rustc -vV | awk '/^host:/ {print $2}')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    log "adding the rustup component llvm-tools (llvm-profdata)"
    rustup component add llvm-tools >&2 || die "rustup component add llvm-tools failed"
    [[ -x $profdata ]] || die "no llvm-profdata at $profdata after adding llvm-tools"
fi

# build DIR PROFILE FLAG LOG: cargo build of the binary in PROFILE (release, dev) into DIR,
# with one more rustc flag.
build() {
    log "cargo build --profile $2 ($3) into $1, log: $4"
    (cd "$REPO_ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$3" CARGO_TARGET_DIR=$1 \
        cargo build --profile "$2" --locked --bin switchyard) >"$4" 2>&1 ||
        { tail -n 30 "$4" >&2; die "cargo build ($3) failed"; }
}

mkdir -p "$TARGET_DIR"
rm -rf "$PROFILE_DIR"
mkdir -p "$PROFILE_DIR"

# 2. The instrumented build.
if $CHECK; then
    build "$INSTRUMENTED_DIR" dev "-Cprofile-generate=$PROFILE_DIR" "$INSTRUMENTED_DIR.log"
    instrumented=$INSTRUMENTED_DIR/debug/switchyard
else
    build "$INSTRUMENTED_DIR" release "-Cprofile-generate=$PROFILE_DIR" "$INSTRUMENTED_DIR.log"
    instrumented=$INSTRUMENTED_DIR/release/switchyard
fi

# 3. Training on both protocols.
for engine in postgres mysql; do
    bash "$REPO_ROOT/scripts/pgo-train.sh" "$engine" "$instrumented" "$PROFILE_DIR"
done

# 4. One profile.
"$profdata" merge -o "$PROFILE_DIR/merged.profdata" "$PROFILE_DIR"/*.profraw ||
    die "llvm-profdata merge failed"
log "profile: $PROFILE_DIR/merged.profdata"
if $CHECK; then
    log "check done: the training ran on both protocols and its profile merged"
    exit 0
fi

# 5. The build laid out by it.
build "$FINAL_DIR" release "-Cprofile-use=$PROFILE_DIR/merged.profdata" "$FINAL_DIR.log"
bin=$FINAL_DIR/release/switchyard
"$bin" --version >/dev/null || die "$bin does not run"
log "built $bin"
echo "$bin"
