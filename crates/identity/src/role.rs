//! Roles carried in user certificates.
//!
//! The role travels in the subject as an organizational unit
//! `wendy-role=<Role>` (see docs/decisions/0002-role-in-subject-ou.md).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The prefix of the subject OU that carries a role.
pub const ROLE_OU_PREFIX: &str = "wendy-role=";

/// A user's role, from least to most privileged. `Ord` follows privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Deploy and manage apps.
    Member,
    /// Manage the device: update, reboot, unprovision.
    Admin,
    /// Everything.
    Owner,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 4] = [Self::Viewer, Self::Member, Self::Admin, Self::Owner];

    /// The canonical name: `Owner`, `Admin`, `Member` or `Viewer`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "Viewer",
            Self::Member => "Member",
            Self::Admin => "Admin",
            Self::Owner => "Owner",
        }
    }

    /// Whether this role may do what `required` may do.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    /// The subject OU value that encodes this role.
    pub fn subject_ou(self) -> String {
        format!("{ROLE_OU_PREFIX}{}", self.name())
    }

    /// Reads a role from a subject OU value, if it is one.
    pub fn from_subject_ou(ou: &str) -> Option<Result<Self, Error>> {
        ou.strip_prefix(ROLE_OU_PREFIX).map(str::parse)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| Error::Role(t.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_privilege() {
        assert!(Role::Owner.allows(Role::Admin));
        assert!(Role::Admin.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Member));
        assert!(!Role::Member.allows(Role::Admin));
    }

    #[test]
    fn names_and_ou_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>().unwrap(), r);
            assert_eq!(Role::from_subject_ou(&r.subject_ou()).unwrap().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Role::from_subject_ou("engineering").is_none());
    }
}
