//! The one place where errors become HTTP responses (STYLE rule 4: no other code picks a status
//! code). Every error leaves as a FHIR `OperationOutcome`; a 401 carries the RFC 6750
//! `WWW-Authenticate` challenge that says why, a 403 the `insufficient_scope` one.
//!
//! Diagnostics are fixed sentences about the request's shape (which check failed, which resource
//! type), never a token, a claim value or resource content.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_fhir::RequestError;
use fhirseal_smart::Refusal;
use fhirseal_smart::verify::AuthError;
use serde_json::json;

/// The realm of the gateway's bearer challenges.
pub const REALM: &str = "fhirseal";

/// The FHIR JSON media type of every body the gateway writes.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Why a request fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No usable access token: missing, malformed, expired, for another audience, signed by an
    /// unknown key… (401).
    #[error("authentication failed: {0}")]
    Unauthorized(#[from] AuthError),
    /// The token's scopes do not reach the request (403).
    #[error("forbidden: {0}")]
    Forbidden(#[from] Refusal),
    /// The resource does not exist here (404).
    #[error("{resource_type}/{id} is not known")]
    NotFound {
        /// The type asked for.
        resource_type: String,
        /// The id asked for.
        id: String,
    },
    /// The resource was deleted (410).
    #[error("{resource_type}/{id} was deleted")]
    Gone {
        /// The type asked for.
        resource_type: String,
        /// The id asked for.
        id: String,
    },
    /// The request is malformed (400); the reason is a fixed sentence.
    #[error("the request is invalid: {0}")]
    InvalidRequest(&'static str),
    /// The compliance policy does not permit the request (403). Why is for the audit trail, not
    /// the response.
    #[error("the compliance policy does not permit this request")]
    Denied,
    /// No such endpoint on this gateway (404).
    #[error("this gateway has no endpoint at this path")]
    UnknownPath,
    /// The endpoint exists but not for this HTTP method (405).
    #[error("this endpoint does not accept this HTTP method")]
    MethodNotAllowed,
    /// The upstream server could not be reached, reset the connection, or sent too much (502),
    /// or did not answer in time (504).
    #[error("the upstream FHIR server did not answer properly")]
    Upstream(#[source] fhirseal_upstream::UpstreamError),
    /// The upstream server answered with an error status where a resource was expected (502).
    #[error("the upstream FHIR server answered with an error")]
    UpstreamStatus(StatusCode),
    /// The upstream server does not know what was asked (404): an operation it does not have,
    /// or a search or history of a type it does not serve.
    #[error("the FHIR server does not know this resource, type or operation")]
    UpstreamNotFound,
    /// The upstream server does not support the interaction or operation (its 405 or 501; 501).
    #[error("the FHIR server does not support this interaction or operation")]
    UpstreamNotSupported,
    /// The upstream server's answer is not the FHIR JSON expected (502).
    #[error("the upstream FHIR server's answer is not valid FHIR JSON")]
    UpstreamMalformed,
    /// The token names no identity a decryption key can be bound to (no `fhirUser`, not a
    /// backend service, no issuer to qualify its subject with), or one the keyring cannot hold:
    /// a `#`, a reserved `client:`/`sub:` prefix on a `fhirUser`, a control character, too long
    /// (403).
    #[error("this token names no identity that decryption keys can be bound to")]
    KeyIdentity,
    /// An administrator revoked this identity's keys; the keyring does not re-enrol it (403).
    #[error("this identity's decryption keys are revoked")]
    KeysRevoked,
    /// The identity's key was issued or re-issued moments ago for other attributes than this
    /// token's roles give; the keyring re-issues an identity's key at most once per interval
    /// (409).
    #[error("this identity's key was re-issued moments ago for other roles; retry later")]
    KeyReissueThrottled,
    /// The attribute authority failed: its store is unreachable (503), or anything else (500).
    #[error("the key authority could not provide a key")]
    Authority(#[source] fhirseal_authority::Error),
    /// A key task did not complete (it panicked or the runtime is shutting down) (500).
    #[error("the key authority could not provide a key")]
    KeyTask,
    /// The body is not FHIR JSON (415).
    #[error("the body must be application/fhir+json")]
    UnsupportedMediaType,
    /// The body is over `server.max_body_bytes` (413).
    #[error("the body is larger than this gateway accepts")]
    PayloadTooLarge,
    /// The resource cannot be sealed as given (422; a crypto failure is a 500). The message
    /// names an element path and a shape problem, never a value.
    #[error("the resource cannot be sealed: {0}")]
    Seal(#[source] fhirseal_seal::SealError),
    /// The resource holds, at `path`, an element this gateway withheld as forged (a
    /// data-absent-reason `error` placeholder in a resource labelled forged,
    /// `docs/authenticity.md`): sealed as it is, it would stand as genuine (422). The message
    /// names the element's path, never a value.
    #[error(
        "the resource holds an element withheld as forged at {path}; writing it back would seal \
         the placeholder as genuine. Leave the element out, or write its true value"
    )]
    ForgedPlaceholder {
        /// The element's path (`Patient.birthDate`, `Patient.name[0]`).
        path: String,
    },
    /// The request is well-formed but cannot be processed as asked (422); a fixed sentence.
    #[error("the request cannot be processed: {0}")]
    Unprocessable(&'static str),
    /// A search parameter is refused (400): it reads a sealed element, is unknown for the type
    /// (fail closed) or is a chain or `_has`. The message names the parameter, never its value.
    #[error("{0}")]
    SearchRefused(String),
    /// The external authorization server's discovery document cannot be fetched (502).
    #[error("the authorization server's discovery document is not available")]
    DiscoveryUnavailable,
    /// The upstream server refused a write as conflicting with what it holds (409).
    #[error("the FHIR server refused the write as conflicting with what it holds")]
    UpstreamConflict,
    /// `If-Match` names another version than the current one, or a conditional interaction
    /// matched several resources (412).
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    /// A transaction entry is refused: the transaction fails as a whole, nothing goes upstream,
    /// and the answer is the entry's own (status, outcome), its `expression` naming the entry.
    #[error("{reason}")]
    TransactionEntry {
        /// The entry's index in the Bundle.
        index: usize,
        /// The entry's interaction, for the audit line.
        interaction: &'static str,
        /// The resource the entry names, for the audit line.
        resources: Vec<String>,
        /// The entry's own error.
        reason: Box<Self>,
    },
    /// The request is not a FHIR interaction this gateway serves: an unknown type or path (404),
    /// a method the path does not take (405), an id or parameter of the wrong syntax (400).
    #[error("{0}")]
    Request(#[from] RequestError),
    /// A Bundle inside a batch or transaction (400).
    #[error("the request is invalid: a batch or transaction may not hold another Bundle request")]
    NestedBundle,
    /// A `PATCH` whose body is not a JSON Patch (415); FHIRPath Patch is not supported.
    #[error(
        "PATCH takes a JSON Patch document (application/json-patch+json); FHIRPath Patch \
         (Parameters) is not supported"
    )]
    UnsupportedPatchFormat,
}

impl From<fhirseal_upstream::UpstreamError> for ApiError {
    fn from(error: fhirseal_upstream::UpstreamError) -> Self {
        Self::Upstream(error)
    }
}

impl ApiError {
    /// The status, the OperationOutcome issue code and the challenge of this error.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            Self::Unauthorized(e) => (
                StatusCode::UNAUTHORIZED,
                "login",
                Some(e.www_authenticate(REALM)),
            ),
            Self::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", \
                     error_description=\"the granted scopes do not allow this request\""
                )),
            ),
            Self::NotFound { .. } | Self::UnknownPath | Self::UpstreamNotFound => {
                (StatusCode::NOT_FOUND, "not-found", None)
            }
            Self::UpstreamNotSupported => (StatusCode::NOT_IMPLEMENTED, "not-supported", None),
            Self::Gone { .. } => (StatusCode::GONE, "deleted", None),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid", None),
            Self::Denied => (StatusCode::FORBIDDEN, "forbidden", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "not-supported", None),
            Self::Upstream(fhirseal_upstream::UpstreamError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout", None)
            }
            Self::Upstream(_) | Self::UpstreamStatus(_) | Self::UpstreamMalformed => {
                (StatusCode::BAD_GATEWAY, "transient", None)
            }
            Self::KeyIdentity | Self::KeysRevoked => (StatusCode::FORBIDDEN, "forbidden", None),
            Self::KeyReissueThrottled => (StatusCode::CONFLICT, "conflict", None),
            Self::Authority(
                fhirseal_authority::Error::Sqlite { .. }
                | fhirseal_authority::Error::Postgres { .. }
                | fhirseal_authority::Error::Io { .. },
            ) => (StatusCode::SERVICE_UNAVAILABLE, "transient", None),
            Self::Authority(_) | Self::KeyTask => {
                (StatusCode::INTERNAL_SERVER_ERROR, "exception", None)
            }
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None)
            }
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-costly", None),
            Self::Seal(e) if !matches!(e, fhirseal_seal::SealError::Crypto(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "processing", None)
            }
            Self::Seal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "exception", None),
            Self::Unprocessable(_) | Self::ForgedPlaceholder { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "processing", None)
            }
            Self::SearchRefused(_) => (StatusCode::BAD_REQUEST, "not-supported", None),
            Self::UpstreamConflict => (StatusCode::CONFLICT, "conflict", None),
            Self::DiscoveryUnavailable => (StatusCode::BAD_GATEWAY, "transient", None),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "conflict", None),
            Self::TransactionEntry { reason, .. } => reason.parts(),
            Self::Request(e) => match e {
                RequestError::UnknownType | RequestError::UnknownPath => {
                    (StatusCode::NOT_FOUND, "not-found", None)
                }
                RequestError::MethodNotAllowed => {
                    (StatusCode::METHOD_NOT_ALLOWED, "not-supported", None)
                }
                _ => (StatusCode::BAD_REQUEST, "invalid", None),
            },
            Self::NestedBundle => (StatusCode::BAD_REQUEST, "invalid", None),
            Self::UnsupportedPatchFormat => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None)
            }
        }
    }
}

/// A FHIR `OperationOutcome` with one error issue.
pub fn operation_outcome(code: &str, diagnostics: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]
    })
}

impl ApiError {
    /// The OperationOutcome of this error: one error issue with the issue code of
    /// `ApiError::parts` and the error's fixed sentence; for a transaction refused because of
    /// an entry, that entry's outcome with its `expression` naming the entry.
    pub fn outcome(&self) -> serde_json::Value {
        let (_, code, _) = self.parts();
        let mut outcome = operation_outcome(code, &self.to_string());
        if let Self::TransactionEntry { index, .. } = self {
            outcome["issue"][0]["expression"] = json!([format!("Bundle.entry[{index}]")]);
        }
        outcome
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, challenge) = self.parts();
        let body = self.outcome().to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
