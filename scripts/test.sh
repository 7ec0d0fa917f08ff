#!/usr/bin/env bash
# test.sh - the one test command: install what the tests need, run every test target, and
# check every configuration in config/ with the switchyard binary. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

export RUST_BACKTRACE=1

# The integration tests initdb and base-backup PostgreSQL clusters in the temp dir: about a
# thousand small files each, which takes ~4x longer on disk than on tmpfs. Use /dev/shm when
# the caller chose no TMPDIR and it has room (each cluster needs ~100 MB).
shm_free_kb=$(df --output=avail -k /dev/shm 2>/dev/null | awk 'NR == 2 { print $1 }') || true
if [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm && ${shm_free_kb:-0} -gt 2000000 ]]; then
    export TMPDIR=/dev/shm
fi

# Every test runs with sessions in transaction mode (the default pool mode); the proxy,
# driver and cutover tests run again in session mode (tests/it/support/proxy.rs applies
# SWITCHYARD_TEST_POOL_MODE to every config that does not choose a mode itself).
cargo test --workspace --all-targets
SWITCHYARD_TEST_POOL_MODE=session cargo test --test it -- \
    postgres:: mysql:: drivers:: cutover_ fleet:: consistency::

shopt -s nullglob
for config in config/*.toml; do
    echo "check $config"
    cargo run --quiet -- check -c "$config"
done

# Every file under deploy/: linted, rendered, validated, unit-tested (see the script).
bash scripts/check-deploy.sh

# The profile-guided build of the binary that ships (scripts/build-release.sh, which the
# container image runs): its training run on both protocols, with a dev-profile
# instrumented binary, and the merge of its profile.
bash scripts/build-release.sh --check
