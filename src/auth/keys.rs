//! API keys: what a key is (a random secret with a readable prefix), how it is kept (only its
//! SHA-256, with an id, a name, scopes and dates) and what its scopes allow.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::event::timefmt::format_rfc3339_ms;

/// What every key starts with, so a key found somewhere says what it is.
pub const KEY_PREFIX: &str = "evk_";
/// Characters of a key after its prefix: 22 base62 digits carry 130.9 bits, all random.
const KEY_DIGITS: usize = 22;
/// Characters of a key shown in listings (`evk_` and four more): enough to tell keys apart,
/// far too few to guess the rest.
const SHOWN_PREFIX: usize = 8;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may do. `admin` implies `read` and `ingest`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (`POST /events` and the other ingest endpoints).
    Ingest,
    /// Read events, metrics, streams, alerts and the detailed health.
    Read,
    /// Manage keys, dead letters and alert rules; implies the others.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope '{other}': use ingest, read or admin"
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort_unstable();
        scopes.dedup();
        Scopes(scopes)
    }

    /// Whether they allow what `needed` guards.
    pub fn allow(&self, needed: Scope) -> bool {
        self.0.contains(&needed) || self.0.contains(&Scope::Admin)
    }

    pub fn list(&self) -> &[Scope] {
        &self.0
    }

    /// `ingest,read`: how stores keep them.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|scope| scope.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn from_text(text: &str) -> Result<Scopes, String> {
        let scopes = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err("a key needs at least one scope: ingest, read or admin".to_owned());
        }
        Ok(Scopes::new(scopes))
    }
}

/// A key as stored: everything but the secret, of which only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Public, stable: what listings show and revocation names (`key_` + 12 base62 digits).
    pub id: String,
    pub name: String,
    /// The key's first characters (`evk_AbCd`), to recognise it.
    pub prefix: String,
    /// SHA-256 of the whole key: a secret of 130 random bits needs no slow hash.
    pub hash: [u8; 32],
    pub scopes: Scopes,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    /// When it was last used, as last written (lazily: not on every request).
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl KeyRecord {
    /// Whether it may still be used at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|expires| now_ms < expires)
    }
}

/// A new key: the secret, shown once, and its record.
pub struct NewKey {
    pub secret: String,
    pub record: KeyRecord,
}

/// A key as it is shown (`GET /keys`, `eventide keys list --json`): never its secret.
#[derive(Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    /// Its first characters, to recognise it.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub expires: Option<String>,
    /// When it was last used (written back every few seconds, not on each request).
    #[schema(format = DateTime)]
    pub last_used: Option<String>,
    #[schema(format = DateTime)]
    pub revoked: Option<String>,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(record: &KeyRecord) -> KeyInfo {
        KeyInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            prefix: record.prefix.clone(),
            scopes: record.scopes.list().to_vec(),
            created: format_rfc3339_ms(record.created_ms),
            expires: record.expires_ms.map(format_rfc3339_ms),
            last_used: record.last_used_ms.map(format_rfc3339_ms),
            revoked: record.revoked_ms.map(format_rfc3339_ms),
        }
    }
}

/// A new key as `POST /keys` and `eventide keys create --json` show it: `key` is its secret,
/// shown this once (only its hash is kept).
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The secret: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

impl From<&NewKey> for CreatedKey {
    fn from(made: &NewKey) -> CreatedKey {
        CreatedKey {
            key: made.secret.clone(),
            info: KeyInfo::from(&made.record),
        }
    }
}

