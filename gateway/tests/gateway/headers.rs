//! The shared-header store against a wiremock upstream: the `Basic` resources it writes, lookups
//! from the upstream and from the cache, absences, upstream failures, the TTL and the capacity,
//! and a sealed resource opened with the headers it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use fhirseal::error::ApiError;
use fhirseal::headers::{BATCH, CODE_SYSTEM, HEADER_CODE, HeaderError, HeaderStore};
use fhirseal_envelope::{Granularity, Header, HeaderCache, HeaderId, SealingKey};
use fhirseal_seal::shape::SEALED_HEADER;
use fhirseal_seal::{
    Displays, ElementRule, HeaderLookup, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
    shared_header_ids,
};
use fhirseal_upstream::{RawUpstreamConfig, Upstream, UpstreamConfig, UpstreamError};
use rand_core::OsRng;
use rshabe::{AccessStructure, Attribute, Params, PublicParams, RevocationList, UpdateMode};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{fhir_base, free_port, searchset};

/// A FHIR server that knows `Basic`: `PUT Basic/[id]` stores the body, `GET Basic?_id=a,b`
/// answers a searchset of the stored ones (what sekmet-fhir does, checked by hand against it).
#[derive(Clone, Default)]
struct BasicServer(Arc<Mutex<HashMap<String, Value>>>);

impl Respond for BasicServer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut stored = self.0.lock().unwrap();
        if request.method.as_str() == "PUT" {
            let id = request.url.path().rsplit('/').next().unwrap().to_string();
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let created = stored.insert(id, body).is_none();
            return ResponseTemplate::new(if created { 201 } else { 200 });
        }
        let ids = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "_id")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let entries: Vec<Value> = ids
            .split(',')
            .filter_map(|id| stored.get(id))
            .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
            .collect();
        ResponseTemplate::new(200).set_body_json(searchset(entries))
    }
}

async fn upstream(server: &MockServer, timeout_ms: u64) -> Upstream {
    let raw: RawUpstreamConfig = serde_json::from_value(json!({
        "base_url": fhir_base(server),
        "max_retries": 0,
        "request_timeout_ms": timeout_ms,
    }))
    .unwrap();
    Upstream::new(UpstreamConfig::try_from(raw).unwrap()).unwrap()
}

/// A server with a [`BasicServer`] mounted, and the server's state.
async fn basic_server() -> (MockServer, BasicServer) {
    let server = MockServer::start().await;
    let basic = BasicServer::default();
    Mock::given(path_regex("^/fhir/Basic"))
        .respond_with(basic.clone())
        .mount(&server)
        .await;
    (server, basic)
}

struct Keys {
    pp: PublicParams,
    msk: rshabe::MasterSecret,
    sealing: SealingKey,
}

impl Keys {
    fn new() -> Self {
        let (pp, msk) = rshabe::setup(Params::new(6, 4).unwrap(), &mut OsRng);
        let sealing = SealingKey::generate(&mut OsRng);
        Self { pp, msk, sealing }
    }

    /// A shared header for `policy` at period 0.
    fn header(&self, policy: &str) -> Header {
        let policy = AccessStructure::parse(policy).unwrap();
        Header::new(
            &self.pp,
            &policy,
            0,
            Granularity::Shared,
            &self.sealing,
            &mut OsRng,
        )
        .unwrap()
        .0
    }

    fn key(&self, attributes: &[&str]) -> rshabe::DecryptionKey {
        let attributes: Vec<Attribute> = attributes
            .iter()
            .map(|a| Attribute::new(a).unwrap())
            .collect();
        let sk = rshabe::keygen(&self.pp, &self.msk, 0, &attributes, &mut OsRng).unwrap();
        let ku =
            rshabe::key_update(&self.pp, &self.msk, 0, &RevocationList::new(), &mut OsRng).unwrap();
        rshabe::decrypt_key(&self.pp, &sk, &ku, &mut OsRng).unwrap()
    }
}

fn status(error: HeaderError) -> StatusCode {
    ApiError::from(error).into_response().status()
}

async fn gets(server: &MockServer) -> usize {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count()
}

