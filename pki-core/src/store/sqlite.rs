//! The SQLite backend: WAL journal, schema migrations by `user_version`,
//! database file mode 0600.
//!
//! Durability: `synchronous=NORMAL` by default. In WAL mode a committed
//! issuance survives a crash of pki-core; a power loss can lose the last
//! transactions since the most recent WAL sync. `synchronous=FULL` (config
//! `storage.sqlite.synchronous: full`) syncs every commit.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use wendy_identity::role::Role;

use super::{
    ApiKeyRecord, AssetClaim, AuditEntry, CaRecord, CertFilter, CertRecord, CertStatus, ConsumeOutcome, MintedToken,
    NewToken, Store, StoreError, TokenKind, TokenRecord,
};

/// Schema migrations; entry `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE cas (
    id TEXT PRIMARY KEY,
    common_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    key_algorithm TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issuing INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    crl_number INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE asset_sequence (
    organization_id INTEGER PRIMARY KEY,
    last_asset_id INTEGER NOT NULL
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    organization_id INTEGER NOT NULL,
    asset_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE certificates (
    id TEXT PRIMARY KEY,
    ca_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    organization_id INTEGER NOT NULL,
    asset_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT,
    certificate_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    status TEXT NOT NULL,
    revoked_at INTEGER,
    revocation_reason INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX certificates_by_owner ON certificates (organization_id, asset_id);
CREATE INDEX certificates_revoked ON certificates (ca_id, status);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#,
    // 2: the published protocol names certificates by an int32 record number;
    // a token remembers the certificate it was consumed for (idempotent retry).
    r#"
ALTER TABLE certificates ADD COLUMN number INTEGER;
UPDATE certificates SET number = rowid;
CREATE UNIQUE INDEX certificates_by_number ON certificates (number);
ALTER TABLE tokens ADD COLUMN certificate_id TEXT;
"#,
    // 3: CA purposes (decision 0069): every CA so far is a device CA; each
    // purpose has its own issuing CA.
    r#"
ALTER TABLE cas ADD COLUMN purpose TEXT NOT NULL DEFAULT 'device';
"#,
];

/// How often the background checkpointer copies the WAL into the database.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The checkpointer thread and the sender whose drop stops it.
    checkpointer: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Drop for SqliteStore {
    /// Stops the checkpointer and waits for its last (truncating) checkpoint.
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if needed) and migrates the database.
    pub fn open(path: &Path, synchronous_full: bool) -> Result<Self, StoreError> {
        if !path.exists() {
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if synchronous_full { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        for suffix in ["-wal", "-shm"] {
            let side = path
                .with_file_name(format!("{}{suffix}", path.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
            if side.exists() {
                std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        // Checkpoints (WAL -> database, with their fsyncs) run on a thread of
        // their own with its own connection, so writers never wait for one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = spawn_checkpointer(path)?;
        Ok(Self { conn: Mutex::new(conn), checkpointer: Some(checkpointer) })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_INTERVAL`] on its
/// own connection until the returned sender is dropped. A passive checkpoint
/// never blocks writers; they keep appending to the WAL meanwhile.
fn spawn_checkpointer(path: &Path) -> Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>), StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
            // Last one on the way out, so a clean stop leaves a short WAL.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(StoreError::Io)?;
    Ok((stop, thread))
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).map_err(|_| StoreError::Corrupt("negative user_version".into()))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this pki-core ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn parse_role(s: Option<String>) -> Result<Option<Role>, StoreError> {
    s.map(|r| r.parse::<Role>().map_err(|_| StoreError::Corrupt(format!("role {r:?}")))).transpose()
}

fn ca_from_row(r: &Row<'_>) -> rusqlite::Result<CaRecord> {
    Ok(CaRecord {
        id: r.get(0)?,
        common_name: r.get(1)?,
        fingerprint: r.get(2)?,
        key_algorithm: r.get(3)?,
        certificate_pem: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        issuing: r.get::<_, i64>(7)? != 0,
        created_at: r.get(8)?,
        purpose: r.get::<_, String>(9)?.parse().map_err(|e: wendy_identity::Error| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

const CERT_COLUMNS: &str = "id, ca_id, kind, organization_id, asset_id, user_id, role, certificate_pem, \
     not_before, not_after, status, revoked_at, revocation_reason, created_at, updated_at, number";

type RawCert = (CertRecord, Option<String>, String);

fn cert_from_row(r: &Row<'_>) -> rusqlite::Result<RawCert> {
    Ok((
        CertRecord {
            id: r.get(0)?,
            ca_id: r.get(1)?,
            kind: r.get(2)?,
            organization_id: r.get(3)?,
            asset_id: r.get(4)?,
            user_id: r.get(5)?,
            role: None,
            certificate_pem: r.get(7)?,
            not_before: r.get(8)?,
            not_after: r.get(9)?,
            status: CertStatus::Active,
            revoked_at: r.get(11)?,
            revocation_reason: r.get(12)?,
            created_at: r.get(13)?,
            updated_at: r.get(14)?,
            number: r.get::<_, Option<i32>>(15)?.unwrap_or(0),
        },
        r.get(6)?,
        r.get(10)?,
    ))
}

fn finish_cert((mut cert, role, status): RawCert) -> Result<CertRecord, StoreError> {
    cert.role = parse_role(role)?;
    cert.status = match status.as_str() {
        "active" => CertStatus::Active,
        "revoked" => CertStatus::Revoked,
        other => return Err(StoreError::Corrupt(format!("certificate status {other:?}"))),
    };
    Ok(cert)
}

fn status_str(s: CertStatus) -> &'static str {
    match s {
        CertStatus::Active => "active",
        CertStatus::Revoked => "revoked",
    }
}

/// Inserts `c` with the next record number, which it returns.
fn insert_cert(conn: &Connection, c: &CertRecord) -> rusqlite::Result<i32> {
    conn.prepare_cached(&format!(
        "INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
             (SELECT COALESCE(MAX(number), 0) + 1 FROM certificates)) RETURNING number"
    ))?
    .query_row(params![
        c.id,
        c.ca_id,
        c.kind,
        c.organization_id,
        c.asset_id,
        c.user_id,
        c.role.map(|r| r.name()),
        c.certificate_pem,
        c.not_before,
        c.not_after,
        status_str(c.status),
        c.revoked_at,
        c.revocation_reason,
        c.created_at,
        c.updated_at
    ], |r| r.get(0))
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO audit_log (at, event, actor, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![e.at, e.event, e.actor, e.subject, e.detail])?;
    Ok(())
}

impl Store for SqliteStore {
    fn insert_ca(&self, ca: &CaRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if ca.issuing {
            tx.execute("UPDATE cas SET issuing = 0 WHERE purpose = ?1", [ca.purpose.name()])?;
        }
        tx.execute(
            "INSERT INTO cas (id, common_name, fingerprint, key_algorithm, certificate_pem, not_before, not_after, issuing, created_at, purpose)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![ca.id, ca.common_name, ca.fingerprint, ca.key_algorithm, ca.certificate_pem, ca.not_before, ca.not_after, ca.issuing as i64, ca.created_at, ca.purpose.name()],
        )?;
        insert_audit(
            &tx,
            &AuditEntry {
                at: ca.created_at,
                event: "ca".into(),
                actor: "local".into(),
                subject: ca.id.clone(),
                detail: format!(
                    "created {} CA {} ({}), fingerprint {}",
                    ca.purpose, ca.common_name, ca.key_algorithm, ca.fingerprint
                ),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    fn list_cas(&self) -> Result<Vec<CaRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, common_name, fingerprint, key_algorithm, certificate_pem, not_before, not_after, issuing, created_at, purpose
             FROM cas ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([], ca_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn set_issuing_ca(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        // Only the CA's own purpose loses its issuing CA.
        tx.execute("UPDATE cas SET issuing = 0 WHERE purpose = (SELECT purpose FROM cas WHERE id = ?1)", [id])?;
        let n = tx.execute("UPDATE cas SET issuing = 1 WHERE id = ?1", [id])?;
        if n != 1 {
            return Err(StoreError::Corrupt(format!("no CA {id}")));
        }
        insert_audit(
            &tx,
            &AuditEntry {
                at,
                event: "ca".into(),
                actor: "local".into(),
                subject: id.into(),
                detail: "now issuing".into(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO api_keys (id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(hash) DO NOTHING",
            params![key.id, key.name, key.role.name(), key.hash, key.created_at],
        )?;
        insert_audit(
            &tx,
            &AuditEntry {
                at: key.created_at,
                event: "apikey".into(),
                actor: "local".into(),
                subject: key.id.clone(),
                detail: format!("created API key {:?} with role {}", key.name, key.role),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    fn find_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .prepare_cached(
                "SELECT id, name, role, hash, created_at FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([hash], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        row.map(|(id, name, role, hash, created_at)| {
            Ok(ApiKeyRecord {
                id,
                name,
                role: role.parse().map_err(|_| StoreError::Corrupt(format!("role {role:?}")))?,
                hash,
                created_at,
                revoked: false,
            })
        })
        .transpose()
    }

    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, hash, created_at, revoked_at FROM api_keys ORDER BY created_at, rowid",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, name, role, hash, created_at, revoked_at)| {
                Ok(ApiKeyRecord {
                    id,
                    name,
                    role: role.parse().map_err(|_| StoreError::Corrupt(format!("role {role:?}")))?,
                    hash,
                    created_at,
                    revoked: revoked_at.is_some(),
                })
            })
            .collect()
    }

    fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n =
            tx.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, at])?;
        insert_audit(
            &tx,
            &AuditEntry {
                at,
                event: "apikey".into(),
                actor: "local".into(),
                subject: id.into(),
                detail: "revoked".into(),
            },
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn insert_token(&self, t: &NewToken) -> Result<MintedToken, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (asset_id, user_id) = match t.kind {
            TokenKind::Asset => {
                let next: i32 = tx
                    .prepare_cached(
                        "INSERT INTO asset_sequence (organization_id, last_asset_id) VALUES (?1, 1)
                         ON CONFLICT(organization_id) DO UPDATE SET last_asset_id = last_asset_id + 1
                         RETURNING last_asset_id",
                    )?
                    .query_row([t.organization_id], |r| r.get(0))?;
                (next, String::new())
            }
            TokenKind::User => (0, format!("user-{}", crate::secret::random_id())),
        };
        tx.prepare_cached(
            "INSERT INTO tokens (hash, kind, organization_id, asset_id, user_id, name, role, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            t.hash,
            t.kind.as_str(),
            t.organization_id,
            asset_id,
            user_id,
            t.name,
            t.role.map(|r| r.name()),
            t.created_by,
            t.created_at,
            t.expires_at
        ])?;
        let subject = match t.kind {
            TokenKind::Asset => format!("org {} asset {asset_id}", t.organization_id),
            TokenKind::User => format!("org {} {user_id}", t.organization_id),
        };
        insert_audit(
            &tx,
            &AuditEntry {
                at: t.created_at,
                event: "token".into(),
                actor: t.created_by.clone(),
                subject,
                detail: format!(
                    "{} token {:?} role {} expires {}",
                    t.kind.as_str(),
                    t.name,
                    t.role.map(|r| r.name()).unwrap_or("-"),
                    t.expires_at
                ),
            },
        )?;
        tx.commit()?;
        Ok(MintedToken { asset_id, user_id })
    }

    fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .prepare_cached(
                "SELECT kind, organization_id, asset_id, user_id, role, expires_at, used_at FROM tokens WHERE hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .optional()?;
        row.map(|(kind, organization_id, asset_id, user_id, role, expires_at, used_at)| {
            Ok(TokenRecord {
                kind: TokenKind::parse(&kind)?,
                organization_id,
                asset_id,
                user_id,
                role: parse_role(role)?,
                expires_at,
                used_at,
            })
        })
        .transpose()
    }

    fn consume_token_and_insert(&self, hash: &str, now: i64, cert: &CertRecord) -> Result<ConsumeOutcome, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE tokens SET used_at = ?2, certificate_id = ?3 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            )?
            .execute(params![hash, now, cert.id])?;
        if n != 1 {
            tx.rollback()?;
            return Ok(ConsumeOutcome::Unavailable);
        }
        let number = insert_cert(&tx, cert)?;
        insert_audit(
            &tx,
            &AuditEntry {
                at: now,
                event: "issue".into(),
                actor: format!("token {}", &hash[..hash.len().min(12)]),
                subject: cert.id.clone(),
                detail: format!(
                    "{} org {} asset {} user {:?} role {} CA {}",
                    cert.kind,
                    cert.organization_id,
                    cert.asset_id,
                    cert.user_id,
                    cert.role.map(|r| r.name()).unwrap_or("-"),
                    cert.ca_id
                ),
            },
        )?;
        tx.commit()?;
        Ok(ConsumeOutcome::Issued { number })
    }

    fn insert_certificate(&self, cert: &CertRecord, audit: &AuditEntry) -> Result<i32, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let number = insert_cert(&tx, cert)?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(number)
    }

    fn insert_device_credential(
        &self,
        cert: &CertRecord,
        audit: &AuditEntry,
        now: i64,
        replace: bool,
    ) -> Result<AssetClaim, StoreError> {
        /// RFC 5280 `superseded`.
        const SUPERSEDED: i32 = 4;
        let (org, asset) = (cert.organization_id, cert.asset_id);
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO asset_sequence (organization_id, last_asset_id) VALUES (?1, ?2)
             ON CONFLICT(organization_id) DO UPDATE SET last_asset_id = MAX(last_asset_id, excluded.last_asset_id)",
        )?
        .execute(params![org, asset])?;
        let certificates = tx
            .prepare_cached(
                "SELECT id FROM certificates WHERE kind = 'device' AND organization_id = ?1 AND asset_id = ?2
                 AND status = 'active' AND not_after > ?3 ORDER BY number",
            )?
            .query_map(params![org, asset, now], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let pending_tokens: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM tokens WHERE kind = 'asset' AND organization_id = ?1 AND asset_id = ?2
                 AND used_at IS NULL AND expires_at > ?3",
            )?
            .query_row(params![org, asset, now], |r| r.get(0))?;
        let pending_tokens = usize::try_from(pending_tokens).unwrap_or(usize::MAX);
        if (!certificates.is_empty() || pending_tokens > 0) && !replace {
            // The sequence bump stays: the id is reserved either way.
            tx.commit()?;
            return Ok(AssetClaim::InUse { certificates, pending_tokens });
        }
        tx.prepare_cached(
            "UPDATE tokens SET expires_at = ?3 WHERE kind = 'asset' AND organization_id = ?1 AND asset_id = ?2
             AND used_at IS NULL AND expires_at > ?3",
        )?
        .execute(params![org, asset, now])?;
        for serial in &certificates {
            tx.prepare_cached(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3, updated_at = ?2
                 WHERE id = ?1",
            )?
            .execute(params![serial, now, SUPERSEDED])?;
            insert_audit(
                &tx,
                &AuditEntry {
                    at: now,
                    event: "revoke".into(),
                    actor: audit.actor.clone(),
                    subject: serial.clone(),
                    detail: format!("superseded by an operator-provisioned credential for org {org} asset {asset}"),
                },
            )?;
        }
        let number = insert_cert(&tx, cert)?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(AssetClaim::Stored { number, replaced: certificates })
    }

    fn certificate_serial(&self, number: i32) -> Result<Option<String>, StoreError> {
        let conn = self.conn()?;
        let serial = conn
            .prepare_cached("SELECT id FROM certificates WHERE number = ?1")?
            .query_row([number], |r| r.get(0))
            .optional()?;
        Ok(serial)
    }

    fn token_certificate(&self, hash: &str) -> Result<Option<CertRecord>, StoreError> {
        let conn = self.conn()?;
        let raw = conn
            .prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE id = (SELECT certificate_id FROM tokens WHERE hash = ?1)"
            ))?
            .query_row([hash], cert_from_row)
            .optional()?;
        raw.map(finish_cert).transpose()
    }

    fn get_certificate(&self, id: &str) -> Result<Option<CertRecord>, StoreError> {
        let conn = self.conn()?;
        let raw = conn
            .prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates WHERE id = ?1"))?
            .query_row([id], cert_from_row)
            .optional()?;
        raw.map(finish_cert).transpose()
    }

    fn list_certificates(&self, f: &CertFilter) -> Result<(Vec<CertRecord>, i64), StoreError> {
        const WHERE: &str = "(?1 = 0 OR organization_id = ?1) AND (?2 = 0 OR asset_id = ?2)";
        let conn = self.conn()?;
        let total: i64 = conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM certificates WHERE {WHERE}"))?
            .query_row(params![f.organization_id, f.asset_id], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE {WHERE} ORDER BY number LIMIT ?3 OFFSET ?4"
        ))?;
        let raws = stmt
            .query_map(params![f.organization_id, f.asset_id, f.limit, f.offset], cert_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((raws.into_iter().map(finish_cert).collect::<Result<_, _>>()?, total))
    }

    fn revoke_certificate(
        &self,
        id: &str,
        reason: i32,
        at: i64,
        actor: &str,
    ) -> Result<Option<CertRecord>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3, updated_at = ?2
             WHERE id = ?1 AND status = 'active'",
            params![id, at, reason],
        )?;
        if n == 1 {
            insert_audit(
                &tx,
                &AuditEntry {
                    at,
                    event: "revoke".into(),
                    actor: actor.into(),
                    subject: id.into(),
                    detail: format!("reason {reason}"),
                },
            )?;
        }
        let raw = tx
            .prepare_cached(&format!("SELECT {CERT_COLUMNS} FROM certificates WHERE id = ?1"))?
            .query_row([id], cert_from_row)
            .optional()?;
        tx.commit()?;
        raw.map(finish_cert).transpose()
    }

    fn revoked_by_ca(&self, ca_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, revoked_at FROM certificates WHERE ca_id = ?1 AND status = 'revoked' ORDER BY revoked_at",
        )?;
        let rows = stmt
            .query_map([ca_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn next_crl_number(&self, ca_id: &str) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let n: i64 = conn
            .prepare_cached("UPDATE cas SET crl_number = crl_number + 1 WHERE id = ?1 RETURNING crl_number")?
            .query_row([ca_id], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("negative CRL number".into()))
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let conn = self.conn()?;
        insert_audit(&conn, entry)?;
        Ok(())
    }

    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT at, event, actor, subject, detail FROM audit_log ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    event: r.get(1)?,
                    actor: r.get(2)?,
                    subject: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(id: &str) -> CertRecord {
        CertRecord {
            id: id.into(),
            ca_id: "ca".into(),
            kind: "device".into(),
            organization_id: 1,
            asset_id: 1,
            user_id: String::new(),
            role: None,
            certificate_pem: "pem".into(),
            not_before: 0,
            not_after: 10,
            status: CertStatus::Active,
            revoked_at: None,
            revocation_reason: 0,
            created_at: 0,
            updated_at: 0,
            number: 0,
        }
    }

    fn audit() -> AuditEntry {
        AuditEntry { at: 0, event: "refresh".into(), actor: "t".into(), subject: "c".into(), detail: String::new() }
    }

    #[test]
    fn a_token_is_consumed_once_and_expiry_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), false).unwrap();
        let mode = std::fs::metadata(dir.path().join("db")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = NewToken {
            hash: "h".into(),
            kind: TokenKind::Asset,
            organization_id: 7,
            name: "n".into(),
            role: None,
            created_by: "t".into(),
            created_at: 100,
            expires_at: 200,
        };
        assert_eq!(store.insert_token(&token).unwrap().asset_id, 1);
        assert_eq!(store.insert_token(&NewToken { hash: "h2".into(), ..token.clone() }).unwrap().asset_id, 2);
        assert_eq!(store.consume_token_and_insert("h", 200, &cert("a")).unwrap(), ConsumeOutcome::Unavailable);
        assert_eq!(store.consume_token_and_insert("h", 150, &cert("a")).unwrap(), ConsumeOutcome::Issued { number: 1 });
        assert_eq!(store.consume_token_and_insert("h", 150, &cert("b")).unwrap(), ConsumeOutcome::Unavailable);
        assert!(store.get_certificate("b").unwrap().is_none());
        assert_eq!(store.token_certificate("h").unwrap().map(|c| (c.id, c.number)), Some(("a".into(), 1)));
        assert_eq!(store.certificate_serial(1).unwrap().as_deref(), Some("a"));
        assert_eq!(store.insert_certificate(&cert("c"), &audit()).unwrap(), 2);
        let page = CertFilter { limit: 1, offset: 1, ..Default::default() };
        let (certs, total) = store.list_certificates(&page).unwrap();
        assert_eq!((certs.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), total), (vec!["c"], 2));
        let revoked = store.revoke_certificate("a", 1, 160, "me").unwrap().unwrap();
        assert_eq!(revoked.status, CertStatus::Revoked);
        assert_eq!(store.revoked_by_ca("ca").unwrap(), vec![("a".to_string(), 160)]);
        assert!(store.audit_log(10).unwrap().iter().any(|e| e.event == "revoke"));
    }

    #[test]
    fn the_checkpointer_moves_the_wal_into_the_database_and_truncates_it_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let wal = dir.path().join("db-wal");
        let store = SqliteStore::open(&db, false).unwrap();
        let token = |i: usize| NewToken {
            hash: format!("h{i}"),
            kind: TokenKind::Asset,
            organization_id: 1,
            name: "n".into(),
            role: None,
            created_by: "t".into(),
            created_at: 0,
            expires_at: 10,
        };
        for i in 0..200 {
            store.insert_token(&token(i)).unwrap();
        }
        let db_before = std::fs::metadata(&db).unwrap().len();
        std::thread::sleep(CHECKPOINT_INTERVAL * 3);
        assert!(std::fs::metadata(&db).unwrap().len() > db_before, "no checkpoint reached the database");
        drop(store);
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the WAL was not truncated");
        let reopened = SqliteStore::open(&db, false).unwrap();
        assert!(reopened.find_token("h199").unwrap().is_some());
    }

    use crate::store::CaPurpose;

    fn ca(id: &str, purpose: CaPurpose, issuing: bool) -> CaRecord {
        CaRecord {
            id: id.into(),
            common_name: format!("CN {id}"),
            fingerprint: format!("fp-{id}"),
            key_algorithm: "ml-dsa-65".into(),
            certificate_pem: "pem".into(),
            not_before: 0,
            not_after: 10,
            issuing,
            created_at: 0,
            purpose,
        }
    }

    #[test]
    fn each_purpose_has_its_own_issuing_ca_and_old_cas_migrate_as_device_cas() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        {
            // A database as the previous schema (version 2) left it.
            let conn = Connection::open(&db).unwrap();
            for sql in &MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO cas (id, common_name, fingerprint, key_algorithm, certificate_pem, not_before, not_after, issuing, created_at)
                 VALUES ('old', 'CN old', 'fp-old', 'ml-dsa-65', 'pem', 0, 10, 1, 0)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&db, false).unwrap();
        let purposes = |s: &SqliteStore| {
            s.list_cas().unwrap().into_iter().map(|c| (c.id, c.purpose, c.issuing)).collect::<Vec<_>>()
        };
        assert_eq!(purposes(&store), vec![("old".into(), CaPurpose::Device, true)]);
        store.insert_ca(&ca("cs1", CaPurpose::CodeSigning, true)).unwrap();
        store.insert_ca(&ca("dev2", CaPurpose::Device, true)).unwrap();
        assert_eq!(
            purposes(&store),
            vec![
                ("old".into(), CaPurpose::Device, false),
                ("cs1".into(), CaPurpose::CodeSigning, true),
                ("dev2".into(), CaPurpose::Device, true),
            ]
        );
        store.insert_ca(&ca("cs2", CaPurpose::CodeSigning, true)).unwrap();
        store.set_issuing_ca("cs1", 1).unwrap();
        store.set_issuing_ca("old", 1).unwrap();
        assert_eq!(
            purposes(&store),
            vec![
                ("old".into(), CaPurpose::Device, true),
                ("cs1".into(), CaPurpose::CodeSigning, true),
                ("dev2".into(), CaPurpose::Device, false),
                ("cs2".into(), CaPurpose::CodeSigning, false),
            ]
        );
        assert!(store.audit_log(10).unwrap().iter().any(|e| e.detail.starts_with("created codesign CA CN cs2")));
    }
}
