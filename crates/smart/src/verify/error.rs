//! Why a bearer token was refused, how to say so in `WWW-Authenticate` (RFC 6750 §3), and why a
//! verifier configuration was refused.

use crate::ContextError;

/// Why a request's bearer token was refused. The gateway answers every one of them with 401 and
/// [`AuthError::www_authenticate`]; none of them carries the token or its claims.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request has no `Authorization` header.
    #[error("no access token")]
    Missing,
    /// The `Authorization` header uses a scheme other than `Bearer`.
    #[error("the authorization scheme is not Bearer")]
    NotBearer,
    /// The token is longer than the configured maximum; it was not decoded.
    #[error("the access token is too long")]
    Oversize,
    /// The token is not well formed: empty, characters outside RFC 6750's `b64token`, a JWT part
    /// that is not base64url or not a JSON object, a header field of the wrong type, critical
    /// (`crit`) header extensions, a claim of the wrong type; or an opaque token while no
    /// introspection endpoint is configured.
    #[error("the access token is malformed")]
    Malformed,
    /// The header's `alg` is `none`, an HMAC algorithm, unknown, not allowed for the issuer, or
    /// not the algorithm the key named by `kid` is pinned to.
    #[error("the token's signature algorithm is refused")]
    AlgorithmRefused,
    /// The header names or carries a key of its own (`jku`, `x5u`, `jwk`, `x5c`): keys come only
    /// from the issuer's configured key set.
    #[error("the token header references a key outside the issuer's key set")]
    ForeignKeyReference,
    /// The token's `iss` is absent or not a configured issuer (or, for introspection, not the
    /// configured one).
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    /// No key of the issuer's key set matches the token's `kid`, even after a refetch; or the
    /// token has no `kid` and not exactly one key fits its algorithm.
    #[error("no key of the issuer's key set fits the token")]
    UnknownKey,
    /// The signature does not verify with the issuer's key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The token's `exp` has passed (beyond the configured leeway).
    #[error("the access token expired")]
    Expired,
    /// The token's `nbf` is still ahead (beyond the configured leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// The token (or the introspection response) has no `exp`, which is required here.
    #[error("the access token has no expiry")]
    NoExpiry,
    /// The token's `aud` does not name this gateway (or is absent).
    #[error("the access token is not meant for this server")]
    WrongAudience,
    /// The introspection endpoint said the token is not active.
    #[error("the access token is not active")]
    Inactive,
    /// The verified claims do not describe a caller: a malformed scope, a `patient/` scope without
    /// a patient in context, a claim of the wrong type, no `sub`.
    #[error("the token's claims do not describe a caller")]
    BadClaims(#[source] ContextError),
    /// The issuer's keys (or the introspection endpoint) could not be reached and no keys are at
    /// hand: the token cannot be checked, so it is refused.
    #[error("the token cannot be checked now")]
    KeysUnavailable,
}

// === impl AuthError ===

impl AuthError {
    /// The RFC 6750 §3.1 error code: `invalid_request` for a request that does not carry a
    /// bearer token properly, `invalid_token` for a token that is refused, and none for
    /// [`AuthError::Missing`] ("If the request lacks any authentication information …, the
    /// resource server SHOULD NOT include an error code").
    pub fn oauth_error(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::NotBearer => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }

    /// A fixed description, safe to send to the client: never the token, its claims or key
    /// material. Only characters RFC 6750 allows in `error_description` (printable ASCII without
    /// `"` and `\`).
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "No access token was provided",
            Self::NotBearer => "The Authorization header must use the Bearer scheme",
            Self::Oversize => "The access token is too long",
            Self::Malformed => "The access token is malformed",
            Self::AlgorithmRefused => "The access token's signature algorithm is not accepted",
            Self::ForeignKeyReference => {
                "The access token references a key outside the issuer's key set"
            }
            Self::UnknownIssuer => "The access token's issuer is not trusted",
            Self::UnknownKey => "The access token's signing key is not known",
            Self::BadSignature => "The access token's signature is invalid",
            Self::Expired => "The access token expired",
            Self::NotYetValid => "The access token is not valid yet",
            Self::NoExpiry => "The access token has no expiry",
            Self::WrongAudience => "The access token is not meant for this server",
            Self::Inactive => "The access token is not active",
            Self::BadClaims(ContextError::NoPatient) => {
                "A patient scope was granted without a patient in context"
            }
            Self::BadClaims(_) => "The access token's claims are not usable",
            Self::KeysUnavailable => "The access token cannot be checked now",
        }
    }

    /// The whole `WWW-Authenticate` value (RFC 6750 §3):
    /// `Bearer realm="<realm>", error="invalid_token", error_description="…"`, or only
    /// `Bearer realm="<realm>"` for [`AuthError::Missing`]. `realm` is escaped as a
    /// quoted-string; control characters in it are dropped.
    pub fn www_authenticate(&self, realm: &str) -> String {
        let mut value = String::from("Bearer realm=\"");
        for c in realm.chars().filter(|c| !c.is_control()) {
            if c == '"' || c == '\\' {
                value.push('\\');
            }
            value.push(c);
        }
        value.push('"');
        if let Some(error) = self.oauth_error() {
            value.push_str(", error=\"");
            value.push_str(error);
            value.push_str("\", error_description=\"");
            value.push_str(self.description());
            value.push('"');
        }
        value
    }
}

/// Why a [`VerifierConfig`](super::VerifierConfig) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither an issuer nor an introspection endpoint is configured: no token could be accepted.
    #[error("no issuer and no introspection endpoint are configured")]
    NothingToVerifyWith,
    /// An issuer's `iss` is empty.
    #[error("an issuer's `iss` is empty")]
    EmptyIssuer,
    /// Two issuers have the same `iss`.
    #[error("issuer `{issuer}` is configured twice")]
    DuplicateIssuer {
        /// The issuer.
        issuer: String,
    },
    /// An issuer allows no algorithm.
    #[error("issuer `{issuer}` allows no signature algorithm")]
    NoAlgorithms {
        /// The issuer.
        issuer: String,
    },
    /// An issuer allows an HMAC algorithm (HS256, HS384, HS512): the gateway verifies with public
    /// keys only, and an HMAC algorithm invites key confusion (an HMAC key made from a public
    /// key).
    #[error("issuer `{issuer}` allows an HMAC algorithm; only public-key algorithms are accepted")]
    HmacAlgorithm {
        /// The issuer.
        issuer: String,
    },
    /// A JWKS or introspection URL is not an absolute `https` URL (`http` only to a loopback
    /// host), or carries credentials.
    #[error("the {what} URL must be absolute https (http only to loopback) without credentials")]
    BadUrl {
        /// Which URL (`jwks_uri of <issuer>` or `introspection endpoint`).
        what: String,
    },
    /// A static key set holds no key that verifies signatures with the issuer's algorithms.
    #[error("the static key set of issuer `{issuer}` holds no usable signature key")]
    NoUsableKeys {
        /// The issuer.
        issuer: String,
    },
    /// `max_token_bytes` is zero.
    #[error("max_token_bytes must be positive")]
    NoTokenSize,
}