#[tokio::test]
async fn stored_headers_are_basic_resources_and_come_back() {
    let keys = Keys::new();
    let (server, basic) = basic_server().await;
    let one = keys.header("role:physician");
    let two = keys.header("role:nurse or role:physician");
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    store.store(&[one.clone(), two.clone()]).await.unwrap();
    // Twice is harmless: same resource, same bytes.
    store.store(std::slice::from_ref(&one)).await.unwrap();

    let puts = server.received_requests().await.unwrap();
    assert_eq!(puts.len(), 3);
    let id = HeaderStore::resource_id(one.id());
    assert_eq!(id, format!("fhirseal-header-{}", one.id()));
    assert_eq!(id.len(), "fhirseal-header-".len() + 32);
    assert_eq!(puts[0].url.path(), format!("/fhir/Basic/{id}"));
    assert!(
        puts[0].headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let body: Value = serde_json::from_slice(&puts[0].body).unwrap();
    assert_eq!(body["resourceType"], "Basic");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(
        body["code"],
        json!({"coding": [{"system": CODE_SYSTEM, "code": HEADER_CODE}]})
    );
    assert_eq!(body["extension"].as_array().unwrap().len(), 1);
    assert_eq!(body["extension"][0]["url"], SEALED_HEADER);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["extension"][0]["valueBase64Binary"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, one.to_bytes());
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["resourceType", "id", "extension", "code"],
        "nothing else: no meta.security, no text"
    );
    assert_eq!(basic.0.lock().unwrap().len(), 2);

    // A store that stored them has them cached: no GET.
    let found = store.lookup(&[one.id(), two.id()]).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(gets(&server).await, 0);

    // Another gateway (empty cache) fetches them, in one search.
    let other = HeaderStore::new(upstream(&server, 5_000).await);
    let found = other.lookup(&[two.id(), one.id(), two.id()]).await.unwrap();
    assert_eq!(found.header(one.id()), Some(one.clone()));
    assert_eq!(found.header(two.id()), Some(two.clone()));
    let requests = server.received_requests().await.unwrap();
    let get = requests
        .iter()
        .find(|r| r.method.as_str() == "GET")
        .unwrap();
    assert_eq!(get.url.path(), "/fhir/Basic");
    assert_eq!(get.headers["prefer"], "handling=strict");
    let query: HashMap<_, _> = get.url.query_pairs().into_owned().collect();
    assert_eq!(
        query["_id"],
        format!(
            "{},{}",
            HeaderStore::resource_id(two.id()),
            HeaderStore::resource_id(one.id())
        )
    );
    assert_eq!(query["_count"], "2");
    assert_eq!(gets(&server).await, 1);
}

#[tokio::test]
async fn lookups_are_served_from_the_cache() {
    let keys = Keys::new();
    let (server, basic) = basic_server().await;
    let header = keys.header("role:physician");
    let id = HeaderStore::resource_id(header.id());
    basic
        .0
        .lock()
        .unwrap()
        .insert(id, HeaderStore::resource(&header));
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    for _ in 0..3 {
        let found = store.lookup(&[header.id()]).await.unwrap();
        assert_eq!(found.header(header.id()), Some(header.clone()));
    }
    assert_eq!(gets(&server).await, 1);
    // An empty lookup asks nothing.
    assert!(store.lookup(&[]).await.unwrap().is_empty());
    assert_eq!(gets(&server).await, 1);
}

#[tokio::test]
async fn unknown_ids_are_absent_and_not_cached() {
    let keys = Keys::new();
    let (server, basic) = basic_server().await;
    let known = keys.header("role:physician");
    let unknown = HeaderId::from_bytes([7; 16]);
    basic.0.lock().unwrap().insert(
        HeaderStore::resource_id(known.id()),
        HeaderStore::resource(&known),
    );
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    let found = store.lookup(&[unknown, known.id()]).await.unwrap();
    assert!(!found.contains(unknown));
    assert_eq!(found.header(unknown), None);
    assert!(found.contains(known.id()));
    assert_eq!(found.len(), 1);
    // The absence is asked again (a header stored meanwhile is found); the known one is cached.
    let found = store.lookup(&[unknown, known.id()]).await.unwrap();
    assert_eq!(found.len(), 1);
    let requests = server.received_requests().await.unwrap();
    let last = requests.last().unwrap();
    let query: HashMap<_, _> = last.url.query_pairs().into_owned().collect();
    assert_eq!(query["_id"], HeaderStore::resource_id(unknown));
}

