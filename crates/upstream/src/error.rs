//! Why a call to the upstream failed.
//!
//! A non-2xx status is not an error: it is a normal [`UpstreamResponse`](crate::UpstreamResponse)
//! that the gateway relays or interprets. Errors are the states in which no complete response
//! exists. None of them carries a body, a header value, a token or a secret; the gateway maps
//! them to statuses (STYLE.md rule 4).

/// Why [`Upstream::send`](crate::Upstream::send) returned no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The request was refused before anything was sent: its path would leave the base URL or
    /// is malformed. The gateway's fault, or the client's if the path came from it unchecked.
    #[error("request refused before sending: {0}")]
    InvalidRequest(#[from] RequestError),
    /// No connection could be opened (refused, unreachable, DNS failure, TLS handshake failure,
    /// or the connect timeout), on every attempt. Nothing reached the upstream.
    #[error("could not connect to the upstream after {attempts} attempt(s)")]
    Connect {
        /// Attempts made.
        attempts: u32,
    },
    /// No response head arrived within the request timeout, on every attempt. When
    /// `idempotent` is false the request was sent once and may have been applied: the outcome is
    /// unknown (see [`UpstreamError::outcome_unknown`]).
    #[error("the upstream did not answer in time after {attempts} attempt(s)")]
    Timeout {
        /// Whether the method was idempotent (and so was retried).
        idempotent: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// The connection was reset or closed after the request was sent and before a complete
    /// response head arrived, on every attempt. When `idempotent` is false the outcome is
    /// unknown.
    #[error("the upstream closed the connection before answering after {attempts} attempt(s)")]
    Reset {
        /// Whether the method was idempotent (and so was retried).
        idempotent: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// The response head arrived but its body failed (reset, closed early, or timed out) before
    /// the last byte. The upstream did process the request; its answer is lost. Not retried.
    #[error("the upstream response body was interrupted")]
    BodyInterrupted {
        /// Whether the method was idempotent.
        idempotent: bool,
    },
    /// The response body is longer than the configured cap. Reading stopped at the cap (or
    /// before it, from `Content-Length`) and the connection was dropped.
    #[error("the upstream response body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// No credential could be obtained from the token endpoint; nothing was sent upstream.
    #[error("could not obtain an upstream access token: {0}")]
    Auth(#[from] AuthError),
}

/// Why a request path was refused before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The path is an absolute or scheme-relative URL (`http://…`, `//host/…`) instead of a
    /// path relative to the base.
    #[error("the path is an absolute URL")]
    AbsoluteUrl,
    /// The path holds a `.` or `..` segment, literally or percent-encoded. Such paths could
    /// escape the base, or name a resource other than the one the gateway authorised.
    #[error("the path holds a dot segment")]
    DotSegment,
    /// The path holds an empty segment (`a//b`, or a trailing `/`).
    #[error("the path holds an empty segment")]
    EmptySegment,
    /// The path or query holds a character that is not allowed there: a space, a control or
    /// non-ASCII character, `\`, `:` or `#` in the path, `#` in the query, or an encoded `/`,
    /// `\` or control character.
    #[error("the path or query holds a forbidden character")]
    ForbiddenCharacter,
    /// Once parsed, the URL no longer lies under the base. The checks above should make this
    /// impossible; it is kept as a second line of defence.
    #[error("the URL does not lie under the base")]
    OutsideBase,
    /// The HTTP client refused to build the request from the URL and headers; nothing was sent.
    #[error("the HTTP client could not build the request")]
    Unsendable,
}

/// Why the token endpoint gave no usable access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token endpoint could not be reached or did not answer in time.
    #[error("the token endpoint is unreachable")]
    Unreachable,
    /// The token endpoint answered with an OAuth error response (RFC 6749 §5.2).
    #[error("the token endpoint refused the request ({0})")]
    Refused(TokenRefusal),
    /// The token endpoint answered with something that is not a token response: another
    /// status, a body that is not one, or one larger than 64 KiB.
    #[error("the token endpoint answered with a malformed response")]
    MalformedResponse,
    /// The token response's `token_type` is not `Bearer`.
    #[error("the token endpoint issued a token that is not a bearer token")]
    NotBearer,
    /// The access token holds characters a bearer token may not (RFC 6750 `b64token`).
    #[error("the token endpoint issued a malformed access token")]
    MalformedToken,
}

/// The `error` code of an OAuth error response (RFC 6749 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_client`: wrong client id or secret.
    InvalidClient,
    /// `invalid_grant`.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is unknown or not allowed.
    InvalidScope,
    /// Any other code.
    Other,
}

impl UpstreamError {
    /// Whether a non-idempotent request may have been applied by the upstream although no
    /// response arrived: a `POST` or `PATCH` that timed out, was reset after sending, or whose
    /// response body was lost. The gateway must tell its client the write may have happened.
    pub fn outcome_unknown(&self) -> bool {
        match *self {
            Self::Timeout { idempotent, .. }
            | Self::Reset { idempotent, .. }
            | Self::BodyInterrupted { idempotent } => !idempotent,
            _ => false,
        }
    }
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other => "other",
        })
    }
}
