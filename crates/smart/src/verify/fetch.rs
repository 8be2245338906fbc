//! One bounded HTTP exchange with an authorization server: a 5 s timeout for the whole exchange,
//! 200 with a JSON body only, the body capped. The verifier fetches JWKS, discovery documents and
//! introspection answers this way; the embedded authorization server (`fhirseal-auth-server`), its
//! clients' JWKS.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

/// The whole exchange (connecting, sending, reading the body) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` and reads a JSON answer of at most `limit` bytes; `None` for a transport
/// error, a timeout, a status other than 200, a content type other than JSON, a longer body, or
/// a body that is not JSON.
pub async fn json(request: reqwest::RequestBuilder, limit: usize) -> Option<Value> {
    let mut response = request
        .header(ACCEPT, "application/json")
        .timeout(TIMEOUT)
        .send()
        .await
        .ok()?;
    if response.status() != reqwest::StatusCode::OK || !is_json(response.headers()) {
        return None;
    }
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).ok()
}

/// `application/json`, or a `+json` type such as `application/jwk-set+json`.
fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}
