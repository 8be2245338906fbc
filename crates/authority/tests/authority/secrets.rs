//! Named secrets (the embedded authorization server's signing key and the like) on both backends:
//! SQLite in a temporary folder, and a real PostgreSQL server started by `scripts/test`
//! (`FHIRSEAL_TEST_POSTGRES_URL`). A missing server is a failure, never a skip.

use fhirseal_authority::{Authority, Error, Kek, Kind, store};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::support::{KEK, NOW, OTHER_KEK, backends, init, open, postgres, sqlite};

const NAME: &str = "smart/signing-key/rs256";

fn value(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    Ok(Zeroizing::new(bytes.to_vec()))
}

fn never() -> Result<Zeroizing<Vec<u8>>, Error> {
    panic!("the secret exists: it must not be created again")
}

#[test]
fn a_secret_is_created_once_then_read_back_sealed() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        let first = a
            .secret_or_create(NAME, || value(b"key one"), &mut OsRng)
            .unwrap();
        assert_eq!(&**first, b"key one", "{backend}");
        let again = a.secret_or_create(NAME, never, &mut OsRng).unwrap();
        assert_eq!(&**again, b"key one", "{backend}");
        drop(a);
        let reopened = open(&db, KEK);
        assert_eq!(
            &**reopened.secret_or_create(NAME, never, &mut OsRng).unwrap(),
            b"key one",
            "{backend}: persisted"
        );
        // Sealed at rest: the plaintext is not in the row.
        let raw: Vec<u8> = db.stored_secret(NAME);
        assert!(
            !raw.windows(7).any(|w| w == b"key one"),
            "{backend}: stored in clear"
        );
        // Another name is another secret.
        assert_eq!(
            &**reopened
                .secret_or_create("other", || value(b"two"), &mut OsRng)
                .unwrap(),
            b"two"
        );
    }
}

/// `secret` reads what is stored and never makes anything: absent is `None`, and stays absent.
#[test]
fn a_secret_is_read_without_being_made() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        assert!(a.secret(NAME).unwrap().is_none(), "{backend}");
        assert!(a.secret(NAME).unwrap().is_none(), "{backend}: still absent");
        a.secret_or_create(NAME, || value(b"key one"), &mut OsRng)
            .unwrap();
        assert_eq!(
            a.secret(NAME).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"key one"[..]),
            "{backend}"
        );
        assert!(a.secret("").is_err(), "{backend}: an invalid name");
    }
}

#[test]
fn the_first_writer_wins() {
    for db in backends() {
        let backend = db.backend;
        drop(init(&db, KEK));
        let mut s = store::open(&db.url).unwrap();
        assert_eq!(s.secret("x").unwrap(), None);
        assert_eq!(s.insert_secret_if_absent("x", b"first").unwrap(), b"first");
        assert_eq!(
            s.insert_secret_if_absent("x", b"second").unwrap(),
            b"first",
            "{backend}"
        );
        assert_eq!(s.secret("x").unwrap().as_deref(), Some(&b"first"[..]));

        // Processes racing to create the same secret all end up with one value.
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let url = db.url.clone();
                std::thread::spawn(move || {
                    let a = Authority::open(
                        store::open(&url).unwrap(),
                        Kek::from_hex(KEK, "t").unwrap(),
                    )
                    .unwrap();
                    a.secret_or_create(NAME, || value(&[t; 16]), &mut OsRng)
                        .unwrap()
                        .to_vec()
                })
            })
            .collect();
        let values: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "{backend}: {values:?}"
        );
        assert_eq!(
            &**open(&db, KEK)
                .secret_or_create(NAME, never, &mut OsRng)
                .unwrap(),
            &values[0][..]
        );
    }
}

