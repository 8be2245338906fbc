//! The ciphertext-update job against a small in-memory FHIR server (a wiremock responder that
//! stores what is PUT, searches by `_id`, `_security` and `code`, pages with `_count`/`_offset`
//! and honours `If-Match`): planning, moving headers, resuming after a failure, two workers
//! splitting a job, and a malformed header failing its chunk closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use fhirseal::ctupdate::{self, JobError, PLAN_CHUNK};
use fhirseal::headers::HeaderStore;
use fhirseal::state::AppState;
use fhirseal_envelope::{BlindIndex, Header};
use fhirseal_policy::{ConsentView, Obligations};
use fhirseal_seal::shape::SEALED_HEADER;
use fhirseal_seal::{Sealer, SharedHeaders, UpdateError, shared_header_ids};
use rand_core::OsRng;
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{Configured, configured, fhir_base, now};

/// What the fake server holds and saw.
#[derive(Default)]
struct Data {
    /// `type/id` → resource.
    resources: BTreeMap<String, Value>,
    /// `type/id` → how many PUTs were stored.
    puts: HashMap<String, usize>,
    /// `type/id` → how many more PUTs answer 500.
    fail_puts: HashMap<String, usize>,
    /// `type/id` → how many more PUTs find it written meanwhile (its version bumped, 412).
    race_puts: HashMap<String, usize>,
    /// `type/id`s deleted just before their first PUT arrives (412, then 404 on reads).
    delete_on_put: Vec<String>,
    /// Search paths asked for (path and query).
    searches: Vec<String>,
    /// Bodies of stored PUTs, in order.
    bodies: Vec<Value>,
}

#[derive(Clone)]
struct Fake {
    base: String,
    data: Arc<Mutex<Data>>,
    put_delay: Duration,
}

impl Fake {
    fn insert(&self, mut resource: Value) {
        let name = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        resource["meta"]["versionId"] = json!("1");
        self.data.lock().unwrap().resources.insert(name, resource);
    }

    fn get(&self, name: &str) -> Value {
        self.data.lock().unwrap().resources[name].clone()
    }

