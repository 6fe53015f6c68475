//! Bearer API keys. Keys are held only as sha256 digests and compared in constant time;
//! neither keys nor digests are ever logged. Past the auth layer a request carries only the
//! key's configured name and whether it is an admin key ([`KeyName`]); traces record the
//! name. An admin key (`admin = true`) sees every key's spend; any other key its own.

use r2_pool::{ApiKeySpec, KeySource};
use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
pub struct Keys {
    /// (name, sha256 of the key, admin)
    keys: Vec<(String, [u8; 32], bool)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _, _)| n.as_str()).collect();
        f.debug_struct("Keys").field("names", &names).finish()
    }
}

/// The configured name of the key a request was authorised with, set by the auth layer as
/// a request extension; traces record it (never the key or its digest).
#[derive(Debug, Clone)]
pub(crate) struct KeyName {
    pub name: String,
    pub admin: bool,
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    /// Resolve configured keys; environment variables are read here, once. Errors name
    /// the variable, never its value.
    pub fn from_config(specs: &[ApiKeySpec]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for s in specs {
            let d = match &s.source {
                KeySource::Sha256(hex) => {
                    parse_hex(hex).ok_or_else(|| format!("API key '{}': invalid sha256", s.name))?
                }
                KeySource::Env(var) => match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => digest(v.trim()),
                    _ => {
                        return Err(format!(
                            "API key '{}': environment variable {var} is not set",
                            s.name
                        ))
                    }
                },
            };
            keys.push((s.name.clone(), d, s.admin));
        }
        Ok(Self { keys })
    }

    pub fn from_plain(keys: &[(&str, &str)]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|(n, k)| (n.to_string(), digest(k), false))
                .collect(),
        }
    }

    /// Mark the keys named `names` as admin keys (for tests; configs say `admin = true`).
    pub fn with_admins(mut self, names: &[&str]) -> Self {
        for (n, _, admin) in &mut self.keys {
            *admin |= names.contains(&n.as_str());
        }
        self
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The name of the key this `Authorization` header carries, if valid.
    pub fn check(&self, authorization: Option<&str>) -> Option<&str> {
        self.caller(authorization).map(|(name, _)| name)
    }

    /// The name of the key this `Authorization` header carries and whether it is an admin
    /// key, if valid.
    pub fn caller(&self, authorization: Option<&str>) -> Option<(&str, bool)> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let d = digest(token);
        let mut found = None;
        for (name, k, admin) in &self.keys {
            // Constant-time over the digest bytes.
            let diff = k
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some((name.as_str(), *admin));
            }
        }
        found
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_digest() {
        let hex: String = digest("s3cret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let keys = Keys::from_config(&[ApiKeySpec {
            name: "alice".into(),
            source: KeySource::Sha256(hex),
            admin: true,
            budget: None,
        }])
        .unwrap();
        assert_eq!(keys.check(Some("Bearer s3cret")), Some("alice"));
        assert_eq!(keys.caller(Some("Bearer s3cret")), Some(("alice", true)));
        assert_eq!(keys.check(Some("Bearer wrong")), None);
        assert_eq!(keys.check(Some("s3cret")), None);
        assert_eq!(keys.check(None), None);
        assert!(!format!("{keys:?}").contains("s3cret"));
        let e = Keys::from_config(&[ApiKeySpec {
            name: "ci".into(),
            source: KeySource::Env("R2_TEST_UNSET_VARIABLE".into()),
            admin: false,
            budget: None,
        }])
        .unwrap_err();
        assert!(e.contains("R2_TEST_UNSET_VARIABLE"), "{e}");
    }
}
