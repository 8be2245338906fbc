//! The store of shared RS-HABE headers on the upstream server, and the cache in front of it.
//!
//! With `shared` granularity one header serves every resource sealed under the same access
//! structure and period; it is "stored once on the upstream as a gateway-managed resource"
//! (DESIGN.md, "Keys and performance"). Each header is a `Basic` resource:
//!
//! ```json
//! {"resourceType": "Basic", "id": "fhirseal-header-<32 hex of the header id>",
//!  "code": {"coding": [{"system": "https://fhirseal.dev/fhir/CodeSystem/fhirseal", "code": "sealed-header"}]},
//!  "extension": [{"url": "https://fhirseal.dev/fhir/StructureDefinition/sealed-header", "valueBase64Binary": "…"}]}
//! ```
//!
//! - [`HeaderStore::store`] writes the headers sealing created (`SharedHeaders::take_created`)
//!   with `PUT Basic/[id]`: idempotent, so concurrent stores of the same header are harmless.
//! - [`HeaderStore::lookup`] finds the headers a response's envelopes name
//!   ([`fhirseal_seal::shared_header_ids`]), from a bounded in-memory cache (headers are public)
//!   or with `GET Basic?_id=a,b,…` (sekmet-fhir and R4 token search take a comma-separated
//!   list; `Prefer: handling=strict` makes an unsupported parameter a 400, never a wider search).
//!   The answer, [`Headers`], is the [`HeaderLookup`] the reader opens envelopes with.
//!
//! Failing closed: an upstream that fails (times out, refuses, answers with something that is not
//! a Bundle) fails the lookup, and the response with it ([`HeaderError`]: 502 or 504). A header the upstream does not
//! have, or holds in a form that does not decode, is simply absent: the elements sealed under it
//! stay masked. Absences are not cached, so a header stored meanwhile is found on the next read.
//! Cached headers expire after the TTL (60 s by default), so a header moved to a later period by
//! the update job is seen soon.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fhirseal_envelope::{Header, HeaderId};
use fhirseal_seal::HeaderLookup;
use fhirseal_seal::shape::SEALED_HEADER;
use fhirseal_upstream::{Upstream, UpstreamRequest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use fhirseal_fhir::FHIR_JSON;

use crate::metrics::Metrics;

/// The code system of the gateway's own codes.
pub const CODE_SYSTEM: &str = "https://fhirseal.dev/fhir/CodeSystem/fhirseal";
/// The code of a `Basic` resource that holds a shared header.
pub const HEADER_CODE: &str = "sealed-header";
/// What the id of a header's `Basic` resource starts with; 32 lower-case hex digits follow.
pub const ID_PREFIX: &str = "fhirseal-header-";
/// How many headers the cache keeps by default.
pub const DEFAULT_CAPACITY: usize = 4096;
/// How long a cached header is used before it is fetched again, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Why the header store failed. Its requests are the gateway's own, not the client's: whatever
/// the upstream answers them, the client's request is not at fault, so `error.rs` makes every
/// failure a 502 (a 504 when the upstream did not answer in time); the upstream's status is for
/// the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The upstream did not answer: unreachable, reset, too slow, too large.
    #[error("the upstream FHIR server did not answer a request for shared headers")]
    Upstream(#[from] fhirseal_upstream::UpstreamError),
    /// The upstream refused to store a header (`PUT Basic/[id]` answered other than 200 or 201).
    #[error("the upstream FHIR server refused to store a shared header ({status})")]
    StoreRefused {
        /// Its status.
        status: StatusCode,
    },
    /// The upstream answered a search for headers other than 200.
    #[error("the upstream FHIR server refused a search for shared headers ({status})")]
    SearchRefused {
        /// Its status.
        status: StatusCode,
    },
    /// The upstream's answer to a search for headers is not a JSON Bundle.
    #[error("the upstream FHIR server answered a search for shared headers with no Bundle")]
    Malformed,
}

/// The shared headers on the upstream server, behind a bounded cache. Cheap to share (`Arc`).
pub struct HeaderStore {
    upstream: Upstream,
    cache: Mutex<Cache>,
    metrics: Metrics,
}

/// The headers a [`HeaderStore::lookup`] found, by id: a [`HeaderLookup`] for the reader.
#[derive(Default)]
pub struct Headers {
    found: HashMap<HeaderId, Arc<Header>>,
}

/// Headers by id, each with when it was fetched or stored.
struct Cache {
    entries: HashMap<HeaderId, (Arc<Header>, Instant)>,
    capacity: usize,
    ttl: Duration,
}

// === impl HeaderStore ===

impl HeaderStore {
    /// A store over `upstream` with the default cache ([`DEFAULT_CAPACITY`], [`DEFAULT_TTL`]).
    pub fn new(upstream: Upstream) -> Self {
        Self::with_cache(upstream, DEFAULT_CAPACITY, DEFAULT_TTL)
    }

    /// A store whose cache keeps at most `capacity` headers (0: no cache), each for `ttl`.
    pub fn with_cache(upstream: Upstream, capacity: usize, ttl: Duration) -> Self {
        let cache = Cache {
            entries: HashMap::new(),
            capacity,
            ttl,
        };
        Self {
            upstream,
            cache: Mutex::new(cache),
            metrics: Metrics::default(),
        }
    }

    /// This store, counting its cache's hits and misses in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The id of the `Basic` resource holding header `id`: `fhirseal-header-` and 32 hex digits.
    pub fn resource_id(id: HeaderId) -> String {
        format!("{ID_PREFIX}{id}")
    }

    /// The `Basic` resource that holds `header` upstream.
    pub fn resource(header: &Header) -> Value {
        let bytes = base64::engine::general_purpose::STANDARD.encode(header.to_bytes());
        json!({
            "resourceType": "Basic",
            "id": Self::resource_id(header.id()),
            "extension": [{"url": SEALED_HEADER, "valueBase64Binary": bytes}],
            "code": {"coding": [{"system": CODE_SYSTEM, "code": HEADER_CODE}]},
        })
    }

    /// Stores each header upstream (`PUT Basic/[id]`, one after the other) and in the cache.
    /// Storing a header again writes the same resource: harmless.
    ///
    /// # Errors
    /// [`HeaderError::Upstream`] when the upstream does not answer, [`HeaderError::StoreRefused`]
    /// when it refuses a write. The headers before the failing one are stored.
    pub async fn store(&self, headers: &[Header]) -> Result<(), HeaderError> {
        for header in headers {
            let path = format!("Basic/{}", Self::resource_id(header.id()));
            let request = UpstreamRequest::new(Method::PUT, path)
                .with_header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
                .with_header(ACCEPT, HeaderValue::from_static(FHIR_JSON))
                .with_header(PREFER, HeaderValue::from_static("return=minimal"))
                .with_body(Self::resource(header).to_string());
            let response = self.upstream.send(request).await?;
            let status = response.status();
            if !matches!(status, StatusCode::OK | StatusCode::CREATED) {
                return Err(HeaderError::StoreRefused { status });
            }
            self.cache()
                .insert(Arc::new(header.clone()), Instant::now());
        }
        Ok(())
    }

    /// The headers among `ids` that exist: from the cache when fetched less than the TTL ago,
    /// otherwise from the upstream, [`BATCH`] ids per search. At most [`MAX_FETCHED`] ids are
    /// fetched per call (a response naming more distinct headers is not what sealing writes:
    /// the rest stay masked). An id the upstream does not know, or whose stored header does not
    /// decode or is not the header of that id, is absent from the answer.
    ///
    /// # Errors
    /// [`HeaderError::Upstream`] when the upstream does not answer,
    /// [`HeaderError::SearchRefused`] when a search answers other than 200, and
    /// [`HeaderError::Malformed`] when its answer is not a JSON Bundle.
    pub async fn lookup(&self, ids: &[HeaderId]) -> Result<Headers, HeaderError> {
        let mut headers = Headers::default();
        let mut missing = Vec::new();
        {
            let now = Instant::now();
            let cache = self.cache();
            let mut seen = HashSet::new();
            for id in ids.iter().filter(|id| seen.insert(**id)) {
                match cache.fresh(*id, now) {
                    Some(header) => {
                        headers.found.insert(*id, header);
                    }
                    None => missing.push(*id),
                }
            }
        }
        let hits = u64::try_from(headers.found.len()).unwrap_or(u64::MAX);
        let misses = u64::try_from(missing.len()).unwrap_or(u64::MAX);
        self.metrics.header_cache(hits, misses);
        missing.truncate(MAX_FETCHED);
        for batch in missing.chunks(BATCH) {
            let fetched = self.fetch(batch).await?;
            let now = Instant::now();
            let mut cache = self.cache();
            for header in fetched {
                let header = Arc::new(header);
                cache.insert(Arc::clone(&header), now);
                headers.found.insert(header.id(), header);
            }
        }
        Ok(headers)
    }

    /// Drops header `id` from the cache (the update job moved it to a later period), so that the
    /// next lookup fetches it again. Other replicas see the move when their entry expires.
    pub fn forget(&self, id: HeaderId) {
        self.cache().entries.remove(&id);
    }

    /// The headers of `ids` the upstream holds, with one search.
    async fn fetch(&self, ids: &[HeaderId]) -> Result<Vec<Header>, HeaderError> {
        let list: Vec<String> = ids.iter().map(|id| Self::resource_id(*id)).collect();
        let path = format!("Basic?_id={}&_count={}", list.join(","), ids.len());
        let request = UpstreamRequest::new(Method::GET, path)
            .with_header(ACCEPT, HeaderValue::from_static(FHIR_JSON))
            .with_header(PREFER, HeaderValue::from_static("handling=strict"));
        let response = self.upstream.send(request).await?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err(HeaderError::SearchRefused { status });
        }
        let bundle: Value =
            serde_json::from_slice(response.body()).map_err(|_| HeaderError::Malformed)?;
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(HeaderError::Malformed);
        }
        let wanted: HashSet<HeaderId> = ids.iter().copied().collect();
        let entries = bundle.get("entry").and_then(Value::as_array);
        Ok(entries
            .into_iter()
            .flatten()
            .filter_map(|entry| header_of(entry.get("resource")?))
            .filter(|header| wanted.contains(&header.id()))
            .collect())
    }

    /// The cache; a panic while it was held left nothing half-written (each change is one map
    /// operation), so a poisoned lock is taken over.
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for HeaderStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting while this thread holds the lock must not deadlock.
        let mut out = f.debug_struct("HeaderStore");
        if let Ok(cache) = self.cache.try_lock() {
            out.field("cached", &cache.entries.len())
                .field("capacity", &cache.capacity)
                .field("ttl", &cache.ttl);
        }
        out.finish_non_exhaustive()
    }
}

