//! `pkicore serve`: opens storage and the engine, then serves the wendy
//! frontend (TLS unless plaintext is asked for) and the local admin socket
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use wendy_identity::role::Role;
use wendy_proto::cloud::certificate_service_server::CertificateServiceServer;
use wendy_proto::pkicore::api_key_admin_service_server::ApiKeyAdminServiceServer;
use wendy_proto::pkicore::ca_admin_service_server::CaAdminServiceServer;
use wendy_proto::pkicore::code_signing_admin_service_server::CodeSigningAdminServiceServer;
use wendy_proto::pkicore::credential_admin_service_server::CredentialAdminServiceServer;
use wendy_proto::pkicore::crl_service_server::CrlServiceServer;

use crate::admin::Admin;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, CRL_REFRESH_INTERVAL};
use crate::frontend::{Crls, Exposure, Frontend};
use crate::store::sqlite::SqliteStore;
use crate::Error;

/// What to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Frontend listen address.
    pub listen: SocketAddr,
    /// Plaintext frontend (compat only).
    pub insecure_plaintext: bool,
    /// Development mode: the well-known Owner API key.
    pub dev: bool,
    /// Everything else from the config file.
    pub config: Config,
}

const DEV_WARNING: &str = "\
**********************************************************************
*  DEVELOPMENT MODE: the API key `dev-secret-change-me` is accepted  *
*  with the Owner role. Anyone who can reach this port can enrol     *
*  devices and users. Never run `serve all --dev` in production.     *
**********************************************************************";

/// Runs until a shutdown signal.
pub async fn run(options: ServeOptions) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::Internal(format!("{what}: {e}"));
    let data_dir = options.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(|e| io(&format!("creating {}", data_dir.display()), e))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("setting data directory permissions", e))?;

    if let Some(backend) = &options.config.storage.backend {
        if backend != "sqlite" {
            return Err(Error::InvalidArgument(format!("storage.backend {backend:?}: only sqlite is supported")));
        }
    }
    let db_path = options.config.storage.sqlite.path.clone().unwrap_or_else(|| data_dir.join(crate::DATABASE_NAME));
    let synchronous_full = options.config.synchronous_full()?;
    let mut engine_config = EngineConfig::new(data_dir.clone());
    engine_config.static_api_keys = options.config.api_keys()?;
    engine_config.issuing_ca_id = options.config.frontend.wendy.device_ca_id.clone().filter(|s| !s.trim().is_empty());
    if let Some(days) = options.config.issuance.leaf_validity_days {
        if !(1..=3650).contains(&days) {
            return Err(Error::InvalidArgument("issuance.leaf_validity_days must be 1..=3650".into()));
        }
        engine_config.leaf_validity = time::Duration::days(days);
    }
    let dev = options.dev;
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine, Error> {
        let store = Arc::new(SqliteStore::open(&db_path, synchronous_full)?);
        let engine = Engine::open(engine_config, store)?;
        if dev {
            engine.ensure_api_key("dev", Role::Owner, wendy_proto::contract::DEV_API_KEY)?;
        }
        Ok(engine)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    let engine = Arc::new(engine);
    if dev {
        eprintln!("{DEV_WARNING}");
        tracing::warn!("development mode: the well-known dev API key is accepted with the Owner role");
    }

    // Local admin API.
    let socket_path = data_dir.join(crate::ADMIN_SOCKET_NAME);
    let admin_listener = crate::admin::bind_socket(&socket_path)?;
    let admin = Admin::new(Arc::clone(&engine));
    let admin_server = wendy_net::server::builder(wendy_net::limits::ServerLimits::SERVICE)
        .add_service(wendy_proto::limited!(CaAdminServiceServer::new(admin.clone())))
        .add_service(wendy_proto::limited!(CodeSigningAdminServiceServer::new(admin.clone())))
        .add_service(wendy_proto::limited!(ApiKeyAdminServiceServer::new(admin.clone())))
        .add_service(wendy_proto::limited!(CredentialAdminServiceServer::new(admin)))
        .add_service(wendy_proto::limited!(CertificateServiceServer::new(Frontend::new(
            Arc::clone(&engine),
            Exposure::Local
        ))))
        .add_service(wendy_proto::limited!(CrlServiceServer::new(Crls::new(Arc::clone(&engine), Exposure::Local))))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(admin_listener), shutdown());

    // Wendy frontend.
    let wendy = &options.config.frontend.wendy;
    let listener =
        wendy_net::listener::bind(options.listen).map_err(|e| io(&format!("listening on {}", options.listen), e))?;
    let local = listener.local_addr().map_err(|e| io("local address", e))?;
    let plaintext = options.insecure_plaintext || wendy.insecure_plaintext;
    let acceptor = if plaintext {
        tracing::warn!(
            "the frontend serves PLAINTEXT gRPC (compat mode): tokens and API keys cross the network unencrypted"
        );
        None
    } else {
        let worker = Arc::clone(&engine);
        let names = wendy.server_names.clone();
        let credentials = tokio::task::spawn_blocking(move || worker.server_credentials(&names))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let config = wendy_identity::tls::server_config(&credentials, engine.verifier())?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    };
    let frontend_server = wendy_net::server::builder(wendy_net::limits::ServerLimits::SERVICE)
        .layer(crate::auth::throttle::AuthThrottleLayer::new(wendy_net::limits::REFUSAL_LOG_INTERVAL))
        .add_service(wendy_proto::limited!(CertificateServiceServer::new(Frontend::new(
            Arc::clone(&engine),
            Exposure::Network
        ))))
        .add_service(wendy_proto::limited!(CrlServiceServer::new(Crls::new(Arc::clone(&engine), Exposure::Network))))
        .serve_with_incoming_shutdown(crate::net::incoming(listener, acceptor), shutdown());

    let issuing = engine.issuing_ca()?;
    println!("wendy frontend listening on {local} ({})", if plaintext { "PLAINTEXT, compat mode" } else { "TLS 1.3" });
    println!("admin API listening on unix:{}", socket_path.display());
    println!("CA id: {}", issuing.id);
    println!("CA fingerprint: {}", issuing.fingerprint);
    if let Ok(codesign) = engine.issuing_codesign_ca() {
        println!("code-signing CA fingerprint: {}", codesign.fingerprint);
    }

    // Periodic CRL re-signing.
    let crl_engine = Arc::clone(&engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CRL_REFRESH_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let engine = Arc::clone(&crl_engine);
            match tokio::task::spawn_blocking(move || engine.refresh_crls()).await {
                Ok(Ok(())) => tracing::debug!("CRLs re-signed"),
                Ok(Err(e)) => tracing::error!(error = %e, "re-signing CRLs failed"),
                Err(e) => tracing::error!(error = %e, "CRL task failed"),
            }
        }
    });

    let (a, f) = tokio::join!(admin_server, frontend_server);
    let _ = std::fs::remove_file(&socket_path);
    a.map_err(|e| Error::Internal(format!("admin server: {e}")))?;
    f.map_err(|e| Error::Internal(format!("frontend: {e}")))?;
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
