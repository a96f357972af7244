//! Keeping the identity fresh while provisioned: certificate renewal at
//! about 2/3 of its lifetime (with jitter), and CRL refreshes from pki-core
//! with an on-disk copy so revocations survive restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use wendy_identity::crl::VerifiedCrl;
use wendy_identity::profile::CLOCK_SKEW_ALLOWANCE;
use wendy_identity::verify::CertificateInfo;
use wendy_proto::pkicore::GetCrlRequest;

use crate::cloud::{self, Security};
use crate::daemon::{Daemon, Identity};
use crate::{enroll, state};

/// The least time between two renewals, so a short-lived certificate can
/// never make the agent spin.
pub const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// When to renew a certificate valid over `[not_before, not_after]`, as a
/// delay from `now`: at 2/3 of its lifetime ± 1/20 jitter, at least
/// [`MIN_RENEWAL_DELAY`]. Issuers backdate `not_before` by
/// [`CLOCK_SKEW_ALLOWANCE`]; the lifetime is counted from the issuance time
/// (`not_before` + allowance) so short-lived certificates are not renewed
/// at once.
pub fn renewal_delay(not_before: i64, not_after: i64, now: i64, jitter: f64) -> Duration {
    let skew = CLOCK_SKEW_ALLOWANCE.whole_seconds();
    let issued = if not_after - not_before > skew { not_before + skew } else { not_before };
    let lifetime = (not_after - issued).max(0) as f64;
    let at = issued as f64 + lifetime * 2.0 / 3.0 + lifetime / 20.0 * jitter.clamp(-1.0, 1.0);
    Duration::from_secs_f64((at - now as f64).max(0.0)).max(MIN_RENEWAL_DELAY)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Renews the certificate forever; retries failures with back-off.
pub async fn renewal_loop(daemon: Weak<Daemon>, identity: Arc<Identity>) {
    loop {
        let p = identity.current();
        let Ok(info) = CertificateInfo::from_pem(&p.cert_pem) else {
            tracing::error!("the stored certificate does not parse; renewal disabled");
            return;
        };
        let (nb, na) = (info.not_before.unix_timestamp(), info.not_after.unix_timestamp());
        let delay = renewal_delay(nb, na, unix_now(), rand::thread_rng().gen_range(-1.0..=1.0));
        tracing::info!(in_secs = delay.as_secs(), not_after = %info.not_after, "certificate renewal scheduled");
        tokio::time::sleep(delay).await;
        let retry = Duration::from_secs((((na - nb) / 20).max(5) as u64).min(3600));
        loop {
            let p = identity.current();
            let result = match enroll::check_identity(&p, None) {
                Ok(credentials) => enroll::refresh(&p, &credentials).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(new) => {
                    let Some(d) = daemon.upgrade() else { return };
                    match d.renewed(&identity, new).await {
                        Ok(()) => {
                            tracing::info!("certificate renewed; new handshakes use it");
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not install the renewed certificate")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_secs = retry.as_secs(), "certificate renewal failed")
                }
            }
            tokio::time::sleep(retry).await;
        }
    }
}

/// Applies the CRL copy on disk, if any.
pub fn apply_stored_crl(identity: &Identity, file: &Path) {
    let Ok(Some(pem)) = crate::firstboot::read_seed(file, crate::state::MAX_FILE_BYTES) else {
        return;
    };
    let pem = String::from_utf8_lossy(&pem);
    match apply(identity, &pem) {
        Ok(n) => tracing::info!(crls = n, file = %file.display(), "applied the stored CRL"),
        Err(e) => tracing::warn!(error = %e, file = %file.display(), "ignoring the stored CRL"),
    }
}

fn apply(identity: &Identity, pem: &str) -> Result<usize, wendy_identity::Error> {
    let bundle = identity.verifier.store().bundle().clone();
    let crls = VerifiedCrl::from_pem(pem, &bundle)?;
    identity.verifier.set_crls(&crls)?;
    Ok(crls.len())
}

async fn fetch(identity: &Identity) -> Result<String, String> {
    let p = identity.current();
    let credentials = enroll::check_identity(&p, None).map_err(|e| e.to_string())?;
    let pin = enroll::chain_pin(&p).map_err(|e| e.to_string())?;
    let channel = cloud::connect(&p.cloud_host, Security::Pinned { pins: vec![pin], client: Some(&credentials) })
        .await
        .map_err(|e| e.to_string())?;
    let response = cloud::crls(channel)
        .get_crl(GetCrlRequest { ca_id: String::new() })
        .await
        .map_err(|s| cloud::describe_status(&s))?
        .into_inner();
    Ok(response.pem_crls.join("\n"))
}

/// Fetches the CRLs now and every `period`, applies them and keeps a copy
/// at `file`.
pub async fn crl_loop(identity: Arc<Identity>, file: PathBuf, period: Duration) {
    loop {
        match fetch(&identity).await {
            Ok(pem) if pem.trim().is_empty() => tracing::debug!("pki-core returned no CRL"),
            Ok(pem) => match apply(&identity, &pem) {
                Ok(n) => {
                    tracing::debug!(crls = n, "CRL refreshed");
                    if let Err(e) = state::write_atomic(&file, pem.as_bytes(), state::FILE_MODE, false) {
                        tracing::warn!(error = %e, "could not keep the CRL on disk");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pki-core sent a CRL that does not verify; keeping the previous one")
                }
            },
            Err(e) => tracing::warn!(error = %e, "CRL refresh failed; keeping the previous one"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds_with_bounded_jitter() {
        // 12 s certificate backdated by the 300 s allowance: renew ~8 s after issue.
        assert_eq!(renewal_delay(0, 312, 300, 0.0), Duration::from_secs(8));
        let day: u64 = 86_400;
        let d = renewal_delay(0, 300 + 30 * day as i64, 300, 1.0).as_secs();
        assert_eq!(d, 20 * day + 30 * day / 20);
        assert_eq!(renewal_delay(0, 300 + 30 * day as i64, 300, -1.0).as_secs(), 20 * day - 30 * day / 20);
        assert_eq!(renewal_delay(0, 100, 500, 0.0), MIN_RENEWAL_DELAY);
    }
}
