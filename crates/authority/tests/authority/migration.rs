//! The key migration of issue 13 (shared/crypto/RS-HABE.md §4, "Correction (2026-12-02)") on both
//! backends: SQLite in a temporary folder, and a real PostgreSQL server started by `scripts/test`
//! (`FHIRSEAL_TEST_POSTGRES_URL`). A missing server is a failure, never a skip.
//!
//! An authority in the retired layout is made without the old build, by taking one made by this
//! build back to what a release before schema 4 left: schema version 3, no `key_layout` row (the
//! tables of versions 3 and 4 are the same; version 4 only adds that row), and every sealed key
//! replaced by the sealed header of a wire-version-1 key. The migration re-issues keys from the
//! registry (leaf and attributes) and never decodes the keys it replaces, so what those records
//! hold does not matter to it; the keys derived in the set-up stand for keys handed out before.

use std::collections::BTreeMap;

use fhirseal_authority::{Authority, Error, KeyMigration, Kind, store};
use rand_core::OsRng;
use rshabe::{AccessStructure, Attribute, MasterSecret, UpdateMode};

use crate::support::{Db, KEK, NOW, backends, init, kek, opens, small, sqlite, strings};

const PLAN: &str = "plan";

// === tests ===

#[test]
fn a_store_in_the_retired_layout_is_refused_with_the_command_to_run() {
    for db in backends() {
        let b = db.backend;
        populate(&db);
        retire(&db);
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'schema_version'"),
            3
        );
        let before = db.sealed_keys();

        for _ in 0..2 {
            let store = db.open();
            let location = store.location().to_string();
            let err = Authority::open(store, kek()).unwrap_err();
            assert!(
                matches!(err, Error::RetiredKeyLayout { found: 1, ref location } if !location.is_empty()),
                "{b}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "the authority at {location} holds keys in the retired layout"
                )) && text.contains("RS-HABE.md §4")
                    && text.contains("run `fhirseal authority migrate-keys`"),
                "{b}: {text}"
            );
        }
        // The upgrade to schema 4 (and on) marked the layout and touched no key.
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'schema_version'"),
            store::SCHEMA_VERSION
        );
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'key_layout'"),
            1
        );
        assert_eq!(db.sealed_keys(), before, "{b}");
        let err = Authority::init(db.open(), kek(), small(), NOW, &mut OsRng).unwrap_err();
        assert!(
            matches!(err, Error::AlreadyInitialised { .. }),
            "{b}: {err}"
        );
    }
}

#[test]
fn a_new_authority_is_in_the_per_node_layout_from_init() {
    for db in backends() {
        drop(init(&db, KEK));
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'key_layout'"),
            2
        );
        let (a, migrated) =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
        assert_eq!(migrated, None, "{}: nothing to migrate", db.backend);
        assert_eq!(a.current_period(NOW).unwrap(), 0);
        assert!(a.latest_update_job().unwrap().is_none());
    }
}

#[test]
fn migrate_keys_reissues_every_key_and_moves_past_every_old_one() {
    for db in backends() {
        let b = db.backend;
        let before = populate(&db);
        retire(&db);
        let old_keys = db.sealed_keys();
        let old_secret = db.sealed_secret();
        let stored_updates = db.number("SELECT COUNT(*) FROM key_updates");
        assert!(stored_updates >= 1, "{b}");

        let (a, migrated) =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
        let m = migrated.unwrap();
        assert_eq!(
            (m.users, m.authorities, m.destroyed, m.period),
            (2, 1, 2, before.period + 1),
            "{b}: {m:?}"
        );
        assert_eq!(m.key_updates_deleted, stored_updates as u64, "{b}");

        // The store: layout 2, same public parameters, a new master secret, no key update.
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'key_layout'"),
            2
        );
        assert_eq!(a.public_params().to_bytes(), before.public_params, "{b}");
        assert_ne!(db.sealed_secret(), old_secret, "{b}");
        assert_eq!(db.number("SELECT COUNT(*) FROM key_updates"), 0, "{b}");
        assert_eq!(a.current_period(NOW).unwrap(), m.period, "{b}");
        check_registry(&a, &before, &old_keys, b);
        check_job(&a, &m, b);
        check_data(&a, &before, m.period, b);
        check_old_keys_are_dead(&a, &db, &before, m.period, b);
    }
}

