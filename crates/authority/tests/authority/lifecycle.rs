//! The authority on both backends: SQLite in a temporary folder, and a real PostgreSQL server
//! started by `scripts/test` (`FHIRSEAL_TEST_POSTGRES_URL`). A missing server is a failure,
//! never a skip.

use fhirseal_authority::{Authority, Error, Kek, Kind, store};
use rand_core::OsRng;
use rshabe::{AccessStructure, UpdateMode};

use crate::support::{DAY, KEK, NOW, OTHER_KEK, backends, init, open, opens, small, strings};

#[test]
fn the_life_cycle_of_a_revoked_doctor() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.add_user(
            "Practitioner/doc",
            &strings(&["role:physician", "dept:cardiology"]),
            None,
            NOW,
            &mut OsRng,
        )
        .unwrap();
        a.add_user(
            "Practitioner/nurse",
            &strings(&["role:nurse", "dept:cardiology"]),
            None,
            NOW,
            &mut OsRng,
        )
        .unwrap();
        let p0 = a.current_period(NOW).unwrap();
        let pp = a.public_params();
        let doctors = AccessStructure::parse("role:physician and dept:cardiology").unwrap();
        let ward = AccessStructure::parse("dept:cardiology").unwrap();
        let (ct, key) = rshabe::encrypt(pp, &doctors, p0, &mut OsRng).unwrap();
        let (ward_ct, ward_key) = rshabe::encrypt(pp, &ward, p0, &mut OsRng).unwrap();

        let old_dk = a
            .decryption_key("Practitioner/doc", p0, &mut OsRng)
            .unwrap();
        assert_eq!(rshabe::decrypt(&old_dk, &ct).unwrap(), key, "{backend}");
        let nurse_dk = a
            .decryption_key("Practitioner/nurse", p0, &mut OsRng)
            .unwrap();
        assert!(rshabe::decrypt(&nurse_dk, &ct).is_err(), "{backend}");

        let revoked = a.revoke(Kind::User, "Practitioner/doc", NOW).unwrap();
        assert_eq!(revoked, vec![(Kind::User, "Practitioner/doc".to_string())]);
        let p1 = a.advance_period(NOW).unwrap();
        assert_eq!(p1, p0 + 1);
        let ct1 = rshabe::ct_update(pp, &ct, p1, UpdateMode::Minimal, &mut OsRng).unwrap();
        let ward_ct1 =
            rshabe::ct_update(pp, &ward_ct, p1, UpdateMode::Rerandomize, &mut OsRng).unwrap();
        assert!(
            rshabe::decrypt(&old_dk, &ct1).is_err(),
            "{backend}: forward security"
        );
        assert!(matches!(
            a.decryption_key("Practitioner/doc", p1, &mut OsRng),
            Err(Error::Revoked { since, .. }) if since == p0
        ));
        let nurse_dk1 = a
            .decryption_key("Practitioner/nurse", p1, &mut OsRng)
            .unwrap();
        assert_eq!(
            rshabe::decrypt(&nurse_dk1, &ward_ct1).unwrap(),
            ward_key,
            "{backend}"
        );

        // A reopened authority sees the same state.
        drop(a);
        let a = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "test").unwrap(),
        )
        .unwrap();
        assert_eq!(a.current_period(NOW).unwrap(), p1);
        assert_eq!(
            a.principal(Kind::User, "Practitioner/doc")
                .unwrap()
                .revoked_at,
            Some(p0)
        );
        assert!(
            a.decryption_key("Practitioner/doc", p1, &mut OsRng)
                .is_err()
        );
    }
}

