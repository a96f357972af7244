//! Persistence. The engine talks to a [`Store`]; SQLite ([`sqlite`]) is the
//! default backend, and a PostgreSQL backend can implement the same trait.
//!
//! Every method is synchronous and short; the engine calls them from
//! blocking tasks. Times are Unix seconds.

pub mod sqlite;

pub use wendy_identity::profile::CaPurpose;
use wendy_identity::role::Role;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// Filesystem failure (creating the database, setting permissions).
    #[error("filesystem: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value is not what this version understands.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The storage lock was poisoned by a panic elsewhere.
    #[error("storage lock poisoned")]
    Poisoned,
}

/// A CA as stored. The private key lives elsewhere (see [`crate::ca`]).
#[derive(Clone, Debug)]
pub struct CaRecord {
    /// Short stable id (the first 16 hex digits of the fingerprint).
    pub id: String,
    /// Subject common name (shared by all CAs of one rotation line).
    pub common_name: String,
    /// SHA-256 fingerprint, 64 hex.
    pub fingerprint: String,
    /// Key algorithm name.
    pub key_algorithm: String,
    /// The CA certificate, PEM.
    pub certificate_pem: String,
    /// Start of validity.
    pub not_before: i64,
    /// End of validity.
    pub not_after: i64,
    /// Whether new certificates of its purpose are issued by this CA (one
    /// issuing CA per purpose).
    pub issuing: bool,
    /// Creation time.
    pub created_at: i64,
    /// What the CA is for (its own line: rotation keeps it).
    pub purpose: CaPurpose,
}

/// What an enrolment token enrols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A device (asset).
    Asset,
    /// A CLI user.
    User,
}

impl TokenKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asset => "asset",
            Self::User => "user",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "asset" => Ok(Self::Asset),
            "user" => Ok(Self::User),
            other => Err(StoreError::Corrupt(format!("token kind {other:?}"))),
        }
    }
}

/// A new enrolment token (its hash; the secret is never stored).
#[derive(Clone, Debug)]
pub struct NewToken {
    /// SHA-256 hex of the token.
    pub hash: String,
    /// What it enrols.
    pub kind: TokenKind,
    /// Organization id.
    pub organization_id: i32,
    /// A name for the asset or user (informational).
    pub name: String,
    /// The role a user certificate gets (user tokens).
    pub role: Option<Role>,
    /// Who minted it (API key id, or `local`).
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
}

/// A stored enrolment token.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// What it enrols.
    pub kind: TokenKind,
    /// Organization id.
    pub organization_id: i32,
    /// The asset id (asset tokens) assigned at minting.
    pub asset_id: i32,
    /// The user id (user tokens) assigned at minting.
    pub user_id: String,
    /// The role a user certificate gets.
    pub role: Option<Role>,
    /// Expiry time.
    pub expires_at: i64,
    /// When it was consumed, if it was.
    pub used_at: Option<i64>,
}

/// The ids a freshly minted token was given.
#[derive(Clone, Debug)]
pub struct MintedToken {
    /// Asset id (asset tokens), else 0.
    pub asset_id: i32,
    /// User id (user tokens), else empty.
    pub user_id: String,
}

/// Certificate status as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Valid unless expired.
    Active,
    /// Revoked.
    Revoked,
}

/// An issued certificate.
#[derive(Clone, Debug)]
pub struct CertRecord {
    /// Id: the serial number as lowercase hex (leading zeros removed).
    pub id: String,
    /// The issuing CA's id.
    pub ca_id: String,
    /// `device`, `user`, `server` or `codesign`.
    pub kind: String,
    /// Organization id.
    pub organization_id: i32,
    /// Asset id (device certificates), else 0.
    pub asset_id: i32,
    /// User id (user certificates), else empty.
    pub user_id: String,
    /// Role (user certificates).
    pub role: Option<Role>,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Start of validity.
    pub not_before: i64,
    /// End of validity.
    pub not_after: i64,
    /// Status.
    pub status: CertStatus,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Revocation reason (RFC 5280 `CRLReason` code).
    pub revocation_reason: i32,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Record number (the published `Certificate.id`), 0 until stored.
    pub number: i32,
}

/// A stored API key (its hash only).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// SHA-256 hex of the key.
    pub hash: String,
    /// Creation time.
    pub created_at: i64,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// Why a token could not be consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Consumed, and the certificate stored, atomically, as record `number`.
    Issued {
        /// The certificate's record number.
        number: i32,
    },
    /// Someone else consumed it first, or it expired meanwhile.
    Unavailable,
}

