//! Issue 15, "Creates": a `PUT [type]/[id]` of an id sekmet-fhir does not hold creates once. Of
//! many concurrent `PUT`s of one new id, one is answered `201 Created` and writes version 1; the
//! others find it once they hold the create guard and proceed as the updates they are (200, or
//! 412 when another update came in between), so the upstream history holds one version per 200
//! and the 201's as its first. The same across two gateways sharing one PostgreSQL authority (the
//! guard's lease). A lapsed lease (its holder gone) blocks nothing; a lease held past the wait is a
//! 409 naming the resource, with nothing written; a transaction that writes one resource twice is
//! a 400 at once, not a wait on its own guard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fhirseal::app::app;
use fhirseal::guard::CreateGuards;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{diagnostics, expect};
use crate::support::sekmet::{Gateway, gateway, gateway_with, unique};
use crate::support::{Who, now, postgres_database};

/// Concurrent writers of one new id.
const WRITERS: usize = 200;

/// The Patient writer `n` puts: its name sealed, its writer in an identifier no rule seals.
fn patient(id: &str, n: usize) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "active": true, "gender": "female",
        "identifier": [{"system": "urn:e2e:writer", "value": format!("writer-{n}")}],
        "name": [{"family": "Guarded", "given": [format!("W{n}")]}]
    })
}

/// `WRITERS` concurrent `PUT Patient/{id}`, writer `n` through `gateways[n % len]`: each answer's
/// status, by writer.
async fn put_all(gateways: &[Arc<Gateway>], id: &str) -> Vec<(usize, StatusCode, String)> {
    let mut writes = JoinSet::new();
    for n in 0..WRITERS {
        let gw = Arc::clone(&gateways[n % gateways.len()]);
        let body = patient(id, n);
        writes.spawn(async move {
            let reply = gw.put(&body, &Who::Doctor).await;
            (n, reply.status, reply.text)
        });
    }
    writes.join_all().await
}

/// The statuses counted; the writer answered 201; every writer answered 200.
fn tally(
    replies: &[(usize, StatusCode, String)],
) -> (BTreeMap<u16, usize>, Vec<usize>, Vec<usize>) {
    let mut counts = BTreeMap::new();
    let (mut created, mut updated) = (Vec::new(), Vec::new());
    for (n, status, text) in replies {
        *counts.entry(status.as_u16()).or_insert(0) += 1;
        match *status {
            StatusCode::CREATED => created.push(*n),
            StatusCode::OK => updated.push(*n),
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("writer {n}: {other}: {text}"),
        }
    }
    (counts, created, updated)
}

/// The writers of the upstream's versions of `Patient/{id}`, by version (1 first).
async fn upstream_writers(gw: &Gateway, id: &str) -> Vec<usize> {
    let history = gw
        .upstream_get(&format!("Patient/{id}/_history?_count=1000"))
        .await;
    expect(&history, StatusCode::OK);
    let mut versions: Vec<(u64, usize)> = history.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            let version = r["meta"]["versionId"].as_str().unwrap().parse().unwrap();
            let writer = r["identifier"][0]["value"].as_str().unwrap();
            (version, writer["writer-".len()..].parse().unwrap())
        })
        .collect();
    versions.sort_unstable();
    let numbers: Vec<u64> = versions.iter().map(|(v, _)| *v).collect();
    assert_eq!(numbers, (1..=versions.len() as u64).collect::<Vec<_>>());
    versions.into_iter().map(|(_, writer)| writer).collect()
}

/// Exactly one 201, the rest 200 or 412; the 201's body is version 1 upstream, and every 200
/// wrote one version after it (a create that overwrote another would be a version of its own
/// with no 200, or a second 201).
#[track_caller]
fn assert_created_once(replies: &[(usize, StatusCode, String)], writers: &[usize]) {
    let (counts, created, mut updated) = tally(replies);
    eprintln!("{WRITERS} concurrent PUTs of one new id: {counts:?}");
    assert_eq!(created.len(), 1, "one 201: {counts:?}");
    assert_eq!(
        writers.first(),
        created.first(),
        "the 201's body is version 1"
    );
    let mut later = writers[1..].to_vec();
    later.sort_unstable();
    updated.sort_unstable();
    assert_eq!(later, updated, "one version per 200, none else: {counts:?}");
}