/// Issue 13: the gateway's keyring re-keys an identity whose attributes changed by registering a
/// new version at a new leaf and revoking the old one (gateway/src/keys.rs). A person holding
/// both the revoked key (S1 = {a}) and the new one (S2 = {b}) must not open, for a period after
/// the revocation, what needs S1 ∪ S2: neither data sealed fresh at that period nor data sealed
/// before and updated past it. The new key opens exactly what S2 allows.
///
/// Through the public API a person can only try whole keys: the revoked one gets no decryption
/// key at all (its leaf is in no KUNode), and the new one is checked policy by policy. That
/// splicing the two keys' group elements together fails too (the flaw of RS-HABE.md §4 before
/// its correction of 2026-12-02, where `K0_root(A) − K0_root(B) + K0_φ(B)` moved a node onto
/// another key) is covered by rshabe's attack tests, ported from shared/crypto/audit: with an
/// independent `r_θ` per node, no node component of one key fits another's attribute rows.
#[test]
fn a_revoked_key_and_its_reissue_do_not_open_what_needs_both() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        let pp = a.public_params();
        let rng = &mut OsRng;
        a.add_user("Practitioner/7", &strings(&["a"]), None, NOW, rng)
            .unwrap();
        let p0 = a.current_period(NOW).unwrap();
        let old_dk = a.decryption_key("Practitioner/7", p0, rng).unwrap();
        let both = AccessStructure::parse("a and b").unwrap();
        let (sealed_before, key_before) = rshabe::encrypt(pp, &both, p0, rng).unwrap();
        let (only_a, only_a_key) =
            rshabe::encrypt(pp, &AccessStructure::parse("a").unwrap(), p0, rng).unwrap();
        assert!(opens(&old_dk, &only_a, &only_a_key), "{backend}: control");

        // The keyring's re-issue: the new version first, then the old one revoked.
        a.add_user("Practitioner/7#2", &strings(&["b"]), None, NOW, rng)
            .unwrap();
        a.revoke(Kind::User, "Practitioner/7", NOW).unwrap();
        let p1 = a.advance_period(NOW).unwrap();

        assert!(matches!(
            a.decryption_key("Practitioner/7", p1, rng),
            Err(Error::Revoked { .. })
        ));
        let old_key = a.secret_key(Kind::User, "Practitioner/7").unwrap();
        let ku = a.key_update(p1, rng).unwrap();
        assert!(
            matches!(
                rshabe::decrypt_key(pp, &old_key, &ku, rng),
                Err(rshabe::Error::Revoked)
            ),
            "{backend}: the revoked long-term key gets no decryption key"
        );
        let new_dk = a.decryption_key("Practitioner/7#2", p1, rng).unwrap();
        for (policy, allowed) in [
            ("a and b", false),
            ("a", false),
            ("b", true),
            ("a or b", true),
        ] {
            let policy = AccessStructure::parse(policy).unwrap();
            let (ct, key) = rshabe::encrypt(pp, &policy, p1, rng).unwrap();
            assert_eq!(opens(&new_dk, &ct, &key), allowed, "{backend}: {policy:?}");
            assert!(!opens(&old_dk, &ct, &key), "{backend}: {policy:?}");
        }
        for mode in [UpdateMode::Minimal, UpdateMode::Rerandomize] {
            let moved = rshabe::ct_update(pp, &sealed_before, p1, mode, rng).unwrap();
            assert!(!opens(&new_dk, &moved, &key_before), "{backend}: {mode:?}");
            assert!(!opens(&old_dk, &moved, &key_before), "{backend}: {mode:?}");
        }
    }
}

