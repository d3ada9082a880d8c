//! `X-API-KEY` checking (APISIX semantics: header or `?api_key=`).

use crate::settings::{AdminKey, Role};

/// Why a request was refused; the admin API answers 401 with `description`.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Wrong,
    /// A viewer key used for a method other than GET.
    ReadOnlyRole,
}

impl AuthError {
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing apikey",
            AuthError::Wrong => "wrong apikey",
            AuthError::ReadOnlyRole => "the viewer role may only use GET",
        }
    }
}

/// Checks a presented key against the configured keys for `method`: its role.
#[cfg(test)]
fn authorize(keys: &[AdminKey], presented: Option<&str>, method: &str) -> Result<Role, AuthError> {
    authorized_key(keys, presented, method).map(|k| k.role)
}

/// The configured key `presented` matches, if it may use `method`.
pub fn authorized_key<'a>(
    keys: &'a [AdminKey],
    presented: Option<&str>,
    method: &str,
) -> Result<&'a AdminKey, AuthError> {
    let presented = presented.ok_or(AuthError::Missing)?;
    let key = keys
        .iter()
        .fold(None, |found, k| {
            // Compare against every key, in constant time per key, so timing does not
            // tell how much of a key matched.
            if constant_time_eq(k.key.as_bytes(), presented.as_bytes()) {
                Some(k)
            } else {
                found
            }
        })
        .ok_or(AuthError::Wrong)?;
    if key.role == Role::Viewer && method != "GET" && method != "HEAD" {
        return Err(AuthError::ReadOnlyRole);
    }
    Ok(key)
}

/// Compares two keys in time independent of their contents and lengths: both are hashed
/// to fixed-length SHA-256 digests first, which are compared without an early exit. A
/// byte-wise compare that returns on a length mismatch would tell an attacker the key's
/// length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{digest, SHA256};
    let (da, db) = (digest(&SHA256, a), digest(&SHA256, b));
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<AdminKey> {
        vec![
            AdminKey {
                name: "a".into(),
                key: "admin-key-123456".into(),
                role: Role::Admin,
            },
            AdminKey {
                name: "v".into(),
                key: "viewer-key-12345".into(),
                role: Role::Viewer,
            },
        ]
    }

    #[test]
    fn roles() {
        let k = keys();
        assert_eq!(authorize(&k, None, "GET"), Err(AuthError::Missing));
        assert_eq!(authorize(&k, Some("nope"), "GET"), Err(AuthError::Wrong));
        assert_eq!(
            authorize(&k, Some("admin-key-123456"), "PUT"),
            Ok(Role::Admin)
        );
        assert_eq!(
            authorize(&k, Some("viewer-key-12345"), "GET"),
            Ok(Role::Viewer)
        );
        assert_eq!(
            authorize(&k, Some("viewer-key-12345"), "PUT"),
            Err(AuthError::ReadOnlyRole)
        );
    }

    #[test]
    fn keys_of_other_lengths_and_prefixes_do_not_match() {
        assert!(constant_time_eq(b"admin-key-123456", b"admin-key-123456"));
        assert!(!constant_time_eq(b"admin-key-123456", b"admin-key-12345"));
        assert!(!constant_time_eq(b"admin-key-123456", b"admin-key-1234567"));
        assert!(!constant_time_eq(b"", b"admin-key-123456"));
    }
}
