//! Rotating the blind-index secret (`docs/search.md`, "Rotating the secret") against a real
//! sekmet-fhir of the test's own (the retire walk rewrites every sealed Patient it stores, which
//! the run's shared server must not see): searches find every Patient before, during and after
//! the rotation (the gateway then asks the upstream once per generation, each query with that
//! generation's tokens alone, and each such query finds just that generation's Patients); what is
//! written during it carries the new generation's tokens; retiring is
//! refused too early, then moves every stored token to the new generation, after which a search
//! under the old secret (a copy of it) finds nothing upstream.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use std::sync::Arc;

use fhirseal::index_secret::{self, SWITCH};
use fhirseal::reindex::{RetireError, retire_older_generations};
use fhirseal_authority::unix_now as now;
use fhirseal_envelope::BlindIndex;
use fhirseal_seal::index::index_generation;
use fhirseal_seal::search::plan_search;
use serde_json::{Value, json};

use super::expect;
use crate::support::Who;
use crate::support::sekmet::{Gateway, OwnServer, canary, entries, gateway_over, unique};

const TWIN: &str = "urn:e2e:rotation";

fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A Patient of family `family`, told apart by its `TWIN` identifier `k`.
fn patient(id: &str, family: &str, k: usize) -> Value {
    json!({"resourceType": "Patient", "id": id,
        "identifier": [{"system": TWIN, "value": k.to_string()}],
        "name": [{"family": family, "given": ["Anna"]}],
        "birthDate": "1974-12-25"})
}

/// The `TWIN` identifiers of what `Patient?family=<stem>&birthdate=1974` finds through the
/// gateway, following its paging links.
async fn found(gw: &Gateway, stem: &str) -> BTreeSet<String> {
    let mut next = Some(format!(
        "/fhir/Patient?family={}&birthdate=1974&_count=2",
        enc(stem)
    ));
    let mut out = BTreeSet::new();
    while let Some(uri) = next.take() {
        let reply = gw.get(&uri, &Who::FullAccess).await;
        expect(&reply, StatusCode::OK);
        for resource in entries(&reply.json, Some("match")) {
            let id = resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["system"] == TWIN)
                .and_then(|i| i["value"].as_str())
                .unwrap_or_else(|| panic!("not opened: {resource}"));
            out.insert(id.to_string());
        }
        next = crate::support::sekmet::link(&reply.json, "next");
    }
    out
}

