//! What the upstream holds: one function that reads a resource ([`fetch`], status and shape
//! checked) and the version checks of `If-Match`. An upstream refusal becomes the client's error
//! by the one mapping, [`ApiError::from_upstream_status`].

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::{Id, ResourceType};
use fhirseal_upstream::UpstreamRequest;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::flow::authorize::authorize;
use crate::flow::protect::open_for;
use crate::flow::respond::{Answer, note};
use crate::state::AppState;

/// `GET [type]/[id]` and, with a `version`, `GET [type]/[id]/_history/[vid]`: the stored resource
/// checked against the scopes and the policy, then opened for the caller.
pub async fn read(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    id: &Id,
    version: Option<&Id>,
) -> Result<Answer, ApiError> {
    let (resource_type, id) = (resource_type.as_str(), id.as_str());
    let (interaction, name, path) = match version {
        Some(v) => (
            Interaction::Vread,
            "vread",
            format!("{resource_type}/{id}/_history/{v}"),
        ),
        None => (Interaction::Read, "read", format!("{resource_type}/{id}")),
    };
    let stored = fetch(state, resource_type, id, path, Parse::ForReader).await?;
    authorize(state, caller, interaction, &stored.resource)?;
    let (opened, report) = open_for(state, caller, stored.resource).await?;
    let note = note(name, vec![format!("{resource_type}/{id}")], report, 0);
    Ok(Answer::new(StatusCode::OK, Some(opened), note).with_headers(&stored.headers))
}

/// A stored resource and the upstream's response headers.
pub struct Stored {
    /// The resource, as the upstream stores it (sealed).
    pub resource: Value,
    /// The upstream's response headers.
    pub headers: HeaderMap,
}

/// How an upstream answer is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// For a reader: without the blind-index tokens, which opening would drop
    /// ([`fhirseal_seal::parse_for_reader`]). Most of a sealed Patient's bytes are tokens.
    ForReader,
    /// Whole, tokens included: for a change, whose merge carries the stored tokens of what it
    /// cannot recompute ([`fhirseal_seal::merge()`]).
    Whole,
}

impl Parse {
    /// The upstream's `body` as JSON; [`ApiError::UpstreamMalformed`] when it is not.
    pub fn body(self, body: &[u8]) -> Result<Value, ApiError> {
        match self {
            Self::ForReader => fhirseal_seal::parse_for_reader(body),
            Self::Whole => serde_json::from_slice(body),
        }
        .map_err(|_| ApiError::UpstreamMalformed)
    }
}

/// `GET path` on the upstream, which must be `resource_type`/`id`, parsed as `parse` says: 404
/// and 410 are [`ApiError::NotFound`] and [`ApiError::Gone`], other refusals as
/// [`ApiError::from_upstream_status`] maps them.
pub async fn fetch(
    state: &AppState,
    resource_type: &str,
    id: &str,
    path: String,
    parse: Parse,
) -> Result<Stored, ApiError> {
    let request = UpstreamRequest::new(Method::GET, path).with_header(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        let target = Some((resource_type, id));
        return Err(ApiError::from_upstream_response(&response, target));
    }
    let (_, headers, body) = response.into_parts();
    let resource = parse.body(&body)?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || resource.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(ApiError::UpstreamMalformed);
    }
    Ok(Stored { resource, headers })
}

/// An ETag (`W/"3"`, `"3"` or `3`) against the stored resource's `meta.versionId`: 412 unless
/// it names the current version.
pub fn check_version(wanted: &str, stored: &Value) -> Result<(), ApiError> {
    let wanted = wanted.trim();
    let wanted = wanted
        .strip_prefix("W/")
        .unwrap_or(wanted)
        .trim_matches('"');
    match version_of(stored) {
        Some(current) if current == wanted => Ok(()),
        _ => Err(ApiError::PreconditionFailed(
            "If-Match does not name the current version",
        )),
    }
}

/// A resource's `meta.versionId`.
pub fn version_of(resource: &Value) -> Option<String> {
    resource
        .get("meta")
        .and_then(|m| m.get("versionId"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl std::fmt::Debug for Stored {
    /// No content: the resource may hold protected values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Found {
    /// No content: the resource may hold protected values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Found::None",
            Self::One(_) => "Found::One(..)",
            Self::Many => "Found::Many",
        })
    }
}

/// What a conditional interaction's search found.
pub enum Found {
    /// No resource matches.
    None,
    /// One resource matches: this one.
    One(Value),
    /// More than one resource matches.
    Many,
}
