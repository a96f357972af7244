//! `wendy device`: provision, version, info, unenroll.
//!
//! A device is named by `--device NAME|HOST[:PORT]` (PORT is the agent's
//! base, plaintext port; mTLS is PORT + 1) or found by mDNS when exactly
//! one is present. Provisioned devices are only spoken to over mTLS with
//! the CLI's certificate; plaintext is for unprovisioned devices only.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use wendy_identity::bundle::TrustBundle;
use wendy_identity::fingerprint::Fingerprint;
use wendy_identity::profile::device_common_name;
use wendy_identity::tls::{client_config, BundleServerVerifier};
use wendy_proto::agent::is_provisioned_response::Response as Provisioned;
use wendy_proto::agent::wendy_agent_service_client::WendyAgentServiceClient;
use wendy_proto::agent::wendy_provisioning_service_client::WendyProvisioningServiceClient;
use wendy_proto::agent::{
    GetAgentVersionRequest, GetAgentVersionResponse, IsProvisionedRequest, StartProvisioningRequest,
};
use wendy_proto::agent_admin::device_admin_service_client::DeviceAdminServiceClient;
use wendy_proto::agent_admin::UnprovisionRequest;
use wendy_proto::cloud::CreateAssetEnrollmentTokenRequest;
use wendy_proto::contract::{mtls_port, DEFAULT_AGENT_PORT, DEFAULT_PKICORE_PORT};

use crate::addr::HostPort;
use crate::cloud;
use crate::config::{Login, Store, CONFIG_FILE};
use crate::connect::{self, DEVICE_SERVER_NAME};
use crate::discover::{self, Found};
use crate::error::{CliError, Hints};

/// Lifetime of the asset enrolment token minted for provisioning.
const ASSET_TOKEN_TTL_SECONDS: i32 = 600;

/// How a device was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Unprovisioned device, plaintext port.
    Plaintext,
    /// Provisioned device, mTLS on port + 1.
    Mtls,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plaintext => "plaintext",
            Self::Mtls => "mTLS",
        })
    }
}

/// Which device, and what we know about it before connecting.
#[derive(Clone, Debug)]
pub struct Target {
    /// Base (plaintext) address.
    pub base: HostPort,
    /// Name, if known.
    pub name: Option<String>,
    /// What mDNS said about TLS, if we asked it.
    pub advertised_tls: Option<bool>,
}