#[test]
fn a_secret_sealed_under_another_kek_or_name_is_refused_and_kept() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.secret_or_create(NAME, || value(b"secret"), &mut OsRng)
            .unwrap();
        let sealed = db.stored_secret(NAME);

        // The same sealed bytes in another authority, under another KEK: refused, not replaced.
        let other_db = if backend == "sqlite" {
            sqlite()
        } else {
            postgres()
        };
        let b = init(&other_db, OTHER_KEK);
        let mut s = store::open(&other_db.url).unwrap();
        s.insert_secret_if_absent(NAME, &sealed).unwrap();
        let err = b.secret_or_create(NAME, never, &mut OsRng).unwrap_err();
        assert!(matches!(err, Error::Unseal { .. }), "{backend}: {err}");
        assert!(err.to_string().contains(NAME), "{err}");
        assert_eq!(other_db.stored_secret(NAME), sealed, "kept");

        // Under the right KEK but stored under another name: bound to its name.
        drop(s);
        let mut s = store::open(&db.url).unwrap();
        s.insert_secret_if_absent("copied", &sealed).unwrap();
        let err = a.secret_or_create("copied", never, &mut OsRng).unwrap_err();
        assert!(matches!(err, Error::Unseal { .. }), "{backend}: {err}");

        // A flipped byte: refused.
        let mut broken = sealed.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        s.insert_secret_if_absent("broken", &broken).unwrap();
        assert!(matches!(
            a.secret_or_create("broken", never, &mut OsRng),
            Err(Error::Unseal { .. })
        ));
    }
}

#[test]
fn bad_names_and_failed_creation_store_nothing() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        for bad in ["", "a\nb", &"x".repeat(257)] {
            assert!(
                matches!(
                    a.secret_or_create(bad, never, &mut OsRng),
                    Err(Error::Invalid(_))
                ),
                "{backend}: {bad:?}"
            );
        }
        let err = a
            .secret_or_create(
                NAME,
                || {
                    Err(Error::SecretCreation {
                        name: NAME.to_string(),
                    })
                },
                &mut OsRng,
            )
            .unwrap_err();
        assert!(matches!(err, Error::SecretCreation { .. }), "{err}");
        assert_eq!(store::open(&db.url).unwrap().secret(NAME).unwrap(), None);
        assert_eq!(
            &**a.secret_or_create(NAME, || value(b"later"), &mut OsRng)
                .unwrap(),
            b"later"
        );
    }
}

#[test]
fn a_database_at_schema_version_1_migrates_and_keeps_its_records() {
    for db in backends() {
        let backend = db.backend;
        let a = init(&db, KEK);
        a.add_user("Practitioner/1", &["a".to_string()], None, NOW, &mut OsRng)
            .unwrap();
        drop(a);
        // Back to what a release before named secrets left: no `secrets` table (nor the later
        // job tables, nor the key-layout mark), version 1.
        db.execute(
            "DROP TABLE update_chunks; DROP TABLE update_jobs; DROP TABLE secrets;
             DELETE FROM fhirseal_meta WHERE key = 'key_layout';
             UPDATE fhirseal_meta SET value = 1 WHERE key = 'schema_version'",
        );
        assert_eq!(db.schema_version(), 1);

        // Its keys are in the retired layout: re-issued before it opens.
        let (a, migrated) = Authority::migrate_keys(
            store::open(&db.url).unwrap(),
            Kek::from_hex(KEK, "test").unwrap(),
            NOW,
            &[],
            &mut OsRng,
        )
        .unwrap();
        assert!(migrated.is_some(), "{backend}");
        assert_eq!(db.schema_version(), store::SCHEMA_VERSION);
        assert_eq!(store::SCHEMA_VERSION, 8);
        assert_eq!(a.principals(Kind::User).unwrap().len(), 1, "{backend}");
        assert!(a.secret_key(Kind::User, "Practitioner/1").is_ok());
        assert_eq!(
            &**a.secret_or_create(NAME, || value(b"after"), &mut OsRng)
                .unwrap(),
            b"after",
            "{backend}"
        );
        // Opening again is a no-op.
        drop(a);
        assert_eq!(
            &**open(&db, KEK)
                .secret_or_create(NAME, never, &mut OsRng)
                .unwrap(),
            b"after"
        );
    }
}
