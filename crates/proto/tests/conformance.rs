//! Conformance of our wire contract (`crates/proto/proto/**`) with the
//! published WendyOS protocol.
//!
//! The published definitions are not part of the repository. They are read
//! from `../shared/reference/wendyos-proto/Proto` beside the repository root
//! (see `SOURCE.md` there), or from the directory in `WENDY_PROTO_REFERENCE`
//! (which `scripts/lib/common.sh` sets, falling back to the snapshot
//! `scripts/setup` keeps in the cache).
//! When they are missing the tests print a SKIP line and pass, except under
//! `WENDY_TEST_STRICT=1`, where they fail saying where they looked.
//!
//! The rules are in [`compare`]. Run with
//! `cargo test -p wendy-proto --test conformance`.

// A test crate root looks for modules beside it, hence the path.
#[path = "conformance/compare.rs"]
mod compare;

use std::path::{Path, PathBuf};

use compare::{compare, compile_dir};

/// Overrides where the published `Proto/` directory is.
const REFERENCE_ENV: &str = "WENDY_PROTO_REFERENCE";

/// This crate's directory as cargo or nextest names it at run time. Not
/// `env!("CARGO_MANIFEST_DIR")`: clones at other paths share cargo's target
/// directory, and an unchanged test binary would carry the path of the
/// clone that built it.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The published `Proto/` directory, or `None` (after a SKIP line) when it is
/// missing and skipping is allowed.
fn published_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(REFERENCE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../../shared/reference/wendyos-proto/Proto"));
    if dir.is_dir() {
        return Some(dir.canonicalize().unwrap_or(dir));
    }
    let why = format!(
        "the published WendyOS protocol is not at {} (set {REFERENCE_ENV} to its Proto/ directory)",
        dir.display()
    );
    if std::env::var_os("WENDY_TEST_STRICT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} (WENDY_TEST_STRICT=1 forbids skipping)");
    }
    eprintln!("SKIP {test}: {why}");
    None
}

fn compile(dir: &Path) -> prost_types::FileDescriptorSet {
    compile_dir(dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn our_protocol_conforms_to_the_published_one() {
    let Some(reference) = published_dir("our_protocol_conforms_to_the_published_one") else {
        return;
    };
    let published = compile(&reference);
    let ours = compile(&manifest_dir().join("proto"));
    let diffs = compare(&published, &ours);
    assert!(
        diffs.is_empty(),
        "{} difference(s) between crates/proto/proto and the published protocol at {}:\n{}\n",
        diffs.len(),
        reference.display(),
        diffs.join("\n")
    );
}

/// Copies the published file `name` into `into`, applying each
/// `(from, to)` replacement; each `from` must occur exactly once, so a change
/// of the reference cannot silently void the doctoring.
fn doctor(reference: &Path, into: &Path, name: &str, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(reference.join(name)).unwrap();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "{name}: `{from}` must occur exactly once");
        text = text.replace(from, to);
    }
    write(into, name, &text);
}

fn write(into: &Path, name: &str, text: &str) {
    let path = into.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_comparer_catches_doctored_definitions() {
    let Some(reference) = published_dir("the_comparer_catches_doctored_definitions") else {
        return;
    };
    let published = compile(&reference);
    assert_eq!(compare(&published, &published), Vec::<String>::new(), "the reference against itself");

    let doctored = tempfile::tempdir().unwrap();
    doctor(
        &reference,
        doctored.path(),
        "cloud/certificates.proto",
        &[
            // A field's type changes.
            ("  int32 id = 1;", "  string id = 1;"),
            // A field is renumbered.
            ("  string serial_number = 4;", "  string serial_number = 40;"),
            // An enum value is renamed.
            ("CERTIFICATE_STATUS_REVOKED = 2;", "CERTIFICATE_STATUS_WITHDRAWN = 2;"),
            // Explicit presence is dropped.
            ("  optional int32 asset_id = 3; ", "  int32 asset_id = 3; "),
            // Allowed: a field and an enum value of our own, numbered >= 100.
            ("message GetCaBundleRequest {}", "message GetCaBundleRequest { string label = 100; }"),
            ("CERTIFICATE_STATUS_EXPIRED = 3;", "CERTIFICATE_STATUS_EXPIRED = 3; CERTIFICATE_STATUS_HELD = 100;"),
        ],
    );
    doctor(
        &reference,
        doctored.path(),
        "wendy/agent/services/v2/provisioning_service.proto",
        &[
            // A method is added to a published service, with a new message in
            // the published package.
            (
                "    rpc IsProvisioned(IsProvisionedRequest) returns (IsProvisionedResponse);\n",
                "    rpc IsProvisioned(IsProvisionedRequest) returns (IsProvisionedResponse);\n    \
                 rpc Unprovision(UnprovisionRequest) returns (StartProvisioningResponse);\n",
            ),
            ("message IsProvisionedRequest {}", "message IsProvisionedRequest {}\nmessage UnprovisionRequest {}"),
            // A oneof is renamed.
            ("oneof response_type {", "oneof response {"),
        ],
    );
    // Something declared in the reserved published package.
    write(doctored.path(), "pkicore/v1/engine.proto", "syntax = \"proto3\";\npackage pkicore.v1;\nmessage Engine {}\n");

    let mut found = compare(&published, &compile(doctored.path()));
    found.sort();
    let mut expected = [
        ".pkicore.v1.Engine: message declared in `pkicore.v1`, a reserved published package; \
         our additions live in packages of our own",
        ".wendy.agent.services.v2.IsProvisionedResponse field 1: oneof response (ours) vs response_type (published)",
        ".wendy.agent.services.v2.IsProvisionedResponse field 2: oneof response (ours) vs response_type (published)",
        ".wendy.agent.services.v2.UnprovisionRequest: message not in the published package \
         `wendy.agent.services.v2`; our additions live in packages of our own",
        ".wendy.agent.services.v2.WendyProvisioningService method Unprovision: not published; \
         new methods belong in our own package",
        ".wendycloud.v1.Certificate field 1: type string (ours) vs int32 (published)",
        ".wendycloud.v1.Certificate field 3: proto3_optional false (ours) vs true (published)",
        ".wendycloud.v1.Certificate field 4: missing published field `serial_number`",
        ".wendycloud.v1.Certificate field 40: `serial_number` is not published; fields we add need numbers >= 100",
        ".wendycloud.v1.CertificateStatus value 2: name CERTIFICATE_STATUS_WITHDRAWN (ours) \
         vs CERTIFICATE_STATUS_REVOKED (published)",
    ]
    .map(str::to_owned);
    expected.sort();
    assert_eq!(found, expected, "found:\n{}", found.join("\n"));
}
