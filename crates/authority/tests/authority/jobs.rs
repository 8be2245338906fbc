//! The ciphertext-update job's work queue on both backends: SQLite in a temporary folder, and a
//! real PostgreSQL server started by `scripts/test` (`FHIRSEAL_TEST_POSTGRES_URL`). A missing
//! server is a failure, never a skip.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use fhirseal_authority::store::{self, SCHEMA_VERSION};
use fhirseal_authority::{Authority, Chunk, Error, JobId, Kek, Kind, Progress, Store};
use rand_core::OsRng;

use crate::support::{KEK, NOW, backends, init};

const LEASE: u64 = 60;

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/page/{i}")).collect()
}

fn claim(s: &mut dyn Store, job: JobId, worker: &str, now: i64) -> Option<Chunk> {
    s.claim_chunk(job, worker, now, LEASE).unwrap()
}

fn chunk(key: &str, attempts: u32) -> Option<Chunk> {
    Some(Chunk {
        key: key.to_string(),
        attempts,
    })
}

/// The counts of a progress report: (total, done, claimed, pending, moved, finished).
fn counts(p: &Progress) -> (u64, u64, u64, u64, u64, bool) {
    (
        p.chunks_total,
        p.chunks_done,
        p.chunks_claimed,
        p.chunks_pending(),
        p.headers_moved,
        p.finished,
    )
}

#[test]
fn a_job_is_started_once_per_target_period() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        assert!(s.latest_update_job().unwrap().is_none(), "{b}");
        let job = s.start_update_job(5, NOW).unwrap();
        assert_eq!(s.start_update_job(5, NOW + 100).unwrap(), job, "{b}");
        let p = s.job_progress(job).unwrap();
        assert_eq!(p.target_period, 5, "{b}");
        assert_eq!(p.created_at, NOW, "{b}: the first start's time is kept");
        assert_eq!(counts(&p), (0, 0, 0, 0, 0, false), "{b}");
        assert_eq!(p.finished_at, None, "{b}");

        let later = s.start_update_job(6, NOW + 200).unwrap();
        assert_ne!(later, job, "{b}");
        let (latest, p) = s.latest_update_job().unwrap().unwrap();
        assert_eq!((latest, p.target_period), (later, 6), "{b}");
        // Starting the older period again finds the older job and does not make it the latest.
        assert_eq!(s.start_update_job(5, NOW + 300).unwrap(), job, "{b}");
        assert_eq!(s.latest_update_job().unwrap().unwrap().0, later, "{b}");
    }
}

#[test]
fn chunks_are_added_once_and_never_reset() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(1, NOW).unwrap();
        let abc: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(s.add_chunks(job, &abc).unwrap(), 3, "{b}");
        assert_eq!(s.add_chunks(job, &abc).unwrap(), 0, "{b}: all present");
        let bcdd: Vec<String> = ["b", "c", "d", "d"].map(String::from).to_vec();
        assert_eq!(s.add_chunks(job, &bcdd).unwrap(), 1, "{b}: only d, once");
        assert_eq!(s.add_chunks(job, &[]).unwrap(), 0, "{b}");

        // A claimed chunk added again stays claimed (not reset to pending).
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk("a", 1), "{b}");
        s.complete_chunk(job, "a", "w1", 7).unwrap();
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk("b", 1), "{b}");
        assert_eq!(s.add_chunks(job, &abc).unwrap(), 0, "{b}");
        let p = s.job_progress(job).unwrap();
        assert_eq!(counts(&p), (4, 1, 1, 2, 7, false), "{b}: a done, b claimed");
        s.complete_chunk(job, "b", "w1", 1).unwrap();

        // The same key in another job is another chunk.
        let other = s.start_update_job(2, NOW).unwrap();
        assert_eq!(s.add_chunks(other, &abc).unwrap(), 3, "{b}");

        // Bad keys and unknown jobs: typed errors, nothing added.
        let bad = vec!["e".to_string(), String::new()];
        assert!(
            matches!(s.add_chunks(job, &bad), Err(Error::Invalid(_))),
            "{b}"
        );
        let long = vec!["x".repeat(fhirseal_authority::jobs::MAX_CHUNK_KEY + 1)];
        assert!(
            matches!(s.add_chunks(job, &long), Err(Error::Invalid(_))),
            "{b}"
        );
        assert_eq!(s.job_progress(job).unwrap().chunks_total, 4, "{b}");
        let missing = JobId::new(9999);
        assert!(
            matches!(
                s.add_chunks(missing, &abc),
                Err(Error::UnknownJob { job: 9999 })
            ),
            "{b}"
        );
        assert!(
            matches!(
                s.add_chunks(JobId::new(u64::MAX), &abc),
                Err(Error::UnknownJob { .. })
            ),
            "{b}"
        );
    }
}