/// The guard of `Patient/{id}` is let go in `gw` (its keyed lock emptied, its lease released):
/// another holder takes the lease at once.
async fn assert_let_go(gw: &Gateway, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.state.creates.in_use() > 0 {
        assert!(
            Instant::now() < deadline,
            "the keyed lock keeps its entries"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let authority = Arc::clone(&gw.state.authority);
    let key = format!("Patient/{id}");
    let taken = tokio::task::spawn_blocking(move || {
        let taken = authority.take_lease(&key, "probe/0", now(), 30).unwrap();
        authority.release_lease(&key, "probe/0", now()).unwrap();
        taken
    })
    .await
    .unwrap();
    assert!(taken, "the lease of Patient/{id} is still held");
}

/// `gw` with create guards that wait `wait` at most.
fn waiting(mut gw: Gateway, wait: Duration) -> Gateway {
    let guards = CreateGuards::new(Arc::clone(&gw.state.authority)).with_wait(wait);
    gw.state.creates = Arc::new(guards);
    gw.app = app(gw.state.clone());
    gw
}

/// Takes the lease of `key` in `gw`'s store for `holder`, as at `at` (unix time), for 30 s.
async fn hold_lease(gw: &Gateway, key: &str, holder: &str, at: i64) {
    let authority = Arc::clone(&gw.state.authority);
    let (key, holder) = (key.to_string(), holder.to_string());
    let taken = tokio::task::spawn_blocking(move || authority.take_lease(&key, &holder, at, 30))
        .await
        .unwrap()
        .unwrap();
    assert!(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_a_new_id_create_it_once() {
    let gw = Arc::new(gateway().await);
    let id = unique("guarded");
    let started = Instant::now();
    let replies = put_all(&[Arc::clone(&gw)], &id).await;
    eprintln!("one gateway: {:?}", started.elapsed());
    assert_created_once(&replies, &upstream_writers(&gw, &id).await);
    assert_let_go(&gw, &id).await;
    // The stored resource opens as the last 200 wrote it.
    let read = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    expect(&read, StatusCode::OK);
    assert_eq!(read.json["name"][0]["family"], "Guarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_postgres_authority_create_a_new_id_once() {
    let database = tokio::task::spawn_blocking(|| postgres_database("creates"))
        .await
        .unwrap();
    let a = gateway_with(&[("FHIRSEAL__AUTHORITY__DATABASE", &database)]).await;
    // The second replica opens the same authority with the same key-encryption key.
    let kek = a.state.config.authority_kek_file.clone().unwrap();
    let b = gateway_with(&[
        ("FHIRSEAL__AUTHORITY__DATABASE", &database),
        ("FHIRSEAL__AUTHORITY__KEK_FILE", kek.to_str().unwrap()),
    ])
    .await;
    let gateways = [Arc::new(a), Arc::new(b)];
    let id = unique("replicated");
    let started = Instant::now();
    let replies = put_all(&gateways, &id).await;
    eprintln!("two gateways: {:?}", started.elapsed());
    assert_created_once(&replies, &upstream_writers(&gateways[0], &id).await);
    let created_by: Vec<usize> = replies
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .map(|(n, _, _)| n % 2)
        .collect();
    eprintln!("the 201 came through gateway {created_by:?}");
    for gw in &gateways {
        assert_let_go(gw, &id).await;
    }
    // Dropped on the runtime, as a gateway's state is at shutdown: the PostgreSQL store closes
    // its synchronous client on a thread of its own (it once panicked here).
    drop(gateways);
}

#[tokio::test]
async fn a_lapsed_lease_of_a_holder_gone_blocks_nothing() {
    let gw = waiting(gateway().await, Duration::from_secs(2));
    let id = unique("lapsed");
    // A replica killed while it held the guard, its lease ended a while ago.
    hold_lease(&gw, &format!("Patient/{id}"), "gw-killed/7", now() - 120).await;
    let started = Instant::now();
    expect(
        &gw.put(&patient(&id, 0), &Who::Doctor).await,
        StatusCode::CREATED,
    );
    assert!(started.elapsed() < Duration::from_secs(2), "it waited");
    assert_let_go(&gw, &id).await;
}

#[tokio::test]
async fn a_lease_held_past_the_wait_is_a_409_naming_the_resource_and_nothing_is_written() {
    let wait = Duration::from_millis(800);
    let gw = waiting(gateway().await, wait);
    let id = unique("held");
    let key = format!("Patient/{id}");
    // Another replica creating it, alive and holding its lease.
    hold_lease(&gw, &key, "gw-other/1", now()).await;
    let started = Instant::now();
    let reply = gw.put(&patient(&id, 0), &Who::Doctor).await;
    let waited = started.elapsed();
    expect(&reply, StatusCode::CONFLICT);
    assert_eq!(reply.json["resourceType"], "OperationOutcome");
    assert_eq!(reply.json["issue"][0]["code"], "conflict");
    assert!(
        diagnostics(&reply).contains(&format!("another create of {key} is in progress")),
        "{}",
        reply.text
    );
    assert!(
        waited >= wait && waited < wait + Duration::from_secs(3),
        "{waited:?}"
    );
    let stored = gw.upstream_get(&key).await;
    assert_eq!(stored.status, StatusCode::NOT_FOUND, "{}", stored.text);
    // The other replica done, the create goes through.
    let authority = Arc::clone(&gw.state.authority);
    let released = key.clone();
    tokio::task::spawn_blocking(move || authority.release_lease(&released, "gw-other/1", now()))
        .await
        .unwrap()
        .unwrap();
    expect(
        &gw.put(&patient(&id, 1), &Who::Doctor).await,
        StatusCode::CREATED,
    );
    assert_let_go(&gw, &id).await;
}

#[tokio::test]
async fn a_transaction_writing_one_new_resource_twice_is_refused_at_once() {
    let gw = waiting(gateway().await, Duration::from_secs(5));
    let id = unique("twice");
    let put = |n: usize| {
        json!({"resource": patient(&id, n),
               "request": {"method": "PUT", "url": format!("Patient/{id}")}})
    };
    let conditional = json!({"resource": patient(&id, 2), "request": {
        "method": "PUT", "url": format!("Patient?identifier=urn:e2e:writer|{id}")}});
    for entries in [vec![put(0), put(1)], vec![conditional, put(3)]] {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let started = Instant::now();
        let reply = gw.bundle(&bundle, &Who::Doctor).await;
        expect(&reply, StatusCode::BAD_REQUEST);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "it waited for its own guard"
        );
        assert!(
            diagnostics(&reply).contains("may not write one resource in two entries"),
            "{}",
            reply.text
        );
        assert_eq!(reply.json["issue"][0]["expression"][0], "Bundle.entry[1]");
    }
    let stored = gw.upstream_get(&format!("Patient/{id}")).await;
    assert_eq!(stored.status, StatusCode::NOT_FOUND, "{}", stored.text);
    // One entry creating it, inside a transaction: 201, its guard let go after.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [put(4)]});
    let reply = gw.bundle(&bundle, &Who::Doctor).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(
        reply.json["entry"][0]["response"]["status"], "201 Created",
        "{}",
        reply.text
    );
    assert_let_go(&gw, &id).await;
}