#[test]
fn running_the_migration_again_changes_nothing() {
    for db in backends() {
        let b = db.backend;
        populate(&db);
        retire(&db);
        let (a, first) =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
        let first = first.unwrap();
        drop(a);
        let keys = db.sealed_keys();
        let secret = db.sealed_secret();
        let offset = db.number("SELECT value FROM fhirseal_meta WHERE key = 'period_offset'");

        let (a, again) =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
        assert_eq!(again, None, "{b}");
        assert_eq!(db.sealed_keys(), keys, "{b}");
        assert_eq!(db.sealed_secret(), secret, "{b}");
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'period_offset'"),
            offset,
            "{b}"
        );
        assert_eq!(a.current_period(NOW).unwrap(), first.period, "{b}");
        let (job, progress) = a.latest_update_job().unwrap().unwrap();
        assert_eq!((Some(job), progress.chunks_total), (first.job, 1), "{b}");
        drop(a);
        assert!(Authority::open(db.open(), kek()).is_ok(), "{b}");
    }
}

#[test]
fn a_migration_that_fails_midway_leaves_the_store_as_it_was() {
    for db in backends() {
        let b = db.backend;
        let before = populate(&db);
        retire(&db);
        // The nurse's record is issued after the ward's and the doctor's: their keys are already
        // rewritten inside the transaction when hers fails to re-issue.
        db.execute("UPDATE principals SET attributes = '[]' WHERE name = 'Practitioner/nurse'");
        let keys = db.sealed_keys();
        let secret = db.sealed_secret();
        let updates = db.number("SELECT COUNT(*) FROM key_updates");

        let err =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{b}: {err}");
        assert_eq!(db.sealed_keys(), keys, "{b}: no key rewritten");
        assert_eq!(db.sealed_secret(), secret, "{b}: the master secret kept");
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'key_layout'"),
            1
        );
        assert_eq!(
            db.number("SELECT COUNT(*) FROM key_updates"),
            updates,
            "{b}"
        );
        assert_eq!(db.number("SELECT COUNT(*) FROM update_jobs"), 0, "{b}");
        assert_eq!(
            db.number("SELECT value FROM fhirseal_meta WHERE key = 'period_offset'"),
            0,
            "{b}: the period did not move"
        );

        // Fixed, it runs to the end from the start.
        db.execute(
            "UPDATE principals SET attributes = '[\"dept:cardiology\",\"role:nurse\"]' \
             WHERE name = 'Practitioner/nurse'",
        );
        let (a, m) =
            Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
        assert_eq!(m.unwrap().period, before.period + 1, "{b}");
        assert!(a.secret_key(Kind::User, "Practitioner/nurse").is_ok());
    }
}

#[test]
fn the_replaced_records_do_not_linger_in_the_sqlite_file() {
    let db = sqlite();
    populate(&db);
    retire(&db);
    let mut old: Vec<Vec<u8>> = db.sealed_keys().into_values().collect();
    old.push(db.sealed_secret());
    let (a, _) =
        Authority::migrate_keys(db.open(), kek(), NOW, &[PLAN.into()], &mut OsRng).unwrap();
    drop(a);
    let path = db.url.strip_prefix("sqlite:").unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    for record in &old {
        // 32 bytes of AES-GCM output from the middle of the record (past version and nonce).
        let probe = &record[13..45];
        assert!(
            !bytes.windows(probe.len()).any(|w| w == probe),
            "an old sealed record is still in the file"
        );
    }
}

// === checks ===