#[test]
fn sub_authorities_issue_within_their_attributes_and_fall_with_their_parent() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.delegate(
            "st-mary",
            None,
            &strings(&[
                "org:st-mary",
                "dept:cardiology",
                "role:nurse",
                "role:physician",
            ]),
            NOW,
            &mut OsRng,
        )
        .unwrap();
        a.delegate(
            "cardiology",
            Some("st-mary"),
            &strings(&["dept:cardiology", "role:nurse"]),
            NOW,
            &mut OsRng,
        )
        .unwrap();
        let err = a
            .delegate(
                "oncology",
                Some("st-mary"),
                &strings(&["dept:oncology"]),
                NOW,
                &mut OsRng,
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::OutsideDelegation { ref attribute, .. } if attribute == "dept:oncology"),
            "{backend}"
        );
        let err = a
            .add_user(
                "Practitioner/x",
                &strings(&["role:physician"]),
                Some("cardiology"),
                NOW,
                &mut OsRng,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("may not issue attribute role:physician"),
            "{err}"
        );
        a.add_user(
            "Practitioner/n",
            &strings(&["role:nurse", "dept:cardiology"]),
            Some("cardiology"),
            NOW,
            &mut OsRng,
        )
        .unwrap();
        a.add_user(
            "Practitioner/d",
            &strings(&["role:physician"]),
            Some("st-mary"),
            NOW,
            &mut OsRng,
        )
        .unwrap();
        a.add_user(
            "Practitioner/other",
            &strings(&["role:physician"]),
            None,
            NOW,
            &mut OsRng,
        )
        .unwrap();

        let revoked = a.revoke(Kind::Authority, "st-mary", NOW).unwrap();
        let mut names: Vec<&str> = revoked.iter().map(|(_, n)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["Practitioner/d", "Practitioner/n", "cardiology", "st-mary"],
            "{backend}"
        );
        let p = a.advance_period(NOW).unwrap();
        for user in ["Practitioner/n", "Practitioner/d"] {
            assert!(matches!(
                a.decryption_key(user, p, &mut OsRng),
                Err(Error::Revoked { .. })
            ));
        }
        assert!(
            a.decryption_key("Practitioner/other", p, &mut OsRng)
                .is_ok()
        );
        assert!(matches!(
            a.add_user(
                "Practitioner/late",
                &strings(&["role:nurse"]),
                Some("cardiology"),
                NOW,
                &mut OsRng
            ),
            Err(Error::AuthorityRevoked(_))
        ));
        // The sub-authority's own key is a real key: it can delegate further offline.
        let key = a.secret_key(Kind::Authority, "cardiology").unwrap();
        let narrowed = rshabe::delegate(
            a.public_params(),
            &key,
            &[rshabe::Attribute::new("role:nurse").unwrap()],
            &mut OsRng,
        )
        .unwrap();
        assert_eq!(narrowed.attributes().count(), 1);
    }
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.add_user("Practitioner/1", &strings(&["a"]), None, NOW, &mut OsRng)
            .unwrap();
        let err = Authority::init(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "t").unwrap(),
            small(),
            NOW,
            &mut OsRng,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::AlreadyInitialised { .. }),
            "{backend}: {err}"
        );
        assert!(matches!(
            a.principal(Kind::User, "nobody"),
            Err(Error::UnknownPrincipal { .. })
        ));
        assert!(matches!(
            a.add_user("Practitioner/1", &strings(&["a"]), None, NOW, &mut OsRng),
            Err(Error::AlreadyRegistered { .. })
        ));
        assert!(matches!(
            a.add_user("", &strings(&["a"]), None, NOW, &mut OsRng),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            a.add_user("P/2", &[], None, NOW, &mut OsRng),
            Err(Error::Invalid(_))
        ));
        a.revoke(Kind::User, "Practitioner/1", NOW).unwrap();
        let err = a.revoke(Kind::User, "Practitioner/1", NOW).unwrap_err();
        assert!(matches!(err, Error::AlreadyRevoked { .. }), "{err}");
        assert!(
            err.to_string().contains("already revoked at period 0"),
            "{err}"
        );

        // The wrong key-encryption key opens nothing.
        let err = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(OTHER_KEK, "t").unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Unseal { .. }), "{backend}: {err}");
        assert!(!err.to_string().contains(KEK) && !err.to_string().contains(OTHER_KEK));
        drop(a);

        // A corrupt master secret: refused, and the record is left as it was.
        let before = db.sealed_secret();
        let mut broken = before.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        db.set_sealed_secret(&broken);
        let err = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "t").unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Unseal { .. }), "{backend}: {err}");
        assert_eq!(db.sealed_secret(), broken);
        db.set_sealed_secret(&before);
        assert!(
            Authority::open(
                store::open(&db.url).unwrap(),
                Kek::from_hex(KEK, "t").unwrap()
            )
            .is_ok()
        );

        // A database from a newer schema: refused untouched.
        db.execute("UPDATE fhirseal_meta SET value = 99 WHERE key = 'schema_version'");
        let err = store::open(&db.url).err().unwrap();
        assert!(
            matches!(
                err,
                Error::SchemaTooNew {
                    found: 99,
                    supported: store::SCHEMA_VERSION,
                    ..
                }
            ),
            "{backend}: {err}"
        );
        assert!(err.to_string().contains("upgrade FHIRseal"));
        assert_eq!(db.schema_version(), 99);
    }
}

#[test]
fn an_empty_database_is_not_an_authority() {
    for db in backends() {
        let backend = db.backend;
        let err = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "t").unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::NotInitialised { .. }),
            "{backend}: {err}"
        );
        assert!(err.to_string().contains("fhirseal authority init"));
    }
}

