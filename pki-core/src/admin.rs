//! The local admin API: `wendyos.pkicore.v1` CA, code-signing, API-key and
//! credential administration, plus the certificate service, on a Unix socket inside
//! the data directory (mode 0600). Whoever can open the socket is the
//! local operator; filesystem permissions are the authentication.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wendy_identity::role::Role;
use wendy_proto::pkicore::api_key_admin_service_server::ApiKeyAdminService;
use wendy_proto::pkicore::ca_admin_service_server::CaAdminService;
use wendy_proto::pkicore::code_signing_admin_service_server::CodeSigningAdminService;
use wendy_proto::pkicore::credential_admin_service_server::CredentialAdminService;
use wendy_proto::pkicore::*;

use crate::auth::Principal;
use crate::engine::Engine;
use crate::frontend::blocking;
use crate::store::{ApiKeyRecord, CaPurpose, CaRecord};
use crate::Error;

/// The admin services.
#[derive(Clone, Debug)]
pub struct Admin {
    engine: Arc<Engine>,
}

impl Admin {
    /// Admin services over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn ca_info(c: &CaRecord) -> CaInfo {
    CaInfo {
        id: c.id.clone(),
        subject: format!("CN={}, O={}", c.common_name, wendy_identity::profile::CA_ORGANIZATION),
        fingerprint_sha256: c.fingerprint.clone(),
        key_algorithm: c.key_algorithm.clone(),
        active: c.issuing,
        not_before: ts(c.not_before),
        not_after: ts(c.not_after),
        pem_certificate: c.certificate_pem.clone(),
        purpose: c.purpose.name().into(),
    }
}

/// A CA purpose from a request: empty means `device`.
fn purpose(s: &str) -> Result<CaPurpose, Status> {
    if s.trim().is_empty() {
        return Ok(CaPurpose::Device);
    }
    s.parse().map_err(|e: wendy_identity::Error| Status::from(Error::InvalidArgument(e.to_string())))
}

fn key_info(k: &ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        id: k.id.clone(),
        name: k.name.clone(),
        role: k.role.name().into(),
        created_at: ts(k.created_at),
        revoked: k.revoked,
    }
}

#[tonic::async_trait]
impl CaAdminService for Admin {
    async fn create_ca(&self, request: Request<CreateCaRequest>) -> Result<Response<CaInfo>, Status> {
        let engine = Arc::clone(&self.engine);
        let r = request.into_inner();
        let purpose = purpose(&r.purpose)?;
        let ca = blocking(move || engine.create_ca(purpose, &r.common_name, &r.key_algorithm, r.validity_days, false))
            .await?;
        Ok(Response::new(ca_info(&ca)))
    }

    async fn list_cas(&self, _request: Request<ListCasRequest>) -> Result<Response<ListCasResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let cas = blocking(move || engine.list_cas()).await?;
        Ok(Response::new(ListCasResponse { cas: cas.iter().map(ca_info).collect() }))
    }

    async fn rotate_ca(&self, request: Request<RotateCaRequest>) -> Result<Response<CaInfo>, Status> {
        let engine = Arc::clone(&self.engine);
        let r = request.into_inner();
        let purpose = purpose(&r.purpose)?;
        let ca = blocking(move || engine.rotate_ca(&r.ca_id, purpose)).await?;
        Ok(Response::new(ca_info(&ca)))
    }

    async fn export_ca(&self, request: Request<ExportCaRequest>) -> Result<Response<ExportCaResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let id = request.into_inner().ca_id;
        let pem_certificate =
            blocking(
                move || {
                    if id.trim().is_empty() {
                        engine.bundle_pem()
                    } else {
                        Ok(engine.find_ca(&id)?.certificate_pem)
                    }
                },
            )
            .await?;
        Ok(Response::new(ExportCaResponse { pem_certificate }))
    }
}

#[tonic::async_trait]
impl CodeSigningAdminService for Admin {
    async fn issue_code_signing_certificate(
        &self,
        request: Request<IssueCodeSigningCertificateRequest>,
    ) -> Result<Response<IssueCodeSigningCertificateResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let r = request.into_inner();
        let signer =
            blocking(move || engine.issue_code_signing(&Principal::local(), &r.pem_csr, r.validity_days)).await?;
        Ok(Response::new(IssueCodeSigningCertificateResponse {
            pem_certificate: signer.record.certificate_pem,
            pem_certificate_chain: signer.chain_pem,
            certificate_id: signer.record.number,
            serial_number: signer.record.id.to_ascii_uppercase(),
            not_before: ts(signer.record.not_before),
            not_after: ts(signer.record.not_after),
            common_name: signer.common_name,
        }))
    }

    async fn get_code_signing_ca(
        &self,
        _request: Request<GetCodeSigningCaRequest>,
    ) -> Result<Response<GetCodeSigningCaResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let (pem_bundle, pem_crls) =
            blocking(move || Ok((engine.codesign_bundle_pem()?, engine.codesign_crls()?))).await?;
        Ok(Response::new(GetCodeSigningCaResponse { pem_bundle, pem_crls }))
    }
}

#[tonic::async_trait]
impl ApiKeyAdminService for Admin {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let r = request.into_inner();
        let role: Role =
            r.role.parse().map_err(|e: wendy_identity::Error| Status::from(Error::InvalidArgument(e.to_string())))?;
        let (key, secret_key) = blocking(move || engine.create_api_key(&r.name, role)).await?;
        Ok(Response::new(CreateApiKeyResponse { key: Some(key_info(&key)), secret: secret_key.to_string() }))
    }

    async fn list_api_keys(
        &self,
        _request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let keys = blocking(move || engine.list_api_keys()).await?;
        Ok(Response::new(ListApiKeysResponse { keys: keys.iter().map(key_info).collect() }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let id = request.into_inner().id;
        blocking(move || engine.revoke_api_key(&id)).await?;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }
}

#[tonic::async_trait]
impl CredentialAdminService for Admin {
    async fn provision_credential(
        &self,
        request: Request<ProvisionCredentialRequest>,
    ) -> Result<Response<ProvisionCredentialResponse>, Status> {
        let engine = Arc::clone(&self.engine);
        let r = request.into_inner();
        let cred = blocking(move || {
            engine.provision_credential(
                &Principal::local(),
                &r.role,
                r.organization_id,
                r.asset_id,
                &r.device_name,
                r.replace,
            )
        })
        .await?;
        Ok(Response::new(ProvisionCredentialResponse {
            pem_certificate: cred.certificate.pem_certificate.clone(),
            pem_certificate_chain: cred.certificate.pem_certificate_chain.clone(),
            age_encrypted_key: cred.age_file,
            passphrase: cred.passphrase.to_string(),
            public_key_spki_pem: cred.public_key_pem,
        }))
    }
}

/// Binds the admin socket at `path` with mode 0600, replacing a stale one.
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    let io = |e: std::io::Error| Error::Internal(format!("admin socket {}: {e}", path.display()));
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Internal(format!(
                "admin socket {} is in use: is another pkicore running on this data directory?",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Bind under a restrictive umask-equivalent: create, then chmod before
    // anyone can have learned of it (the data directory itself is 0700).
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}