/// Finds the device `spec` names, or the only one on mDNS.
pub async fn resolve(store: &Store, spec: Option<&str>, timeout: Duration) -> Result<Target, CliError> {
    match spec {
        Some(s) if HostPort::looks_like_address(s) => {
            let base = HostPort::parse(s, DEFAULT_AGENT_PORT).map_err(|e| CliError::Usage(e.to_string()))?;
            let name = store.devices().devices.get(&base.to_string()).and_then(|d| d.name.clone());
            Ok(Target { base, name, advertised_tls: None })
        }
        Some(name) => {
            let wanted = name.to_owned();
            let found = discover::browse_async(timeout, move |f| f.matches(&wanted)).await?;
            if let Some(f) = found.iter().find(|f| f.matches(name)) {
                return target_from(f);
            }
            if let Some((base, _)) = store.devices().by_name(name) {
                return Ok(Target { base, name: Some(name.to_owned()), advertised_tls: None });
            }
            Err(CliError::DeviceSelection(format!(
                "no device named {name:?} answered on mDNS within {}s and none is remembered; run `wendy discover`, or pass --device HOST[:PORT]",
                timeout.as_secs()
            )))
        }
        None => {
            let found = discover::browse_async(timeout, |_| false).await?;
            match found.as_slice() {
                [only] => target_from(only),
                [] => Err(CliError::DeviceSelection(format!(
                    "no WendyOS device found on mDNS within {}s; pass --device HOST[:PORT]",
                    timeout.as_secs()
                ))),
                many => Err(CliError::Usage(format!(
                    "{} devices found ({}); choose one with --device NAME|HOST[:PORT]",
                    many.len(),
                    many.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

fn target_from(f: &Found) -> Result<Target, CliError> {
    let base =
        f.base_addr().ok_or_else(|| CliError::DeviceSelection(format!("device {} advertised no address", f.name)))?;
    Ok(Target { base, name: Some(f.name.clone()), advertised_tls: Some(f.tls) })
}

/// A live connection to a device.
#[derive(Debug)]
pub struct Connection {
    /// The channel.
    pub channel: Channel,
    /// How.
    pub mode: Mode,
    /// The address actually dialled.
    pub addr: HostPort,
    /// The stored login, when mTLS was used.
    pub login: Option<Login>,
}

impl Connection {
    fn agent(&self) -> WendyAgentServiceClient<Channel> {
        wendy_proto::limited!(WendyAgentServiceClient::new(self.channel.clone()))
    }

    fn provisioning(&self) -> WendyProvisioningServiceClient<Channel> {
        wendy_proto::limited!(WendyProvisioningServiceClient::new(self.channel.clone()))
    }
}

/// Whether `addr` accepts TCP connections (a cheap probe before choosing
/// plaintext or mTLS).
async fn tcp_open(addr: &HostPort) -> bool {
    let dial = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port));
    matches!(tokio::time::timeout(connect::CONNECT_TIMEOUT, dial).await, Ok(Ok(_)))
}

fn is_refused(e: &CliError) -> bool {
    matches!(e, CliError::Unreachable { .. })
}

async fn connect_plain(base: &HostPort) -> Result<Channel, CliError> {
    connect::plaintext(base).await.map_err(|e| cloud::connect_error("device", base, &e))
}

/// The rustls client config for mTLS to the device at `base`: the stored
/// login's certificate, the CA bundle as trust, and, for a device we
/// provisioned, its own asset's certificate name as a pin. The gRPC
/// connections and the registry push ([`crate::push`]) share it.
pub(crate) fn mtls_config(store: &Store, base: &HostPort) -> Result<(rustls::ClientConfig, Login), CliError> {
    let login = store.valid_login().map_err(|e| match e {
        CliError::NotLoggedIn { .. } | CliError::CertificateExpired { .. } => CliError::Unauthenticated {
            context: format!("device at {base} is provisioned and only talks mTLS"),
            message: e.to_string(),
            hint: None,
        },
        other => other,
    })?;
    let bundle = TrustBundle::from_pem(&login.ca_pem)
        .map_err(|e| CliError::Config { path: store.path(crate::config::CA_FILE), reason: e.to_string() })?;
    // A device we provisioned must present its own asset's certificate, not
    // any certificate from our CA (another device answering at its address).
    let mut verifier = BundleServerVerifier::new(bundle);
    if let Some(asset) = store.devices().devices.get(&base.to_string()).and_then(|d| d.asset_id) {
        verifier = verifier.expecting_common_name(device_common_name(login.config.organization_id, asset));
    }
    let config = client_config(Arc::new(verifier), Some(&login.credentials))
        .map_err(|e| CliError::identity("building the TLS config", e))?;
    Ok((config, login))
}

/// Connects over mTLS to `base`'s port + 1 with the stored login.
async fn connect_mtls(store: &Store, base: &HostPort) -> Result<(Channel, HostPort, Login), CliError> {
    let addr = base.with_port(mtls_port(base.port));
    let (config, login) = mtls_config(store, base)?;
    let channel = connect::tls(&addr, config, DEVICE_SERVER_NAME).await.map_err(|e| {
        match cloud::connect_error("device", &addr, &e) {
            CliError::Untrusted { what, addr, reason, .. } => {
                let wrong_device = reason.contains("not the expected");
                CliError::Untrusted {
                what,
                addr,
                reason,
                hint: Some(if wrong_device {
                    "another device answers at this address than the one you provisioned; check the address (or `wendy discover`)".into()
                } else {
                    "its certificate does not chain to your ca.pem: was it provisioned by another pki-core? Log in to that one with `wendy auth login-local`".into()
                }),
                }
            }
            other => other,
        }
    })?;
    Ok((channel, addr, login))
}

/// Connects over mTLS only, for calls no plaintext port serves (OS
/// updates): no guess from the advertisement or memory, whose plaintext
/// probe a NAT or port forward can answer for a port the device has closed.
pub(crate) async fn connect_mtls_only(store: &Store, target: &Target) -> Result<Connection, CliError> {
    let (channel, addr, login) = connect_mtls(store, &target.base).await?;
    Ok(Connection { channel, mode: Mode::Mtls, addr, login: Some(login) })
}

/// Connects over mTLS only ([`connect_mtls_only`]) for calls that
/// `served` names, which only a provisioned device serves; when mTLS fails
/// and the plaintext port answers, says the device is not provisioned.
pub(crate) async fn connect_provisioned(store: &Store, target: &Target, served: &str) -> Result<Connection, CliError> {
    let mtls_error = match connect_mtls_only(store, target).await {
        Ok(conn) => return Ok(conn),
        Err(e) => e,
    };
    // Say why: an unprovisioned device answers on plaintext only.
    match connect(store, target).await {
        Ok(conn) if conn.mode == Mode::Plaintext => Err(CliError::Remote {
            context: format!("device at {}", conn.addr),
            message: format!("it is not provisioned; {served} are served only over mTLS"),
            hint: Some("provision it first with `wendy device provision`".into()),
        }),
        _ => Err(mtls_error),
    }
}

/// Connects to the device the way its state requires: mTLS if it says (or
/// we remember) it is provisioned, plaintext otherwise, and the other way
/// if the expected port is closed.
pub async fn connect(store: &Store, target: &Target) -> Result<Connection, CliError> {
    let base = &target.base;
    let remembered = store.devices().devices.get(&base.to_string()).map(|d| d.provisioned);
    let prefer_tls = target.advertised_tls.or(remembered).unwrap_or(false);
    let mtls_addr = base.with_port(mtls_port(base.port));
    let conn = if prefer_tls && tcp_open(&mtls_addr).await {
        let (channel, addr, login) = connect_mtls(store, base).await?;
        Connection { channel, mode: Mode::Mtls, addr, login: Some(login) }
    } else {
        match connect_plain(base).await {
            Ok(channel) => Connection { channel, mode: Mode::Plaintext, addr: base.clone(), login: None },
            // Plaintext closed but mTLS open: provisioned since we last looked.
            Err(e) if is_refused(&e) && !prefer_tls && tcp_open(&mtls_addr).await => {
                let (channel, addr, login) = connect_mtls(store, base).await?;
                Connection { channel, mode: Mode::Mtls, addr, login: Some(login) }
            }
            Err(e) => return Err(e),
        }
    };
    let provisioned = conn.mode == Mode::Mtls;
    if remembered != Some(provisioned) {
        // Only a cache: failing to write it must not fail the command.
        let _ = store.remember_device(base, |d| {
            d.provisioned = provisioned;
            if d.name.is_none() {
                d.name = target.name.clone();
            }
        });
    }
    Ok(conn)
}

/// The hints for a refusal by the device at the other end of `conn`.
pub(crate) fn hints(conn: &Connection) -> Hints {
    device_hints(conn)
}

fn device_hints(conn: &Connection) -> Hints {
    let role = conn.login.as_ref().and_then(|l| l.info.role).map(|r| r.name()).unwrap_or("unknown");
    Hints {
        auth: Some("check `wendy auth status`; the device must trust the CA that issued your certificate".into()),
        permission: Some(format!(
            "your certificate's role is {role}; ask an Owner, or log in again with `wendy auth login-local --role Admin` using an API key that allows it"
        )),
        unavailable: None,
    }
}

/// The `device version` report.
#[derive(Debug, serde::Serialize)]
pub struct VersionReport {
    /// Address dialled.
    pub address: String,
    /// How.
    pub mode: Mode,
    /// Agent version.
    pub version: String,
    /// OS version.
    pub os_version: String,
    /// OS.
    pub os: String,
    /// CPU architecture.
    pub cpu_architecture: String,
    /// Device type.
    pub device_type: String,
    /// Features.
    pub featureset: Vec<String>,
}

impl VersionReport {
    fn new(conn: &Connection, v: GetAgentVersionResponse) -> Self {
        let c = |s: String| crate::error::sanitize(&s);
        Self {
            address: conn.addr.to_string(),
            mode: conn.mode,
            version: c(v.version),
            os_version: c(v.os_version.unwrap_or_default()),
            os: c(v.os),
            cpu_architecture: c(v.cpu_architecture),
            device_type: c(v.device_type.unwrap_or_default()),
            featureset: v.featureset.into_iter().map(c).collect(),
        }
    }
}

impl fmt::Display for VersionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device:        {} ({})", self.address, self.mode)?;
        writeln!(f, "agent version: {}", self.version)?;
        writeln!(f, "os:            {} {}", self.os, self.os_version)?;
        writeln!(f, "architecture:  {}", self.cpu_architecture)?;
        write!(f, "device type:   {}", or_dash(&self.device_type))
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub(crate) async fn get_version(conn: &Connection) -> Result<GetAgentVersionResponse, CliError> {
    conn.agent()
        .get_agent_version(GetAgentVersionRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| CliError::from_status(format!("asking {} for its version", conn.addr), &s, &device_hints(conn)))
}

/// `wendy device version`.
pub async fn version(store: &Store, target: &Target) -> Result<VersionReport, CliError> {
    let conn = connect(store, target).await?;
    let v = get_version(&conn).await?;
    Ok(VersionReport::new(&conn, v))
}

/// The `device info` report.
#[derive(Debug, serde::Serialize)]
pub struct InfoReport {
    /// Name, if known.
    pub name: Option<String>,
    /// Whether it is provisioned.
    pub provisioned: bool,
    /// pki-core it enrolled with.
    pub cloud_host: Option<String>,
    /// Organisation.
    pub organization_id: Option<i32>,
    /// Asset id.
    pub asset_id: Option<i32>,
    /// Version details.
    #[serde(flatten)]
    pub version: VersionReport,
}

impl fmt::Display for InfoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "name:          {}", self.name.as_deref().unwrap_or("-"))?;
        writeln!(f, "provisioned:   {}", self.provisioned)?;
        if self.provisioned {
            writeln!(f, "pki-core:      {}", self.cloud_host.as_deref().unwrap_or("-"))?;
            writeln!(
                f,
                "org / asset:   {} / {}",
                self.organization_id.unwrap_or_default(),
                self.asset_id.unwrap_or_default()
            )?;
        }
        write!(f, "{}", self.version)
    }
}

/// `wendy device info`.
pub async fn info(store: &Store, target: &Target) -> Result<InfoReport, CliError> {
    let conn = connect(store, target).await?;
    let v = get_version(&conn).await?;
    let p = conn
        .provisioning()
        .is_provisioned(IsProvisionedRequest {})
        .await
        .map_err(|s| {
            CliError::from_status(format!("asking {} whether it is provisioned", conn.addr), &s, &device_hints(&conn))
        })?
        .into_inner();
    let (provisioned, cloud_host, org, asset) = match p.response {
        Some(Provisioned::Provisioned(p)) => {
            (true, Some(crate::error::sanitize(&p.cloud_host)), Some(p.organization_id), Some(p.asset_id))
        }
        _ => (false, None, None, None),
    };
    Ok(InfoReport {
        name: target.name.clone(),
        provisioned,
        cloud_host,
        organization_id: org,
        asset_id: asset,
        version: VersionReport::new(&conn, v),
    })
}

/// The `device unenroll` report.
#[derive(Debug, serde::Serialize)]
pub struct UnenrollReport {
    /// Base address.
    pub address: String,
    /// Whether the plaintext port answered afterwards.
    pub plaintext_reopened: bool,
}

impl fmt::Display for UnenrollReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device at {} unenrolled", self.address)?;
        if self.plaintext_reopened {
            write!(f, "; it is unprovisioned and answering on its plaintext port again")
        } else {
            write!(f, "; its plaintext port has not answered yet")
        }
    }
}

