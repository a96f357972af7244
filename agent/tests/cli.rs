//! The binary's command line. (Also makes `cargo test --workspace` build
//! the debug `wendy-agent` that the wendy-tests harness runs.)

use std::process::Command;

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_wendy-agent")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(format!("wendy-agent {}", env!("CARGO_PKG_VERSION")).as_str()));
    let features = lines.next().and_then(|l| l.strip_prefix("features: ")).expect("a features line");
    if cfg!(feature = "rauc") {
        assert!(features.split(' ').any(|f| f == "rauc"), "{stdout}");
    } else {
        assert_eq!(features, "none", "{stdout}");
    }
    assert_eq!(lines.next(), None, "{stdout}");
}

#[test]
fn unknown_argument_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wendy-agent")).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
