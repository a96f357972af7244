//! Who is calling: an API key (`authorization: Bearer <key>`), or the local
//! operator on the admin socket. Each principal carries a role.

use tonic::metadata::MetadataMap;
use wendy_identity::role::Role;
use wendy_proto::contract::AUTHORIZATION_HEADER;

use crate::Error;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// API key id, or `local` for the admin socket.
    pub id: String,
    /// The caller's role.
    pub role: Role,
}

impl Principal {
    /// The local operator (admin socket): Owner.
    pub fn local() -> Self {
        Self { id: "local".into(), role: Role::Owner }
    }

    /// Refuses unless the caller has at least `required`.
    pub fn require(&self, required: Role) -> Result<(), Error> {
        if self.role.allows(required) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!("this needs role {required}, the API key has {}", self.role)))
        }
    }
}

/// The bearer secret in `metadata`, if any.
pub fn bearer(metadata: &MetadataMap) -> Result<Option<String>, Error> {
    let Some(value) = metadata.get(AUTHORIZATION_HEADER) else { return Ok(None) };
    let value = value.to_str().map_err(|_| Error::Unauthenticated("malformed authorization header".into()))?;
    let mut parts = value.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(secret)) if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() => {
            Ok(Some(secret.trim().to_owned()))
        }
        _ => Err(Error::Unauthenticated("expected `authorization: Bearer <api key>`".into())),
    }
}
