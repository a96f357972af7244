//! The binary's command line. (Also makes `cargo test --workspace` build
//! the debug `wendy-agent` that the wendy-tests harness runs.)

use std::process::Command;

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_wendy-agent")).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("wendy-agent {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_argument_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wendy-agent")).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
