//! `GET /metrics` on the admin listener (issue 17): after reads, denials, a refusal before any
//! token and an upstream answering 500 through the deployed router, the scrape, parsed by a real
//! Prometheus text-format parser (`prometheus-parse`), counts exactly those; it needs the admin
//! token; no canary of the requests or the records reaches it; and every 5xx of an upstream
//! failure logs its cause once.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::admin::{AdminAccess, AdminTokens, admin_router};
use fhirseal::state::AppState;
use prometheus_parse::{Scrape, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::read::{NAME, SSN, harness};
use crate::support::{Logged, Reply, now, practitioner, send};

/// The admin listener the router is mounted for, and its one token.
const LISTENER: &str = "127.0.0.1:9090";
const OPS: &str = "ops-token-0123456789abcdef0123456789ab";

/// What no request's id, query or path may leave in the scrape.
const CANARY_ID: &str = "canary-id-M3TR1CS";
const CANARY_QUERY: &str = "Canary-Query-M3TR1CS";
const CANARY_REQUEST_ID: &str = "canary-request-id-M3TR1CS";

fn admin(state: &AppState) -> Router {
    let tokens = AdminTokens::parse(&format!("ops {OPS}\n")).unwrap();
    admin_router(
        state.clone(),
        AdminAccess::new(LISTENER.parse().unwrap(), tokens),
    )
}

async fn get_metrics(admin: &Router, token: Option<&str>) -> Reply {
    let mut request = Request::get("/metrics").header(header::HOST, LISTENER);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(admin, request.body(Body::empty()).unwrap()).await
}

async fn read(app: &Router, uri: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get(uri).header("x-request-id", CANARY_REQUEST_ID);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(app, request.body(Body::empty()).unwrap()).await.status
}

/// A parsed scrape: each sample by name and labels.
struct Metrics {
    samples: Vec<prometheus_parse::Sample>,
}

impl Metrics {
    /// `text` parsed; every line that is not a comment must have become a sample (the parser
    /// passes over lines it cannot read, so that is checked here).
    fn parse(text: &str) -> Self {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        let parsed: usize = scrape
            .samples
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets.len(),
                _ => 1,
            })
            .sum();
        assert_eq!(parsed, lines, "lines the parser did not read:\n{text}");
        Self {
            samples: scrape.samples,
        }
    }

    /// The sample `name` with exactly `labels`.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&prometheus_parse::Sample> {
        let want: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.metric == name && *s.labels == want)
    }

    /// The value of the counter `name` (its `_total`) with exactly `labels`; 0 when absent.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self
            .sample(&format!("{name}_total"), labels)
            .map(|s| &s.value)
        {
            Some(Value::Counter(v)) => *v,
            None => 0.0,
            Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    /// The value of the gauge `name` (no labels).
    fn gauge(&self, name: &str) -> f64 {
        match self.sample(name, &[]).map(|s| &s.value) {
            Some(Value::Gauge(v)) => *v,
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    /// How many observations the histogram `name` with `labels` holds (its `+Inf` bucket).
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.sample(name, labels).map(|s| &s.value) {
            Some(Value::Histogram(buckets)) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count)
                .unwrap(),
            other => panic!("{name} {labels:?} is not a histogram: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_scrape_counts_reads_denials_and_upstream_errors_and_needs_the_token() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&h.upstream)
        .await;
    let state = &h.gateway.state;
    let admin = admin(state);

    // Before any request: every family is there, at zero, and the authority's gauges are read.
    let reply = get_metrics(&admin, Some(OPS)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let before = Metrics::parse(&reply.text);
    assert_eq!(
        before.counter("fhirseal_requests", &[("interaction", "read")]),
        0.0
    );

    let doctor = practitioner("Practitioner/dr-grey", "doctor", "user/*.rs");
    let janitor = practitioner("Practitioner/hr-1", "janitor", "user/*.rs");
    for _ in 0..3 {
        assert_eq!(
            read(&h.app, "/fhir/Patient/p1", Some(&doctor)).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        read(&h.app, "/fhir/Patient/p1", Some(&janitor)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read(&h.app, "/fhir/Patient/p1", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        read(&h.app, "/fhir/Patient/broken", Some(&doctor)).await,
        StatusCode::BAD_GATEWAY
    );
    let unknown = format!("/fhir/Patient/{CANARY_ID}");
    assert_eq!(
        read(&h.app, &unknown, Some(&doctor)).await,
        StatusCode::NOT_FOUND
    );
    let search = format!("/fhir/Patient?family={CANARY_QUERY}");
    let searched = read(&h.app, &search, Some(&doctor)).await;

    // Without the token, or with another, no metrics.
    for token in [None, Some("ops-token-but-not-the-right-one-0000000")] {
        let reply = get_metrics(&admin, token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(!reply.text.contains("fhirseal_requests"), "{}", reply.text);
    }

    let reply = get_metrics(&admin, Some(OPS)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = &reply.text;
    for canary in [
        CANARY_ID,
        CANARY_QUERY,
        CANARY_REQUEST_ID,
        NAME,
        SSN,
        "dr-grey",
        "p1",
    ] {
        assert!(!text.contains(canary), "{canary} in the scrape:\n{text}");
    }
    let m = Metrics::parse(text);

    let requests = |interaction: &str, resource_type: &str, status: &str| {
        m.counter(
            "fhirseal_requests",
            &[
                ("interaction", interaction),
                ("resource_type", resource_type),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("read", "Patient", "200"), 3.0);
    assert_eq!(requests("read", "Patient", "403"), 1.0);
    assert_eq!(requests("read", "Patient", "502"), 1.0);
    assert_eq!(requests("read", "Patient", "404"), 1.0);
    assert_eq!(
        requests("none", "Patient", "401"),
        1.0,
        "refused before a handler"
    );
    assert_eq!(
        requests("search-type", "Patient", searched.as_str()),
        1.0,
        "{text}"
    );
    assert_eq!(
        m.observations(
            "fhirseal_request_duration_seconds",
            &[("interaction", "read")]
        ),
        6.0
    );

    // The doctor opens the demographics and not the social security number, three times.
    let opened = m.counter("fhirseal_elements", &[("action", "opened")]);
    let masked = m.counter("fhirseal_elements", &[("action", "masked")]);
    assert!(opened >= 3.0 && opened % 3.0 == 0.0, "opened {opened}");
    assert!(masked >= 3.0 && masked % 3.0 == 0.0, "masked {masked}");
    assert_eq!(m.counter("fhirseal_elements", &[("action", "sealed")]), 0.0);

    // The upstream's 500, once: its status class and an error; and nothing else failed.
    assert_eq!(
        m.counter(
            "fhirseal_upstream_requests",
            &[("method", "GET"), ("outcome", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        m.counter("fhirseal_upstream_errors", &[("kind", "status_5xx")]),
        1.0
    );
    let errors: f64 = m
        .samples
        .iter()
        .filter(|s| s.metric == "fhirseal_upstream_errors_total")
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(errors, 1.0, "{text}");
    let upstream_gets: f64 = ["2xx", "4xx", "5xx"]
        .iter()
        .map(|o| {
            m.counter(
                "fhirseal_upstream_requests",
                &[("method", "GET"), ("outcome", o)],
            )
        })
        .sum();
    assert!(upstream_gets >= 5.0, "{text}");
    assert_eq!(
        m.observations(
            "fhirseal_upstream_request_duration_seconds",
            &[("method", "GET")]
        ),
        upstream_gets
    );

    // One key derived for the doctor, then served from the cache; the shared headers fetched
    // once, then from the cache.
    assert_eq!(
        m.counter("fhirseal_key_derivations", &[("outcome", "derived")]),
        1.0
    );
    assert_eq!(
        m.counter("fhirseal_key_cache_lookups", &[("result", "miss")]),
        1.0
    );
    assert!(m.counter("fhirseal_key_cache_lookups", &[("result", "hit")]) >= 2.0);
    let misses = m.counter("fhirseal_header_cache_lookups", &[("result", "miss")]);
    let hits = m.counter("fhirseal_header_cache_lookups", &[("result", "hit")]);
    assert!(
        misses >= 1.0 && hits >= 2.0 * misses,
        "{hits} hits, {misses} misses"
    );

    // The authority, read at the scrape.
    let info = state.authority.period_info(now()).unwrap();
    assert_eq!(m.gauge("fhirseal_authority_up"), 1.0);
    assert_eq!(m.gauge("fhirseal_authority_period"), info.period as f64);
    assert_eq!(
        m.gauge("fhirseal_authority_periods_left"),
        info.periods_left() as f64
    );
    assert_eq!(m.gauge("fhirseal_authority_last_period"), info.last as f64);
    assert_eq!(m.gauge("fhirseal_ct_update_job_finished"), 0.0);
}

/// The "ten 502s, nothing logged": each 502 of an upstream 500 logs one error line with
/// the upstream's status, and nothing of the request.
#[tokio::test(flavor = "current_thread")]
async fn each_upstream_failure_logs_its_cause_once() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&h.upstream)
        .await;
    let doctor = practitioner("Practitioner/dr-grey", "doctor", "user/*.rs");
    let logged = Logged::default();
    let subscriber = logged.subscriber(tracing::Level::WARN);
    {
        // The whole flow runs on this thread (a current-thread runtime): the subscriber sees it.
        let _default = tracing::subscriber::set_default(subscriber);
        for _ in 0..10 {
            assert_eq!(
                read(&h.app, "/fhir/Patient/broken", Some(&doctor)).await,
                StatusCode::BAD_GATEWAY
            );
        }
    }
    let log = logged.text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 10, "{log}");
    for line in lines {
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("status=502"), "{line}");
        assert!(line.contains("upstream_status=500"), "{line}");
        assert!(!line.contains("dr-grey"), "{line}");
    }
}