    fn puts(&self, name: &str) -> usize {
        self.data
            .lock()
            .unwrap()
            .puts
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn total_puts(&self) -> usize {
        self.data.lock().unwrap().puts.values().sum()
    }
}

fn outcome(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing"}]}))
}

fn token_matches(value: &Value, wanted: &str) -> bool {
    let (system, code) = wanted.split_once('|').unwrap();
    value
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["system"].as_str() == Some(system) && c["code"].as_str() == Some(code))
}

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let segments: Vec<&str> = request
            .url
            .path()
            .trim_start_matches("/fhir/")
            .split('/')
            .collect();
        let query: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut data = self.data.lock().unwrap();
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", [resource_type]) => {
                data.searches.push(format!(
                    "{}?{}",
                    request.url.path(),
                    request.url.query().unwrap_or_default()
                ));
                let (mut count, mut offset) = (20usize, 0usize);
                let mut rest = Vec::new();
                let mut found: Vec<Value> = data
                    .resources
                    .values()
                    .filter(|r| r["resourceType"] == *resource_type)
                    .cloned()
                    .collect();
                for (k, v) in &query {
                    match k.as_str() {
                        "_count" => count = v.parse().unwrap(),
                        "_offset" => offset = v.parse().unwrap(),
                        "_sort" | "_elements" => rest.push(format!("{k}={v}")),
                        "_id" => {
                            let ids: Vec<&str> = v.split(',').collect();
                            found.retain(|r| ids.contains(&r["id"].as_str().unwrap()));
                            rest.push(format!("{k}={v}"));
                        }
                        "_security" => {
                            found.retain(|r| token_matches(&r["meta"]["security"], v));
                            rest.push(format!("{k}={}", v.replace('|', "%7C")));
                        }
                        "code" => {
                            found.retain(|r| token_matches(&r["code"]["coding"], v));
                            rest.push(format!("{k}={}", v.replace('|', "%7C")));
                        }
                        _ => return outcome(400),
                    }
                }
                let total = found.len();
                let page: Vec<Value> = found
                    .into_iter()
                    .skip(offset)
                    .take(count)
                    .map(|r| json!({"resource": r, "search": {"mode": "match"}}))
                    .collect();
                let mut links = vec![];
                if offset + count < total {
                    links.push(json!({"relation": "next", "url": format!(
                        "{}/{resource_type}?{}&_count={count}&_offset={}",
                        self.base, rest.join("&"), offset + count)}));
                }
                ResponseTemplate::new(200).set_body_json(json!({"resourceType": "Bundle",
                    "type": "searchset", "total": total, "link": links, "entry": page}))
            }
            ("GET", [resource_type, id]) => {
                match data.resources.get(&format!("{resource_type}/{id}")) {
                    Some(r) => ResponseTemplate::new(200).set_body_json(r),
                    None => outcome(404),
                }
            }
            ("PUT", [resource_type, id]) => {
                let name = format!("{resource_type}/{id}");
                if let Some(n) = data.fail_puts.get_mut(&name)
                    && *n > 0
                {
                    *n -= 1;
                    return outcome(500);
                }
                if let Some(i) = data.delete_on_put.iter().position(|n| *n == name) {
                    data.delete_on_put.remove(i);
                    data.resources.remove(&name);
                }
                if let Some(n) = data.race_puts.get_mut(&name)
                    && *n > 0
                {
                    *n -= 1;
                    let current = data.resources.get_mut(&name).unwrap();
                    let version: u64 = current["meta"]["versionId"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    current["meta"]["versionId"] = json!((version + 1).to_string());
                    current["status"] = json!("amended");
                    return outcome(412);
                }
                let Some(current) = data.resources.get(&name) else {
                    return outcome(412);
                };
                let version: u64 = current["meta"]["versionId"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let if_match = request
                    .headers
                    .get("if-match")
                    .map(|v| v.to_str().unwrap().to_string());
                if if_match != Some(format!("W/\"{version}\"")) {
                    return outcome(412);
                }
                let mut body: Value = serde_json::from_slice(&request.body).unwrap();
                data.bodies.push(body.clone());
                body["meta"]["versionId"] = json!((version + 1).to_string());
                data.resources.insert(name.clone(), body);
                *data.puts.entry(name).or_default() += 1;
                ResponseTemplate::new(200).set_delay(self.put_delay)
            }
            _ => outcome(405),
        }
    }
}

struct Harness {
    state: AppState,
    fake: Fake,
    /// A `sealed-header` extension holding a header of period 0.
    extension: Value,
    _upstream: MockServer,
    gateway: Configured,
}

async fn harness(put_delay: Duration) -> Harness {
    let upstream = MockServer::start().await;
    let base = fhir_base(&upstream);
    let gateway = configured(&base, &[]).await;
    let state = gateway.state.clone();
    let fake = Fake {
        base,
        data: Arc::default(),
        put_delay,
    };
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&upstream)
        .await;

    // The headers sealing a Patient creates, at period 0, stored as the gateway stores them.
    let rules = state.policy.rules_for(Some("Patient/p1"));
    let mut shared = SharedHeaders::new();
    let index = BlindIndex::new([7; 32]);
    let patient = json!({"resourceType": "Patient", "id": "p1",
        "name": [{"family": "Canary"}], "birthDate": "1970-01-01",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "1"}]});
    let sealed = Sealer::new(
        state.authority.public_params(),
        state.sealing.key(),
        0,
        &mut shared,
        &mut OsRng,
    )
    .with_blind_index(&index)
    .seal(&patient, &rules)
    .unwrap()
    .resource;
    let headers = shared.take_created();
    assert!(headers.len() >= 2);
    for header in &headers {
        fake.insert(HeaderStore::resource(header));
    }
    fake.insert(sealed);
    let extension = HeaderStore::resource(&headers[0])["extension"][0].clone();
    Harness {
        state,
        fake,
        extension,
        _upstream: upstream,
        gateway,
    }
}

