//! The demo, run as a newcomer runs it: `switchyard demo --engine … --duration 6s` starts
//! real servers, moves an application from the old to the new cluster under load, and must
//! exit 0 (no error, no lost write, the cutover switched).

use std::process::Command;
use std::sync::Mutex;

/// One demo at a time: each runs four servers, switchyard and sixteen sessions, and two at
/// once on a small machine would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn demo(engine: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--engine", engine, "--duration", "6s"])
        .output()
        .expect("run switchyard demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "switchyard demo --engine {engine} exited with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    for expected in [
        "switched old -> new",
        "all found on new-writer",
        "transaction mode: 16 client sessions over",
        "PASS",
    ] {
        assert!(
            stdout.contains(expected),
            "the report lacks {expected:?}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("removed."),
        "the demo did not clean up:\n{stdout}"
    );
}

#[test]
fn postgres_demo_moves_the_application_with_no_error_and_no_lost_write() {
    demo("postgres");
}

#[test]
fn mysql_demo_moves_the_application_with_no_error_and_no_lost_write() {
    demo("mysql");
}
