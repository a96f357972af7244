//! `pkicore`: the WendyOS PKI engine and its admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use pkicore::config::Config;
use pkicore::serve::ServeOptions;
use wendy_proto::cloud::certificate_service_client::CertificateServiceClient;
use wendy_proto::pkicore::api_key_admin_service_client::ApiKeyAdminServiceClient;
use wendy_proto::pkicore::ca_admin_service_client::CaAdminServiceClient;
use wendy_proto::pkicore::code_signing_admin_service_client::CodeSigningAdminServiceClient;
use wendy_proto::pkicore::credential_admin_service_client::CredentialAdminServiceClient;

#[derive(Parser, Debug)]
#[command(name = "pkicore", version, about = "pki-core: the self-hosted WendyOS PKI engine")]
struct Cli {
    /// Data directory: database, CA keys, admin socket.
    #[arg(long, global = true, env = pkicore::DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine.
    #[command(subcommand)]
    Serve(Serve),
    /// Certificate authorities.
    #[command(subcommand)]
    Ca(Ca),
    /// API keys.
    #[command(subcommand)]
    Apikey(ApiKey),
    /// Enrolment tokens.
    #[command(subcommand)]
    Token(Token),
    /// Issued certificates.
    #[command(subcommand)]
    Cert(Cert),
    /// Operator-provisioned credentials.
    #[command(subcommand)]
    Credential(Credential),
    /// Code signing for OS update bundles (the code-signing CA).
    #[command(subcommand)]
    Codesign(Codesign),
}

#[derive(Args, Debug)]
struct Listen {
    /// Frontend listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve plaintext gRPC (compat only; tokens and keys cross in the clear).
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(Subcommand, Debug)]
enum Serve {
    /// Engine, wendy frontend and local admin API.
    All {
        /// Development mode: accept the well-known Owner API key.
        #[arg(long)]
        dev: bool,
        /// Extra DNS names for the frontend's server certificate.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        #[command(flatten)]
        listen: Listen,
    },
    /// The wendy frontend (and local admin API) from a config file.
    Wendy {
        /// YAML configuration (see config.example.yaml).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        listen: Listen,
    },
}

#[derive(Subcommand, Debug)]
enum Ca {
    /// Create an additional CA (it joins its purpose's bundle; it does not issue).
    Create {
        /// device (default) or codesign.
        #[arg(long, default_value = "")]
        purpose: String,
        /// Subject common name.
        #[arg(long, default_value = "")]
        name: String,
        /// ml-dsa-65 (default), ml-dsa-44, ml-dsa-87, ecdsa-p256.
        #[arg(long, default_value = "")]
        algorithm: String,
        /// Validity in days (default ten years).
        #[arg(long, default_value_t = 0)]
        validity_days: i64,
    },
    /// List every CA.
    List,
    /// Rotate a CA (default: the issuing one of --purpose): same subject, new key.
    Rotate {
        /// CA id or fingerprint.
        #[arg(long, default_value = "")]
        ca: String,
        /// Without --ca, rotate the issuing CA of this purpose: device (default) or codesign.
        #[arg(long, default_value = "")]
        purpose: String,
    },
    /// Print a CA certificate (default: the whole active bundle).
    Export {
        /// CA id or fingerprint.
        #[arg(long, default_value = "")]
        ca: String,
    },
}

#[derive(Subcommand, Debug)]
enum Codesign {
    /// Print the code-signing CA bundle (active CAs, issuing first): the
    /// keyring devices trust for update bundles (/etc/rauc/keyring.pem).
    Ca {
        /// Write it to this file (atomically, mode 0644) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the code-signing CRLs to this file (atomically, 0644).
        #[arg(long)]
        crl_out: Option<PathBuf>,
    },
    /// Issue a code-signing certificate for a PKCS#10 CSR (ML-DSA-65 key).
    Issue {
        /// The CSR, PEM.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (atomically, mode 0644).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days (0: 365, at most 1825).
        #[arg(long, default_value_t = 0)]
        validity_days: i64,
    },
}