/// `wendy device unenroll`.
pub async fn unenroll(store: &Store, target: &Target) -> Result<UnenrollReport, CliError> {
    let conn = connect(store, target).await?;
    if conn.mode == Mode::Plaintext {
        return Err(CliError::Remote {
            context: format!("device at {}", conn.addr),
            message: "it is not provisioned; there is nothing to unenroll".into(),
            hint: Some("provision it with `wendy device provision`".into()),
        });
    }
    wendy_proto::limited!(DeviceAdminServiceClient::new(conn.channel.clone()))
        .unprovision(UnprovisionRequest {})
        .await
        .map_err(|s| {
            CliError::from_status(format!("unenrolling the device at {}", conn.addr), &s, &device_hints(&conn))
        })?;
    let _ = store.remember_device(&target.base, |d| {
        d.provisioned = false;
        d.asset_id = None;
    });
    let reopened = wait_for(Duration::from_secs(10), || async {
        let ch = connect::plaintext(&target.base).await.ok()?;
        let c = Connection { channel: ch, mode: Mode::Plaintext, addr: target.base.clone(), login: None };
        get_version(&c).await.ok()
    })
    .await
    .is_some();
    Ok(UnenrollReport { address: target.base.to_string(), plaintext_reopened: reopened })
}

async fn wait_for<T, F, Fut>(limit: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = attempt().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Options of `wendy device provision`.
#[derive(Debug)]
pub struct ProvisionOptions {
    /// pki-core as the device reaches it.
    pub cloud: String,
    /// pki-core as the CLI reaches it; defaults to the logged-in address.
    pub cli_cloud: Option<String>,
    /// API key (never printed).
    pub api_key: String,
    /// Device name.
    pub name: String,
    /// Organisation.
    pub organization_id: i32,
    /// How long to wait for mTLS.
    pub wait: Duration,
}

/// The `device provision` report.
#[derive(Debug, serde::Serialize)]
pub struct ProvisionReport {
    /// Name given.
    pub name: String,
    /// mTLS address now serving.
    pub address: String,
    /// Organisation.
    pub organization_id: i32,
    /// Asset id pki-core assigned.
    pub asset_id: i32,
    /// pki-core as the device reaches it.
    pub cloud_host: String,
    /// CA fingerprint the device pinned.
    pub ca_fingerprint: String,
    /// Agent version over mTLS.
    pub agent_version: String,
}

impl fmt::Display for ProvisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {:?} provisioned: asset {} in organization {}, enrolled with {} (CA {}); answering over mTLS at {} (agent {})",
            self.name,
            self.asset_id,
            self.organization_id,
            self.cloud_host,
            self.ca_fingerprint,
            self.address,
            self.agent_version
        )
    }
}

