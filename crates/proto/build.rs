//! Compiles the .proto files with protox (pure Rust), so neither cross builds
//! nor Yocto builds need a host `protoc`.

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/wendy/agent/services/v1/wendy_agent_v1_service.proto",
    "proto/wendy/agent/services/v1/wendy_provisioning_service.proto",
    "proto/wendy/agent/services/v1/shared.proto",
    "proto/wendy/agent/services/v1/wendy_agent_v1_container_service.proto",
    "proto/wendy/agent/services/v2/provisioning_service.proto",
    "proto/wendy/agent/services/v2/device_info_service.proto",
    "proto/wendy/agent/services/v2/os_update_service.proto",
    "proto/wendy/agent/services/v2/agent_update_service.proto",
    "proto/wendy/agent/services/v2/shared.proto",
    "proto/wendy/agent/services/v2/container_service.proto",
    "proto/wendyos/agent/v1/device_admin.proto",
    "proto/wendyos/agent/v1/os_update.proto",
    "proto/wendyos/agent/v1/apps.proto",
    "proto/wendycloud/v1/certificate_service.proto",
    "proto/wendyos/pkicore/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