/// Makes a key named `name` with `scopes`, valid until `expires_ms` if given.
pub fn generate(
    name: &str,
    scopes: Scopes,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> anyhow::Result<NewKey> {
    let secret = format!("{KEY_PREFIX}{}", random_base62(KEY_DIGITS)?);
    let id = format!("key_{}", random_base62(12)?);
    Ok(NewKey {
        record: record_for(&secret, id, name, scopes, created_ms, expires_ms),
        secret,
    })
}

/// The record of a key whose secret was chosen elsewhere (the bootstrap key of a container).
pub fn record_for(
    secret: &str,
    id: String,
    name: &str,
    scopes: Scopes,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> KeyRecord {
    KeyRecord {
        id,
        name: name.to_owned(),
        prefix: secret.chars().take(SHOWN_PREFIX).collect(),
        hash: hash(secret),
        scopes,
        created_ms,
        expires_ms,
        last_used_ms: None,
        revoked_ms: None,
    }
}

/// Whether `secret` is shaped like a key this service makes (for a bootstrap key given
/// from outside: a short or guessable one is refused).
pub fn check_format(secret: &str) -> Result<(), String> {
    let digits = secret.strip_prefix(KEY_PREFIX).ok_or_else(|| {
        format!("a key starts with '{KEY_PREFIX}' (make one with `eventide keys create`)")
    })?;
    if digits.len() < KEY_DIGITS || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "a key has at least {KEY_DIGITS} letters and digits after '{KEY_PREFIX}'"
        ));
    }
    Ok(())
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A random id of `digits` base62 digits, from the operating system's generator.
pub fn random_base62(digits: usize) -> anyhow::Result<String> {
    let mut out = String::with_capacity(digits);
    let mut bytes = [0u8; 32];
    while out.len() < digits {
        getrandom::fill(&mut bytes)
            .map_err(|err| anyhow::anyhow!("no random numbers from the operating system: {err}"))?;
        // Rejection sampling keeps every digit uniform: 248 = 4 x 62.
        for &byte in bytes.iter().filter(|&&byte| byte < 248) {
            if out.len() == digits {
                break;
            }
            out.push(BASE62[(byte % 62) as usize] as char);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_prefix_enough_entropy_and_only_their_hash_is_kept() {
        let made = generate("ci", Scopes::new([Scope::Ingest]), 1, None).unwrap();
        assert!(made.secret.starts_with("evk_"));
        assert_eq!(made.secret.len(), 4 + 22);
        check_format(&made.secret).unwrap();
        assert_eq!(made.record.hash, hash(&made.secret));
        assert_eq!(made.record.prefix, &made.secret[..8]);
        assert!(made.record.id.starts_with("key_"));
        let other = generate("ci", Scopes::new([Scope::Ingest]), 1, None).unwrap();
        assert_ne!(made.secret, other.secret);
        assert_ne!(made.record.id, other.record.id);
    }

    #[test]
    fn admin_implies_the_other_scopes() {
        let admin = Scopes::new([Scope::Admin]);
        assert!(admin.allow(Scope::Read) && admin.allow(Scope::Ingest));
        let ingest = Scopes::new([Scope::Ingest]);
        assert!(ingest.allow(Scope::Ingest));
        assert!(!ingest.allow(Scope::Read) && !ingest.allow(Scope::Admin));
        assert_eq!(
            Scopes::from_text("read,ingest,read").unwrap().to_text(),
            "ingest,read"
        );
        assert!(Scopes::from_text("").is_err());
        assert!(Scopes::from_text("write").is_err());
    }

    #[test]
    fn keys_from_outside_must_look_like_ours() {
        for foreign in ["hunter2", "evk_short", "evk_0123456789abcdefghij-!"] {
            assert!(check_format(foreign).is_err(), "{foreign}");
        }
        assert!(check_format("evk_0123456789abcdefghijKL").is_ok());
    }

    #[test]
    fn expired_and_revoked_keys_are_not_active() {
        let mut record = generate("x", Scopes::new([Scope::Read]), 0, Some(100))
            .unwrap()
            .record;
        assert!(record.is_active(99));
        assert!(!record.is_active(100));
        record.expires_ms = None;
        record.revoked_ms = Some(5);
        assert!(!record.is_active(6));
    }
}