/// What [`Store::insert_device_credential`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssetClaim {
    /// Stored as record `number`; `replaced` lists the serials revoked.
    Stored {
        /// The new certificate's record number.
        number: i32,
        /// Serials of the certificates it superseded.
        replaced: Vec<String>,
    },
    /// Nothing stored: the asset has these active certificates (serials)
    /// and this many unused tokens.
    InUse {
        /// Active certificate serials.
        certificates: Vec<String>,
        /// Unused, unexpired tokens for the asset.
        pending_tokens: usize,
    },
}

/// Selects certificates to list.
#[derive(Clone, Debug, Default)]
pub struct CertFilter {
    /// Organization id, 0 for any.
    pub organization_id: i32,
    /// Asset id, 0 for any.
    pub asset_id: i32,
    /// Rows to skip.
    pub offset: i64,
    /// Most rows to return.
    pub limit: i64,
}

/// An audit log entry.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// When.
    pub at: i64,
    /// What: `issue`, `refresh`, `revoke`, `token`, `ca`, `apikey`, `credential`, `codesign`.
    pub event: String,
    /// Who (API key id, certificate id, `local`).
    pub actor: String,
    /// What it concerned (certificate id, asset, CA id).
    pub subject: String,
    /// Free text; never secrets.
    pub detail: String,
}

/// The storage interface of pki-core.
pub trait Store: Send + Sync + 'static {
    /// Stores a CA.
    fn insert_ca(&self, ca: &CaRecord) -> Result<(), StoreError>;
    /// Every CA, oldest first.
    fn list_cas(&self) -> Result<Vec<CaRecord>, StoreError>;
    /// Makes `id` the only issuing CA of its purpose.
    fn set_issuing_ca(&self, id: &str, at: i64) -> Result<(), StoreError>;

    /// Stores an API key.
    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// The unrevoked API key with this hash.
    fn find_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Every API key.
    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes an API key; false if there is none with this id.
    fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError>;

    /// Stores a token and assigns its asset or user id.
    fn insert_token(&self, token: &NewToken) -> Result<MintedToken, StoreError>;
    /// Looks a token up by hash (no side effects).
    fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// In one transaction: marks the token used if it is unused and
    /// unexpired at `now`, and if so stores `cert`.
    fn consume_token_and_insert(&self, hash: &str, now: i64, cert: &CertRecord) -> Result<ConsumeOutcome, StoreError>;

    /// Stores a device certificate for an asset id the caller chose (an
    /// operator-provisioned credential), in one transaction: the asset id is
    /// reserved (tokens are never given it or any lower id), and if the
    /// asset already has an active certificate or an unused token, either
    /// nothing happens ([`AssetClaim::InUse`]) or, with `replace`, those
    /// certificates are revoked (superseded) and the tokens expired.
    fn insert_device_credential(
        &self,
        cert: &CertRecord,
        audit: &AuditEntry,
        now: i64,
        replace: bool,
    ) -> Result<AssetClaim, StoreError>;

    /// The certificate a consumed token was issued, if any.
    fn token_certificate(&self, hash: &str) -> Result<Option<CertRecord>, StoreError>;

    /// Stores a certificate (renewals, credentials) with its audit entry;
    /// returns its record number.
    fn insert_certificate(&self, cert: &CertRecord, audit: &AuditEntry) -> Result<i32, StoreError>;
    /// One certificate, by serial (lowercase hex).
    fn get_certificate(&self, id: &str) -> Result<Option<CertRecord>, StoreError>;
    /// The serial of the certificate with record number `number`.
    fn certificate_serial(&self, number: i32) -> Result<Option<String>, StoreError>;
    /// One page of the certificates matching `filter`, oldest first, and how
    /// many match in all.
    fn list_certificates(&self, filter: &CertFilter) -> Result<(Vec<CertRecord>, i64), StoreError>;
    /// Marks a certificate revoked (idempotent) and returns it.
    fn revoke_certificate(&self, id: &str, reason: i32, at: i64, actor: &str)
        -> Result<Option<CertRecord>, StoreError>;
    /// Revoked (serial hex, time) of one CA, for its CRL.
    fn revoked_by_ca(&self, ca_id: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// The next CRL number of a CA (monotonic).
    fn next_crl_number(&self, ca_id: &str) -> Result<u64, StoreError>;

    /// Appends to the audit log.
    fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, newest first.
    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}
