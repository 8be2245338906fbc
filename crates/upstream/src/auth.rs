//! The gateway's credential towards the upstream: none, a static bearer token, or an OAuth 2.0
//! client-credentials token (RFC 6749 §4.4) fetched with the `oauth2` crate, cached until
//! shortly before it expires, and refreshed single-flight.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicRequestTokenError, BasicTokenType};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use reqwest::header::HeaderValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{AuthStyle, ClientCredentials, UpstreamAuth, bearer_header};
use crate::error::{AuthError, TokenRefusal};

/// The credential source of an [`Upstream`](crate::Upstream).
pub(crate) enum Auth {
    /// No `Authorization` header.
    None,
    /// A static `Authorization: Bearer …` value.
    Bearer(HeaderValue),
    /// Tokens from a token endpoint.
    ClientCredentials(Box<TokenSource>),
}

/// Fetches and caches client-credentials tokens.
pub(crate) struct TokenSource {
    client: TokenClient,
    http: OAuthHttp,
    scopes: Vec<Scope>,
    /// The current token; read without waiting on the fast path.
    cached: RwLock<Option<CachedToken>>,
    /// Held while fetching, so that concurrent callers wait for one fetch instead of each
    /// starting their own.
    fetching: Mutex<()>,
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    refresh_at: Instant,
}

/// `oauth2::AsyncHttpClient` over our reqwest 0.13 client: no redirects, the configured
/// timeouts, and a 64 KiB cap on the token response.
struct OAuthHttp(reqwest::Client);

/// Why the token endpoint exchange failed at the HTTP level.
#[derive(Debug, thiserror::Error)]
enum OAuthHttpError {
    #[error("token endpoint unreachable")]
    Transport,
    #[error("token endpoint response malformed or too large")]
    Response,
}

// === impl Auth ===

impl Auth {
    pub(crate) fn new(config: UpstreamAuth, http: reqwest::Client) -> Self {
        match config {
            UpstreamAuth::None => Self::None,
            UpstreamAuth::Bearer(header) => Self::Bearer(header),
            UpstreamAuth::ClientCredentials(credentials) => {
                Self::ClientCredentials(Box::new(TokenSource::new(credentials, http)))
            }
        }
    }

    /// The `Authorization` value to send, fetching a token if none is cached or it is about to
    /// expire.
    pub(crate) async fn credential(&self) -> Result<Option<HeaderValue>, AuthError> {
        match self {
            Self::None => Ok(None),
            Self::Bearer(header) => Ok(Some(header.clone())),
            Self::ClientCredentials(source) => source.token().await.map(Some),
        }
    }

    /// Called when the upstream answered 401 to `rejected`: forgets that token so that the next
    /// [`credential`](Self::credential) fetches a new one. Returns whether a retry can help,
    /// which is only the case for fetched tokens.
    pub(crate) fn reject(&self, rejected: Option<&HeaderValue>) -> bool {
        match (self, rejected) {
            (Self::ClientCredentials(source), Some(rejected)) => {
                source.forget(rejected);
                true
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Bearer(_) => "Bearer([redacted])",
            Self::ClientCredentials(_) => "ClientCredentials([redacted])",
        })
    }
}

// === impl TokenSource ===

impl TokenSource {
    fn new(credentials: ClientCredentials, http: reqwest::Client) -> Self {
        let ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
            auth_style,
        } = credentials;
        let client = BasicClient::new(ClientId::new(client_id))
            .set_client_secret(ClientSecret::new(client_secret.expose().to_owned()))
            .set_auth_type(match auth_style {
                AuthStyle::Basic => AuthType::BasicAuth,
                AuthStyle::Post => AuthType::RequestBody,
            })
            .set_token_uri(TokenUrl::from_url(token_url));
        Self {
            client,
            http: OAuthHttp(http),
            scopes: scopes.into_iter().map(Scope::new).collect(),
            cached: RwLock::new(None),
            fetching: Mutex::new(()),
        }
    }

    /// The cached token if still fresh, else a new one; one fetch at a time.
    async fn token(&self) -> Result<HeaderValue, AuthError> {
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        let _fetching = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        let token = self.fetch().await?;
        let header = token.header.clone();
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some(token);
        Ok(header)
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let cached = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|token| Instant::now() < token.refresh_at)
            .map(|token| token.header.clone())
    }

    /// Forgets the cached token if it is still the rejected one (a concurrent caller may
    /// already have replaced it).
    fn forget(&self, rejected: &HeaderValue) {
        let mut cached = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        if cached
            .as_ref()
            .is_some_and(|token| token.header == rejected)
        {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<CachedToken, AuthError> {
        let requested = Instant::now();
        let response = self
            .client
            .exchange_client_credentials()
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&self.http)
            .await
            .map_err(auth_error)?;
        if *response.token_type() != BasicTokenType::Bearer {
            return Err(AuthError::NotBearer);
        }
        let header =
            bearer_header(response.access_token().secret()).ok_or(AuthError::MalformedToken)?;
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        let margin = (lifetime / 2).min(REFRESH_MARGIN);
        Ok(CachedToken {
            header,
            refresh_at: requested + lifetime.saturating_sub(margin),
        })
    }
}

fn auth_error(error: BasicRequestTokenError<OAuthHttpError>) -> AuthError {
    match error {
        RequestTokenError::Request(OAuthHttpError::Transport) => AuthError::Unreachable,
        RequestTokenError::ServerResponse(response) => AuthError::Refused(match response.error() {
            BasicErrorResponseType::InvalidRequest => TokenRefusal::InvalidRequest,
            BasicErrorResponseType::InvalidClient => TokenRefusal::InvalidClient,
            BasicErrorResponseType::InvalidGrant => TokenRefusal::InvalidGrant,
            BasicErrorResponseType::UnauthorizedClient => TokenRefusal::UnauthorizedClient,
            BasicErrorResponseType::UnsupportedGrantType => TokenRefusal::UnsupportedGrantType,
            BasicErrorResponseType::InvalidScope => TokenRefusal::InvalidScope,
            BasicErrorResponseType::Extension(_) => TokenRefusal::Other,
        }),
        _ => AuthError::MalformedResponse,
    }
}

// === impl OAuthHttp ===

impl<'c> AsyncHttpClient<'c> for OAuthHttp {
    type Error = OAuthHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OAuthHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request =
                reqwest::Request::try_from(request).map_err(|_| OAuthHttpError::Transport)?;
            let mut response = self
                .0
                .execute(request)
                .await
                .map_err(|_| OAuthHttpError::Transport)?;
            if response
                .content_length()
                .is_some_and(|length| length > MAX_TOKEN_RESPONSE)
            {
                return Err(OAuthHttpError::Response);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|_| OAuthHttpError::Response)?
            {
                if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_USIZE {
                    return Err(OAuthHttpError::Response);
                }
                body.extend_from_slice(&chunk);
            }
            let mut builder = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            builder.body(body).map_err(|_| OAuthHttpError::Response)
        })
    }
}

/// Lifetime assumed when the token response has no `expires_in` (the SMART Backend Services
/// recommendation).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A token is refreshed this long before it expires, or at half its lifetime if that is sooner.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// Largest token response read.
const MAX_TOKEN_RESPONSE: u64 = 64 * 1024;
const MAX_TOKEN_RESPONSE_USIZE: usize = 64 * 1024;
