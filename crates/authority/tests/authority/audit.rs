//! The audit chain on both backends: appends link and verify, each kind of tampering is found
//! and named by sequence number (an edited record, a deleted one, two swapped, a truncated tail,
//! a forged checkpoint, a record edited and re-hashed), processes appending at once extend one
//! chain, and a store at schema version 5 gains the tables. The chain's index finds records by
//! patient, agent, outcome and time, newest first, page by page, and a store at version 6 has its
//! chained records indexed on the upgrade. The index follows the chain in transactions of its
//! own, always a prefix of it, and a search brings it up to the tail first, with appenders and
//! indexers at once too. Appends per second are printed (`--nocapture`).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use fhirseal_authority::audit::{self, AuditEntry, AuditQuery, Tamper};
use fhirseal_authority::{AuditChain, CheckpointPolicy, CheckpointSigner, Error, store};

use crate::support::{Db, backends};

/// The tests' checkpoint key.
fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed(&[3; 32]).unwrap()
}

/// A chain writer on `db`, checkpointing every 5 records.
fn writer(db: &Db) -> AuditChain {
    AuditChain::new(db.open(), signer(), CheckpointPolicy::new(5, 3600).unwrap())
}

/// `db` with 10 records (`{"n":1}` … `{"n":10}`, by `dr.grey`), checkpoints at 1, 6 and 10.
fn ten(db: &Db) {
    let mut chain = writer(db);
    for n in 1..=10 {
        let line = format!(r#"{{"n":{n},"who":{{"sub":"dr.grey"}}}}"#);
        chain
            .append(&[AuditEntry {
                time: 1_800_000_000_000 + n,
                record: &line,
            }])
            .unwrap();
    }
    chain.checkpoint().unwrap();
}

/// What `verify` says about `db`.
fn verify(db: &Db) -> Result<audit::Intact, Error> {
    audit::verify(db.open().as_mut(), &signer().public_key(), &[])
}

/// The sequence number and problem `verify` names.
fn broken(db: &Db) -> (u64, Tamper) {
    match verify(db) {
        Err(Error::AuditTampered { seq, problem }) => (seq, problem),
        other => panic!("{}: not tampered: {other:?}", db.backend),
    }
}

/// A bytes literal for `db`'s SQL.
fn bytes_literal(db: &Db, bytes: &[u8]) -> String {
    match db.backend {
        "sqlite" => format!("X'{}'", audit::hex(bytes)),
        _ => format!("'\\x{}'::bytea", audit::hex(bytes)),
    }
}

#[test]
fn an_intact_chain_verifies_on_both_backends() {
    for db in backends() {
        let b = db.backend;
        ten(&db);
        let intact = verify(&db).unwrap();
        assert_eq!(intact.records, 10, "{b}");
        assert_eq!(intact.checkpoints, 3, "{b}");
        assert_eq!(intact.last_checkpoint, Some(10), "{b}");
        let records = audit::records(db.open().as_mut(), 0, 100).unwrap();
        assert_eq!(records.len(), 10, "{b}");
        assert_eq!(
            records[9].record, r#"{"n":10,"who":{"sub":"dr.grey"}}"#,
            "{b}"
        );
        assert!(records.windows(2).all(|w| w[1].prev == w[0].hash), "{b}");
    }
}

/// A writer whose commits are relaxed (`server.audit_commit = "fast"`) says so back from the
/// database, and its chain is the same chain: it links, checkpoints and verifies.
#[test]
fn relaxed_commits_are_set_on_the_writer_only_and_chain_the_same() {
    // The level of a connection that was not relaxed (the test PostgreSQL may run without
    // synchronous commits altogether).
    let level = |db: &Db| -> String {
        match db.backend {
            "sqlite" => {
                let conn =
                    rusqlite::Connection::open(db.url.trim_start_matches("sqlite:")).unwrap();
                let level: i64 = conn
                    .pragma_query_value(None, "synchronous", |r| r.get(0))
                    .unwrap();
                level.to_string()
            }
            _ => {
                let mut client = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
                client
                    .query_one("SHOW synchronous_commit", &[])
                    .unwrap()
                    .get(0)
            }
        }
    };
    for db in backends() {
        let b = db.backend;
        let default = level(&db);
        // relax_commits reads the setting back: an error if the database ignored it.
        let mut store = db.open();
        store.relax_commits().unwrap_or_else(|e| panic!("{b}: {e}"));
        let mut chain = AuditChain::new(store, signer(), CheckpointPolicy::new(5, 3600).unwrap());
        for n in 1..=7 {
            let line = format!(r#"{{"n":{n}}}"#);
            chain
                .append(&[AuditEntry {
                    time: 1_800_000_000_000 + n,
                    record: &line,
                }])
                .unwrap();
        }
        let intact = verify(&db).unwrap();
        assert_eq!((intact.records, intact.checkpoints), (7, 2), "{b}");
        assert_eq!(
            level(&db),
            default,
            "{b}: another connection keeps the default"
        );
        if b == "sqlite" {
            assert_eq!(default, "2", "SQLite's default is FULL");
        }
    }
}

#[test]
fn an_edited_record_is_named() {
    for db in backends() {
        ten(&db);
        db.execute(
            "UPDATE audit_chain SET record = replace(record, 'dr.grey', 'dr.gray') WHERE seq = 5",
        );
        assert_eq!(broken(&db), (5, Tamper::Edited), "{}", db.backend);
    }
}

#[test]
fn an_edited_time_is_named() {
    for db in backends() {
        ten(&db);
        db.execute("UPDATE audit_chain SET time = time + 1 WHERE seq = 7");
        assert_eq!(broken(&db), (7, Tamper::Edited), "{}", db.backend);
    }
}

#[test]
fn a_deleted_record_is_named() {
    for db in backends() {
        ten(&db);
        db.execute("DELETE FROM audit_chain WHERE seq = 4");
        assert_eq!(
            broken(&db),
            (4, Tamper::Missing { to: 4 }),
            "{}",
            db.backend
        );
    }
}

#[test]
fn two_swapped_records_are_named() {
    for db in backends() {
        ten(&db);
        db.execute(
            "UPDATE audit_chain SET seq = 1003 WHERE seq = 3;
             UPDATE audit_chain SET seq = 3 WHERE seq = 4;
             UPDATE audit_chain SET seq = 4 WHERE seq = 1003;",
        );
        assert_eq!(
            broken(&db),
            (3, Tamper::OutOfOrder { follows: 4 }),
            "{}",
            db.backend
        );
    }
}

#[test]
fn a_truncated_tail_is_found_against_the_last_checkpoint() {
    for db in backends() {
        ten(&db);
        db.execute("DELETE FROM audit_chain WHERE seq > 8");
        assert_eq!(
            broken(&db),
            (9, Tamper::Truncated { checkpoint: 10 }),
            "{}",
            db.backend
        );
    }
}

#[test]
fn a_forged_checkpoint_is_named() {
    for db in backends() {
        ten(&db);
        // Any 64 bytes that are not the authority's signature: here the record's hash, twice.
        db.execute("UPDATE audit_checkpoints SET signature = hash || hash WHERE seq = 6");
        assert_eq!(broken(&db), (6, Tamper::BadSignature), "{}", db.backend);
    }
}

/// An attacker who edits a record and writes its new hash breaks the next link, and the
/// checkpoint over the edited record.
#[test]
fn an_edited_and_rehashed_record_breaks_the_link_after_it() {
    for db in backends() {
        let b = db.backend;
        ten(&db);
        let records = audit::records(db.open().as_mut(), 0, 100).unwrap();
        let edit = |seq: u64, checkpointed: bool| {
            let r = &records[seq as usize - 1];
            let forged = r.record.replace("dr.grey", "dr.gray");
            let hash = audit::link_hash(r.seq, r.time, &r.prev, &forged);
            db.execute(&format!(
                "UPDATE audit_chain SET record = '{forged}', hash = {} WHERE seq = {seq}",
                bytes_literal(&db, &hash)
            ));
            let expected = if checkpointed {
                (seq, Tamper::CheckpointMismatch)
            } else {
                (seq + 1, Tamper::Unlinked)
            };
            assert_eq!(broken(&db), expected, "{b}");
        };
        edit(8, false);
        edit(6, true);
    }
}

/// Rows the database holds but the chain's checks refuse: named by sequence number, no panic.
#[test]
fn a_malformed_row_is_named() {
    for db in backends() {
        ten(&db);
        db.execute(&format!(
            "UPDATE audit_chain SET prev = {} WHERE seq = 2",
            bytes_literal(&db, b"short")
        ));
        assert!(
            matches!(broken(&db), (2, Tamper::Malformed(_))),
            "{}",
            db.backend
        );
        let err = audit::records(db.open().as_mut(), 0, 100).unwrap_err();
        assert!(err.to_string().contains("audit record 2"), "{err}");
    }
}

/// Two processes' writers (each its own connection) appending at once extend one chain: dense
/// sequence numbers, every link good, every record there. Without the lock, both read the same
/// tail: a duplicate `seq` fails or a fork appears.
#[test]
fn concurrent_appenders_extend_one_chain() {
    const EACH: usize = 150;
    for db in backends() {
        let b = db.backend;
        db.open(); // the schema, before the writers race
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let barrier = Arc::clone(&barrier);
                let mut chain = AuditChain::new(
                    store::open(&db.url).unwrap(),
                    signer(),
                    CheckpointPolicy::new(7, 3600).unwrap(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..EACH {
                        let line = format!(r#"{{"writer":"{name}","i":{i}}}"#);
                        chain
                            .append(&[AuditEntry {
                                time: i as i64,
                                record: &line,
                            }])
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let intact = verify(&db).unwrap();
        assert_eq!(intact.records, 2 * EACH as u64, "{b}");
        let records = audit::records(db.open().as_mut(), 0, 1000).unwrap();
        for name in ["a", "b"] {
            let mine = records
                .iter()
                .filter(|r| r.record.contains(&format!("\"{name}\"")))
                .count();
            assert_eq!(mine, EACH, "{b}: writer {name}");
        }
    }
}

/// A store at schema version 5 (before the audit trail) gains the tables and a chain.
#[test]
fn a_store_at_version_5_migrates_to_6() {
    for db in backends() {
        let b = db.backend;
        db.open();
        db.execute(
            "DROP TABLE audit_chain; DROP TABLE audit_checkpoints;
             UPDATE fhirseal_meta SET value = 5 WHERE key = 'schema_version';",
        );
        assert_eq!(db.schema_version(), 5, "{b}");
        ten(&db);
        assert_eq!(db.schema_version(), store::SCHEMA_VERSION, "{b}");
        assert_eq!(store::SCHEMA_VERSION, 8);
        assert_eq!(verify(&db).unwrap().records, 10, "{b}");
    }
}

/// Appends per second, one record per transaction and 100 per transaction (printed; run with
/// `--nocapture`). Not a pass/fail threshold beyond a floor that only a lock-up would miss.
#[test]
fn append_throughput() {
    for db in backends() {
        let mut chain = writer(&db);
        let line = r#"{"ts":"2026-12-03T21:00:00.000Z","request_id":"02e1ffd69e2414bdbbfe2c6414e0ecdc","method":"GET","path":"/fhir/Patient/pat-smith","status":200,"outcome":"success","who":{"sub":"dr.grey","fhir_user":"Practitioner/dr-grey","client_id":"demo-app","iss":"http://127.0.0.1:8080/auth"},"interaction":"read","resources":["Patient/pat-smith"],"opened":4,"masked":1,"forged":0,"sealed":0,"duration_ms":3.734}"#;
        let single = 300;
        let started = Instant::now();
        for i in 0..single {
            chain
                .append(&[AuditEntry {
                    time: i,
                    record: line,
                }])
                .unwrap();
        }
        let one = single as f64 / started.elapsed().as_secs_f64();
        let batch: Vec<_> = (0..100)
            .map(|i| AuditEntry {
                time: i,
                record: line,
            })
            .collect();
        let started = Instant::now();
        for _ in 0..20 {
            chain.append(&batch).unwrap();
        }
        let hundred = 2000.0 / started.elapsed().as_secs_f64();
        let verified = Instant::now();
        assert_eq!(verify(&db).unwrap().records, 2300);
        let verify_rate = 2300.0 / verified.elapsed().as_secs_f64();
        eprintln!(
            "audit chain on {}: {one:.0} appends/s one per transaction, {hundred:.0} records/s \
             100 per transaction, verify {verify_rate:.0} records/s",
            db.backend
        );
        // A page of 50 (and one more) of a patient's 2300 events, through the index.
        let mut store = db.open();
        let query = AuditQuery {
            groups: vec![vec!["patient:Patient/pat-smith".into()]],
            limit: 51,
            ..AuditQuery::default()
        };
        let searched = Instant::now();
        for _ in 0..50 {
            assert_eq!(audit::search(store.as_mut(), &query).unwrap().len(), 51);
        }
        let search_ms = searched.elapsed().as_secs_f64() * 1000.0 / 50.0;
        eprintln!(
            "audit search on {}: a page of 51 of one patient's 2300 events in {search_ms:.2} ms",
            db.backend
        );
        assert!(one > 10.0 && hundred > 100.0, "{}", db.backend);
    }
}

/// Lines of three callers about two patients, a minute apart from 2026-12-04T05:00:00Z.
fn searchable(db: &Db) {
    let mut chain = writer(db);
    let lines = [
        // 1: the doctor reads p1's Observation.
        (r#""who":{"sub":"u-dr","fhir_user":"Practitioner/dr","iss":"https://i"},"outcome":"success","resources":["Observation/o1"],"patients":["Patient/p1"]"#),
        // 2: the nurse is refused p2's Patient.
        (r#""who":{"sub":"u-nu","fhir_user":"Practitioner/nu","iss":"https://i"},"outcome":"denied","resources":["Patient/p2"]"#),
        // 3: a batch of the doctor's, touching both.
        (r#""who":{"sub":"u-dr","fhir_user":"Practitioner/dr","iss":"https://i"},"outcome":"success","entries":[{"resources":["Observation/o2"],"patients":["Patient/p2"]},{"resources":["Patient/p1"]}]"#),
        // 4: p1 reads her own record.
        (r#""who":{"sub":"u-p1","fhir_user":"Patient/p1","iss":"https://i"},"outcome":"success","resources":["Condition/c1"]"#),
        // 5: no token.
        (r#""who":null,"outcome":"denied","resources":[]"#),
    ];
    for (i, fields) in lines.iter().enumerate() {
        let line = format!(r#"{{"ts":"2026-12-04T05:0{i}:00.000Z",{fields}}}"#);
        chain
            .append(&[AuditEntry {
                time: 1_796_360_400_000 + i as i64 * 60_000,
                record: &line,
            }])
            .unwrap();
    }
}

fn found(db: &Db, query: AuditQuery) -> Vec<u64> {
    let limit = if query.limit == 0 { 100 } else { query.limit };
    audit::search(db.open().as_mut(), &AuditQuery { limit, ..query })
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn terms(terms: &[&str]) -> Vec<String> {
    terms.iter().map(|t| (*t).to_string()).collect()
}

/// The index finds exactly the records of a patient, an agent, an outcome and a time range,
/// newest first, a page at a time; and the records come from the chain, hashes checked.
#[test]
fn the_index_finds_records_by_patient_agent_outcome_and_time() {
    for db in backends() {
        let b = db.backend;
        searchable(&db);
        let by = |groups: &[&[&str]]| {
            found(
                &db,
                AuditQuery {
                    groups: groups.iter().map(|g| terms(g)).collect(),
                    ..AuditQuery::default()
                },
            )
        };
        assert_eq!(by(&[]), [5, 4, 3, 2, 1], "{b}");
        assert_eq!(by(&[&["patient:Patient/p1"]]), [4, 3, 1], "{b}");
        assert_eq!(by(&[&["patient:Patient/p2"]]), [3, 2], "{b}");
        assert_eq!(
            by(&[&["patient:Patient/p1", "patient:Patient/p2"]]),
            [4, 3, 2, 1],
            "{b}"
        );
        assert_eq!(by(&[&["agent:Practitioner/dr"]]), [3, 1], "{b}");
        assert_eq!(by(&[&["agent-id:https://i|u-nu"]]), [2], "{b}");
        assert_eq!(by(&[&["agent-id:u-p1"]]), [4], "{b}");
        assert_eq!(by(&[&["outcome:denied"]]), [5, 2], "{b}");
        assert_eq!(
            by(&[&["patient:Patient/p2"], &["agent:Practitioner/dr"]]),
            [3],
            "{b}"
        );
        assert_eq!(by(&[&["patient:Patient/p3"]]), Vec::<u64>::new(), "{b}");
        // 05:01 to before 05:03: records 2 and 3.
        let minute = 60_000;
        let from = 1_796_360_400_000 + minute;
        let range = AuditQuery {
            from: Some(from),
            to: Some(from + 2 * minute),
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, range.clone()), [3, 2], "{b}");
        let p1_range = AuditQuery {
            groups: vec![terms(&["patient:Patient/p1"])],
            ..range
        };
        assert_eq!(found(&db, p1_range), [3], "{b}");
        // Pages of two, newest first.
        let page = |before| {
            found(
                &db,
                AuditQuery {
                    before,
                    limit: 2,
                    ..AuditQuery::default()
                },
            )
        };
        assert_eq!(page(None), [5, 4], "{b}");
        assert_eq!(page(Some(4)), [3, 2], "{b}");
        assert_eq!(page(Some(2)), [1], "{b}");
        assert_eq!(page(Some(1)), Vec::<u64>::new(), "{b}");
        // Record 3 read alone; none past the tail or at 0.
        let three = audit::record(db.open().as_mut(), 3).unwrap().unwrap();
        assert!(three.record.contains("Observation/o2"), "{b}");
        assert!(audit::record(db.open().as_mut(), 6).unwrap().is_none());
        assert!(audit::record(db.open().as_mut(), 0).unwrap().is_none());

        // A record edited in the database is refused by the search that would show it.
        db.execute("UPDATE audit_chain SET record = replace(record, 'o1', 'o9') WHERE seq = 1");
        let edited = audit::search(
            db.open().as_mut(),
            &AuditQuery {
                groups: vec![terms(&["agent:Practitioner/dr"])],
                limit: 10,
                ..AuditQuery::default()
            },
        );
        assert!(
            matches!(
                edited,
                Err(Error::AuditTampered {
                    seq: 1,
                    problem: Tamper::Edited
                })
            ),
            "{b}: {edited:?}"
        );
        assert!(matches!(
            audit::record(db.open().as_mut(), 1),
            Err(Error::AuditTampered { seq: 1, .. })
        ));
    }
}

/// How many index rows the records `first..=last` have under `*` (every record has one).
fn indexed(db: &Db, first: u64, last: u64) -> i64 {
    db.number(&format!(
        "SELECT COUNT(*) FROM audit_index WHERE term = '*' AND seq BETWEEN {first} AND {last}"
    ))
}

/// An append writes the record alone; the index follows in transactions of its own, the oldest
/// records first (a prefix of the chain), a batch at a time; a search indexes what is left
/// before it looks, so it finds the record appended just before it.
#[test]
fn the_index_follows_the_chain_and_a_search_brings_it_up_to_the_tail() {
    for db in backends() {
        let b = db.backend;
        searchable(&db);
        assert_eq!(db.number("SELECT COUNT(*) FROM audit_index"), 0, "{b}");
        let mut store = db.open();
        assert_eq!(store.index_audit(2).unwrap(), 2, "{b}");
        assert_eq!((indexed(&db, 1, 2), indexed(&db, 3, 5)), (2, 0), "{b}");
        // Records 3 to 5 are found: the search indexes them first.
        let p1 = AuditQuery {
            groups: vec![terms(&["patient:Patient/p1"])],
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, p1.clone()), [4, 3, 1], "{b}");
        assert_eq!(indexed(&db, 1, 5), 5, "{b}");
        assert_eq!(store.index_audit(10).unwrap(), 0, "{b}");
        assert_eq!(audit::index_pending(store.as_mut()).unwrap(), 0, "{b}");

        // The writer's own batches: INDEX_BATCH records at most, then the rest, then nothing.
        let mut chain = writer(&db);
        let line = r#"{"outcome":"success","resources":["Patient/p1"]}"#;
        let entries: Vec<_> = (0..=audit::INDEX_BATCH)
            .map(|i| AuditEntry {
                time: i64::from(i),
                record: line,
            })
            .collect();
        chain.append(&entries).unwrap();
        let batch = audit::INDEX_BATCH;
        assert_eq!(chain.index(batch).unwrap(), batch, "{b}");
        assert_eq!(chain.index(batch).unwrap(), 1, "{b}");
        assert_eq!(chain.index(batch).unwrap(), 0, "{b}");
        let tail = 5 + u64::from(audit::INDEX_BATCH) + 1;
        assert_eq!(indexed(&db, 1, tail), i64::try_from(tail).unwrap(), "{b}");
        assert_eq!(
            found(&db, AuditQuery { limit: 3, ..p1 }),
            [tail, tail - 1, tail - 2],
            "{b}"
        );
        assert_eq!(verify(&db).unwrap().records, tail, "{b}");
    }
}

/// A store at schema version 7 (every record indexed with it) upgrades to 8 with its mark at the
/// tail, and nothing is indexed twice. Then a replica of the older release, still running, indexes
/// its own record as it appends it, above one left for the index: that one is indexed all the
/// same, and both are found.
#[test]
fn an_upgrade_to_version_8_and_an_older_replica_indexing_in_its_appends_hide_nothing() {
    for db in backends() {
        let b = db.backend;
        searchable(&db);
        audit::index_pending(db.open().as_mut()).unwrap();
        db.execute(
            "DELETE FROM fhirseal_meta WHERE key = 'audit_indexed';
             UPDATE fhirseal_meta SET value = 7 WHERE key = 'schema_version';",
        );
        let mut store = db.open();
        assert_eq!(db.schema_version(), store::SCHEMA_VERSION, "{b}");
        let mark = "SELECT value FROM fhirseal_meta WHERE key = 'audit_indexed'";
        assert_eq!(db.number(mark), 5, "{b}");
        assert_eq!(store.index_audit(10).unwrap(), 0, "{b}");

        // Record 6 left for the index; record 7 indexed in its append by the older release.
        let mut chain = writer(&db);
        for patient in ["p6", "p7"] {
            let line = format!(r#"{{"outcome":"success","resources":["Patient/{patient}"]}}"#);
            chain
                .append(&[AuditEntry {
                    time: 7,
                    record: &line,
                }])
                .unwrap();
        }
        db.execute(
            "INSERT INTO audit_index (term, seq, recorded) VALUES ('*', 7, 7), ('patient:Patient/p7', 7, 7)",
        );
        let patient = |p: &str| AuditQuery {
            groups: vec![terms(&[p])],
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, patient("patient:Patient/p6")), [6], "{b}");
        assert_eq!(found(&db, patient("patient:Patient/p7")), [7], "{b}");
        assert_eq!(db.number(mark), 7, "{b}");
        assert_eq!(indexed(&db, 1, 7), 7, "{b}");
    }
}

/// Decrements its counter when dropped.
struct CountDown(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountDown {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Two appenders and two indexers at once, each on its own connection: every record ends up
/// indexed once, and a search finds all of them.
#[test]
fn appenders_and_indexers_at_once_index_every_record_once() {
    const EACH: usize = 120;
    for db in backends() {
        let b = db.backend;
        db.open(); // the schema, before the threads race
        let barrier = Arc::new(Barrier::new(4));
        let appending = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let mut threads = Vec::new();
        for name in ["a", "b"] {
            let (barrier, appending) = (Arc::clone(&barrier), Arc::clone(&appending));
            let mut chain = AuditChain::new(
                store::open(&db.url).unwrap(),
                signer(),
                CheckpointPolicy::new(50, 3600).unwrap(),
            );
            threads.push(std::thread::spawn(move || {
                // Counted down even when an append panics, so the indexers stop.
                let _done = CountDown(appending);
                barrier.wait();
                for i in 0..EACH {
                    let line = format!(r#"{{"who":{{"sub":"{name}"}},"i":{i}}}"#);
                    chain
                        .append(&[AuditEntry {
                            time: i as i64,
                            record: &line,
                        }])
                        .unwrap();
                }
            }));
        }
        for _ in 0..2 {
            let (barrier, appending) = (Arc::clone(&barrier), Arc::clone(&appending));
            let mut store = store::open(&db.url).unwrap();
            threads.push(std::thread::spawn(move || {
                barrier.wait();
                while appending.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    store.index_audit(7).unwrap();
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let all = 2 * EACH as u64;
        let everyone = AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, everyone).len() as u64, all, "{b}");
        assert_eq!(indexed(&db, 1, all), i64::try_from(all).unwrap(), "{b}");
        let by_a = AuditQuery {
            groups: vec![terms(&["agent-id:a"])],
            limit: 1000,
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, by_a).len(), EACH, "{b}");
    }
}

/// A store at schema version 6 (a chain without an index) has its records indexed on the
/// upgrade, once.
#[test]
fn a_store_at_version_6_has_its_chain_indexed_on_the_upgrade() {
    for db in backends() {
        let b = db.backend;
        db.open();
        db.execute(
            "DROP TABLE audit_index; UPDATE fhirseal_meta SET value = 6 WHERE key = 'schema_version';",
        );
        // Written by a build of version 6: no index table, so the lines go in raw.
        let mut prev = audit::GENESIS;
        for (seq, patient) in [(1u64, "p1"), (2, "p2"), (3, "p1")] {
            let line = format!(
                r#"{{"ts":"2026-12-04T05:00:0{seq}.000Z","outcome":"success","resources":["Patient/{patient}"]}}"#
            );
            let hash = audit::link_hash(seq, 7, &prev, &line);
            db.execute(&format!(
                "INSERT INTO audit_chain (seq, time, record, prev, hash) VALUES ({seq}, 7, '{line}', {}, {})",
                bytes_literal(&db, &prev),
                bytes_literal(&db, &hash)
            ));
            prev = hash;
        }
        assert_eq!(db.schema_version(), 6, "{b}");
        let p1 = AuditQuery {
            groups: vec![terms(&["patient:Patient/p1"])],
            ..AuditQuery::default()
        };
        assert_eq!(found(&db, p1.clone()), [3, 1], "{b}");
        assert_eq!(db.schema_version(), store::SCHEMA_VERSION, "{b}");
        assert_eq!(
            db.number("SELECT COUNT(*) FROM audit_index WHERE term = '*'"),
            3,
            "{b}"
        );
        // Opened again: nothing indexed twice, and new records are indexed as they come.
        searchable(&db);
        assert_eq!(found(&db, p1), [7, 6, 4, 3, 1], "{b}");
        assert_eq!(verify(&db).unwrap().records, 8, "{b}");
    }
}