// === impl Headers ===

impl Headers {
    /// How many headers were found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Whether header `id` was found.
    pub fn contains(&self, id: HeaderId) -> bool {
        self.found.contains_key(&id)
    }
}

impl HeaderLookup for Headers {
    fn header(&self, id: HeaderId) -> Option<Header> {
        self.found.get(&id).map(|header| Header::clone(header))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.found.keys()).finish()
    }
}

// === impl Cache ===

impl Cache {
    /// Header `id`, if cached less than the TTL before `now`.
    fn fresh(&self, id: HeaderId, now: Instant) -> Option<Arc<Header>> {
        let (header, at) = self.entries.get(&id)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| Arc::clone(header))
    }

    /// Caches `header`; when full, expired entries go first, then the oldest one.
    fn insert(&mut self, header: Arc<Header>, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let id = header.id();
        if !self.entries.contains_key(&id) && self.entries.len() >= self.capacity {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                let oldest = self.entries.iter().min_by_key(|(_, (_, at))| *at);
                if let Some(oldest) = oldest.map(|(id, _)| *id) {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(id, (header, now));
    }
}

/// The header a stored `Basic` resource holds, if it is one of ours and decodes: its id must be
/// the one its resource id names.
fn header_of(resource: &Value) -> Option<Header> {
    if resource.get("resourceType")?.as_str()? != "Basic" {
        return None;
    }
    let resource_id = resource.get("id")?.as_str()?;
    let text = resource
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(SEALED_HEADER))?
        .get("valueBase64Binary")?
        .as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let header = Header::from_bytes(&bytes).ok()?;
    (resource_id == HeaderStore::resource_id(header.id())).then_some(header)
}

/// How many ids one search asks for: 50 ids of 48 characters keep the URL under 2.5 kB.
pub const BATCH: usize = 50;
/// How many ids one lookup fetches at most.
pub const MAX_FETCHED: usize = 500;
/// `Prefer` (RFC 7240).
const PREFER: HeaderName = HeaderName::from_static("prefer");
