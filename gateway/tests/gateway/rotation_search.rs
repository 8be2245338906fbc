//! Searches on blind-index elements while a rotation of the blind-index secret searches two
//! generations (`docs/search.md`, "Rotating the secret"), with wiremock as the upstream: the
//! upstream is asked once per generation, oldest first, each `_tag` naming that generation's
//! token systems alone, and the candidates are merged (a resource in both lists counted once,
//! the candidate cap held for each list and for their union); with `_sort`, one query ORs both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::headers::HeaderStore;
use fhirseal::index_secret;
use fhirseal_seal::index::index_generation;
use fhirseal_seal::{Sealer, SharedHeaders};
use rand_core::OsRng;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Mocked, Reply, Who, mocked, now, searchset, send, token};

const NAME: &str = "Canary-Rotation-Name-5K";

/// The search every test runs: two blind-index parameters, so two `_tag`s upstream.
const SEARCH: &str = "/fhir/Patient?family=Canary-Rotation-Name-5K&birthdate=1971-02-03";

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": true,
        "name": [{"family": NAME, "given": ["Ada"]}],
        "gender": "female", "birthDate": "1971-02-03"})
}

/// The systems of the items of each `_tag` parameter of `url` (`system|code`; an item with no
/// `|` is all system), one list per parameter.
fn tag_systems(url: &Url) -> Vec<Vec<String>> {
    url.query_pairs()
        .filter(|(k, _)| k == "_tag")
        .map(|(_, v)| {
            v.split(',')
                .map(|item| {
                    item.split_once('|')
                        .map_or(item, |(system, _)| system)
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// The generations of the blind-index token systems the `_tag`s of `url` name, one set per
/// `_tag` parameter.
fn tag_generations(url: &Url) -> Vec<BTreeSet<u32>> {
    tag_systems(url)
        .iter()
        .map(|systems| {
            systems
                .iter()
                .map(|system| {
                    index_generation(system)
                        .unwrap_or_else(|| panic!("not a blind-index system: {system}"))
                        .0
                        .get()
                })
                .collect()
        })
        .collect()
}

/// The gateway (with `overrides`) in front of a wiremock upstream, after a rotation: it searches
/// generations 2 and 1. The upstream holds the Patients of `under`: for each generation, the ids
/// holding its tokens (sealed under generation 2 when listed there, else under 1), and answers a
/// Patient search with those of every generation its `_tag`s name, in that order (a resource
/// listed under both, as if re-indexed between two queries, is in both answers).
async fn rotated(under: &[(u32, &[&str])], overrides: &[(&str, &str)]) -> Mocked {
    let harness = mocked(None, overrides).await;
    let state = &harness.gateway.state;
    let authority = Arc::clone(&state.authority);
    let rotated = tokio::task::spawn_blocking(move || index_secret::rotate(&authority, now()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.get(), 2);
    let sealing = Arc::clone(&state.sealing);
    tokio::task::spawn_blocking(move || sealing.refresh_index_keys())
        .await
        .unwrap()
        .unwrap();
    let keys = state.sealing.index_keys();
    let generations: Vec<u32> = keys
        .searched()
        .iter()
        .map(|g| g.generation().get())
        .collect();
    assert_eq!(generations, [2, 1]);

    let period = state.authority.current_period(now()).unwrap();
    let mut shared = SharedHeaders::new();
    let mut sealed: BTreeMap<String, Value> = BTreeMap::new();
    for (generation, ids) in under.iter().rev() {
        let index = keys
            .searched()
            .iter()
            .find(|g| g.generation().get() == *generation)
            .unwrap();
        for id in *ids {
            if sealed.contains_key(*id) {
                continue;
            }
            let rules = state.policy.rules_for(Some(&format!("Patient/{id}")));
            let resource = Sealer::new(
                state.authority.public_params(),
                state.sealing.key(),
                period,
                &mut shared,
                &mut OsRng,
            )
            .with_blind_index(index)
            .seal(&patient(id), &rules)
            .unwrap()
            .resource;
            assert!(!resource.to_string().contains(NAME));
            sealed.insert((*id).to_string(), resource);
        }
    }
    let basics: Vec<Value> = shared
        .take_created()
        .iter()
        .map(|h| json!({"resource": HeaderStore::resource(h)}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(basics)))
        .mount(&harness.upstream)
        .await;
    let answers: BTreeMap<u32, Vec<Value>> = under
        .iter()
        .map(|(generation, ids)| {
            let entries = ids
                .iter()
                .map(|id| json!({"resource": sealed[*id], "search": {"mode": "match"}}))
                .collect();
            (*generation, entries)
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(move |request: &wiremock::Request| {
            let asked: BTreeSet<u32> = tag_generations(&request.url)
                .into_iter()
                .flatten()
                .collect();
            let entries: Vec<Value> = asked
                .iter()
                .flat_map(|g| answers.get(g).cloned().unwrap_or_default())
                .collect();
            ResponseTemplate::new(200).set_body_json(searchset(entries))
        })
        .mount(&harness.upstream)
        .await;
    harness
}

async fn get(app: &Router, uri: &str) -> Reply {
    let request = Request::get(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token(&Who::FullAccess)),
        )
        .body(Body::empty())
        .unwrap();
    send(app, request).await
}

/// The ids of the matches of a searchset, in order; each opened.
fn ids(reply: &Reply) -> Vec<String> {
    reply.json["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            assert_eq!(e["resource"]["name"][0]["family"], NAME, "not opened: {e}");
            e["resource"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The Patient searches the upstream received, as URLs.
async fn searches(upstream: &MockServer) -> Vec<Url> {
    upstream
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == "/fhir/Patient")
        .map(|r| r.url)
        .collect()
}

/// What of `url` is not a blind-index code: its path, every parameter but `_tag`, and each
/// `_tag` item's system. A code is a hash of a few hex digits, which spells any four of them (a
/// birth year, say) once in 65,536 codes: a clear value looked for there would fail at random.
fn in_clear(url: &Url) -> String {
    let mut clear = vec![url.path().to_string()];
    clear.extend(untagged(url).into_iter().map(|(k, v)| format!("{k}={v}")));
    clear.extend(tag_systems(url).into_iter().flatten());
    clear.join("&")
}

/// `url`'s query but its `_tag`s.
fn untagged(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .filter(|(k, _)| k != "_tag")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn during_a_rotation_the_upstream_is_asked_once_per_generation_oldest_first() {
    let h = rotated(&[(1, &["old-1", "old-2"]), (2, &["new-1"])], &[]).await;
    let reply = get(&h.app, SEARCH).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["total"], 3, "{}", reply.text);
    assert_eq!(ids(&reply), ["old-1", "old-2", "new-1"]);

    let sent = searches(&h.upstream).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (url, generation) in sent.iter().zip([1, 2]) {
        let tags = tag_generations(url);
        assert_eq!(tags.len(), 2, "one `_tag` per blind-index parameter: {url}");
        for one in tags {
            assert_eq!(one, BTreeSet::from([generation]), "{url}");
        }
        let clear = in_clear(url);
        assert!(!clear.contains(NAME) && !clear.contains("1971"), "{url}");
    }
    assert_eq!(untagged(&sent[0]), untagged(&sent[1]));
    assert_eq!(
        untagged(&sent[0]),
        [("_count".to_string(), "1000".to_string())]
    );

    // Paged by the gateway: the same order on every page (each page asks both generations again).
    let mut next = Some(format!("{SEARCH}&_count=1"));
    let mut paged = Vec::new();
    while let Some(uri) = next.take() {
        let uri = uri
            .strip_prefix("http://127.0.0.1:8080")
            .unwrap_or(&uri)
            .to_string();
        let reply = get(&h.app, &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["total"], 3);
        paged.extend(ids(&reply));
        next = reply.json["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_string);
    }
    assert_eq!(paged, ["old-1", "old-2", "new-1"]);
    assert_eq!(searches(&h.upstream).await.len(), 2 + 3 * 2);
}

#[tokio::test]
async fn a_resource_in_both_generations_candidates_is_counted_once() {
    // `moved` was re-indexed between the two queries: both answers hold it.
    let h = rotated(&[(1, &["old", "moved"]), (2, &["moved", "new"])], &[]).await;
    let reply = get(&h.app, SEARCH).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["total"], 3, "{}", reply.text);
    assert_eq!(ids(&reply), ["old", "moved", "new"]);
    assert_eq!(searches(&h.upstream).await.len(), 2, "one per generation");
    let count = get(&h.app, &format!("{SEARCH}&_summary=count")).await;
    assert_eq!(count.status, StatusCode::OK, "{}", count.text);
    assert_eq!(count.json["total"], 3, "{}", count.text);
}

#[tokio::test]
async fn the_candidate_cap_holds_for_each_generation_and_for_their_union() {
    let cap = [("FHIRSEAL__SEARCH__CANDIDATE_CAP", "2")];
    // Two and two, three together: over the cap.
    let h = rotated(&[(1, &["a", "b"]), (2, &["b", "c"])], &cap).await;
    let reply = get(&h.app, SEARCH).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.contains("more than 2 candidates"),
        "{}",
        reply.text
    );
    // Three in one generation: over the cap before the other is asked.
    let h = rotated(&[(1, &["a", "b", "c"]), (2, &["d"])], &cap).await;
    let reply = get(&h.app, SEARCH).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(searches(&h.upstream).await.len(), 1);
    // Two and two, the same two: within it.
    let h = rotated(&[(1, &["a", "b"]), (2, &["a", "b"])], &cap).await;
    let reply = get(&h.app, SEARCH).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(ids(&reply), ["a", "b"]);
}

#[tokio::test]
async fn with_sort_one_query_ors_the_generations() {
    let h = rotated(&[(1, &["old"]), (2, &["new"])], &[]).await;
    let reply = get(&h.app, &format!("{SEARCH}&_sort=gender")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["total"], 2, "{}", reply.text);
    let sent = searches(&h.upstream).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    for one in tag_generations(&sent[0]) {
        assert_eq!(one, BTreeSet::from([1, 2]), "{}", sent[0]);
    }
    assert!(untagged(&sent[0]).contains(&("_sort".to_string(), "gender".to_string())));
}