#[test]
fn concurrent_issuers_never_lose_or_duplicate_a_leaf() {
    for db in backends() {
        let backend = db.backend;
        drop(init(&db, KEK));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let url = db.url.clone();
                std::thread::spawn(move || {
                    let a = Authority::open(
                        store::open(&url).unwrap(),
                        Kek::from_hex(KEK, "t").unwrap(),
                    )
                    .unwrap();
                    for i in 0..12 {
                        a.add_user(
                            &format!("Practitioner/{t}-{i}"),
                            &strings(&["a"]),
                            None,
                            NOW,
                            &mut OsRng,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let a = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "t").unwrap(),
        )
        .unwrap();
        let mut leaves: Vec<u64> = a
            .principals(Kind::User)
            .unwrap()
            .iter()
            .map(|p| p.leaf)
            .collect();
        leaves.sort_unstable();
        assert_eq!(leaves, (0..24).collect::<Vec<_>>(), "{backend}");
    }
}

#[test]
fn key_updates_are_reused_until_the_revocation_list_changes() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.add_user("P/1", &strings(&["a"]), None, NOW, &mut OsRng)
            .unwrap();
        a.add_user("P/2", &strings(&["a"]), None, NOW, &mut OsRng)
            .unwrap();
        let p = a.current_period(NOW + 3 * DAY).unwrap();
        assert_eq!(p, 3, "{backend}: periods follow the clock");
        let ku = a.key_update(p, &mut OsRng).unwrap();
        assert_eq!(
            a.key_update(p, &mut OsRng).unwrap().to_bytes(),
            ku.to_bytes()
        );
        let reopened = Authority::open(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "t").unwrap(),
        )
        .unwrap();
        assert_eq!(
            reopened.key_update(p, &mut OsRng).unwrap().to_bytes(),
            ku.to_bytes(),
            "stored"
        );
        assert_eq!(ku.node_count(), 1);
        a.revoke(Kind::User, "P/1", NOW + 3 * DAY).unwrap();
        let after = a.key_update(p, &mut OsRng).unwrap();
        assert_ne!(after.to_bytes(), ku.to_bytes());
        assert_eq!(after.node_count(), usize::from(a.params().user_depth()));
        assert!(a.decryption_key("P/2", p, &mut OsRng).is_ok());
        assert!(a.cached_keys() >= 1);
        let info = a.period_info(NOW + 3 * DAY + 5).unwrap();
        assert_eq!(
            (info.period, info.starts_at, info.ends_at, info.last),
            (3, NOW + 3 * DAY, NOW + 4 * DAY, 63)
        );
    }
}

#[test]
fn advances_by_hand_are_paced_and_of_several_at_once_one_wins() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        assert_eq!(a.period_info(NOW).unwrap().advanced_at, None, "{backend}");
        assert_eq!(a.advance_period_unless_recent(NOW).unwrap(), 1, "{backend}");
        assert_eq!(a.period_info(NOW).unwrap().advanced_at, Some(NOW));
        // Within a period length of it: refused, nothing changes.
        let refused = a.advance_period_unless_recent(NOW + DAY - 1);
        assert!(
            matches!(refused, Err(Error::AdvancedRecently { at, next }) if at == NOW && next == NOW + DAY),
            "{backend}: {refused:?}"
        );
        assert_eq!(a.current_period(NOW + DAY - 1).unwrap(), 1, "{backend}");
        // An unpaced advance (forced, or the command line) is recorded too, and paces the next.
        assert_eq!(a.advance_period(NOW + 10).unwrap(), 2, "{backend}");
        assert!(
            a.advance_period_unless_recent(NOW + DAY).is_err(),
            "{backend}"
        );
        assert_eq!(
            a.advance_period_unless_recent(NOW + 10 + DAY).unwrap(),
            4,
            "{backend}: the clock's period 1, plus three advances by hand"
        );
        let reopened = Authority::open(db.open(), Kek::from_hex(KEK, "t").unwrap()).unwrap();
        let info = reopened.period_info(NOW + 10 + DAY).unwrap();
        assert_eq!(
            (info.period, info.advanced_at),
            (4, Some(NOW + 10 + DAY)),
            "{backend}"
        );
        assert_eq!(info.periods_left(), 59, "{backend}");

        // Four processes at once, a period length later: one advances.
        let at = NOW + 10 + 2 * DAY;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                std::thread::spawn(move || {
                    let a = Authority::open(
                        store::open(&url).unwrap(),
                        Kek::from_hex(KEK, "t").unwrap(),
                    )
                    .unwrap();
                    a.advance_period_unless_recent(at)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{backend}: {results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(6) | Err(Error::AdvancedRecently { .. }))),
            "{backend}: {results:?}"
        );
        assert_eq!(a.current_period(at).unwrap(), 6, "{backend}");
    }
}

#[test]
fn the_period_is_read_without_waiting_from_sqlite_alone_and_never_from_a_copy() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        let p0 = a.current_period(NOW).unwrap();
        if backend == "postgres" {
            // Every read of PostgreSQL is a round trip: never on an async thread.
            assert!(a.try_current_period(NOW).is_none(), "{backend}");
            continue;
        }
        assert_eq!(a.try_current_period(NOW).unwrap().unwrap(), p0, "{backend}");
        // Another process sharing the store advances the period (a revocation): the next read
        // sees it at once.
        let other = open(&db, KEK);
        let p1 = other.advance_period(NOW).unwrap();
        assert_eq!(p1, p0 + 1, "{backend}");
        assert_eq!(a.try_current_period(NOW).unwrap().unwrap(), p1, "{backend}");
        assert_eq!(a.current_period(NOW).unwrap(), p1, "{backend}");
        assert_eq!(
            a.try_current_period(NOW + DAY).unwrap().unwrap(),
            a.current_period(NOW + DAY).unwrap(),
            "{backend}"
        );
    }
}
