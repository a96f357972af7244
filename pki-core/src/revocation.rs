//! Revocation reasons: the published protocol carries them as free text, the
//! store and CRLs as RFC 5280 `CRLReason` codes.

/// RFC 5280 §5.3.1 reason codes and their names (7 is unused).
const REASONS: &[(i32, &str)] = &[
    (0, "unspecified"),
    (1, "keyCompromise"),
    (2, "cACompromise"),
    (3, "affiliationChanged"),
    (4, "superseded"),
    (5, "cessationOfOperation"),
    (6, "certificateHold"),
    (8, "removeFromCRL"),
    (9, "privilegeWithdrawn"),
    (10, "aACompromise"),
];

/// The code of a reason name. Case, `_`, `-` and spaces do not matter
/// (`key_compromise`, `KEY-COMPROMISE`); anything else is `unspecified`.
pub fn code(reason: &str) -> i32 {
    let wanted: String = reason.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    REASONS.iter().find(|(_, name)| name.to_ascii_lowercase() == wanted).map_or(0, |(c, _)| *c)
}

/// The name of a code (`unspecified` for unknown codes).
pub fn name(code: i32) -> &'static str {
    REASONS.iter().find(|(c, _)| *c == code).map_or("unspecified", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes() {
        assert_eq!(code("keyCompromise"), 1);
        assert_eq!(code("KEY_COMPROMISE"), 1);
        assert_eq!(code("superseded"), 4);
        assert_eq!(code("lost it on the bus"), 0);
        assert_eq!(code(""), 0);
        assert_eq!(name(5), "cessationOfOperation");
        assert_eq!(name(77), "unspecified");
        for (c, n) in REASONS {
            assert_eq!(code(n), *c);
        }
    }
}