impl Harness {
    /// Stores `n` Observations labelled MASKED, each with an embedded header of period 0.
    fn observations(&self, n: usize, id_of: impl Fn(usize) -> String) {
        for i in 0..n {
            self.fake.insert(json!({"resourceType": "Observation", "id": id_of(i),
                "status": "final", "code": {"text": "x"},
                "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "MASKED"}]},
                "extension": [self.extension.clone()]}));
        }
    }

    fn advance(&self) -> u64 {
        self.state.authority.advance_period(now()).unwrap()
    }

    fn progress(&self, job: fhirseal_authority::JobId) -> fhirseal_authority::Progress {
        self.state.authority.update_job_progress(job).unwrap()
    }
}

/// `fhirseal ciphertexts <command> --config <the harness's> [--json]` against the upstream at
/// `base`, on a blocking thread: its output.
async fn ciphertexts(
    h: &Harness,
    command: &'static str,
    base: String,
    json: bool,
) -> std::process::Output {
    let config = h.gateway.file();
    tokio::task::spawn_blocking(move || {
        let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_fhirseal"));
        run.arg("ciphertexts")
            .args(command.split(' '))
            .arg("--config")
            .arg(&config)
            .env("FHIRSEAL__UPSTREAM__BASE_URL", base);
        if json {
            run.arg("--json");
        }
        run.output().unwrap()
    })
    .await
    .unwrap()
}

/// A `fhirseal ciphertexts` command whose upstream is gone: one line, exit 1.
fn upstream_gone(out: std::process::Output) {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: the upstream FHIR server did not answer"),
        "{stderr}"
    );
}