/// The registry after the migration: same principals, leaves and attributes; active ones with a
/// new key that decodes, revoked ones with no key at all.
fn check_registry(a: &Authority, before: &Before, old_keys: &BTreeMap<String, Vec<u8>>, b: &str) {
    for kind in [Kind::User, Kind::Authority] {
        let now: Vec<_> = a.principals(kind).unwrap();
        let then: Vec<_> = before
            .principals
            .iter()
            .filter(|p| p.kind == kind)
            .collect();
        assert_eq!(now.len(), then.len(), "{b}");
        for (p, q) in now.iter().zip(then) {
            assert_eq!(
                (&p.name, p.leaf, &p.attributes, &p.parent, p.revoked_at),
                (&q.name, q.leaf, &q.attributes, &q.parent, q.revoked_at),
                "{b}"
            );
            assert_ne!(
                &p.sealed_key, &old_keys[&p.name],
                "{b}: {} keeps its old key",
                p.name
            );
            match p.revoked_at {
                None => {
                    let key = a.secret_key(kind, &p.name).unwrap();
                    assert_eq!(key.attributes().count(), p.attributes.len(), "{b}");
                }
                Some(_) => {
                    assert!(p.sealed_key.is_empty(), "{b}: {} destroyed", p.name);
                    let err = a.secret_key(kind, &p.name).unwrap_err();
                    assert!(matches!(err, Error::KeyDestroyed { .. }), "{b}: {err}");
                }
            }
        }
    }
    let period = a.current_period(NOW).unwrap();
    assert!(matches!(
        a.decryption_key("Practitioner/gone", period, &mut OsRng),
        Err(Error::Revoked { .. })
    ));
}

/// The ciphertext-update job towards the new period, with the planner's marker to do.
fn check_job(a: &Authority, m: &KeyMigration, b: &str) {
    let (job, progress) = a.latest_update_job().unwrap().unwrap();
    assert_eq!(Some(job), m.job, "{b}");
    assert_eq!(progress.target_period, m.period, "{b}");
    assert_eq!(
        (progress.chunks_total, progress.finished),
        (1, false),
        "{b}"
    );
    let chunk = a.claim_update_chunk(job, "gw", NOW, 60).unwrap().unwrap();
    assert_eq!(chunk.key, PLAN, "{b}");
}

/// Every principal's new key opens what its attributes allow, data sealed before the migration
/// included once it is updated; a decryption key derived before opens none of that.
fn check_data(a: &Authority, before: &Before, period: u64, b: &str) {
    let pp = a.public_params();
    let doctors = AccessStructure::parse("role:physician and dept:cardiology").unwrap();
    let nurses = AccessStructure::parse("role:nurse").unwrap();
    let (ct, key) = rshabe::encrypt(pp, &doctors, period, &mut OsRng).unwrap();
    let (nurse_ct, nurse_key) = rshabe::encrypt(pp, &nurses, period, &mut OsRng).unwrap();

    let doc = a
        .decryption_key("Practitioner/doc", period, &mut OsRng)
        .unwrap();
    assert_eq!(rshabe::decrypt(&doc, &ct).unwrap(), key, "{b}");
    let nurse = a
        .decryption_key("Practitioner/nurse", period, &mut OsRng)
        .unwrap();
    assert_eq!(
        rshabe::decrypt(&nurse, &nurse_ct).unwrap(),
        nurse_key,
        "{b}"
    );
    assert!(!opens(&nurse, &ct, &key), "{b}");

    // The sub-authority's new key delegates and opens through the new key updates.
    let ward = a.secret_key(Kind::Authority, "ward").unwrap();
    let narrowed = rshabe::delegate(
        pp,
        &ward,
        &[Attribute::new("role:nurse").unwrap()],
        &mut OsRng,
    )
    .unwrap();
    let ku = a.key_update(period, &mut OsRng).unwrap();
    let dk = rshabe::decrypt_key(pp, &narrowed, &ku, &mut OsRng).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &nurse_ct).unwrap(), nurse_key, "{b}");

    // Data sealed before the migration stays valid: updated to the new period, the new key opens
    // it, and the decryption key derived before does not.
    let (old_ct, old_data_key) = &before.sealed;
    for mode in [UpdateMode::Minimal, UpdateMode::Rerandomize] {
        let moved = rshabe::ct_update(pp, old_ct, period, mode, &mut OsRng).unwrap();
        assert_eq!(rshabe::decrypt(&doc, &moved).unwrap(), *old_data_key, "{b}");
        assert!(
            !opens(&before.old_dk, &moved, old_data_key),
            "{b}: {mode:?}"
        );
    }
}

