//! The one place where errors become HTTP responses (STYLE rule 4: no other code picks a status
//! code). Every error leaves as a FHIR `OperationOutcome`; a 401 carries the RFC 6750
//! `WWW-Authenticate` challenge that says why, a 403 the `insufficient_scope` one.
//!
//! Diagnostics are fixed sentences about the request's shape (which check failed, which resource
//! type), never a token, a claim value or resource content.
//!
//! The keyring ([`KeyError`]), the header store ([`HeaderError`]) and sealing ([`SealingError`])
//! have their own errors; each is given its status here, once (`ApiError::parts`). Doubt about
//! keys or crypto is a refusal or a 5xx, never plaintext.
//!
//! Every 5xx is logged here, once, with its chain of causes (`ApiError::log_server_error`,
//! called where an error becomes an answer: [`IntoResponse`] and a Bundle entry's
//! [`crate::flow::Answer::refused`]). Modules return their errors; they do not log them. No
//! error in a chain holds a protected value: errors about elements name the path.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_fhir::RequestError;
use fhirseal_smart::Refusal;
use fhirseal_smart::verify::AuthError;
use serde_json::json;

use crate::guard::GuardError;
use crate::headers::HeaderError;
use crate::keys::KeyError;
use crate::seal::SealingError;

/// The realm of the gateway's bearer challenges.
pub const REALM: &str = "fhirseal";

/// The longest `Retry-After` passed on from the upstream, in seconds (an hour): a longer wait is
/// an outage, not a hint; clients told an hour ask again then.
pub const MAX_RETRY_AFTER: u64 = 3600;

