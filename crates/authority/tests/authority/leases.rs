//! The short named leases of the gateway's create guard on both backends: one holder at a time
//! under a live lease, a lapsed lease taken over, a release that only its holder makes, and
//! several processes taking one lease at once.

use std::sync::{Arc, Barrier};

use fhirseal_authority::{Error, store};

use crate::support::{NOW, backends};

const KEY: &str = "Patient/p1";

/// How many rows `leases` holds.
fn rows(db: &crate::support::Db) -> i64 {
    db.number("SELECT COUNT(*) FROM leases")
}

#[test]
fn a_live_lease_has_one_holder_and_a_lapsed_one_is_taken_over() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        assert!(s.take_lease(KEY, "gw-a/1", NOW, 30).unwrap(), "{b}");
        assert!(!s.take_lease(KEY, "gw-b/1", NOW, 30).unwrap(), "{b}");
        assert!(!s.take_lease(KEY, "gw-b/1", NOW + 29, 30).unwrap(), "{b}");
        // Its holder extends it; others still wait.
        assert!(s.take_lease(KEY, "gw-a/1", NOW + 20, 30).unwrap(), "{b}");
        assert!(!s.take_lease(KEY, "gw-b/1", NOW + 30, 30).unwrap(), "{b}");
        // Another key is another lease.
        assert!(
            s.take_lease("Patient/p2", "gw-b/1", NOW, 30).unwrap(),
            "{b}"
        );
        // A holder that was killed: its lease lapses, and the next taker gets it.
        assert!(s.take_lease(KEY, "gw-b/1", NOW + 50, 30).unwrap(), "{b}");
        assert!(!s.take_lease(KEY, "gw-a/1", NOW + 51, 30).unwrap(), "{b}");
        assert_eq!(rows(&db), 2, "{b}");
    }
}

#[test]
fn only_the_holder_releases_and_a_release_clears_lapsed_leases() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        assert!(s.take_lease(KEY, "gw-a/1", NOW, 30).unwrap(), "{b}");
        assert!(
            s.take_lease("Patient/gone", "gw-x/1", NOW - 100, 30)
                .unwrap(),
            "{b}"
        );
        // Not the holder: nothing of the live lease is let go (the lapsed one is cleared).
        s.release_lease(KEY, "gw-b/1", NOW).unwrap();
        assert!(!s.take_lease(KEY, "gw-b/1", NOW, 30).unwrap(), "{b}");
        assert_eq!(rows(&db), 1, "{b}: the lapsed lease is gone");
        s.release_lease(KEY, "gw-a/1", NOW).unwrap();
        assert_eq!(rows(&db), 0, "{b}");
        assert!(s.take_lease(KEY, "gw-b/1", NOW, 30).unwrap(), "{b}");
        // Releasing what one does not hold, or twice, is no error.
        s.release_lease("Patient/none", "gw-b/1", NOW).unwrap();
        s.release_lease(KEY, "gw-b/1", NOW).unwrap();
        s.release_lease(KEY, "gw-b/1", NOW).unwrap();
        assert_eq!(rows(&db), 0, "{b}");
    }
}

#[test]
fn keys_holders_and_lease_lengths_are_checked() {
    for db in backends() {
        let b = db.backend;
        let mut s = db.open();
        for (key, holder, seconds) in [
            ("", "gw-a", 30),
            (&*"k".repeat(257), "gw-a", 30),
            (KEY, "", 30),
            (KEY, "gw-a", 0),
        ] {
            let err = s.take_lease(key, holder, NOW, seconds).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{b}: {err}");
        }
        assert!(matches!(
            s.release_lease("", "gw-a", NOW),
            Err(Error::Invalid(_))
        ));
        assert_eq!(rows(&db), 0, "{b}");
    }
}

/// Replicas on one store, each with its own connection, all taking one lease at the same moment,
/// round after round: exactly one of them has it each round.
#[test]
fn replicas_taking_one_lease_at_once_get_it_exactly_once() {
    const REPLICAS: usize = 4;
    const ROUNDS: i64 = 25;
    for db in backends() {
        let b = db.backend;
        let start = Arc::new(Barrier::new(REPLICAS));
        // Opened here, and every round's error kept rather than unwrapped in the thread: a
        // replica that stopped would leave the others waiting at the barrier for ever.
        let replicas: Vec<_> = (0..REPLICAS)
            .map(|n| {
                let mut s = store::open(&db.url).unwrap();
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let mut won = Vec::new();
                    let mut errors = Vec::new();
                    for round in 0..ROUNDS {
                        start.wait();
                        let key = format!("Patient/round-{round}");
                        match s.take_lease(&key, &format!("gw-{n}"), NOW, 30) {
                            Ok(true) => won.push(round),
                            Ok(false) => {}
                            Err(error) => errors.push(format!("round {round}: {error}")),
                        }
                    }
                    (won, errors)
                })
            })
            .collect();
        let mut winners = vec![0; ROUNDS as usize];
        for replica in replicas {
            let (won, errors) = replica.join().unwrap();
            assert!(errors.is_empty(), "{b}: {errors:?}");
            for round in won {
                winners[round as usize] += 1;
            }
        }
        assert_eq!(winners, vec![1; ROUNDS as usize], "{b}: one holder a round");
    }
}
