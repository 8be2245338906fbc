//! Compact JWS, read strictly: three base64url parts, a JSON header with a known `alg` and no
//! `crit`, a JSON object of claims. The signature is checked with `jsonwebtoken`'s crypto; the
//! claims by the callers, by hand, since what they need (SMART's five-minute `exp` bound, `jti`
//! replay, `sub` = `iss`) goes beyond `jsonwebtoken::Validation`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde_json::{Map, Value};

/// The longest token read, in bytes.
const MAX_TOKEN: usize = 16 * 1024;

/// A compact JWS, parsed but not verified.
#[derive(Debug)]
pub(super) struct Jws<'a> {
    pub(super) header: Header,
    pub(super) claims: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
}

impl<'a> Jws<'a> {
    /// Parses a token; `None` for anything malformed.
    pub(super) fn parse(token: &'a str) -> Option<Self> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        if payload.contains('.') || signature.is_empty() {
            return None;
        }
        let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: no extension is understood here.
            return None;
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let Value::Object(claims) = claims else {
            return None;
        };
        Some(Self {
            header,
            claims,
            signed,
            signature,
        })
    }

    /// Whether the signature verifies under `key` with the header's algorithm, which must be
    /// `alg`.
    pub(super) fn verifies(&self, key: &DecodingKey, alg: Algorithm) -> bool {
        self.header.alg == alg
            && jsonwebtoken::crypto::verify(self.signature, self.signed.as_bytes(), key, alg)
                .unwrap_or(false)
    }

    /// A string claim.
    pub(super) fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A non-negative integer claim (a NumericDate).
    pub(super) fn seconds(&self, name: &str) -> Option<u64> {
        self.claims.get(name).and_then(Value::as_u64)
    }

    /// Whether `aud` is `audience` or a list holding it.
    pub(super) fn has_audience(&self, audience: &str) -> bool {
        match self.claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        }
    }
}