use fhirseal_fhir::FHIR_JSON;

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
    /// The compliance policy does not permit the request (403). Why is for the audit trail
    /// ([`ApiError::audit_reason`]), not the response.
    #[error("the compliance policy does not permit this request")]
    Denied {
        /// Why, in the policy's words (rules and attributes, never resource content).
        reason: String,
    },
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
    /// The upstream server answered with an error status that says nothing to the client
    /// (a 5xx, a 401 or 403 to the gateway's own credentials…) (502). The status is logged.
    #[error("the upstream FHIR server answered with an error")]
    UpstreamStatus(StatusCode),
    /// The upstream server is unavailable (its 503) or throttles the gateway (its 429): 503,
    /// with the upstream's `Retry-After` passed on when it is a valid delay or HTTP date, as a
    /// number of seconds at most [`MAX_RETRY_AFTER`]. A 429 becomes a 503 too: the upstream
    /// throttles the gateway, which all users share, so "you sent too many requests" would be
    /// untrue of the client; the issue code (`throttled`, else `transient`) says which it was.
    #[error("{}", if *throttled {
        "the upstream FHIR server is throttling the gateway; try again later"
    } else {
        "the upstream FHIR server is unavailable for now; try again later"
    })]
    UpstreamUnavailable {
        /// Whether the upstream answered 429 (else 503).
        throttled: bool,
        /// The delay to pass on, in seconds (at most [`MAX_RETRY_AFTER`]).
        retry_after: Option<u64>,
    },
    /// The upstream server does not know what was asked (404): an operation it does not have,
    /// a search or history of a type it does not serve, a resource some entry of a transaction
    /// names.
    #[error("the FHIR server does not know a resource, type or operation the request names")]
    UpstreamNotFound,
    /// The upstream server does not support the interaction or operation (its 405 or 501; 501).
    #[error("the FHIR server does not support this interaction or operation")]
    UpstreamNotSupported,
    /// The upstream server's answer is not the FHIR JSON expected (502).
    #[error("the upstream FHIR server's answer is not valid FHIR JSON")]
    UpstreamMalformed,
    /// The keyring gives the caller no key: no usable identity or revoked (403), re-issued
    /// moments ago for other roles (409), the authority's store unreachable (503), anything else
    /// (500).
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The shared headers could not be found on the upstream: it did not answer in time (504),
    /// or failed or refused the gateway's own requests (502).
    #[error("the upstream FHIR server did not answer properly")]
    Headers(#[source] HeaderError),
    /// The resource cannot be sealed: as given (422), or because the gateway failed (the
    /// authority's store unreachable: 503; the shared headers: as [`ApiError::Headers`];
    /// a crypto failure or anything else: 500).
    #[error(transparent)]
    Sealing(#[from] SealingError),
    /// A write touches an element the caller cannot read, or holds sealed content not served
    /// to it ([`fhirseal_seal::merge()`]): 403, 409 or 422 as [`MergeError::status`] says; the
    /// message names the element's path, never its value.
    ///
    /// [`MergeError::status`]: fhirseal_seal::MergeError::status
    #[error("the request cannot be processed: {0}")]
    Merge(#[from] fhirseal_seal::MergeError),
    /// A task opening resources did not complete: it panicked (`panicked`) or the runtime is
    /// shutting down (500).
    #[error("the response could not be prepared")]
    Task {
        /// Whether it panicked (else it was cancelled).
        panicked: bool,
    },
    /// The body is not FHIR JSON (415).
    #[error("the body must be application/fhir+json")]
    UnsupportedMediaType,
    /// The body is over `server.max_body_bytes` (413).
    #[error("the body is larger than this gateway accepts")]
    PayloadTooLarge,
    /// A write whose stored (sealed) form would be larger than the gateway writes: more than it
    /// could read back under `upstream.max_response_bytes` (413, before anything is stored).
    /// Names the resource (or the transaction) and the limit, never content.
    #[error(
        "{what} is too large to store: sealed, it would exceed {limit} bytes, the largest this \
         gateway writes (7/8 of upstream.max_response_bytes, so that it can read it back)"
    )]
    TooLargeToStore {
        /// `Patient/123`, or `the transaction`.
        what: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The request is well-formed but cannot be processed as asked (422); a fixed sentence.
    #[error("the request cannot be processed: {0}")]
    Unprocessable(&'static str),
    /// A `Consent` the gateway cannot enforce as written (422): where and why, codes and
    /// references only (`docs/consent.md`).
    #[error("this Consent cannot be enforced: {0}")]
    Consent(#[from] fhirseal_policy::ConsentError),
    /// A `Consent` was written upstream but could not be recorded in the authority's consent
    /// log (503): it is not in force; write it again.
    #[error(
        "the Consent was stored by the FHIR server but the gateway could not put it in force; write it again"
    )]
    ConsentLog(#[source] crate::consent::log::ConsentLogError),
    /// A search parameter is refused (400): it reads a sealed element, is unknown for the type
    /// (fail closed) or is a chain or `_has`. The message names the parameter, never its value.
    #[error("{0}")]
    SearchRefused(String),
    /// The audit trail cannot be read (`GET /fhir/AuditEvent`): its store is unreachable (503),
    /// or a record is malformed or no longer hashes to its stored hash (500: run
    /// `fhirseal audit verify`).
    #[error("the audit trail cannot be read")]
    AuditTrail(#[source] fhirseal_authority::Error),
    /// The external authorization server's discovery document cannot be fetched (502).
    #[error("the authorization server's discovery document is not available")]
    DiscoveryUnavailable,
    /// The request's audit record could not be appended to the audit chain
    /// (`server.audit_chain`; [`crate::audit::chain`]): its response is withheld (503, fail
    /// closed), the line and the cause logged by the audit middleware.
    #[error("the audit trail cannot record this request for now; try again later")]
    AuditUnavailable,
    /// The upstream server refused a write as conflicting with what it holds (409).
    #[error("the FHIR server refused the write as conflicting with what it holds")]
    UpstreamConflict,
    /// `If-Match` names another version than the current one, or a conditional interaction
    /// matched several resources (412).
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    /// The guard of a create by `PUT` was not taken ([`crate::guard`]): another create of the
    /// resource held it past the wait (409, naming the resource), or the authority's store
    /// failed (503; anything else 500). Nothing was written.
    #[error(transparent)]
    CreateGuard(#[from] GuardError),
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
    /// A transaction entry writes a resource an earlier entry writes too (400).
    #[error("the request is invalid: a transaction may not write one resource in two entries")]
    DuplicateEntry,
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

impl From<HeaderError> for ApiError {
    fn from(error: HeaderError) -> Self {
        Self::Headers(error)
    }
}

impl ApiError {
    /// The error an upstream refusal becomes, status for status, the one mapping of every
    /// upstream answer the gateway did not expect: 400, 404, 409, 410, 412 and 422 kept, 405 and
    /// 501 a 501 (not supported), 503 and 429 a 503 ([`ApiError::UpstreamUnavailable`], without
    /// a `Retry-After`: [`ApiError::from_upstream_response`] reads it), anything else a 502.
    /// `target` is the resource the request was about (type and id), if one: its 404 and 410
    /// name it. The upstream's own words are dropped (they describe the sealed form, not what
    /// the client sent): each error says a fixed sentence.
    pub fn from_upstream_status(status: StatusCode, target: Option<(&str, &str)>) -> Self {
        let named = |resource_type: &str, id: &str| (resource_type.to_string(), id.to_string());
        match (status, target) {
            (StatusCode::NOT_FOUND, Some((t, i))) => {
                let (resource_type, id) = named(t, i);
                Self::NotFound { resource_type, id }
            }
            (StatusCode::GONE, Some((t, i))) => {
                let (resource_type, id) = named(t, i);
                Self::Gone { resource_type, id }
            }
            (StatusCode::NOT_FOUND | StatusCode::GONE, None) => Self::UpstreamNotFound,
            (StatusCode::PRECONDITION_FAILED, Some(_)) => {
                Self::PreconditionFailed("the resource was changed since the version named")
            }
            (StatusCode::PRECONDITION_FAILED, None) => Self::PreconditionFailed(
                "the FHIR server found a precondition of the request false",
            ),
            (StatusCode::CONFLICT, _) => Self::UpstreamConflict,
            (StatusCode::BAD_REQUEST, _) => {
                Self::InvalidRequest("the FHIR server refused the request as invalid")
            }
            (StatusCode::UNPROCESSABLE_ENTITY, _) => {
                Self::Unprocessable("the FHIR server refused the resource as invalid")
            }
            (StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED, _) => {
                Self::UpstreamNotSupported
            }
            (StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS, _) => {
                Self::UpstreamUnavailable {
                    throttled: status == StatusCode::TOO_MANY_REQUESTS,
                    retry_after: None,
                }
            }
            (status, _) => Self::UpstreamStatus(status),
        }
    }

    /// [`ApiError::from_upstream_status`] of `response`'s status; for a 503 or 429, with its
    /// `Retry-After` when that is a delay or an HTTP date ([`fhirseal_upstream::retry_after`]),
    /// as seconds from now, at most [`MAX_RETRY_AFTER`]. Anything else in the header is dropped.
    pub fn from_upstream_response(
        response: &fhirseal_upstream::UpstreamResponse,
        target: Option<(&str, &str)>,
    ) -> Self {
        let mut error = Self::from_upstream_status(response.status(), target);
        if let Self::UpstreamUnavailable { retry_after, .. } = &mut error {
            *retry_after = response
                .retry_after(std::time::SystemTime::now())
                .map(|delay| delay.as_secs().min(MAX_RETRY_AFTER));
        }
        error
    }

    /// The `Retry-After` of this error's answer, in seconds, if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::UpstreamUnavailable { retry_after, .. } => *retry_after,
            Self::TransactionEntry { reason, .. } => reason.retry_after(),
            _ => None,
        }
    }

    /// Why the policy refused the request, for the audit line (for a transaction refused
    /// because of an entry, that entry's reason); `None` for every other error.
    pub fn audit_reason(&self) -> Option<&str> {
        match self {
            Self::Denied { reason } => Some(reason),
            Self::TransactionEntry { reason, .. } => reason.audit_reason(),
            _ => None,
        }
    }

    /// Logs this error, with its chain of causes, when it is a server error (5xx); nothing
    /// otherwise. Called once per error, where it becomes an answer (see the module
    /// documentation), inside the request's span.
    pub(crate) fn log_server_error(&self) {
        let (status, _, _) = self.parts();
        if !status.is_server_error() {
            return;
        }
        let (error, entry) = match self {
            Self::TransactionEntry { index, reason, .. } => (&**reason, Some(*index)),
            other => (other, None),
        };
        let upstream_status = match error {
            Self::UpstreamStatus(upstream) => Some(upstream.as_u16()),
            Self::UpstreamUnavailable { throttled, .. } => Some(if *throttled { 429 } else { 503 }),
            _ => None,
        };
        tracing::error!(
            status = status.as_u16(),
            entry,
            upstream_status,
            error = %chain(error),
            "the request failed on the gateway's side"
        );
    }
}

/// `error` and its causes, each after a colon; a cause whose words its effect already ends with
/// (a `{0}` message over a `#[source]`) is said once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let said = current.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = current.source();
    }
    text
}

/// The status of a failure of the authority: 503 when its store cannot be reached (a passing
/// condition), 500 otherwise.
fn authority_failure(error: &fhirseal_authority::Error) -> (StatusCode, &'static str) {
    match error {
        fhirseal_authority::Error::Sqlite { .. }
        | fhirseal_authority::Error::Postgres { .. }
        | fhirseal_authority::Error::Io { .. } => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
    }
}

/// The status of a failure of the header store: the gateway's own requests, so never the
/// client's fault: 504 when the upstream did not answer in time, 503 when it answered 503 or
/// 429 (unavailable or throttling, as [`ApiError::UpstreamUnavailable`]), 502 otherwise.
fn header_failure(error: &HeaderError) -> (StatusCode, &'static str) {
    match error {
        HeaderError::Upstream(fhirseal_upstream::UpstreamError::Timeout { .. }) => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        }
        HeaderError::SearchRefused { status } | HeaderError::StoreRefused { status }
            if *status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            (StatusCode::SERVICE_UNAVAILABLE, "transient")
        }
        HeaderError::SearchRefused { status } | HeaderError::StoreRefused { status }
            if *status == StatusCode::TOO_MANY_REQUESTS =>
        {
            (StatusCode::SERVICE_UNAVAILABLE, "throttled")
        }
        _ => (StatusCode::BAD_GATEWAY, "transient"),
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
            Self::Denied { .. } => (StatusCode::FORBIDDEN, "forbidden", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "not-supported", None),
            Self::Upstream(fhirseal_upstream::UpstreamError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout", None)
            }
            Self::Upstream(_) | Self::UpstreamStatus(_) | Self::UpstreamMalformed => {
                (StatusCode::BAD_GATEWAY, "transient", None)
            }
            Self::UpstreamUnavailable { throttled, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                if *throttled { "throttled" } else { "transient" },
                None,
            ),
            Self::Keys(e) => {
                let (status, code) = match e {
                    KeyError::Identity | KeyError::Revoked => (StatusCode::FORBIDDEN, "forbidden"),
                    KeyError::ReissueThrottled => (StatusCode::CONFLICT, "conflict"),
                    KeyError::Authority(e) => authority_failure(e),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
                };
                (status, code, None)
            }
            Self::Headers(e) => {
                let (status, code) = header_failure(e);
                (status, code, None)
            }
            Self::Sealing(e) => {
                let (status, code) = match e {
                    SealingError::MaskedPlaceholder
                    | SealingError::ForgedPlaceholder { .. }
                    | SealingError::DisplayRule(_) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "processing")
                    }
                    // A header that could not be made, or (never seen: `seal` makes it) one a
                    // sealer over known headers needed: the gateway's failure, not the request's.
                    SealingError::Resource(
                        fhirseal_seal::SealError::Crypto(_)
                        | fhirseal_seal::SealError::HeaderNeeded,
                    ) => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
                    SealingError::Resource(_) => (StatusCode::UNPROCESSABLE_ENTITY, "processing"),
                    SealingError::Period(e) => authority_failure(e),
                    SealingError::Headers(e) => header_failure(e),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
                };
                (status, code, None)
            }
            Self::Task { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "exception", None),
            Self::Merge(e) => match e.status() {
                403 => (StatusCode::FORBIDDEN, "forbidden", None),
                409 => (StatusCode::CONFLICT, "conflict", None),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "processing", None),
            },
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None)
            }
            Self::PayloadTooLarge | Self::TooLargeToStore { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too-costly", None)
            }
            Self::Unprocessable(_) | Self::Consent(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "processing", None)
            }
            Self::ConsentLog(_) => (StatusCode::SERVICE_UNAVAILABLE, "transient", None),
            Self::SearchRefused(_) => (StatusCode::BAD_REQUEST, "not-supported", None),
            Self::UpstreamConflict => (StatusCode::CONFLICT, "conflict", None),
            Self::DiscoveryUnavailable => (StatusCode::BAD_GATEWAY, "transient", None),
            Self::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "transient", None),
            Self::AuditTrail(error) => {
                let (status, code) = authority_failure(error);
                (status, code, None)
            }
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "conflict", None),
            Self::CreateGuard(e) => {
                let (status, code) = match e {
                    GuardError::Busy { .. } => (StatusCode::CONFLICT, "conflict"),
                    GuardError::Store(e) => authority_failure(e),
                    GuardError::Task => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
                };
                (status, code, None)
            }
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
            Self::NestedBundle | Self::DuplicateEntry => (StatusCode::BAD_REQUEST, "invalid", None),
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
    /// The response; a 5xx is logged here (`ApiError::log_server_error`).
    fn into_response(self) -> Response {
        self.log_server_error();
        let (status, _, challenge) = self.parts();
        let body = self.outcome().to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};

    use fhirseal_upstream::UpstreamError;

    use super::*;
    use crate::flow::Answer;

    /// What `f` logs (as text, without colours).
    fn logged(f: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&shared)))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn status(error: impl Into<ApiError>) -> u16 {
        error.into().parts().0.as_u16()
    }

    fn disk_gone() -> fhirseal_authority::Error {
        fhirseal_authority::Error::Io {
            path: "authority.sqlite3".into(),
            source: std::io::Error::other("disk gone"),
        }
    }

    fn corrupt() -> fhirseal_authority::Error {
        fhirseal_authority::Error::Corrupt {
            what: "master".into(),
            reason: "bad".into(),
        }
    }

    fn timeout() -> UpstreamError {
        UpstreamError::Timeout {
            idempotent: true,
            attempts: 1,
        }
    }

    #[test]
    fn upstream_refusals_keep_their_status_in_fixed_words() {
        let target = Some(("Patient", "p1"));
        let cases = [
            (400, 400),
            (404, 404),
            (409, 409),
            (410, 410),
            (412, 412),
            (422, 422),
            (405, 501),
            (501, 501),
            (401, 502),
            (403, 502),
            (429, 503),
            (500, 502),
            (503, 503),
        ];
        for (upstream, expected) in cases {
            let upstream = StatusCode::from_u16(upstream).unwrap();
            let named = ApiError::from_upstream_status(upstream, target);
            assert_eq!(named.parts().0.as_u16(), expected, "{upstream}");
            let unnamed = ApiError::from_upstream_status(upstream, None);
            // Without a resource to name, 410 is the 404 of a request that names none.
            let expected = if expected == 410 { 404 } else { expected };
            assert_eq!(unnamed.parts().0.as_u16(), expected, "{upstream}");
        }
        assert_eq!(
            ApiError::from_upstream_status(StatusCode::NOT_FOUND, target).to_string(),
            "Patient/p1 is not known"
        );
        // Unavailable and throttling say which, in the issue code and the words.
        let busy = ApiError::from_upstream_status(StatusCode::TOO_MANY_REQUESTS, None);
        assert_eq!(busy.parts().1, "throttled");
        assert!(busy.to_string().contains("throttling"), "{busy}");
        let down = ApiError::from_upstream_status(StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(down.parts().1, "transient");
        assert!(down.to_string().contains("unavailable"), "{down}");
    }

    #[test]
    fn a_refusal_naming_no_resource_says_no_pseudo_id() {
        for upstream in [StatusCode::NOT_FOUND, StatusCode::GONE] {
            let text = ApiError::from_upstream_status(upstream, None).to_string();
            assert!(!text.contains("/-"), "{text}");
            assert!(!text.contains("Bundle"), "{text}");
        }
    }

    #[test]
    fn keyring_errors_get_their_status_here() {
        assert_eq!(status(KeyError::Identity), 403);
        assert_eq!(status(KeyError::Revoked), 403);
        assert_eq!(status(KeyError::ReissueThrottled), 409);
        assert_eq!(status(KeyError::Authority(disk_gone())), 503);
        assert_eq!(status(KeyError::Authority(corrupt())), 500);
        assert_eq!(status(KeyError::Task { panicked: true }), 500);
        let attribute = crate::keys::UnissuableAttribute {
            attribute: String::new(),
            source: rshabe::Attribute::new("").unwrap_err(),
        };
        assert_eq!(status(KeyError::PolicyAttribute(attribute)), 500);
    }

    #[test]
    fn header_store_errors_are_the_gateways_never_the_clients() {
        let refused = StatusCode::BAD_REQUEST;
        assert_eq!(status(HeaderError::StoreRefused { status: refused }), 502);
        assert_eq!(status(HeaderError::SearchRefused { status: refused }), 502);
        let not_found = StatusCode::NOT_FOUND;
        assert_eq!(
            status(HeaderError::SearchRefused { status: not_found }),
            502
        );
        assert_eq!(status(HeaderError::Malformed), 502);
        assert_eq!(status(HeaderError::Upstream(timeout())), 504);
        let unreachable = UpstreamError::Connect { attempts: 1 };
        assert_eq!(status(HeaderError::Upstream(unreachable)), 502);
        // An upstream unavailable or throttling: a passing condition, as for the resource.
        for (upstream, code) in [(503, "transient"), (429, "throttled")] {
            let status = StatusCode::from_u16(upstream).unwrap();
            for error in [
                HeaderError::SearchRefused { status },
                HeaderError::StoreRefused { status },
            ] {
                assert_eq!(
                    header_failure(&error),
                    (StatusCode::SERVICE_UNAVAILABLE, code)
                );
            }
        }
    }

    #[test]
    fn a_write_touching_what_the_caller_cannot_read_is_403_a_move_409_foreign_content_422() {
        use fhirseal_seal::MergeError;
        let path = || "Patient.telecom[0]".to_string();
        assert_eq!(status(MergeError::Changed { path: path() }), 403);
        assert_eq!(status(MergeError::NotReadable { path: path() }), 403);
        let removed = MergeError::Removed {
            holder: "Patient.contact[0]".into(),
            path: path(),
        };
        assert_eq!(status(removed), 403);
        assert_eq!(status(MergeError::Moved { path: path() }), 409);
        assert_eq!(status(MergeError::Foreign { path: path() }), 422);
        assert_eq!(status(MergeError::Shape { path: path() }), 422);
    }

    #[test]
    fn sealing_errors_are_the_clients_only_for_what_it_sent() {
        use fhirseal_seal::SealError;
        assert_eq!(status(SealingError::MaskedPlaceholder), 422);
        let path = "Patient.birthDate".to_string();
        assert_eq!(status(SealingError::ForgedPlaceholder { path }), 422);
        let rule = fhirseal_seal::RuleError {
            path: "Encounter.subject.display".into(),
            reason: "x".into(),
        };
        assert_eq!(status(SealingError::DisplayRule(rule)), 422);
        let invalid = SealError::Invalid {
            path: "Patient.name[0]".into(),
            reason: "is not an object".into(),
        };
        assert_eq!(status(SealingError::Resource(invalid)), 422);
        let crypto = SealError::Crypto(fhirseal_envelope::Error::Open);
        assert_eq!(status(SealingError::Resource(crypto)), 500);
        assert_eq!(status(SealingError::Resource(SealError::HeaderNeeded)), 500);
        assert_eq!(status(SealingError::Period(disk_gone())), 503);
        assert_eq!(status(SealingError::Period(corrupt())), 500);
        assert_eq!(status(SealingError::Task { panicked: false }), 500);
        assert_eq!(status(SealingError::Headers(timeout().into())), 504);
        let refused = HeaderError::StoreRefused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
        };
        assert_eq!(status(SealingError::Headers(refused)), 502);
    }

    #[test]
    fn a_server_error_logs_its_causes_once_and_answers_without_them() {
        let error = ApiError::from(KeyError::Authority(disk_gone()));
        let body = error.outcome().to_string();
        assert!(!body.contains("disk"), "{body}");
        let log = logged(|| {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("disk gone"), "{log}");
        assert!(log.contains("status=503"), "{log}");
    }

    #[test]
    fn a_bundle_entrys_server_error_is_logged_once_too() {
        let error = ApiError::from(SealingError::Headers(HeaderError::StoreRefused {
            status: StatusCode::FORBIDDEN,
        }));
        let log = logged(|| {
            let answer = Answer::refused(&error, "create", vec!["Patient/p1".into()]);
            assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.contains("refused to store a shared header (403 Forbidden)"),
            "{log}"
        );
        // A transaction refused because of an entry logs the entry's causes, naming the entry.
        let entry = ApiError::TransactionEntry {
            index: 2,
            interaction: "create",
            resources: Vec::new(),
            reason: Box::new(ApiError::from_upstream_status(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            )),
        };
        let log = logged(|| drop(entry.into_response()));
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("entry=2"), "{log}");
        assert!(log.contains("upstream_status=503"), "{log}");
    }

    #[test]
    fn client_errors_are_not_logged() {
        let log = logged(|| {
            drop(ApiError::from(KeyError::Revoked).into_response());
            let denied = ApiError::Denied {
                reason: "no access rule covers delete patient".into(),
            };
            drop(Answer::refused(&denied, "delete", Vec::new()));
        });
        assert!(log.is_empty(), "{log}");
    }

    #[test]
    fn a_cause_its_effect_already_says_is_said_once() {
        let invalid = fhirseal_seal::SealError::Invalid {
            path: "Patient.name[0]".into(),
            reason: "is not an object".into(),
        };
        let text = chain(&ApiError::from(SealingError::Resource(invalid)));
        assert_eq!(
            text,
            "the resource cannot be sealed: Patient.name[0] is not an object"
        );
        let text = chain(&ApiError::from(KeyError::Authority(disk_gone())));
        assert!(
            text.starts_with("the key authority could not provide a key: "),
            "{text}"
        );
        assert_eq!(text.matches("disk gone").count(), 1, "{text}");
    }

    #[test]
    fn a_denials_reason_is_for_the_audit_line_not_the_client() {
        let reason = "no access rule lets you delete patient";
        let denied = ApiError::Denied {
            reason: reason.into(),
        };
        assert_eq!(denied.audit_reason(), Some(reason));
        assert!(!denied.outcome().to_string().contains(reason));
        let answer = Answer::refused(&denied, "delete", Vec::new());
        assert_eq!(answer.note.reason.as_deref(), Some(reason));
        let entry = ApiError::TransactionEntry {
            index: 0,
            interaction: "delete",
            resources: Vec::new(),
            reason: Box::new(denied),
        };
        assert_eq!(entry.audit_reason(), Some(reason));
        assert_eq!(ApiError::UnknownPath.audit_reason(), None);
    }
}