/// The periods of every sealed header in `value`.
fn periods(value: &Value) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if o.get("url").and_then(Value::as_str) == Some(SEALED_HEADER) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(o["valueBase64Binary"].as_str().unwrap())
                        .unwrap();
                    out.push(Header::from_bytes(&bytes).unwrap().ciphertext().period());
                } else {
                    stack.extend(o.values());
                }
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_pages_through_next_links_and_makes_chunks() {
    let h = harness(Duration::ZERO).await;
    h.observations(250, |i| format!("o{i:03}"));
    assert_eq!(h.advance(), 1);

    let (job, added) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();
    // Observations: three pages of 100, 100 and 50 ids; the shared headers and the sealed
    // Patient: one page each.
    assert_eq!(added, 5);
    let progress = h.progress(job);
    assert_eq!(
        (progress.target_period, progress.chunks_total),
        (1, 6),
        "the five search chunks and the plan marker"
    );
    let searches = h.fake.data.lock().unwrap().searches.clone();
    let observation_pages: Vec<&String> = searches
        .iter()
        .filter(|s| s.starts_with("/fhir/Observation?"))
        .collect();
    assert_eq!(observation_pages.len(), 3, "{observation_pages:?}");
    assert!(observation_pages[2].contains("_offset=200"));
    assert!(
        observation_pages[0].contains(
            "_security=http://terminology.hl7.org/CodeSystem/v3-ObservationValue%7CMASKED"
        ) && observation_pages[0].contains("_sort=_id"),
        "{}",
        observation_pages[0]
    );
    assert!(searches.iter().any(|s| s.starts_with(
        "/fhir/Basic?code=https://fhirseal.dev/fhir/CodeSystem/fhirseal%7Csealed-header"
    )));
    // Every type with sealing rules is searched.
    for t in [
        "Patient",
        "Condition",
        "Encounter",
        "MedicationRequest",
        "Practitioner",
    ] {
        assert!(
            searches
                .iter()
                .any(|s| s.starts_with(&format!("/fhir/{t}?"))),
            "{t}"
        );
    }

    // Planning again (another replica, a restart) adds nothing.
    let (again, added) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();
    assert_eq!((again, added), (job, 0));
    assert_eq!(h.progress(job).chunks_total, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_link_to_another_host_is_refused() {
    let upstream = MockServer::start().await;
    let setup = configured(&fhir_base(&upstream), &[]).await;
    let state = &setup.state;
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "searchset", "entry": [],
            "link": [{"relation": "next", "url": "https://evil.example/fhir/Basic?_offset=100"}]})))
        .mount(&upstream)
        .await;
    let error = ctupdate::plan(state, now()).await.unwrap_err();
    assert!(matches!(error, JobError::ForeignLink), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_moves_every_header_and_a_second_run_moves_none() {
    let h = harness(Duration::ZERO).await;
    h.observations(30, |i| format!("o{i}"));
    assert_eq!(h.advance(), 1);
    let (job, _) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();
    let mut seen = Vec::new();
    let summary = ctupdate::work(&h.state, job, "w1", |p| seen.push(p.chunks_done))
        .await
        .unwrap();
    assert!(summary.finished && summary.failed.is_empty(), "{summary:?}");
    let basics = h
        .fake
        .data
        .lock()
        .unwrap()
        .resources
        .keys()
        .filter(|k| k.starts_with("Basic/"))
        .count();
    assert_eq!(summary.headers_moved, 30 + basics as u64);
    assert_eq!(*seen.last().unwrap(), h.progress(job).chunks_total);

    // Every PUT body carries its headers at the new period; nothing else was written.
    let bodies = h.fake.data.lock().unwrap().bodies.clone();
    assert_eq!(
        bodies.len(),
        30 + basics,
        "one write per resource holding a header"
    );
    for body in &bodies {
        let periods = periods(body);
        assert!(
            !periods.is_empty() && periods.iter().all(|p| *p == 1),
            "{periods:?}"
        );
    }
    assert_eq!(periods(&h.fake.get("Observation/o7")), [1]);
    assert_eq!(
        periods(&h.fake.get("Patient/p1")),
        Vec::<u64>::new(),
        "shared granularity: the Patient holds no header, only envelopes naming one"
    );
    let progress = h.progress(job);
    assert!(progress.finished);
    assert_eq!(progress.headers_moved, summary.headers_moved);

    // Again: the job is done; a second run claims nothing and writes nothing.
    assert!(ctupdate::plan(&h.state, now()).await.unwrap().is_none());
    let again = ctupdate::work(&h.state, job, "w2", |_| {}).await.unwrap();
    assert_eq!((again.chunks_done, again.headers_moved), (0, 0));
    assert_eq!(h.fake.total_puts(), 30 + basics);

    // A new job to the same period (say after a restore of the queue) moves nothing either:
    // every header is already there.
    let fresh = fhirseal_seal::update_headers(
        &mut h.fake.get("Observation/o1"),
        h.state.authority.public_params(),
        1,
        rshabe::UpdateMode::Minimal,
        &mut OsRng,
    )
    .unwrap();
    assert_eq!((fresh.moved, fresh.current), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_releases_the_chunk_and_the_next_run_resumes() {
    let h = harness(Duration::ZERO).await;
    h.observations(5, |i| format!("o{i}"));
    h.fake
        .data
        .lock()
        .unwrap()
        .fail_puts
        .insert("Observation/o3".into(), 1);
    h.advance();
    let (job, _) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();

    let error = ctupdate::work(&h.state, job, "w1", |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            JobError::UpstreamStatus { status, .. } if status.as_u16() == 500
        ),
        "{error:?}"
    );
    let progress = h.progress(job);
    assert!(!progress.finished);
    assert_eq!(progress.chunks_claimed, 0, "the failing chunk was released");
    assert!(progress.chunks_done < progress.chunks_total);
    assert_eq!(periods(&h.fake.get("Observation/o3")), [0]);
    assert_eq!(
        periods(&h.fake.get("Observation/o1")),
        [1],
        "written before the failure"
    );

    // The next run (another worker: a restart) resumes from the chunks left.
    let summary = ctupdate::work(&h.state, job, "w2", |_| {}).await.unwrap();
    assert!(summary.finished, "{summary:?}");
    assert_eq!(periods(&h.fake.get("Observation/o3")), [1]);
    for i in 0..5 {
        assert_eq!(
            h.fake.puts(&format!("Observation/o{i}")),
            1,
            "o{i}: a header already moved is not written again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_split_the_chunks_and_do_none_twice() {
    // Long ids: a page of 100 makes several chunks of at most 1024 bytes.
    let h = harness(Duration::from_millis(15)).await;
    h.observations(160, |i| format!("{i:03}-{}", "x".repeat(56)));
    h.advance();
    let (job, added) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();
    assert!(added >= 10, "{added}");
    let total = h.progress(job).chunks_total;

    let (a, b) = tokio::join!(
        ctupdate::work(&h.state, job, "worker-a", |_| {}),
        ctupdate::work(&h.state, job, "worker-b", |_| {}),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.chunks_done > 0 && b.chunks_done > 0, "{a:?} {b:?}");
    assert_eq!(
        a.chunks_done + b.chunks_done,
        total,
        "every chunk done once"
    );
    assert!(a.finished || b.finished);
    let data = h.fake.data.lock().unwrap();
    assert!(
        data.puts.values().all(|n| *n == 1),
        "no resource written twice"
    );
    assert_eq!(
        data.puts.len(),
        160 + data
            .resources
            .keys()
            .filter(|k| k.starts_with("Basic/"))
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_header_fails_its_chunk_closed() {
    let h = harness(Duration::ZERO).await;
    h.observations(3, |i| format!("o{i}"));
    let mut bad = h.fake.get("Observation/o1");
    bad["extension"][0]["valueBase64Binary"] = json!("AAAA");
    bad["meta"] = json!({"security": bad["meta"]["security"].clone()});
    h.fake.insert(bad);
    h.advance();
    let (job, _) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();

    let summary = ctupdate::work(&h.state, job, "w1", |_| {}).await.unwrap();
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    let failure = &summary.failed[0];
    assert!(
        failure.key.starts_with("Observation?_id="),
        "{}",
        failure.key
    );
    assert!(
        matches!(
            &failure.error,
            JobError::Header { resource, source: UpdateError::Malformed { .. } }
                if resource == "Observation/o1"
        ),
        "{:?}",
        failure.error
    );
    assert!(!summary.finished);
    let progress = h.progress(job);
    assert!(!progress.finished);
    assert_eq!(progress.chunks_done + 1, progress.chunks_total);
    assert_eq!(
        progress.chunks_claimed, 0,
        "the failed chunk went back to pending"
    );
    assert_eq!(
        h.fake.puts("Observation/o1"),
        0,
        "the malformed resource is not written"
    );
    assert_eq!(
        periods(&h.fake.get("Observation/o0")),
        [1],
        "its neighbours are moved"
    );
    // A second run fails it again and still does not finish.
    let again = ctupdate::work(&h.state, job, "w2", |_| {}).await.unwrap();
    assert_eq!(again.failed.len(), 1);
    assert!(!h.progress(job).finished);
    assert_ne!(failure.key, PLAN_CHUNK);
}

/// `fhirseal ciphertexts update`, the binary, against the fake server: it plans, works, prints a
/// summary and exits 0; a second run finds nothing to do; an unreachable upstream is exit 1 with
/// one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_moves_the_headers_and_says_so() {
    let h = harness(Duration::ZERO).await;
    h.observations(3, |i| format!("o{i}"));
    h.advance();
    let base = h.fake.base.clone();
    let run = |base: String, json: bool| ciphertexts(&h, "update", base, json);
    let out = run(base.clone(), true).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    let basics = h
        .fake
        .data
        .lock()
        .unwrap()
        .resources
        .keys()
        .filter(|k| k.starts_with("Basic/"))
        .count();
    assert_eq!(summary["finished"], true, "{stdout}");
    assert_eq!(summary["target_period"], 1);
    assert_eq!(summary["headers_moved"], 3 + basics, "{stdout}");
    assert!(
        stderr.contains("progress: "),
        "plain progress lines off a terminal: {stderr}"
    );
    assert_eq!(periods(&h.fake.get("Observation/o2")), [1]);

    let out = run(base, false).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(stdout.contains("already at period 1"), "{stdout}");

    // A period later, with the upstream gone: one line, exit 1.
    h.advance();
    upstream_gone(run("http://127.0.0.1:9/fhir".to_string(), false).await);
}

/// A write is sealed for the period the authority gives at that moment, whether it runs on the
/// async thread (its headers already in the book) or in the blocking pool (a header to make):
/// right after the period moves on (a revocation), the previous period's headers still in the
/// book are not sealed under again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_the_period_moves_on_is_sealed_for_the_new_one() {
    let h = harness(Duration::ZERO).await;
    // The first write makes the period's headers; the next seals under them.
    let made = seal_patient(&h.state, "a").await;
    assert_eq!(seal_patient(&h.state, "b").await, made);
    assert_eq!(h.advance(), 1);
    // Under the new period's headers only, made by the first write after the advance.
    let after = seal_patient(&h.state, "c").await;
    assert!(
        after.iter().all(|id| !made.contains(id)),
        "{after:?} {made:?}"
    );
    assert_eq!(seal_patient(&h.state, "d").await, after);
}

/// A Patient `id` sealed by the gateway's own sealing (as a write of it would be): the ids of
/// the shared headers it names, sorted.
async fn seal_patient(state: &AppState, id: &str) -> Vec<fhirseal_envelope::HeaderId> {
    let permit = Obligations {
        access: "test".to_string(),
        elements: Vec::new(),
        labels: Vec::new(),
        sealing: state
            .policy
            .sealing_rules_under(Some("Patient/p1"), ConsentView::default()),
    };
    let patient = json!({"resourceType": "Patient", "id": id,
        "name": [{"family": "Canary"}], "birthDate": "1970-01-01"});
    let sealed = state.sealing.seal(patient, None, permit).await.unwrap();
    let mut ids = shared_header_ids(sealed.resource());
    ids.sort();
    assert!(!ids.is_empty());
    ids
}

/// Seals that run on the async thread, one after another in one task (a long transaction), give
/// the thread back to the runtime now and then: another task on the same thread runs before
/// they are all done.
#[tokio::test(flavor = "current_thread")]
async fn a_long_run_of_seals_on_the_async_thread_lets_other_tasks_run() {
    let h = harness(Duration::ZERO).await;
    // The first makes the headers (in the blocking pool: an await that yields); the rest seal
    // under them where they are.
    seal_patient(&h.state, "first").await;
    let other = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&other);
    tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
    let mut sealed = 0;
    while !other.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            sealed < 1_000,
            "{sealed} seals never let the other task run"
        );
        seal_patient(&h.state, &format!("p{sealed}")).await;
        sealed += 1;
    }
    assert!(sealed > 1, "the seals waited: {sealed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_re_read_and_deleted_resources_skipped() {
    let h = harness(Duration::ZERO).await;
    h.observations(4, |i| format!("o{i}"));
    {
        let mut data = h.fake.data.lock().unwrap();
        data.race_puts.insert("Observation/o1".into(), 2);
        data.race_puts.insert("Observation/o2".into(), 10);
        data.delete_on_put.push("Observation/o3".into());
    }
    h.advance();
    let (job, _) = ctupdate::plan(&h.state, now()).await.unwrap().unwrap();
    let summary = ctupdate::work(&h.state, job, "w1", |_| {}).await.unwrap();

    // o1 was written twice by someone else: re-read each time, then moved, the other writer's
    // change kept (If-Match on the version read last).
    let o1 = h.fake.get("Observation/o1");
    assert_eq!(
        (periods(&o1), o1["status"].as_str()),
        (vec![1], Some("amended"))
    );
    assert_eq!(h.fake.puts("Observation/o1"), 1);
    // o2 never stopped changing: its chunk fails closed, not finished.
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    assert!(
        matches!(&summary.failed[0].error, JobError::Contended { resource } if resource == "Observation/o2"),
        "{:?}",
        summary.failed[0].error
    );
    assert_eq!(periods(&h.fake.get("Observation/o2")), [0]);
    // o3 was deleted meanwhile: skipped, not re-created.
    assert!(
        !h.fake
            .data
            .lock()
            .unwrap()
            .resources
            .contains_key("Observation/o3")
    );
    assert_eq!(h.fake.puts("Observation/o3"), 0);
    assert!(!summary.finished);

    // Once o2 is left alone, the next run finishes the job.
    h.fake.data.lock().unwrap().race_puts.clear();
    let again = ctupdate::work(&h.state, job, "w2", |_| {}).await.unwrap();
    assert!(again.finished && again.failed.is_empty(), "{again:?}");
    assert_eq!(periods(&h.fake.get("Observation/o2")), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_notices_a_new_period_and_stops_on_shutdown() {
    let h = harness(Duration::ZERO).await;
    h.observations(3, |i| format!("o{i}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = ctupdate::spawn_background(h.state.clone(), Duration::from_millis(50), async {
        let _ = stopped.await;
    });
    // Period 0 and no job: nothing to do.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.state.authority.latest_update_job().unwrap().is_none());

    h.advance();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, progress)) = h.state.authority.latest_update_job().unwrap()
            && progress.finished
        {
            assert_eq!(progress.target_period, 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(periods(&h.fake.get("Observation/o0")), [1]);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// The blind-index tokens of a stored resource, as `system|code`, sorted.
fn index_tags(resource: &Value) -> Vec<String> {
    let mut tags: Vec<String> = resource["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["system"]
                .as_str()
                .is_some_and(|s| s.starts_with(fhirseal_seal::index::BLIND_INDEX_SYSTEM))
        })
        .map(|t| {
            format!(
                "{}|{}",
                t["system"].as_str().unwrap(),
                t["code"].as_str().unwrap()
            )
        })
        .collect();
    tags.sort();
    tags
}

/// The re-index job (issue 16): the stored Patient's tokens were made under another secret (as
/// after a policy change, they no longer are what a write stores now); one run makes them what
/// sealing makes, changing nothing else byte for byte; a second run writes nothing; a Patient
/// whose name only she may read keeps its tokens and is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reindex_job_recomputes_tokens_and_carries_everything_else() {
    use fhirseal::reindex;
    use fhirseal_envelope::Granularity;
    use fhirseal_seal::{Displays, ElementRule, Narrative, RuleSet, Rules, SearchMode};
    let h = harness(Duration::ZERO).await;
    let before = h.fake.get("Patient/p1");
    let plain = json!({"resourceType": "Patient", "id": "p1",
        "name": [{"family": "Canary"}], "birthDate": "1970-01-01",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "1"}]});
    let rules = h.state.policy.rules_for(None);
    let set = rules.for_type("Patient").unwrap();
    let wanted: Vec<String> = {
        let mut tags: Vec<String> =
            fhirseal_seal::reindex_tags(h.state.sealing.index_keys().current(), set, &plain)
                .iter()
                .map(|t| t.search_value())
                .collect();
        tags.sort();
        tags
    };
    assert!(!wanted.is_empty());
    assert_ne!(index_tags(&before), wanted, "sealed under another secret");

    // A Patient whose name is sealed for herself alone: the re-index key does not open it.
    let own = Rules::new([RuleSet::new(
        "Patient",
        vec![
            ElementRule::new(
                "Patient.name",
                rshabe::AccessStructure::parse("patient:Patient/p2").unwrap(),
                Granularity::Shared,
            )
            .unwrap()
            .with_search(SearchMode::BlindIndex { bits: 16 }),
        ],
        Narrative::Seal,
        Displays::Keep,
    )
    .unwrap()])
    .unwrap();
    let mut shared = SharedHeaders::new();
    let index = h.state.sealing.index_keys();
    let sealed = Sealer::new(
        h.state.authority.public_params(),
        h.state.sealing.key(),
        0,
        &mut shared,
        &mut OsRng,
    )
    .with_blind_index(index.current())
    .seal(
        &json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Private"}]}),
        &own,
    )
    .unwrap()
    .resource;
    for header in shared.take_created() {
        h.fake.insert(HeaderStore::resource(&header));
    }
    h.fake.insert(sealed);
    let p2 = h.fake.get("Patient/p2");

    let summary = reindex::reindex(&h.state, now(), |_| {}).await.unwrap();
    assert_eq!(
        (summary.checked, summary.rewritten, summary.unchanged),
        (2, 1, 0),
        "{summary:?}"
    );
    assert_eq!(summary.unreadable, ["Patient/p2"]);
    assert!(summary.failed.is_empty());
    let after = h.fake.get("Patient/p1");
    assert_eq!(index_tags(&after), wanted);
    // Everything but the tokens (and the version the server bumps) is what was stored.
    let without_meta = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().shift_remove("meta");
        v
    };
    assert_eq!(without_meta(&after), without_meta(&before));
    assert_eq!(after["meta"]["security"], before["meta"]["security"]);
    assert_eq!(h.fake.get("Patient/p2"), p2, "left as it was");
    assert_eq!(h.fake.puts("Patient/p1"), 1);

    let again = reindex::reindex(&h.state, now(), |_| {}).await.unwrap();
    assert_eq!((again.rewritten, again.unchanged), (0, 1), "{again:?}");
    assert_eq!(h.fake.total_puts(), 1);
}

