//! The YAML configuration of `pkicore serve wendy --config FILE`; see
//! `pki-core/config.example.yaml` for a commented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wendy_identity::role::Role;

use crate::auth::Principal;
use crate::Error;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory (database, CA keys, admin socket).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Frontends.
    #[serde(default)]
    pub frontend: FrontendConfig,
    /// API keys accepted in addition to those created with `pkicore apikey`.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Storage.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Issuance policy.
    #[serde(default)]
    pub issuance: IssuanceConfig,
}

/// `frontend:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    /// `frontend.wendy:`.
    #[serde(default)]
    pub wendy: WendyFrontendConfig,
}

/// `frontend.wendy:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WendyFrontendConfig {
    /// Listen address; default `0.0.0.0:50051`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The CA that issues device and user certificates (id or
    /// fingerprint); default the current issuing CA.
    #[serde(default)]
    pub device_ca_id: Option<String>,
    /// Extra DNS names for the frontend's server certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// Serve plaintext gRPC instead of TLS (compat only).
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// One configured API key: exactly one of `sha256`, `env`, `file`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and the audit trail.
    pub name: String,
    /// Owner, Admin, Member or Viewer.
    pub role: String,
    /// The key's SHA-256 (hex), e.g. `printf %s "$KEY" | sha256sum`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// An environment variable holding the key.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the key (trailing whitespace ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `storage:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Only `sqlite` for now.
    #[serde(default)]
    pub backend: Option<String>,
    /// `storage.sqlite:`.
    #[serde(default)]
    pub sqlite: SqliteConfig,
}

/// `storage.sqlite:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database path; default `<data_dir>/pkicore.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `normal` (default) or `full`.
    #[serde(default)]
    pub synchronous: Option<String>,
}

/// `issuance:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceConfig {
    /// Validity of device and user certificates in days; default 90.
    #[serde(default)]
    pub leaf_validity_days: Option<i64>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidArgument(format!("reading {}: {e}", path.display())))?;
        serde_yaml::from_str(&text).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
    }

    /// Whether commits sync to disk every time.
    pub fn synchronous_full(&self) -> Result<bool, Error> {
        match self.storage.sqlite.synchronous.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("normal") => Ok(false),
            Some("full") => Ok(true),
            Some(other) => Err(Error::InvalidArgument(format!("storage.sqlite.synchronous: {other:?} (normal|full)"))),
        }
    }

    /// The configured API keys as (hash, principal). Secrets read from the
    /// environment or files are hashed at once and never kept.
    pub fn api_keys(&self) -> Result<Vec<(String, Principal)>, Error> {
        self.api_keys
            .iter()
            .map(|k| {
                let role: Role = k
                    .role
                    .parse()
                    .map_err(|e: wendy_identity::Error| Error::InvalidArgument(format!("api key {:?}: {e}", k.name)))?;
                let bad = |why: String| Error::InvalidArgument(format!("api key {:?}: {why}", k.name));
                let hash = match (&k.sha256, &k.env, &k.file) {
                    (Some(h), None, None) => {
                        let h = h.trim().to_ascii_lowercase();
                        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err(bad("sha256 must be 64 hex digits".into()));
                        }
                        h
                    }
                    (None, Some(var), None) => {
                        let v =
                            zeroize::Zeroizing::new(std::env::var(var).map_err(|_| bad(format!("${var} is not set")))?);
                        crate::secret::hash(&v)
                    }
                    (None, None, Some(file)) => {
                        let v = zeroize::Zeroizing::new(
                            std::fs::read_to_string(file).map_err(|e| bad(format!("{}: {e}", file.display())))?,
                        );
                        crate::secret::hash(v.trim())
                    }
                    _ => return Err(bad("give exactly one of sha256, env, file".into())),
                };
                Ok((hash, Principal { id: format!("config:{}", k.name), role }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../config.example.yaml");
        let config: Config = serde_yaml::from_str(text).unwrap();
        assert_eq!(config.frontend.wendy.listen.unwrap().port(), wendy_proto::contract::DEFAULT_PKICORE_PORT);
        std::env::set_var("PKICORE_EXAMPLE_KEY", "k");
        assert_eq!(config.api_keys().unwrap().len(), 2);
    }
}