/// `wendy device provision`.
pub async fn provision(store: &Store, target: &Target, opts: ProvisionOptions) -> Result<ProvisionReport, CliError> {
    // The CLI's own certificate is needed to check the result over mTLS.
    let login = store.valid_login()?;
    let pin: Fingerprint = login.config.ca_fingerprint.parse().map_err(|e: wendy_identity::Error| {
        CliError::Config { path: store.path(CONFIG_FILE), reason: e.to_string() }
    })?;
    let device_cloud =
        HostPort::parse(&opts.cloud, DEFAULT_PKICORE_PORT).map_err(|e| CliError::Usage(e.to_string()))?;
    let cli_cloud =
        HostPort::parse(opts.cli_cloud.as_deref().unwrap_or(&login.config.cloud_host), DEFAULT_PKICORE_PORT)
            .map_err(|e| CliError::Usage(e.to_string()))?;

    // The device must be unprovisioned: plaintext, and saying so.
    let base = &target.base;
    let plain = match connect_plain(base).await {
        Ok(ch) => Connection { channel: ch, mode: Mode::Plaintext, addr: base.clone(), login: None },
        Err(e) => {
            if tcp_open(&base.with_port(mtls_port(base.port))).await {
                return Err(already_provisioned(base));
            }
            return Err(e);
        }
    };
    let state = plain
        .provisioning()
        .is_provisioned(IsProvisionedRequest {})
        .await
        .map_err(|s| CliError::from_status(format!("asking {base} whether it is provisioned"), &s, &Hints::default()))?
        .into_inner();
    if matches!(state.response, Some(Provisioned::Provisioned(_))) {
        return Err(already_provisioned(base));
    }

    let mut cloud_client = cloud::connect(&cli_cloud, pin, None).await?;
    let req = CreateAssetEnrollmentTokenRequest {
        organization_id: opts.organization_id,
        name: opts.name.clone(),
        ttl_seconds: ASSET_TOKEN_TTL_SECONDS,
    };
    let token = cloud_client
        .create_asset_enrollment_token(cloud::with_api_key(req, &opts.api_key)?)
        .await
        .map_err(|s| CliError::from_status("pki-core refused to mint an enrolment token", &s, &cloud::api_key_hints()))?
        .into_inner();

    plain
        .provisioning()
        .start_provisioning(StartProvisioningRequest {
            organization_id: opts.organization_id,
            enrollment_token: token.enrollment_token,
            cloud_host: device_cloud.to_string(),
            asset_id: token.asset_id,
            ca_fingerprint: pin.to_string(),
            allow_plaintext_enrollment: false,
            device_name: opts.name.clone(),
        })
        .await
        .map_err(|s| {
            CliError::from_status(
                format!("the device at {base} could not provision itself"),
                &s,
                &Hints {
                    unavailable: Some(format!(
                        "can the device reach pki-core at {device_cloud}? `--cloud` must be an address the device can reach"
                    )),
                    ..Default::default()
                },
            )
        })?;
    drop(plain);

    let _ = store.remember_device(base, |d| {
        d.provisioned = true;
        d.name = Some(opts.name.clone());
        d.asset_id = Some(token.asset_id);
    });
    let answered = wait_for(opts.wait, || async {
        let (ch, addr, login) = connect_mtls(store, base).await.ok()?;
        let c = Connection { channel: ch, mode: Mode::Mtls, addr, login: Some(login) };
        get_version(&c).await.ok().map(|v| (c.addr.clone(), v))
    })
    .await;
    let (addr, v) = answered.ok_or_else(|| CliError::Unreachable {
        what: "device",
        addr: base.with_port(mtls_port(base.port)).to_string(),
        reason: format!("it accepted the enrolment but did not answer over mTLS within {}s", opts.wait.as_secs()),
        hint: Some("check the agent's log (journalctl -u wendy-agent), then `wendy device info`".into()),
    })?;
    Ok(ProvisionReport {
        name: opts.name,
        address: addr.to_string(),
        organization_id: opts.organization_id,
        asset_id: token.asset_id,
        cloud_host: device_cloud.to_string(),
        ca_fingerprint: pin.to_string(),
        agent_version: crate::error::sanitize(&v.version),
    })
}

fn already_provisioned(base: &HostPort) -> CliError {
    CliError::Remote {
        context: format!("device at {base}"),
        message: "it is already provisioned".into(),
        hint: Some("run `wendy device unenroll` first to provision it again".into()),
    }
}