#[test]
fn chunks_are_claimed_in_order_and_never_twice_under_a_live_lease() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(1, NOW).unwrap();
        let k = keys("Observation", 4);
        s.add_chunks(job, &k).unwrap();
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk(&k[0], 1), "{b}");
        assert_eq!(claim(&mut *s, job, "w2", NOW), chunk(&k[1], 1), "{b}");
        // A released chunk goes after the chunks never claimed, then comes back.
        s.release_chunk(job, &k[0], "w1").unwrap();
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk(&k[2], 1), "{b}");
        assert_eq!(claim(&mut *s, job, "w3", NOW), chunk(&k[3], 1), "{b}");
        assert_eq!(claim(&mut *s, job, "w3", NOW), chunk(&k[0], 2), "{b}");
        // Everything is claimed under a live lease: nothing to hand out, to anyone.
        assert_eq!(claim(&mut *s, job, "w4", NOW + 59), None, "{b}");
        assert_eq!(claim(&mut *s, job, "w1", NOW + 59), None, "{b}");
        // Chunks added later come after.
        s.add_chunks(job, &keys("Patient", 1)).unwrap();
        assert_eq!(
            claim(&mut *s, job, "w4", NOW),
            chunk("Patient/page/0", 1),
            "{b}"
        );

        // Bad arguments: typed errors, nothing claimed.
        let p = s.job_progress(job).unwrap();
        for (worker, lease) in [("", LEASE), ("w", 0), ("w", u64::MAX)] {
            assert!(
                matches!(
                    s.claim_chunk(job, worker, NOW, lease),
                    Err(Error::Invalid(_))
                ),
                "{b}: {worker:?} {lease}"
            );
        }
        assert!(
            matches!(
                s.claim_chunk(JobId::new(4242), "w", NOW, LEASE),
                Err(Error::UnknownJob { job: 4242 })
            ),
            "{b}"
        );
        assert_eq!(s.job_progress(job).unwrap(), p, "{b}");
    }
}

