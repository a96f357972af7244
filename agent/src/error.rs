use std::path::PathBuf;

/// Everything that can go wrong inside the agent. Messages never contain
/// key material or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A network listener could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `provisioning.json` is not valid JSON of the expected shape.
    #[error("provisioning.json is malformed: {0}")]
    Malformed(String),
    /// Identity material (keys, certificates, CRLs) was refused.
    #[error(transparent)]
    Identity(#[from] wendy_identity::Error),
    /// A configuration value from the environment is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }
}
