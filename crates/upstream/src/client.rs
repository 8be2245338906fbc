//! [`Upstream`]: the pooled client, its retry loop and its bounded body reader; [`Observe`]: what
//! is told of each call (the gateway's metrics).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, redirect};
use url::Url;

use crate::auth::Auth;
use crate::config::{ConfigError, RetryPolicy, UpstreamConfig};
use crate::error::{RequestError, UpstreamError};
use crate::request::{UpstreamRequest, UpstreamResponse, forwardable, join};

/// The gateway's client towards the upstream FHIR server. Cheap to clone: clones share one
/// connection pool and one token cache.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn Observe>>,
}

/// What one call to [`Upstream::send`] came to, for an [`Observe`]r: the method, the time taken
/// (every attempt and wait between them included) and the outcome. Never the path, a header or a
/// body: those may hold what the gateway protects.
#[derive(Debug)]
#[non_exhaustive]
pub struct Call<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// From the call to its end.
    pub elapsed: Duration,
    /// The status of the response returned (after the retries), or why there is none.
    pub outcome: Result<StatusCode, &'a UpstreamError>,
}

/// Told of every call to [`Upstream::send`] when it ends (a call whose future is dropped first
/// is not told). Runs on the caller's task: keep it short and never block.
pub trait Observe: Send + Sync + fmt::Debug {
    /// One call ended.
    fn observe(&self, call: &Call<'_>);
}

struct Inner {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
    max_response_bytes: u64,
    auth: Auth,
}

/// How one attempt failed before a response head arrived.
#[derive(Clone, Copy)]
enum Failure {
    /// The HTTP client refused to build the request; nothing was sent. Not retried.
    Unsendable,
    Connect,
    Timeout,
    Reset,
}

impl Upstream {
    /// Builds the client: a connection pool with the configured timeouts, no redirects followed
    /// (a 3xx is returned to the gateway, and a credential never follows a redirect elsewhere),
    /// and no proxy from the environment.
    ///
    /// # Errors
    /// [`ConfigError::HttpClient`] if the TLS backend cannot be initialised.
    pub fn new(config: UpstreamConfig) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_idle_per_host)
            .redirect(redirect::Policy::none())
            .referer(false)
            .no_proxy()
            .user_agent(USER_AGENT)
            .build()
            .map_err(|_| ConfigError::HttpClient)?;
        let auth = Auth::new(config.auth, http.clone());
        let inner = Inner {
            http,
            base: config.base,
            retry: config.retry,
            max_response_bytes: config.max_response_bytes,
            auth,
        };
        Ok(Self {
            inner: Arc::new(inner),
            observer: None,
        })
    }

    /// This client, telling `observer` of every call ([`Observe`]). Clones made after share it.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observe>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The normalised base URL (no trailing slash), for [`rewrite_base`](crate::rewrite_base).
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// The largest response body read, in bytes (`max_response_bytes`): a larger one is an
    /// error, so a resource larger than this can be written but never read back.
    pub fn max_response_bytes(&self) -> u64 {
        self.inner.max_response_bytes
    }

    /// Sends `request` and reads the whole response, up to the body cap.
    ///
    /// - Idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`) are retried, with
    ///   bounded exponential backoff and jitter, after a connect failure, a timeout or a reset
    ///   before the response head, and after a 502, 503 or 504 (waiting for a `Retry-After` in
    ///   seconds if it is within the configured cap; a longer one ends the retries and the
    ///   response is returned). After the last attempt, a 5xx is returned as a response.
    /// - `POST` and `PATCH` are sent once: a timeout or reset is reported with
    ///   [`UpstreamError::outcome_unknown`] true, since the upstream may have applied them.
    /// - With client credentials, a 401 causes one token refresh and one more attempt, for any
    ///   method: the upstream refused the request without processing it.
    ///
    /// # Errors
    /// See [`UpstreamError`]; a non-2xx status is not an error.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let Some(observer) = &self.observer else {
            return self.exchange(request).await;
        };
        let method = request.method().clone();
        let started = Instant::now();
        let result = self.exchange(request).await;
        observer.observe(&Call {
            method: &method,
            elapsed: started.elapsed(),
            outcome: result.as_ref().map(UpstreamResponse::status),
        });
        result
    }

    /// [`Upstream::send`], unobserved.
    async fn exchange(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let idempotent = request.is_idempotent();
        let UpstreamRequest {
            method,
            path_and_query,
            headers,
            body,
        } = request;
        let url = self.target(&path_and_query)?;
        let headers = forwardable(headers);
        let (mut attempts, mut retries, mut reauthenticated) = (0, 0, false);
        loop {
            attempts += 1;
            let credential = self.inner.auth.credential().await?;
            let result = self
                .attempt(&method, &url, &headers, body.clone(), credential.clone())
                .await;
            let may_retry = idempotent && retries < self.inner.retry.max_retries;
            let response = match result {
                Ok(response) => response,
                Err(failure) if may_retry && !matches!(failure, Failure::Unsendable) => {
                    tokio::time::sleep(backoff(&self.inner.retry, retries)).await;
                    retries += 1;
                    continue;
                }
                Err(failure) => return Err(failure.into_error(idempotent, attempts)),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED
                && !reauthenticated
                && self.inner.auth.reject(credential.as_ref())
            {
                reauthenticated = true;
                continue;
            }
            if may_retry && matches!(status.as_u16(), 502..=504) {
                let wait = match retry_after(response.headers()) {
                    Some(wait) if wait > self.inner.retry.retry_after_max => {
                        return self.read(response, idempotent).await;
                    }
                    Some(wait) => wait,
                    None => backoff(&self.inner.retry, retries),
                };
                drop(response);
                tokio::time::sleep(wait).await;
                retries += 1;
                continue;
            }
            return self.read(response, idempotent).await;
        }
    }

    /// The absolute URL for a path relative to the base, checked again after parsing.
    fn target(&self, path_and_query: &str) -> Result<Url, RequestError> {
        let joined = join(&self.inner.base, path_and_query)?;
        let url = Url::parse(&joined).map_err(|_| RequestError::ForbiddenCharacter)?;
        let rest = url.as_str().strip_prefix(self.inner.base.as_str());
        if !rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?'])) {
            return Err(RequestError::OutsideBase);
        }
        Ok(url)
    }

    /// One attempt, up to the response head.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<bytes::Bytes>,
        credential: Option<HeaderValue>,
    ) -> Result<reqwest::Response, Failure> {
        let mut builder = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(credential) = credential {
            builder = builder.header(header::AUTHORIZATION, credential);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        builder.send().await.map_err(|error| Failure::of(&error))
    }

    /// Reads the body up to the cap; past it, stops and drops the connection.
    async fn read(
        &self,
        mut response: reqwest::Response,
        idempotent: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let limit = self.inner.max_response_bytes;
        let declared = response.content_length().unwrap_or(0);
        if declared > limit {
            return Err(UpstreamError::BodyTooLarge { limit });
        }
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| UpstreamError::BodyInterrupted { idempotent })?
        {
            let length = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
            if length > limit {
                return Err(UpstreamError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse::new(status, headers, body.freeze()))
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.inner.base)
            .field("retry", &self.inner.retry)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .field("auth", &self.inner.auth)
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

// === impl Failure ===

impl Failure {
    fn of(error: &reqwest::Error) -> Self {
        if error.is_builder() {
            Self::Unsendable
        } else if error.is_connect() {
            Self::Connect
        } else if error.is_timeout() {
            Self::Timeout
        } else {
            // Sent on an open connection, then closed, reset or answered with an unreadable
            // head before a response arrived.
            Self::Reset
        }
    }

    fn into_error(self, idempotent: bool, attempts: u32) -> UpstreamError {
        match self {
            Self::Unsendable => UpstreamError::InvalidRequest(RequestError::Unsendable),
            Self::Connect => UpstreamError::Connect { attempts },
            Self::Timeout => UpstreamError::Timeout {
                idempotent,
                attempts,
            },
            Self::Reset => UpstreamError::Reset {
                idempotent,
                attempts,
            },
        }
    }
}

/// The delay before retry number `retry` (from 0): `base · 2^retry`, capped, with "equal
/// jitter" (uniform in the upper half) so that gateway replicas do not retry in lockstep.
fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1 << retry.min(16))
        .min(policy.backoff_max);
    let half = u64::try_from(ceiling.as_nanos() / 2).unwrap_or(u64::MAX);
    // Jitter needs no cryptographic randomness: std's per-instance random hasher keys suffice.
    let jitter = RandomState::new().build_hasher().finish() % half.saturating_add(1);
    Duration::from_nanos(half.saturating_add(jitter))
}

/// `Retry-After` in delay-seconds (RFC 9110 §10.2.3); an HTTP-date is ignored (backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

const USER_AGENT: &str = concat!("fhirseal-upstream/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            retry_after_max: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for _ in 0..100 {
            let first = backoff(&policy(), 0);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let third = backoff(&policy(), 2);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            let late = backoff(&policy(), 40);
            assert!(
                late >= Duration::from_millis(500) && late <= Duration::from_millis(1_000),
                "{late:?}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&headers), None);
    }
}