#[test]
fn two_replicas_claiming_at_once_split_the_work_exactly() {
    const CHUNKS: usize = 200;
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(3, NOW).unwrap();
        let all = keys("Observation", CHUNKS);
        assert_eq!(s.add_chunks(job, &all).unwrap(), CHUNKS as u64, "{b}");
        drop(s);

        let start = Arc::new(Barrier::new(2));
        let workers: Vec<_> = ["replica-a", "replica-b"]
            .into_iter()
            .map(|worker| {
                let url = db.url.clone();
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    // Each replica has its own connection to the same database.
                    let mut s = store::open(&url).unwrap();
                    start.wait();
                    let mut got = Vec::new();
                    while let Some(c) = s.claim_chunk(job, worker, NOW, 600).unwrap() {
                        assert_eq!(c.attempts, 1, "{worker}: claimed twice: {}", c.key);
                        // The work on a chunk takes a while: the other replica claims meanwhile.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        s.complete_chunk(job, &c.key, worker, 2).unwrap();
                        got.push(c.key);
                    }
                    got
                })
            })
            .collect();
        let got: Vec<Vec<String>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let (a, c) = (&got[0], &got[1]);
        let set_a: BTreeSet<&String> = a.iter().collect();
        let set_c: BTreeSet<&String> = c.iter().collect();
        assert_eq!(set_a.len(), a.len(), "{b}: a chunk twice to one worker");
        assert_eq!(set_c.len(), c.len(), "{b}: a chunk twice to one worker");
        assert!(set_a.is_disjoint(&set_c), "{b}: a chunk given to both");
        let union: BTreeSet<&String> = set_a.union(&set_c).copied().collect();
        assert_eq!(union, all.iter().collect(), "{b}: every chunk, once");
        eprintln!("{b}: replica-a {} chunks, replica-b {}", a.len(), c.len());
        assert!(
            !a.is_empty() && !c.is_empty(),
            "{b}: the replicas did not work at once"
        );

        let mut s = db.open();
        let p = s.job_progress(job).unwrap();
        assert_eq!(
            counts(&p),
            (200, 200, 0, 0, 400, false),
            "{b}: every header counted once"
        );
        assert!(s.finish_job_if_done(job, NOW + 1).unwrap(), "{b}");
    }
}

#[test]
fn an_expired_lease_is_reclaimed_and_the_old_holder_is_refused() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(1, NOW).unwrap();
        s.add_chunks(job, &["only".to_string()]).unwrap();
        assert_eq!(claim(&mut *s, job, "crashed", NOW), chunk("only", 1), "{b}");

        // Renewed before it ends, the lease holds past its first end.
        s.renew_lease(job, "only", "crashed", NOW + 50, LEASE)
            .unwrap();
        assert_eq!(claim(&mut *s, job, "other", NOW + 60), None, "{b}");
        assert_eq!(claim(&mut *s, job, "other", NOW + 109), None, "{b}");
        // Then it expires, and another worker gets the chunk.
        assert_eq!(
            claim(&mut *s, job, "other", NOW + 110),
            chunk("only", 2),
            "{b}"
        );
        let p = s.job_progress(job).unwrap();
        assert_eq!(counts(&p), (1, 0, 1, 0, 0, false), "{b}");

        // The crashed worker's late writes are refused: its work is not recorded.
        let lost = |r: Result<(), Error>| match r {
            Err(Error::LeaseLost {
                job: j,
                key,
                worker,
            }) => {
                assert_eq!(
                    (j, key.as_str(), worker.as_str()),
                    (job.get(), "only", "crashed")
                );
                true
            }
            _ => false,
        };
        assert!(lost(s.complete_chunk(job, "only", "crashed", 99)), "{b}");
        assert!(
            lost(s.renew_lease(job, "only", "crashed", NOW + 111, LEASE)),
            "{b}"
        );
        assert!(lost(s.release_chunk(job, "only", "crashed")), "{b}");
        assert_eq!(s.job_progress(job).unwrap(), p, "{b}: nothing changed");

        // The new holder completes it; retried, its completion is a no-op.
        s.complete_chunk(job, "only", "other", 3).unwrap();
        s.complete_chunk(job, "only", "other", 5).unwrap();
        assert!(lost(s.complete_chunk(job, "only", "crashed", 99)), "{b}");
        let p = s.job_progress(job).unwrap();
        assert_eq!(counts(&p), (1, 1, 0, 0, 3, false), "{b}");
        // A done chunk is never handed out again, nor released, nor renewed.
        assert_eq!(claim(&mut *s, job, "third", NOW + 10_000), None, "{b}");
        let err = s.release_chunk(job, "only", "other").unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{b}: {err}");
        let err = s.renew_lease(job, "only", "other", NOW, LEASE).unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{b}: {err}");

        // An expired lease that no one reclaimed still lets its holder complete: no one else was
        // given the chunk.
        s.add_chunks(job, &["slow".to_string()]).unwrap();
        assert_eq!(
            claim(&mut *s, job, "slow-worker", NOW - 1000),
            chunk("slow", 1),
            "{b}"
        );
        s.complete_chunk(job, "slow", "slow-worker", 4).unwrap();
        assert_eq!(s.job_progress(job).unwrap().headers_moved, 7, "{b}");
        assert!(err.to_string().contains("not recorded"), "{b}: {err}");
    }
}