#[tokio::test]
async fn malformed_or_misfiled_stored_headers_are_absent() {
    let keys = Keys::new();
    let good = keys.header("role:physician");
    let broken = HeaderId::from_bytes([1; 16]);
    let truncated = keys.header("role:nurse");
    let misfiled = keys.header("role:lab");
    let elsewhere = HeaderId::from_bytes([2; 16]);
    let server = MockServer::start().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut short = HeaderStore::resource(&truncated);
    short["extension"][0]["valueBase64Binary"] =
        json!(b64(&truncated.to_bytes()[..truncated.to_bytes().len() - 7]));
    // `misfiled`'s header stored under another id's resource.
    let mut moved = HeaderStore::resource(&misfiled);
    moved["id"] = json!(HeaderStore::resource_id(elsewhere));
    let entries = vec![
        json!({"resource": {"resourceType": "Basic", "id": HeaderStore::resource_id(broken),
            "code": {"text": "x"},
            "extension": [{"url": SEALED_HEADER, "valueBase64Binary": "not base64!"}]}}),
        json!({"resource": short}),
        json!({"resource": moved}),
        json!({"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}}),
        json!({"resource": HeaderStore::resource(&good)}),
        json!("junk"),
    ];
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(entries)))
        .mount(&server)
        .await;
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    let ids = [broken, truncated.id(), misfiled.id(), elsewhere, good.id()];
    let found = store.lookup(&ids).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found.header(good.id()), Some(good));
}

