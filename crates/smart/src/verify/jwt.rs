//! A JWS compact serialisation taken apart (RFC 7515 §7.1), and the registered claims checked
//! (RFC 7519 §4.1).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::AuthError;

/// A signed token taken apart; nothing in it is trusted yet.
pub(super) struct Jws<'t> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, what the signature covers.
    pub(super) signing_input: &'t [u8],
    /// The decoded signature.
    pub(super) signature: Vec<u8>,
    /// The header's `alg`, an asymmetric algorithm.
    pub(super) alg: Algorithm,
    /// The header's `kid`.
    pub(super) kid: Option<String>,
    /// The payload.
    pub(super) claims: Map<String, Value>,
}

/// Whether `token` has the shape of a JWS: exactly three dot-separated parts of base64url
/// characters (RFC 7515 §7.1). Anything else is an opaque token.
pub(super) fn is_jws_shaped(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
        && token
            .bytes()
            .all(|b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
}

/// Whether `token` matches RFC 6750 §2.1's `b64token`:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(super) fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Takes a JWS-shaped token apart. The header is checked here, before anything is verified:
/// no key references of its own (`jku`, `x5u`, `jwk`, `x5c`), no critical extensions (RFC 7515
/// §4.1.11: none is understood here), and an asymmetric `alg` (never `none`, never HMAC).
pub(super) fn parse(token: &str) -> Result<Jws<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let signed_len = header.len() + 1 + payload.len();
    let signing_input = token
        .as_bytes()
        .get(..signed_len)
        .ok_or(AuthError::Malformed)?;
    let header = json_object(header)?;
    if ["jku", "x5u", "jwk", "x5c"]
        .iter()
        .any(|name| header.contains_key(*name))
    {
        return Err(AuthError::ForeignKeyReference);
    }
    if header.contains_key("crit") {
        return Err(AuthError::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => algorithm(name).ok_or(AuthError::AlgorithmRefused)?,
        _ => return Err(AuthError::Malformed),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    let claims = json_object(payload)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::Malformed)?;
    Ok(Jws {
        signing_input,
        signature,
        alg,
        kid,
        claims,
    })
}

/// The asymmetric JWS algorithm called `name` (RFC 7518 §3.1, RFC 8037 §3.1); `none`, HMAC and
/// unknown names give `None`.
pub(super) fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Checks `exp` (required) and `nbf` (optional) against `now`, each with `leeway` seconds
/// (RFC 7519 §4.1.4: the current time "MUST be before the expiration time"; §4.1.5: "MUST NOT
/// be accepted for processing" before `nbf`), and returns `exp`.
pub(super) fn check_times(
    claims: &Map<String, Value>,
    leeway: i64,
    now: i64,
) -> Result<i64, AuthError> {
    let exp = numeric_date(claims.get("exp"))?.ok_or(AuthError::NoExpiry)?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = numeric_date(claims.get("nbf"))?
        && now.saturating_add(leeway) < nbf
    {
        return Err(AuthError::NotYetValid);
    }
    Ok(exp)
}

/// Checks that `aud` (a string or a list of strings, RFC 7519 §4.1.3) names one of `accepted`.
/// An absent `aud` does not.
pub(super) fn check_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), AuthError> {
    let named = |value: &str| accepted.iter().any(|a| a == value);
    match aud {
        Some(Value::String(value)) if named(value) => Ok(()),
        Some(Value::String(_)) | None => Err(AuthError::WrongAudience),
        Some(Value::Array(values)) => {
            let mut found = false;
            for value in values {
                found |= named(value.as_str().ok_or(AuthError::Malformed)?);
            }
            if found {
                Ok(())
            } else {
                Err(AuthError::WrongAudience)
            }
        }
        Some(_) => Err(AuthError::Malformed),
    }
}

/// Seconds since the Unix epoch (negative before it).
pub(super) fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn json_object(part: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// A NumericDate (RFC 7519 §2: seconds, possibly with a fraction), floored and saturated to
/// `i64`. Absent is `None`; anything but a number is malformed.
fn numeric_date(value: Option<&Value>) -> Result<Option<i64>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(AuthError::Malformed);
    };
    if let Some(seconds) = number.as_i64() {
        return Ok(Some(seconds));
    }
    match number.as_f64() {
        // `as` saturates at the bounds of `i64`.
        #[allow(clippy::cast_possible_truncation)]
        Some(seconds) if seconds.is_finite() => Ok(Some(seconds.floor() as i64)),
        _ => Err(AuthError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn shapes() {
        assert!(is_jws_shaped("a.b.c"));
        assert!(is_jws_shaped("a.b."));
        assert!(!is_jws_shaped("a.b.c.d"));
        assert!(!is_jws_shaped("a.b"));
        assert!(!is_jws_shaped("a.b+.c"));
        assert!(is_b64token("abc+/~-._=="));
        assert!(!is_b64token("=="));
        assert!(!is_b64token("a b"));
        assert!(!is_b64token("a=b"));
    }

    #[test]
    fn times_with_leeway_and_fractions() {
        let now = 1_000;
        let c = claims(json!({"exp": 1_000.5}));
        assert_eq!(check_times(&c, 0, now), Err(AuthError::Expired));
        assert_eq!(check_times(&c, 1, now), Ok(1_000));
        let c = claims(json!({"exp": 2_000, "nbf": 1_010}));
        assert_eq!(check_times(&c, 5, now), Err(AuthError::NotYetValid));
        assert_eq!(check_times(&c, 10, now), Ok(2_000));
        let c = claims(json!({"exp": "2000"}));
        assert_eq!(check_times(&c, 0, now), Err(AuthError::Malformed));
        let c = claims(json!({"exp": 1e300}));
        assert_eq!(check_times(&c, i64::MAX, i64::MAX - 1), Ok(i64::MAX));
        assert_eq!(
            check_times(&claims(json!({})), 0, now),
            Err(AuthError::NoExpiry)
        );
    }

    #[test]
    fn audiences() {
        let accepted = ["https://fhir".to_string()];
        assert_eq!(
            check_audience(Some(&json!("https://fhir")), &accepted),
            Ok(())
        );
        assert_eq!(
            check_audience(Some(&json!(["x", "https://fhir"])), &accepted),
            Ok(())
        );
        assert_eq!(
            check_audience(Some(&json!(["x"])), &accepted),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            check_audience(None, &accepted),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            check_audience(Some(&json!(["https://fhir", 3])), &accepted),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check_audience(Some(&json!("https://fhir")), &[]),
            Err(AuthError::WrongAudience)
        );
    }
}