#[test]
fn a_released_chunk_goes_back_to_pending_with_its_attempts() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(1, NOW).unwrap();
        s.add_chunks(job, &["x".to_string()]).unwrap();
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk("x", 1), "{b}");
        // Only the holder may release it.
        let err = s.release_chunk(job, "x", "w2").unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{b}: {err}");
        s.release_chunk(job, "x", "w1").unwrap();
        let p = s.job_progress(job).unwrap();
        assert_eq!(counts(&p), (1, 0, 0, 1, 0, false), "{b}");
        // Released, it is not held by anyone: the former holder cannot complete it.
        let err = s.complete_chunk(job, "x", "w1", 1).unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{b}: {err}");
        // Claimed again at once, by anyone, with its attempts counted on.
        assert_eq!(claim(&mut *s, job, "w2", NOW), chunk("x", 2), "{b}");
        s.release_chunk(job, "x", "w2").unwrap();
        assert_eq!(claim(&mut *s, job, "w1", NOW), chunk("x", 3), "{b}");

        // Unknown chunks and jobs.
        let err = s.release_chunk(job, "nope", "w1").unwrap_err();
        assert!(
            matches!(&err, Error::UnknownChunk { key, .. } if key == "nope"),
            "{b}: {err}"
        );
        let err = s.complete_chunk(job, "nope", "w1", 1).unwrap_err();
        assert!(matches!(err, Error::UnknownChunk { .. }), "{b}: {err}");
        let err = s.renew_lease(job, "nope", "w1", NOW, LEASE).unwrap_err();
        assert!(matches!(err, Error::UnknownChunk { .. }), "{b}: {err}");
        let err = s.release_chunk(JobId::new(77), "x", "w1").unwrap_err();
        assert!(matches!(err, Error::UnknownJob { job: 77 }), "{b}: {err}");
        let err = s.job_progress(JobId::new(77)).unwrap_err();
        assert!(matches!(err, Error::UnknownJob { job: 77 }), "{b}: {err}");
        let err = s.finish_job_if_done(JobId::new(77), NOW).unwrap_err();
        assert!(matches!(err, Error::UnknownJob { job: 77 }), "{b}: {err}");
        let err = s.renew_lease(job, "x", "w1", NOW, 0).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{b}: {err}");
        let err = s.complete_chunk(job, "x", "", 1).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{b}: {err}");
    }
}