/// `fhirseal ciphertexts index-secret`: the generations as JSON; a rotation, then a second one
/// refused while the first is unfinished; retiring refused when there is nothing to retire and
/// when the rotation is too recent (the walk and the retirement themselves: the end-to-end test
/// `e2e_rest::rotation`). The gateway already running reads the new generation when it refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_secret_commands_rotate_and_refuse_what_is_unsafe() {
    let h = harness(Duration::ZERO).await;
    let run =
        |command: &'static str, json: bool| ciphertexts(&h, command, h.fake.base.clone(), json);
    let ok = |out: std::process::Output| {
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{stdout}{stderr}");
        stdout
    };
    let refused = |out: std::process::Output| {
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let status: Value = serde_json::from_str(&ok(run("index-secret status", true).await)).unwrap();
    assert_eq!(status["current"], 1, "{status}");
    assert_eq!(status["searched"], json!([1]), "{status}");
    assert!(status["retire_after"].is_null(), "{status}");
    let text = ok(run("index-secret status", false).await);
    assert_eq!(text.trim(), "blind-index secret: generation 1", "{text}");

    let stderr = refused(run("index-secret retire", false).await);
    assert!(stderr.contains("nothing to retire"), "{stderr}");

    let rotated: Value = serde_json::from_str(&ok(run("index-secret rotate", true).await)).unwrap();
    assert_eq!(rotated["current"], 2, "{rotated}");
    assert_eq!(rotated["searched"], json!([2, 1]), "{rotated}");
    let since = rotated["since"].as_i64().unwrap();
    assert_eq!(
        rotated["retire_after"].as_i64(),
        Some(since + 60),
        "{rotated}"
    );

    let stderr = refused(run("index-secret rotate", false).await);
    assert!(
        stderr.contains("generation 1 of the blind-index secret is still searched"),
        "{stderr}"
    );
    let stderr = refused(run("index-secret retire", false).await);
    assert!(stderr.contains("wait"), "{stderr}");
    assert_eq!(h.fake.total_puts(), 0, "nothing re-indexed before the wait");
    let text = ok(run("index-secret status", false).await);
    assert!(
        text.contains("generation 2; generation 1 still searched"),
        "{text}"
    );

    // The running gateway: generation 1 until it reads the authority again.
    assert_eq!(h.state.sealing.index_keys().current().generation().get(), 1);
    let sealing = Arc::clone(&h.state.sealing);
    let changed = tokio::task::spawn_blocking(move || sealing.refresh_index_keys())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.as_deref(), Some("2 (searching 1 too)"));
    let sealing = Arc::clone(&h.state.sealing);
    let unchanged = tokio::task::spawn_blocking(move || sealing.refresh_index_keys())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged, None);
}

/// `fhirseal ciphertexts reindex`: the same job from the command line, JSON or text, and one
/// line and exit 1 when the upstream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reindex_command_rewrites_once_and_says_so() {
    let h = harness(Duration::ZERO).await;
    let run = |base: String, json: bool| ciphertexts(&h, "reindex", base, json);
    let before = index_tags(&h.fake.get("Patient/p1"));
    let out = run(h.fake.base.clone(), true).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["checked"], 1, "{stdout}");
    assert_eq!(summary["rewritten"], 1, "{stdout}");
    assert_ne!(index_tags(&h.fake.get("Patient/p1")), before);

    let out = run(h.fake.base.clone(), false).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.contains("1 sealed resources checked: 0 re-indexed, 1 already up to date"),
        "{stdout}"
    );

    upstream_gone(run("http://127.0.0.1:9/fhir".to_string(), false).await);
}
