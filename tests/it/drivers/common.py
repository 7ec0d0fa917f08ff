"""What every driver script shares: where to connect, how checks run and report.

A script is run by tests/drivers.rs twice: first straight against the primary
(SY_TARGET=server, proving the script right), then through switchyard
(SY_TARGET=proxy). Connection settings come from the environment:
SY_HOST, SY_PORT, SY_USER, SY_PASSWORD, SY_DB, and optionally SY_SSLMODE.
Each check prints one line; a failure prints what went wrong and the script
exits 1 after running the rest. A check listed in KNOWN_FAILURES (a defect
reported, not fixed yet) still runs through the proxy: its failure is printed
with the reason and does not fail the script, and once it passes the script
fails, asking for the entry to be removed.
"""

import faulthandler
import os
import sys
import time
import traceback

HOST = os.environ.get("SY_HOST", "127.0.0.1")
PORT = int(os.environ.get("SY_PORT", "0"))
USER = os.environ.get("SY_USER", "app")
PASSWORD = os.environ.get("SY_PASSWORD", "app-secret")
DB = os.environ.get("SY_DB", "")
SSLMODE = os.environ.get("SY_SSLMODE", "")
# "proxy": through switchyard (reads go to replicas); "server": the primary itself.
TARGET = os.environ.get("SY_TARGET", "proxy")
THROUGH_PROXY = TARGET == "proxy"
# Whether a client's statements all run on one server connection: against the server, and
# through a proxy in session mode. In transaction mode the connection, and so the server's
# pid / connection id, changes between transactions.
ONE_CONNECTION = not THROUGH_PROXY or os.environ.get("SY_POOL_MODE") == "session"

# A check still running after this long prints every thread's stack and ends the script.
CHECK_TIMEOUT = 60

# check name -> why it fails through the proxy (filled by each script).
KNOWN_FAILURES = {}


class CheckFailed(AssertionError):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")


def run_checks(driver, checks):
    """Runs each (name, function) in order; returns the exit status."""
    failed = []
    print(f"{driver}: target={TARGET} {HOST}:{PORT} db={DB}", flush=True)
    for name, check in checks:
        known = KNOWN_FAILURES.get(name) if THROUGH_PROXY else None
        started = time.monotonic()
        faulthandler.dump_traceback_later(CHECK_TIMEOUT, exit=True, file=sys.stdout)
        try:
            check()
        except Exception as e:  # every failure is reported, then the next check runs
            if known:
                print(f"  KNOWN FAILURE {name}: {type(e).__name__}: {e}\n    (not counted: {known})", flush=True)
                continue
            failed.append(name)
            print(f"  FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            if known:
                failed.append(name)
                print(f"  FAIL {name}: listed as a known failure ({known}) but passes now: "
                      "remove it from KNOWN_FAILURES", flush=True)
                continue
            print(f"  ok   {name} ({time.monotonic() - started:.2f}s)", flush=True)
        finally:
            faulthandler.cancel_dump_traceback_later()
    if failed:
        print(f"{driver}: {len(failed)} of {len(checks)} checks FAILED: {', '.join(failed)}", flush=True)
        return 1
    print(f"{driver}: all {len(checks)} checks passed", flush=True)
    return 0
