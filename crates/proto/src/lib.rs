//! The WendyOS wire contract.
//!
//! Package and message names, and field numbers, are those of the published
//! WendyOS protocol wherever we implement the same call. Our own additions
//! live in packages of their own (`wendyos.*`) or use field numbers >= 100;
//! `tests/conformance.rs` compares every shared element with the published
//! definitions.
#![allow(clippy::large_enum_variant, missing_docs)]

/// The published agent packages, nested as their names are: the published
/// v1 container service refers to types of the root package (its
/// `shared.proto` declares none), which prost reaches as
/// `super::super::super::super::X`, so `wendy.agent.services.v1` must sit
/// four modules below the crate root. Use [`agent`] and [`agent_v2`].
#[doc(hidden)]
pub mod wendy {
    pub mod agent {
        pub mod services {
            /// `wendy.agent.services.v1`.
            pub mod v1 {
                tonic::include_proto!("wendy.agent.services.v1");
            }
            /// `wendy.agent.services.v2`.
            pub mod v2 {
                tonic::include_proto!("wendy.agent.services.v2");
            }
        }
    }
}

/// `wendy.agent.services.v1`: the device agent's published services.
pub use wendy::agent::services::v1 as agent;

/// `wendy.agent.services.v2`: the same agent, version 2 of the published
/// services, served side by side with v1.
pub use wendy::agent::services::v2 as agent_v2;

/// The root package: the published v1 `shared.proto` (no `package`
/// statement) with the v1 container service's `RestartPolicy`,
/// `AppContainer` and their enums.
pub mod agent_shared {
    tonic::include_proto!("_");
}

// Where the generated v1 code looks for the root package's types.
#[doc(hidden)]
pub use agent_shared::{AppContainer, AppRunningState, RestartPolicy, RestartPolicyMode};

/// `wendyos.agent.v1`: the agent's own calls (not in the published protocol).
pub mod agent_admin {
    tonic::include_proto!("wendyos.agent.v1");
}

/// `wendycloud.v1`: the certificate service pki-core's wendy frontend serves.
pub mod cloud {
    tonic::include_proto!("wendycloud.v1");
}

/// `wendyos.pkicore.v1`: pki-core's own administration and CRL services.
pub mod pkicore {
    tonic::include_proto!("wendyos.pkicore.v1");
}

/// Metadata key under which a prost-encoded [`cloud::CertificateError`]
/// travels with a failed call whose response has no `error` field: pki-core's
/// other `CertificateService` calls, and the agent's `StartProvisioning`
/// when it forwards pki-core's refusal. See [`refusal`].
pub const CERTIFICATE_ERROR_METADATA_KEY: &str = "wendycloud-certificate-error-bin";

pub mod refusal;

/// Largest gRPC message any WendyOS endpoint accepts or sends. Certificates
/// and CSRs are a few KiB even with ML-DSA-87; 256 KiB leaves room for CA
/// bundles and CRLs while refusing oversized requests early.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A generated gRPC server or client with both message-size limits set to
/// [`MAX_MESSAGE_BYTES`]: `limited!(WendyAgentServiceServer::new(svc))`,
/// `limited!(CertificateServiceClient::new(channel))`. Every endpoint and
/// client of the workspace sets its limits through this.
#[macro_export]
macro_rules! limited {
    ($generated:expr) => {
        $generated
            .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::MAX_MESSAGE_BYTES)
    };
}

/// Facts of the WendyOS contract that every binary shares: ports, names,
/// mDNS records, environment variables. Defined here once.
pub mod contract {
    /// The agent's plaintext gRPC port, open only while unprovisioned.
    pub const DEFAULT_AGENT_PORT: u16 = 50051;

    /// Environment variable that overrides [`DEFAULT_AGENT_PORT`].
    pub const AGENT_PORT_ENV: &str = "WENDY_AGENT_PORT";

    /// The agent's mTLS port: always the plaintext port plus one.
    pub const fn mtls_port(plaintext_port: u16) -> u16 {
        plaintext_port.wrapping_add(1)
    }

    /// The device's OCI registry for apps (mTLS only, provisioned devices
    /// with apps): `wendy run` pushes images here.
    pub const DEFAULT_REGISTRY_PORT: u16 = 5000;

    /// Environment variable that overrides [`DEFAULT_REGISTRY_PORT`] on the
    /// agent.
    pub const REGISTRY_PORT_ENV: &str = "WENDY_REGISTRY_PORT";

    /// pki-core's wendy frontend port.
    pub const DEFAULT_PKICORE_PORT: u16 = 50051;

    /// pki-core's development API key (`serve all --dev`). Never use it in
    /// production.
    pub const DEV_API_KEY: &str = "dev-secret-change-me";

    /// The gRPC metadata key carrying `Bearer <api key>`.
    pub const AUTHORIZATION_HEADER: &str = "authorization";

    /// The DNS-SD service type devices advertise.
    pub const MDNS_SERVICE_TYPE: &str = "_wendyos._udp";

    /// TXT key: the device's stable id.
    pub const TXT_ID: &str = "id";
    /// TXT key: the device's name.
    pub const TXT_NAME: &str = "name";
    /// TXT key: the device's display name.
    pub const TXT_DISPLAYNAME: &str = "displayname";
    /// TXT key present as `tls=true` once the advertised port is mTLS.
    pub const TXT_TLS: &str = "tls";
}