/// The generations of the blind-index tokens each stored Patient of `ids` holds upstream.
async fn stored_generations(gw: &Gateway, ids: &[String]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for id in ids {
        let reply = gw.upstream_get(&format!("Patient/{id}")).await;
        expect(&reply, StatusCode::OK);
        let tags = reply.json["meta"]["tag"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for tag in tags {
            if let Some((generation, _)) = tag["system"].as_str().and_then(index_generation) {
                out.insert(generation.get());
            }
        }
    }
    out
}

/// How many Patients the upstream finds, asked directly with the `_tag`s a search for `stem`
/// makes under `keys` (a copy of the secret's generations, as someone holding it could; one
/// generation alone, as the gateway asks during a rotation).
async fn found_upstream_under(gw: &Gateway, keys: &[BlindIndex], stem: &str) -> usize {
    let rules = gw.state.policy.rules_for(None);
    let query = [
        ("family".to_string(), stem.to_string()),
        ("birthdate".to_string(), "1974".to_string()),
    ];
    let plan = plan_search("Patient", &query, &rules, keys).unwrap();
    let mut path = "Patient?_count=100".to_string();
    for (key, value) in &plan.upstream {
        path.push_str(&format!("&{key}={}", enc(value)));
    }
    let reply = gw.upstream_get(&path).await;
    expect(&reply, StatusCode::OK);
    entries(&reply.json, Some("match")).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_index_secret_moves_every_token_and_retires_the_old() {
    let own = OwnServer::start();
    let gw = gateway_over(&own, &[]).await;
    let stem = canary("rot");
    let mut ids = Vec::new();
    for k in 0..3 {
        let id = unique("rot");
        let reply = gw
            .put(&patient(&id, &format!("{stem}Smith"), k), &Who::FullAccess)
            .await;
        expect(&reply, StatusCode::CREATED);
        ids.push(id);
    }
    let all: BTreeSet<String> = (0..3).map(|k| k.to_string()).collect();
    assert_eq!(found(&gw, &stem).await, all);
    assert_eq!(stored_generations(&gw, &ids).await, BTreeSet::from([1]));
    let first = gw.state.sealing.index_keys();

    // Rotate: the next generation, read by this gateway (as its refresh task does every 30 s).
    let authority = Arc::clone(&gw.state.authority);
    let rotated = tokio::task::spawn_blocking({
        let authority = Arc::clone(&authority);
        move || index_secret::rotate(&authority, now())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rotated.get(), 2);
    let sealing = Arc::clone(&gw.state.sealing);
    let changed = tokio::task::spawn_blocking(move || sealing.refresh_index_keys())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.as_deref(), Some("2 (searching 1 too)"));
    // A second rotation before this one is finished is refused.
    let again = tokio::task::spawn_blocking({
        let authority = Arc::clone(&authority);
        move || index_secret::rotate(&authority, now())
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(again.to_string().contains("generation 1"), "{again}");

    // During the rotation: the old resources are still found, a new one is written under
    // generation 2 and found beside them.
    assert_eq!(found(&gw, &stem).await, all);
    let id = unique("rot");
    let reply = gw
        .put(
            &patient(&id, &format!("{stem}Smithson"), 3),
            &Who::FullAccess,
        )
        .await;
    expect(&reply, StatusCode::CREATED);
    assert_eq!(
        stored_generations(&gw, std::slice::from_ref(&id)).await,
        BTreeSet::from([2])
    );
    ids.push(id);
    let all: BTreeSet<String> = (0..4).map(|k| k.to_string()).collect();
    assert_eq!(found(&gw, &stem).await, all);
    assert_eq!(found_upstream_under(&gw, first.searched(), &stem).await, 3);
    // What the gateway asks meanwhile: one query per generation, each finding its own.
    let during = gw.state.sealing.index_keys();
    let [current, old] = during.searched() else {
        panic!("{}", during.describe());
    };
    assert_eq!((old.generation().get(), current.generation().get()), (1, 2));
    assert_eq!(
        found_upstream_under(&gw, std::slice::from_ref(old), &stem).await,
        3
    );
    assert_eq!(
        found_upstream_under(&gw, std::slice::from_ref(current), &stem).await,
        1
    );

    // Too early: refused, nothing retired.
    let early = retire_older_generations(&gw.state, now(), false, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(early, RetireError::Rotation(_)) && early.to_string().contains("wait"),
        "{early}"
    );
    assert_eq!(gw.state.sealing.index_keys().searched().len(), 2);

    // Once every gateway writes generation 2: the walk moves the three old ones, then retires.
    let later = now() + i64::try_from(SWITCH.as_secs()).unwrap();
    let done = retire_older_generations(&gw.state, later, false, |_| {})
        .await
        .unwrap();
    assert_eq!(done.current.get(), 2);
    assert_eq!(
        done.retired.iter().map(|g| g.get()).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(done.reindex.rewritten, 3, "{:?}", done.reindex);
    assert_eq!(done.reindex.unchanged, 1, "{:?}", done.reindex);
    assert!(done.reindex.older.is_empty(), "{:?}", done.reindex);
    let keys = gw.state.sealing.index_keys();
    assert_eq!(keys.searched().len(), 1);
    assert_eq!(keys.current().generation().get(), 2);
    assert_eq!(stored_generations(&gw, &ids).await, BTreeSet::from([2]));
    // Every search still answers; a copy of the retired secret finds nothing upstream.
    assert_eq!(found(&gw, &stem).await, all);
    assert_eq!(found_upstream_under(&gw, first.searched(), &stem).await, 0);
    assert_eq!(found_upstream_under(&gw, keys.searched(), &stem).await, 4);

    // Finished: retiring again is refused (nothing to retire), a next rotation is allowed.
    let nothing = retire_older_generations(&gw.state, later, false, |_| {})
        .await
        .unwrap_err();
    assert!(
        nothing.to_string().contains("nothing to retire"),
        "{nothing}"
    );
    let third = tokio::task::spawn_blocking(move || index_secret::rotate(&authority, now()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.get(), 3);

    let canaries = [stem.as_str()];
    let scan = gw.canary_scan(&canaries);
    assert!(scan.is_empty(), "{scan:?}");
}
