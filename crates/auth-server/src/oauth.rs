//! The OAuth 2 wire: request parameters, RFC 6749 §5.2 JSON errors, redirects back to the app.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

/// An RFC 6749 error: a fixed code and a fixed description (never a value from the request, a
/// token or a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) description: &'static str,
}

impl OAuthError {
    /// `invalid_request` (400): a parameter is missing, repeated or malformed.
    pub(super) const fn invalid_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// `invalid_client` (401): the client is unknown or failed to authenticate.
    pub(super) const fn invalid_client(description: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// `invalid_grant` (400): the code or refresh token is unknown, used, expired or not this
    /// client's, or the PKCE verifier or redirect URI does not match.
    pub(super) const fn invalid_grant(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// `unsupported_grant_type` (400).
    pub(super) const fn unsupported_grant_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or client_credentials",
        )
    }

    /// `unsupported_response_type`: only `code` is.
    pub(super) const fn unsupported_response_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "response_type must be code",
        )
    }

    /// `request_not_supported` (OpenID Connect Core §6): no request objects.
    pub(super) const fn request_not_supported() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "request_not_supported",
            "request objects are not supported",
        )
    }

    /// `login_required` (OpenID Connect Core §3.1.2.6): `prompt=none`, and there are no
    /// sessions here.
    pub(super) const fn login_required() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "login_required",
            "the user must sign in",
        )
    }

    /// `access_denied`: the user refused.
    pub(super) const fn access_denied() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "access_denied",
            "the user denied the request",
        )
    }

    /// `invalid_scope` (400).
    pub(super) const fn invalid_scope(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// `invalid_token` (401): the bearer token presented to the introspection endpoint.
    pub(super) const fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a valid access token from this server is required",
        )
    }

    /// `temporarily_unavailable` (503): the server's memory for pending state is full. `cause`
    /// (what filled up; never a request's content) is logged here, once per answer.
    pub(super) fn unavailable(cause: &'static str) -> Self {
        tracing::error!(
            status = 503,
            cause,
            "the authorization server refused a request"
        );
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the server is busy; try again later",
        )
    }

    /// `server_error` (500). `cause` (what failed; never a request's content) is logged here,
    /// once per answer.
    pub(super) fn server_error(cause: &'static str) -> Self {
        tracing::error!(
            status = 500,
            cause,
            "the authorization server failed a request"
        );
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }

    const fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = json_no_store(
            self.status,
            &json!({"error": self.code, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2 asks for a challenge on 401. Client assertions have no scheme of
            // their own, so the challenge is a Bearer one that names the error, so that a
            // client (or an operator reading a trace) sees why without parsing the body. The
            // code and description are fixed strings of this module, valid in a quoted-string.
            let challenge = format!(
                "Bearer realm=\"fhirseal\", error=\"{}\", error_description=\"{}\"",
                self.code, self.description
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// A JSON response that no cache may keep (RFC 6749 §5.1).
pub(super) fn json_no_store(status: StatusCode, body: &Value) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(headers);
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache`.
pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 303 back to the app's (registered) redirect URI with `params` added to its query.
pub(super) fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        // Registered redirect URIs were checked to parse when the server started.
        return OAuthError::server_error("a registered redirect URI does not parse")
            .into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return OAuthError::server_error("a redirect URI is not a header value").into_response();
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    no_store(response.headers_mut());
    response
}

/// An authorization error sent back to the app (RFC 6749 §4.1.2.1), with its `state` if any.
pub(super) fn redirect_error(
    redirect_uri: &str,
    error: OAuthError,
    state: Option<&str>,
) -> Response {
    let mut params = vec![
        ("error", error.code),
        ("error_description", error.description),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect(redirect_uri, &params)
}

/// Form or query parameters. RFC 6749 §3.1: a parameter sent without a value is treated as
/// omitted, and none may be sent twice.
#[derive(Debug, Default)]
pub(super) struct Params(Vec<(String, String)>);

/// A parameter was sent twice, or there are too many.
#[derive(Debug)]
pub(super) struct Malformed;

impl Params {
    /// Parses `application/x-www-form-urlencoded` text.
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(bytes) {
            if pairs.len() >= MAX_PARAMS || pairs.iter().any(|(n, _)| *n == name) {
                return Err(Malformed);
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }

    /// The value of `name`, unless absent or empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Whether a POST body is a form (`application/x-www-form-urlencoded`, any parameters).
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

const MAX_PARAMS: usize = 64;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// What the subscriber wrote.
    #[derive(Clone, Default)]
    struct Logged(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The answer `make` builds and what it logged.
    fn logged(make: impl FnOnce() -> OAuthError) -> (Response, String) {
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let response = tracing::subscriber::with_default(subscriber, || make().into_response());
        let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
        (response, text)
    }

    /// Every 5xx of the authorization server logs its cause once (issue 17); the answer itself
    /// says only what OAuth lets it say.
    #[test]
    fn a_5xx_logs_its_cause_once() {
        for (make, status, cause) in [
            (
                (|| OAuthError::server_error("signing the access token failed"))
                    as fn() -> OAuthError,
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing the access token failed",
            ),
            (
                || OAuthError::unavailable("the store of refresh tokens is full"),
                StatusCode::SERVICE_UNAVAILABLE,
                "the store of refresh tokens is full",
            ),
        ] {
            let (response, log) = logged(make);
            assert_eq!(response.status(), status);
            let lines: Vec<&str> = log.lines().collect();
            assert_eq!(lines.len(), 1, "{log}");
            assert!(lines[0].contains("ERROR"), "{log}");
            assert!(lines[0].contains(cause), "{log}");
        }
        // A 4xx is the client's: nothing logged.
        let (response, log) = logged(OAuthError::access_denied);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(log, "");
    }
}