#[tokio::test]
async fn upstream_failures_fail_the_lookup_closed() {
    let id = HeaderId::from_bytes([3; 16]);
    let cases = [
        (ResponseTemplate::new(500), StatusCode::BAD_GATEWAY),
        (ResponseTemplate::new(503), StatusCode::SERVICE_UNAVAILABLE),
        (ResponseTemplate::new(429), StatusCode::SERVICE_UNAVAILABLE),
        (ResponseTemplate::new(400), StatusCode::BAD_GATEWAY),
        (
            ResponseTemplate::new(200).set_body_string("<html>"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"resourceType": "OperationOutcome"})),
            StatusCode::BAD_GATEWAY,
        ),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let store = HeaderStore::new(upstream(&server, 5_000).await);
        let error = store.lookup(&[id]).await.unwrap_err();
        assert!(
            matches!(
                error,
                HeaderError::SearchRefused { .. } | HeaderError::Malformed
            ),
            "{error:?}"
        );
        assert_eq!(status(error), expected);
    }

    // No answer in time: 504.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let store = HeaderStore::new(upstream(&server, 200).await);
    let error = store.lookup(&[id]).await.unwrap_err();
    assert!(
        matches!(error, HeaderError::Upstream(UpstreamError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(status(error), StatusCode::GATEWAY_TIMEOUT);

    // Unreachable: 502.
    // (A dropped MockServer goes back to wiremock's pool and keeps answering: a closed port.)
    let port = free_port();
    let raw: RawUpstreamConfig = serde_json::from_value(json!({
        "base_url": format!("http://127.0.0.1:{port}/fhir"), "max_retries": 0}))
    .unwrap();
    let gone = Upstream::new(UpstreamConfig::try_from(raw).unwrap()).unwrap();
    let error = HeaderStore::new(gone).lookup(&[id]).await.unwrap_err();
    assert!(matches!(error, HeaderError::Upstream(_)), "{error:?}");
    assert_eq!(status(error), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_refused_store_is_an_error() {
    let keys = Keys::new();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(header("prefer", "return=minimal"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    let header = keys.header("role:physician");
    let error = store
        .store(std::slice::from_ref(&header))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            HeaderError::StoreRefused {
                status: StatusCode::BAD_REQUEST
            }
        ),
        "{error:?}"
    );
    assert_eq!(status(error), StatusCode::BAD_GATEWAY);
    // Nothing was cached: a lookup asks the upstream (which has no GET: 404, an error).
    assert!(store.lookup(&[header.id()]).await.is_err());
    assert_eq!(gets(&server).await, 1);
}

#[tokio::test]
async fn cached_headers_expire_after_the_ttl_and_the_cache_is_bounded() {
    let keys = Keys::new();
    let (server, basic) = basic_server().await;
    let a = keys.header("role:physician");
    let b = keys.header("role:nurse");
    for h in [&a, &b] {
        basic
            .0
            .lock()
            .unwrap()
            .insert(HeaderStore::resource_id(h.id()), HeaderStore::resource(h));
    }
    let store = HeaderStore::with_cache(
        upstream(&server, 5_000).await,
        16,
        Duration::from_millis(150),
    );
    store.lookup(&[a.id()]).await.unwrap();
    store.lookup(&[a.id()]).await.unwrap();
    assert_eq!(gets(&server).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile the update job moved the header to period 1 (same id) on the upstream.
    let moved = a
        .update(&keys.pp, 1, UpdateMode::Minimal, &mut OsRng)
        .unwrap();
    assert_eq!(moved.id(), a.id());
    basic.0.lock().unwrap().insert(
        HeaderStore::resource_id(a.id()),
        HeaderStore::resource(&moved),
    );
    let found = store.lookup(&[a.id()]).await.unwrap();
    assert_eq!(gets(&server).await, 2, "expired: fetched again");
    assert_eq!(found.header(a.id()), Some(moved));

    // Capacity 1: a second header pushes the first out.
    let small = HeaderStore::with_cache(upstream(&server, 5_000).await, 1, Duration::from_secs(60));
    let before = gets(&server).await;
    small.lookup(&[a.id()]).await.unwrap();
    small.lookup(&[a.id()]).await.unwrap();
    small.lookup(&[b.id()]).await.unwrap();
    small.lookup(&[a.id()]).await.unwrap();
    assert_eq!(gets(&server).await - before, 3);
    // Capacity 0: nothing is kept.
    let none = HeaderStore::with_cache(upstream(&server, 5_000).await, 0, Duration::from_secs(60));
    let before = gets(&server).await;
    none.lookup(&[a.id()]).await.unwrap();
    assert_eq!(none.lookup(&[a.id()]).await.unwrap().len(), 1);
    assert_eq!(gets(&server).await - before, 2);
}

#[tokio::test]
async fn many_ids_are_fetched_in_batches() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .and(query_param("_count", BATCH.to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(vec![])))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .and(query_param("_count", "20"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(vec![])))
        .expect(1)
        .mount(&server)
        .await;
    let ids: Vec<HeaderId> = (0..(2 * BATCH + 20))
        .map(|i| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
            HeaderId::from_bytes(bytes)
        })
        .collect();
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    assert!(store.lookup(&ids).await.unwrap().is_empty());
    server.verify().await;
}

#[tokio::test]
async fn a_sealed_resource_opens_with_the_headers_it_names() {
    let keys = Keys::new();
    let (server, _basic) = basic_server().await;
    let rule = |path: &str, policy: &str| {
        ElementRule::new(
            path,
            AccessStructure::parse(policy).unwrap(),
            Granularity::Shared,
        )
        .unwrap()
    };
    let rules = Rules::new([RuleSet::new(
        "Patient",
        vec![
            rule("Patient.birthDate", "role:physician"),
            rule("Patient.name", "role:physician or role:nurse"),
        ],
        Narrative::Seal,
        Displays::Matching,
    )
    .unwrap()])
    .unwrap();
    // The family name is the canary, long enough that the envelopes' random base64 does not
    // spell it by chance. "Doe" did: 1,400 random base64 characters hold a given three letters
    // about once in 190 runs, a given nine about once in 10^13.
    let original = json!({"resourceType": "Patient", "id": "p1",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann Canarydoe</div>"},
        "name": [{"family": "Canarydoe", "given": ["Ann"]}], "gender": "female", "birthDate": "1980-02-03"});
    let mut shared = SharedHeaders::new();
    let sealed = Sealer::new(&keys.pp, &keys.sealing, 0, &mut shared, &mut OsRng)
        .seal(&original, &rules)
        .unwrap()
        .resource;
    assert!(!sealed.to_string().contains("Canarydoe"));
    let created = shared.take_created();
    assert!(created.len() >= 2);

    HeaderStore::new(upstream(&server, 5_000).await)
        .store(&created)
        .await
        .unwrap();

    // A reader behind another gateway instance: nothing cached.
    let store = HeaderStore::new(upstream(&server, 5_000).await);
    let headers = store.lookup(&shared_header_ids(&sealed)).await.unwrap();
    assert_eq!(headers.len(), created.len());
    let key = keys.key(&["role:physician"]);
    let cache = HeaderCache::new(16, Duration::from_secs(300));
    let mut opened = sealed.clone();
    let report = Reader::new("dr", Some(&key), &cache, &headers, &keys.sealing).open(&mut opened);
    assert_eq!(opened, original);
    assert_eq!(report.masked, 0);

    // A nurse gets the name, not the birth date.
    let nurse = keys.key(&["role:nurse"]);
    let mut partly = sealed;
    let report =
        Reader::new("nurse", Some(&nurse), &cache, &headers, &keys.sealing).open(&mut partly);
    assert!(report.opened > 0 && report.masked > 0, "{report:?}");
    assert_eq!(partly["name"], original["name"]);
    assert!(partly.get("birthDate").is_none());
}