#[test]
fn progress_is_counted_at_each_step_and_a_job_finishes_only_when_all_is_done() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        let job = s.start_update_job(9, NOW).unwrap();
        // No chunks yet: the planner has not started, so the job is not done.
        assert!(!s.finish_job_if_done(job, NOW).unwrap(), "{b}");
        s.add_chunks(job, &keys("Condition", 3)).unwrap();
        let step = |s: &mut dyn Store| counts(&s.job_progress(job).unwrap());
        assert_eq!(step(&mut *s), (3, 0, 0, 3, 0, false), "{b}");
        let c0 = claim(&mut *s, job, "w", NOW).unwrap();
        let c1 = claim(&mut *s, job, "w", NOW).unwrap();
        assert_eq!(step(&mut *s), (3, 0, 2, 1, 0, false), "{b}");
        s.complete_chunk(job, &c0.key, "w", 10).unwrap();
        assert_eq!(step(&mut *s), (3, 1, 1, 1, 10, false), "{b}");
        s.complete_chunk(job, &c1.key, "w", 0).unwrap();
        assert_eq!(step(&mut *s), (3, 2, 0, 1, 10, false), "{b}");
        assert!(!s.finish_job_if_done(job, NOW).unwrap(), "{b}: one pending");
        let c2 = claim(&mut *s, job, "w", NOW).unwrap();
        assert!(!s.finish_job_if_done(job, NOW).unwrap(), "{b}: one claimed");
        s.complete_chunk(job, &c2.key, "w", 5).unwrap();
        assert_eq!(step(&mut *s), (3, 3, 0, 0, 15, false), "{b}");
        assert!(s.finish_job_if_done(job, NOW + 7).unwrap(), "{b}");
        let p = s.job_progress(job).unwrap();
        assert_eq!(counts(&p), (3, 3, 0, 0, 15, true), "{b}");
        assert_eq!(p.finished_at, Some(NOW + 7), "{b}");
        // Asking again keeps the first finish time.
        assert!(s.finish_job_if_done(job, NOW + 99).unwrap(), "{b}");
        assert_eq!(
            s.job_progress(job).unwrap().finished_at,
            Some(NOW + 7),
            "{b}"
        );
        // A finished job takes no new chunk (and nothing of the batch is added); chunks it has
        // are accepted again as a no-op.
        let mut batch = keys("Condition", 2);
        batch.push("Condition/page/late".into());
        let err = s.add_chunks(job, &batch).unwrap_err();
        assert!(
            matches!(err, Error::JobFinished { job: j } if j == job.get()),
            "{b}: {err}"
        );
        assert_eq!(s.add_chunks(job, &keys("Condition", 3)).unwrap(), 0, "{b}");
        assert_eq!(step(&mut *s), (3, 3, 0, 0, 15, true), "{b}");
        let (latest, p) = s.latest_update_job().unwrap().unwrap();
        assert_eq!(
            (latest, p.headers_moved, p.finished),
            (job, 15, true),
            "{b}"
        );
    }
}

#[test]
fn a_job_survives_reopening_the_store() {
    for db in backends() {
        let b = db.backend;
        let (job, first) = {
            let mut s = db.open();
            let job = s.start_update_job(4, NOW).unwrap();
            s.add_chunks(job, &keys("Encounter", 3)).unwrap();
            let first = claim(&mut *s, job, "before-restart", NOW).unwrap();
            s.complete_chunk(job, &first.key, "before-restart", 6)
                .unwrap();
            // This one's worker dies with the process.
            claim(&mut *s, job, "before-restart", NOW).unwrap();
            (job, first)
        };
        let mut s = db.open();
        assert_eq!(s.start_update_job(4, NOW + 500).unwrap(), job, "{b}");
        let (latest, p) = s.latest_update_job().unwrap().unwrap();
        assert_eq!(latest, job, "{b}");
        assert_eq!(counts(&p), (3, 1, 1, 1, 6, false), "{b}");
        assert_eq!(
            claim(&mut *s, job, "after-restart", NOW + 1),
            chunk("Encounter/page/2", 1),
            "{b}"
        );
        // The dead worker's chunk comes back once its lease has expired.
        assert_eq!(claim(&mut *s, job, "after-restart", NOW + 1), None, "{b}");
        assert_eq!(
            claim(&mut *s, job, "after-restart", NOW + 60),
            chunk("Encounter/page/1", 2),
            "{b}"
        );
        for key in ["Encounter/page/1", "Encounter/page/2"] {
            s.complete_chunk(job, key, "after-restart", 1).unwrap();
        }
        // The done chunk was never handed out again.
        assert_ne!(first.key, "Encounter/page/1");
        assert!(s.finish_job_if_done(job, NOW + 61).unwrap(), "{b}");
        assert_eq!(s.job_progress(job).unwrap().headers_moved, 8, "{b}");
    }
}

