//! What `GetAgentVersion` reports about the device.

use std::path::Path;

use wendy_proto::agent::GetAgentVersionResponse;

/// Features this agent offers, reported in `featureset`.
pub const FEATURES: &[&str] = &["provisioning", "mtls", "ml-dsa-65", "unprovision", "crl", "renewal"];

/// Reads the first line of a small text file, or `""` if absent.
fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().chars().take(200).collect()))
        .unwrap_or_default()
}

/// The response, with `public_key` (PEM) if the device is provisioned.
pub fn version(os_version_file: &Path, device_type_file: &Path, public_key: Option<String>) -> GetAgentVersionResponse {
    GetAgentVersionResponse {
        version: crate::VERSION.to_owned(),
        os_version: first_line(os_version_file),
        os: std::env::consts::OS.to_owned(),
        cpu_architecture: std::env::consts::ARCH.to_owned(),
        public_key: public_key.unwrap_or_default(),
        featureset: FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        device_type: first_line(device_type_file),
    }
}