/// A long-term key made with the master secret of before the migration (same leaf and
/// attributes as the doctor's) gets no decryption key that opens data sealed after it, through
/// the key updates made after; the same key made with the new master secret does (the control).
fn check_old_keys_are_dead(a: &Authority, db: &Db, before: &Before, period: u64, b: &str) {
    let pp = a.public_params();
    let doc = a.principal(Kind::User, "Practitioner/doc").unwrap();
    let attributes: Vec<Attribute> = doc
        .attributes
        .iter()
        .map(|s| Attribute::new(s).unwrap())
        .collect();
    let policy = AccessStructure::parse("role:physician and dept:cardiology").unwrap();
    let (ct, key) = rshabe::encrypt(pp, &policy, period, &mut OsRng).unwrap();
    let ku = a.key_update(period, &mut OsRng).unwrap();

    let old = rshabe::keygen(pp, &before.master, doc.leaf, &attributes, &mut OsRng).unwrap();
    if let Ok(dk) = rshabe::decrypt_key(pp, &old, &ku, &mut OsRng) {
        assert!(!opens(&dk, &ct, &key), "{b}: an old key still opens");
    }
    let new = rshabe::keygen(
        pp,
        &master_secret(&db.sealed_secret()),
        doc.leaf,
        &attributes,
        &mut OsRng,
    )
    .unwrap();
    let dk = rshabe::decrypt_key(pp, &new, &ku, &mut OsRng).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), key, "{b}: control");
}

// === set-up ===

/// What the authority held before the migration.
struct Before {
    principals: Vec<fhirseal_authority::Principal>,
    period: u64,
    public_params: Vec<u8>,
    /// The master secret before the migration.
    master: MasterSecret,
    /// The doctor's decryption key of that period.
    old_dk: std::sync::Arc<rshabe::DecryptionKey>,
    /// Data sealed for doctors at that period, and its data key.
    sealed: (rshabe::Ciphertext, rshabe::DataKey),
}

/// A sub-authority with a user, a user of the root, a revoked user, a revoked sub-authority, a
/// stored key update and a decryption key derived, all at period 0.
fn populate(db: &Db) -> Before {
    let a = init(db, KEK);
    let add = |name: &str, attributes: &[&str], issuer: Option<&str>| {
        a.add_user(name, &strings(attributes), issuer, NOW, &mut OsRng)
            .unwrap();
    };
    a.delegate(
        "ward",
        None,
        &strings(&["dept:cardiology", "role:nurse"]),
        NOW,
        &mut OsRng,
    )
    .unwrap();
    add(
        "Practitioner/doc",
        &["role:physician", "dept:cardiology"],
        None,
    );
    add(
        "Practitioner/nurse",
        &["role:nurse", "dept:cardiology"],
        Some("ward"),
    );
    add("Practitioner/gone", &["role:physician"], None);
    a.delegate(
        "closed",
        None,
        &strings(&["dept:oncology"]),
        NOW,
        &mut OsRng,
    )
    .unwrap();
    a.revoke(Kind::User, "Practitioner/gone", NOW).unwrap();
    a.revoke(Kind::Authority, "closed", NOW).unwrap();

    let period = a.current_period(NOW).unwrap();
    let pp = a.public_params();
    let policy = AccessStructure::parse("role:physician and dept:cardiology").unwrap();
    let sealed = rshabe::encrypt(pp, &policy, period, &mut OsRng).unwrap();
    let old_dk = a
        .decryption_key("Practitioner/doc", period, &mut OsRng)
        .unwrap();
    assert_eq!(rshabe::decrypt(&old_dk, &sealed.0).unwrap(), sealed.1);
    let mut principals = a.principals(Kind::User).unwrap();
    principals.extend(a.principals(Kind::Authority).unwrap());
    Before {
        principals,
        period,
        public_params: pp.to_bytes(),
        master: master_secret(&db.sealed_secret()),
        old_dk,
        sealed,
    }
}

/// Takes the store back to what a release before schema 4 left (see the module documentation).
fn retire(db: &Db) {
    db.execute(
        "DELETE FROM fhirseal_meta WHERE key = 'key_layout';
         UPDATE fhirseal_meta SET value = 3 WHERE key = 'schema_version';",
    );
    let params = small().params;
    let mut retired = vec![1, 3, params.user_depth(), params.time_depth()];
    retired.extend([0u8; 96]);
    for (name, kind) in db.kinds() {
        let sealed = kek().seal(&format!("{kind} key {name}"), &retired, &mut OsRng);
        db.set_sealed_key(&name, &sealed);
    }
}

fn master_secret(sealed: &[u8]) -> MasterSecret {
    MasterSecret::from_bytes(&kek().open("master secret", sealed).unwrap()).unwrap()
}