#[derive(Subcommand, Debug)]
enum ApiKey {
    /// Create an API key; its secret is shown once.
    Create {
        /// A name.
        #[arg(long)]
        name: String,
        /// Owner, Admin, Member or Viewer.
        #[arg(long)]
        role: String,
    },
    /// List API keys.
    List,
    /// Revoke an API key.
    Revoke {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum Token {
    /// Mint an enrolment token (device by default).
    Create {
        /// A user token instead of a device token.
        #[arg(long)]
        user: bool,
        /// Organization id.
        #[arg(long, default_value_t = 1)]
        org: i32,
        /// Device name (device tokens).
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime in seconds (0: 600).
        #[arg(long, default_value_t = 0)]
        ttl: i32,
        /// Role of the user certificate (user tokens).
        #[arg(long, default_value = "")]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
enum Cert {
    /// List certificates.
    List {
        /// Organization id (0: all).
        #[arg(long, default_value_t = 0)]
        org: i32,
        /// Asset id (0: all).
        #[arg(long, default_value_t = 0)]
        asset: i32,
    },
    /// Revoke a certificate by its id (the number `cert list` prints first).
    Revoke {
        /// Certificate id.
        id: i32,
        /// RFC 5280 reason name (keyCompromise, superseded, cessationOfOperation, ...).
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum Credential {
    /// Mint a key pair server-side and issue a certificate for it.
    Provision {
        /// Role (user credentials).
        #[arg(long)]
        role: String,
        /// Asset id: a device credential for this asset.
        #[arg(long)]
        device: Option<i32>,
        /// Organization id.
        #[arg(long, default_value_t = 1)]
        org: i32,
        /// Name (user id for user credentials).
        #[arg(long, default_value = "")]
        name: String,
        /// Directory to write key.age, cert.pem and chain.pem into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Supersede the asset's current identity (revoke its certificates,
        /// expire its unused tokens) instead of refusing.
        #[arg(long)]
        replace: bool,
    },
}

fn data_dir(cli: &Option<PathBuf>, config: Option<&Config>) -> PathBuf {
    cli.clone()
        .or_else(|| config.and_then(|c| c.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from(pkicore::DEFAULT_DATA_DIR))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], wendy_proto::contract::DEFAULT_PKICORE_PORT))
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PKICORE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: podman logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(cli).await {
        eprintln!("pkicore: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir_flag = cli.data_dir.clone();
    match cli.command {
        Command::Serve(Serve::All { dev, server_names, listen }) => {
            let mut config = Config::default();
            config.frontend.wendy.server_names = server_names;
            let options = ServeOptions {
                data_dir: data_dir(&dir_flag, None),
                listen: listen.listen.unwrap_or_else(default_listen),
                insecure_plaintext: listen.insecure_plaintext,
                dev,
                config,
            };
            pkicore::serve::run(options).await?;
        }
        Command::Serve(Serve::Wendy { config, listen }) => {
            let config = Config::load(&config)?;
            let options = ServeOptions {
                data_dir: data_dir(&dir_flag, Some(&config)),
                listen: listen.listen.or(config.frontend.wendy.listen).unwrap_or_else(default_listen),
                insecure_plaintext: listen.insecure_plaintext,
                dev: false,
                config,
            };
            pkicore::serve::run(options).await?;
        }
        other => admin(&data_dir(&dir_flag, None), other).await?,
    }
    Ok(())
}

async fn admin(data_dir: &std::path::Path, command: Command) -> anyhow::Result<()> {
    let channel = pkicore::client::connect_admin(&data_dir.join(pkicore::ADMIN_SOCKET_NAME)).await?;
    let status = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match command {
        Command::Serve(_) => bail!("not an admin command"),
        Command::Ca(ca) => {
            let mut client = wendy_proto::limited!(CaAdminServiceClient::new(channel));
            use wendy_proto::pkicore::*;
            let show = |c: &CaInfo| {
                println!(
                    "{}  {:<8}  {}  {}  {}  {}  valid until {}",
                    c.id,
                    c.purpose,
                    if c.active { "issuing" } else { "       " },
                    c.key_algorithm,
                    c.fingerprint_sha256,
                    c.subject,
                    ts(&c.not_after)
                )
            };
            match ca {
                Ca::Create { purpose, name, algorithm, validity_days } => {
                    let c = client
                        .create_ca(CreateCaRequest {
                            common_name: name,
                            key_algorithm: algorithm,
                            validity_days,
                            purpose,
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    show(&c);
                }
                Ca::List => {
                    for c in client.list_cas(ListCasRequest {}).await.map_err(status)?.into_inner().cas {
                        show(&c);
                    }
                }
                Ca::Rotate { ca, purpose } => {
                    let c =
                        client.rotate_ca(RotateCaRequest { ca_id: ca, purpose }).await.map_err(status)?.into_inner();
                    show(&c);
                    println!("CA fingerprint: {}", c.fingerprint_sha256);
                }
                Ca::Export { ca } => {
                    let pem = client.export_ca(ExportCaRequest { ca_id: ca }).await.map_err(status)?.into_inner();
                    print!("{}", pem.pem_certificate);
                }
            }
        }
        Command::Codesign(c) => {
            let mut client = wendy_proto::limited!(CodeSigningAdminServiceClient::new(channel));
            use wendy_proto::pkicore::*;
            match c {
                Codesign::Ca { out, crl_out } => {
                    let r = client.get_code_signing_ca(GetCodeSigningCaRequest {}).await.map_err(status)?.into_inner();
                    match out {
                        Some(path) => {
                            write_public(&path, &r.pem_bundle)?;
                            eprintln!("wrote the code-signing CA bundle to {}", path.display());
                        }
                        None => print!("{}", r.pem_bundle),
                    }
                    if let Some(path) = crl_out {
                        write_public(&path, &r.pem_crls.concat())?;
                        eprintln!("wrote {} code-signing CRL(s) to {}", r.pem_crls.len(), path.display());
                    }
                }
                Codesign::Issue { csr, out, validity_days } => {
                    let pem_csr = read_capped(&csr)?;
                    let r = client
                        .issue_code_signing_certificate(IssueCodeSigningCertificateRequest { pem_csr, validity_days })
                        .await
                        .map_err(status)?
                        .into_inner();
                    write_public(&out, &r.pem_certificate)?;
                    eprintln!(
                        "wrote code-signing certificate {} (CN={}, serial {}, valid until {}) to {}",
                        r.certificate_id,
                        r.common_name,
                        r.serial_number,
                        ts(&r.not_after),
                        out.display()
                    );
                }
            }
        }
        Command::Apikey(k) => {
            let mut client = wendy_proto::limited!(ApiKeyAdminServiceClient::new(channel));
            use wendy_proto::pkicore::*;
            match k {
                ApiKey::Create { name, role } => {
                    let r =
                        client.create_api_key(CreateApiKeyRequest { name, role }).await.map_err(status)?.into_inner();
                    let info = r.key.unwrap_or_default();
                    eprintln!("API key {} ({}) created; the secret is shown once:", info.id, info.role);
                    println!("{}", r.secret);
                }
                ApiKey::List => {
                    for k in client.list_api_keys(ListApiKeysRequest {}).await.map_err(status)?.into_inner().keys {
                        println!(
                            "{}  {:<7}  {}  created {}{}",
                            k.id,
                            k.role,
                            k.name,
                            ts(&k.created_at),
                            if k.revoked { "  REVOKED" } else { "" }
                        );
                    }
                }
                ApiKey::Revoke { id } => {
                    client.revoke_api_key(RevokeApiKeyRequest { id: id.clone() }).await.map_err(status)?;
                    println!("revoked API key {id}");
                }
            }
        }
        Command::Token(Token::Create { user, org, name, ttl, role }) => {
            let mut client = wendy_proto::limited!(CertificateServiceClient::new(channel));
            use wendy_proto::cloud::*;
            if user {
                let r = client
                    .create_user_enrollment_token(CreateUserEnrollmentTokenRequest {
                        ttl_seconds: ttl,
                        organization_id: org,
                        role,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                eprintln!("user enrolment token for org {org}, expires {}:", ts(&r.expires_at));
                println!("{}", r.enrollment_token);
            } else {
                let r = client
                    .create_asset_enrollment_token(CreateAssetEnrollmentTokenRequest {
                        organization_id: org,
                        name,
                        ttl_seconds: ttl,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                eprintln!("device enrolment token for org {org} asset {}, expires {}:", r.asset_id, ts(&r.expires_at));
                println!("{}", r.enrollment_token);
            }
        }
        Command::Cert(c) => {
            let mut client = wendy_proto::limited!(CertificateServiceClient::new(channel));
            use wendy_proto::cloud::*;
            match c {
                Cert::List { org, asset } => {
                    let page = pkicore::frontend::MAX_LIST_LIMIT as i32;
                    let mut offset = 0;
                    loop {
                        let mut stream = client
                            .list_certificates(ListCertificatesRequest {
                                organization_id: org,
                                asset_id: asset,
                                offset: Some(offset),
                                limit: Some(page),
                            })
                            .await
                            .map_err(status)?
                            .into_inner();
                        let mut seen = 0;
                        while let Some(item) = stream.message().await.map_err(status)? {
                            seen += 1;
                            let Some(c) = item.certificate else { continue };
                            let status_name = CertificateStatus::try_from(c.status)
                                .map(|s| s.as_str_name().trim_start_matches("CERTIFICATE_STATUS_").to_owned())
                                .unwrap_or_default();
                            let owner = match (c.asset_id, &c.user_id) {
                                (Some(a), _) => format!("asset {a}"),
                                (None, Some(u)) => format!("user {u}"),
                                (None, None) => "server or code signer".to_owned(),
                            };
                            println!(
                                "{}  serial {}  org {} {owner}  {status_name}  until {}",
                                c.id,
                                c.serial_number,
                                c.organization_id,
                                ts(&c.not_after)
                            );
                        }
                        if seen < page {
                            break;
                        }
                        offset += page;
                    }
                }
                Cert::Revoke { id, reason } => {
                    client
                        .revoke_certificate(RevokeCertificateRequest { certificate_id: id, reason })
                        .await
                        .map_err(status)?;
                    println!("revoked certificate {id}; it is listed in the CRL from now on");
                }
            }
        }
        Command::Credential(Credential::Provision { role, device, org, name, out, replace }) => {
            let mut client = wendy_proto::limited!(CredentialAdminServiceClient::new(channel));
            let r = client
                .provision_credential(wendy_proto::pkicore::ProvisionCredentialRequest {
                    role,
                    organization_id: org,
                    asset_id: device.unwrap_or(0),
                    device_name: name,
                    replace,
                })
                .await
                .map_err(status)?
                .into_inner();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            write_new(&out.join("key.age"), &r.age_encrypted_key)?;
            write_new(&out.join("cert.pem"), &r.pem_certificate)?;
            write_new(&out.join("chain.pem"), &r.pem_certificate_chain)?;
            eprintln!("wrote key.age, cert.pem and chain.pem to {}", out.display());
            eprintln!("passphrase for key.age (shown once, never stored):");
            println!("{}", r.passphrase);
        }
    }
    Ok(())
}

/// Replaces `path` atomically with public material (certificates, CRLs),
/// mode 0644.
fn write_public(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    wendy_net::atomic_write::write(path, contents.as_bytes(), Some(0o644))
        .map_err(|e| anyhow::anyhow!("writing {}: {} failed: {}", path.display(), e.op, e.source))
}

/// Reads a PEM input file, refusing anything larger than a PEM may be.
fn read_capped(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let limit = wendy_identity::pem::MAX_PEM_BYTES;
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (it must be PEM text)", path.display()))?;
    if text.len() > limit {
        bail!("{} is larger than {limit} bytes: not a CSR", path.display());
    }
    Ok(text)
}

fn write_new(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
