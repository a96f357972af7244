//! Finding workspace binaries. Integration tests of the wendy-tests crate
//! cannot use `CARGO_BIN_EXE_*` of other packages, so binaries are looked up
//! in the profile directory the test executable lives in
//! (`$CARGO_TARGET_DIR/<profile>/deps/<test>` → `$CARGO_TARGET_DIR/<profile>/<name>`).

use std::path::PathBuf;

/// The profile directory of the running test executable.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent");
    let dir = if deps.ends_with("deps") { deps.parent().unwrap_or(deps) } else { deps };
    dir.to_path_buf()
}

/// The path of workspace binary `name`, if built.
pub fn find(name: &str) -> Option<PathBuf> {
    let p = profile_dir().join(name);
    p.is_file().then_some(p)
}

/// The path of workspace binary `name`; panics with how to build it.
pub fn require(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!(
            "binary {name:?} not found in {}: run `cargo build --workspace` (same profile) before the tests",
            profile_dir().display()
        )
    })
}
