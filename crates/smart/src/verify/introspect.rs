//! Opaque tokens, checked with the authorization server (RFC 7662, as SMART App Launch 2
//! profiles it in `token-introspection.md`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value};
use url::form_urlencoded;

use super::{AuthError, IntrospectionConfig, jwt};

const INTROSPECTION_BODY_LIMIT: usize = 64 * 1024;

/// Asks the introspection endpoint about `token` and checks the answer: `active` must be `true`
/// (RFC 7662 §2.2), `iss` the configured issuer if one is configured, `exp` present and ahead,
/// `nbf` (if any) passed, and `aud` (if any) one of the configured audiences. Returns the
/// response's members, the claims of the token.
pub(super) async fn introspect(
    config: &IntrospectionConfig,
    http: &reqwest::Client,
    token: &str,
) -> Result<(Map<String, Value>, i64), AuthError> {
    let mut form = vec![("token", token), ("token_type_hint", "access_token")];
    let mut request = http.post(&config.endpoint);
    match &config.client_secret {
        // RFC 7662 §2.1 with RFC 6749 §2.3.1: the id and secret are form-encoded, then Basic.
        Some(secret) => {
            let credentials = format!(
                "{}:{}",
                form_encoded(&config.client_id),
                form_encoded(secret)
            );
            let value = format!("Basic {}", STANDARD.encode(credentials));
            request = request.header(AUTHORIZATION, value);
        }
        None => form.push(("client_id", &config.client_id)),
    }
    let Some(Value::Object(response)) =
        super::fetch::json(request.form(&form), INTROSPECTION_BODY_LIMIT).await
    else {
        return Err(AuthError::KeysUnavailable);
    };
    // RFC 7662 §2.2: `active` is REQUIRED, a boolean.
    if response.get("active") != Some(&Value::Bool(true)) {
        return Err(AuthError::Inactive);
    }
    if let Some(issuer) = &config.issuer
        && response.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(AuthError::UnknownIssuer);
    }
    let exp = jwt::check_times(&response, 0, jwt::unix_now())?;
    if let Some(aud) = response.get("aud") {
        jwt::check_audience(Some(aud), &config.audience)?;
    }
    Ok((response, exp))
}

fn form_encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