#[test]
fn a_schema_2_database_is_upgraded_to_the_current_version_with_its_records() {
    for db in backends() {
        let b = db.backend;
        // An authority made by an older release: schema 2, without the job tables and without the
        // key-layout mark of schema 4.
        let authority = init(&db, KEK);
        authority
            .add_user(
                "Practitioner/1",
                &["role:physician".into()],
                None,
                NOW,
                &mut OsRng,
            )
            .unwrap();
        drop(authority);
        db.execute(
            "DROP TABLE update_chunks; DROP TABLE update_jobs;
             DELETE FROM fhirseal_meta WHERE key = 'key_layout';
             UPDATE fhirseal_meta SET value = 2 WHERE key = 'schema_version';",
        );
        assert_eq!(db.schema_version(), 2, "{b}");

        // Its keys are in the retired layout: refused until they are re-issued.
        let err = Authority::open(db.open(), Kek::from_hex(KEK, "test").unwrap()).unwrap_err();
        assert!(matches!(err, Error::RetiredKeyLayout { .. }), "{b}: {err}");
        assert_eq!(db.schema_version(), SCHEMA_VERSION, "{b}");
        assert_eq!(SCHEMA_VERSION, 8);
        let (authority, migrated) = Authority::migrate_keys(
            db.open(),
            Kek::from_hex(KEK, "test").unwrap(),
            NOW,
            &[],
            &mut OsRng,
        )
        .unwrap();
        assert_eq!(migrated.unwrap().users, 1, "{b}");
        assert_eq!(
            authority
                .principal(Kind::User, "Practitioner/1")
                .unwrap()
                .attributes,
            vec!["role:physician".to_string()],
            "{b}: records kept"
        );
        // The job tables work, through the authority as the gateway uses them.
        assert!(authority.latest_update_job().unwrap().is_none(), "{b}");
        let period = authority.current_period(NOW).unwrap() + 1;
        let job = authority.start_update_job(period, NOW).unwrap();
        assert_eq!(authority.start_update_job(period, NOW).unwrap(), job, "{b}");
        assert_eq!(
            authority
                .add_update_chunks(job, &keys("Patient", 2))
                .unwrap(),
            2,
            "{b}"
        );
        let c = authority
            .claim_update_chunk(job, "gw-1", NOW, LEASE)
            .unwrap()
            .unwrap();
        authority
            .renew_update_lease(job, &c.key, "gw-1", NOW + 30, LEASE)
            .unwrap();
        let err = authority
            .complete_update_chunk(job, &c.key, "gw-2", 1)
            .unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{b}: {err}");
        authority
            .complete_update_chunk(job, &c.key, "gw-1", 4)
            .unwrap();
        let c = authority
            .claim_update_chunk(job, "gw-2", NOW, LEASE)
            .unwrap()
            .unwrap();
        authority.release_update_chunk(job, &c.key, "gw-2").unwrap();
        assert!(
            !authority.finish_update_job_if_done(job, NOW).unwrap(),
            "{b}"
        );
        let c = authority
            .claim_update_chunk(job, "gw-2", NOW, LEASE)
            .unwrap()
            .unwrap();
        assert_eq!(c.attempts, 2, "{b}");
        authority
            .complete_update_chunk(job, &c.key, "gw-2", 1)
            .unwrap();
        assert!(
            authority.finish_update_job_if_done(job, NOW).unwrap(),
            "{b}"
        );
        let p = authority.update_job_progress(job).unwrap();
        assert_eq!(counts(&p), (2, 2, 0, 0, 5, true), "{b}");
        // A period past the time tree has no job.
        let err = authority.start_update_job(u64::MAX, NOW).unwrap_err();
        assert!(matches!(err, Error::PeriodsExhausted { .. }), "{b}: {err}");

        // Opening again changes nothing.
        drop(authority);
        let mut s = db.open();
        assert_eq!(db.schema_version(), SCHEMA_VERSION, "{b}");
        assert_eq!(s.latest_update_job().unwrap().unwrap().0, job, "{b}");
    }
}
