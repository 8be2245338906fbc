//! The keyring against a real SQLite authority: enrolment on first use, re-issue on an attribute
//! change, an administrator's revocation standing, concurrent first requests, periods.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use fhirseal::error::ApiError;
use fhirseal::keys::{KeyChange, KeyError, Keyring, KeyringSettings, key_identity};
use fhirseal_authority::{Authority, InitOptions, Kek, Kind, store};
use fhirseal_fhir::Principal;
use fhirseal_policy::Policy;
use rand_core::OsRng;
use rshabe::{AccessStructure, DecryptionKey};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    authority: Arc<Authority>,
    policy: Arc<Policy>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("authority.sqlite3").display());
    let options = InitOptions {
        params: rshabe::Params::new(6, 4).unwrap(),
        ..Default::default()
    };
    let authority = Authority::init(
        store::open(&url).unwrap(),
        Kek::generate(&mut OsRng),
        options,
        NOW,
        &mut OsRng,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        authority: Arc::new(authority),
        policy: Arc::new(Policy::embedded_default().unwrap()),
    }
}

impl Fixture {
    fn keyring(&self) -> Keyring {
        Keyring::new(self.authority.clone(), self.policy.clone())
    }

    fn users(&self) -> Vec<fhirseal_authority::Principal> {
        self.authority.principals(Kind::User).unwrap()
    }

    /// Whether `key` opens a fresh ciphertext under `formula` for `period`.
    fn opens(&self, key: &DecryptionKey, formula: &str, period: u64) -> bool {
        let policy = AccessStructure::parse(formula).unwrap();
        let (ct, data_key) =
            rshabe::encrypt(self.authority.public_params(), &policy, period, &mut OsRng).unwrap();
        match rshabe::decrypt(key, &ct) {
            Ok(opened) => {
                assert!(opened == data_key, "a key opened to a different data key");
                true
            }
            Err(_) => false,
        }
    }
}

fn principal(claims: Value) -> Principal {
    Principal::from_claims(&claims).unwrap()
}

/// The general hospital's physician in cardiology: role:physician, org:st-mary,
/// org:st-mary/dept:cardiology.
fn cardiologist() -> Principal {
    principal(
        json!({"sub": "dr", "fhirUser": "Practitioner/7", "client_id": "app",
        "practitioner_roles": [{"code": ["doctor"], "specialty": ["394579002"]}]}),
    )
}

/// The same physician after leaving cardiology.
fn physician() -> Principal {
    principal(
        json!({"sub": "dr", "fhirUser": "Practitioner/7", "client_id": "app",
        "practitioner_roles": [{"code": ["doctor"]}]}),
    )
}

const CARDIOLOGY: &str = "role:physician and \"org:st-mary/dept:cardiology\"";
const PHYSICIANS: &str = "role:physician and \"org:st-mary\"";

#[tokio::test]
async fn first_use_enrols_and_the_key_opens_only_what_the_attributes_satisfy() {
    let f = fixture();
    let grant = f
        .keyring()
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.identity, "Practitioner/7");
    assert_eq!(grant.registration, "Practitioner/7");
    assert_eq!(grant.period, 0);
    assert_eq!(
        grant.change,
        Some(KeyChange::Enrolled {
            attributes: vec![
                "org:st-mary".into(),
                "org:st-mary/dept:cardiology".into(),
                "role:physician".into()
            ]
        })
    );
    let users = f.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "Practitioner/7");
    assert_eq!(users[0].revoked_at, None);
    assert!(f.opens(&grant.key, CARDIOLOGY, 0));
    assert!(!f.opens(&grant.key, "role:nurse", 0));
    assert!(!f.opens(&grant.key, "role:physician and \"org:st-mary/dept:hr\"", 0));
    // The grant's Debug output carries no key material.
    let debug = format!("{grant:?}");
    assert!(
        debug.starts_with("KeyGrant {") && !debug.contains("key:"),
        "{debug}"
    );
    // The audit sentence names attributes, nothing else.
    let sentence = grant.change.unwrap().to_string();
    assert!(
        sentence.starts_with("enrolled on first use with org:st-mary"),
        "{sentence}"
    );
}

#[tokio::test]
async fn a_second_call_does_not_enrol_again_cached_or_not() {
    let f = fixture();
    let keyring = f.keyring();
    let first = keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    let cached = keyring
        .grant_for(&cardiologist(), NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.change, None);
    assert!(Arc::ptr_eq(&first.key, &cached.key));
    // Past the cache's lifetime the registry is read again, and still nothing is registered.
    let reread = keyring
        .grant_for(&cardiologist(), NOW + 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reread.change, None);
    assert_eq!(reread.registration, "Practitioner/7");
    // A new keyring (a restarted gateway) finds the registration too.
    let fresh = f
        .keyring()
        .grant_for(&cardiologist(), NOW + 61)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.change, None);
    assert_eq!(f.users().len(), 1);
}

#[tokio::test]
async fn an_attribute_change_reissues_and_revokes_the_old_leaf() {
    let f = fixture();
    let keyring = f.keyring();
    let old = keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    let later = NOW + 301;
    let new = keyring
        .grant_for(&physician(), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.registration, "Practitioner/7#2");
    assert_eq!(new.identity, "Practitioner/7");
    assert_eq!(
        new.change,
        Some(KeyChange::Reissued {
            previous: "Practitioner/7".into(),
            added: vec![],
            removed: vec!["org:st-mary/dept:cardiology".into()],
        })
    );
    let sentence = new.change.clone().unwrap().to_string();
    assert!(
        sentence.contains("removed: org:st-mary/dept:cardiology"),
        "{sentence}"
    );
    assert!(
        sentence.contains("registration Practitioner/7 revoked"),
        "{sentence}"
    );
    // The authority lists the old leaf revoked, the new one active with the new attributes.
    let revoked = f.authority.principal(Kind::User, "Practitioner/7").unwrap();
    assert_eq!(revoked.revoked_at, Some(0));
    let current = f
        .authority
        .principal(Kind::User, "Practitioner/7#2")
        .unwrap();
    assert_eq!(current.revoked_at, None);
    assert_eq!(current.attributes, ["org:st-mary", "role:physician"]);
    assert_ne!(current.leaf, revoked.leaf);
    assert!(f.opens(&new.key, PHYSICIANS, 0));
    assert!(!f.opens(&new.key, CARDIOLOGY, 0));
    assert!(f.opens(&old.key, CARDIOLOGY, 0));
    // The old leaf gets no key for a later period.
    assert!(
        f.authority
            .decryption_key("Practitioner/7", 1, &mut OsRng)
            .is_err()
    );
    // Asking again with the new roles changes nothing; back to cardiology (after the interval)
    // makes a third version.
    let again = keyring
        .grant_for(&physician(), later + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.change, None);
    let back = keyring
        .grant_for(&cardiologist(), later + 400)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.registration, "Practitioner/7#3");
    assert!(
        matches!(back.change, Some(KeyChange::Reissued { ref previous, .. }) if previous == "Practitioner/7#2")
    );
    assert_eq!(
        f.users().iter().filter(|u| u.revoked_at.is_none()).count(),
        1
    );
}

#[tokio::test]
async fn reissues_are_throttled_so_alternating_tokens_cannot_burn_leaves() {
    let f = fixture();
    let keyring = f.keyring();
    keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    let err = keyring.grant_for(&physician(), NOW + 10).await.unwrap_err();
    assert!(matches!(err, KeyError::ReissueThrottled), "{err:?}");
    assert_eq!(
        ApiError::from(err).into_response().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(f.users().len(), 1);
    // The old token still gets its own key meanwhile.
    let same = keyring
        .grant_for(&cardiologist(), NOW + 11)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same.registration, "Practitioner/7");
}

#[tokio::test]
async fn an_administrators_revocation_stands() {
    let f = fixture();
    let keyring = f.keyring();
    keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    f.authority
        .revoke(Kind::User, "Practitioner/7", NOW + 5)
        .unwrap();
    // Straight on the authority, the revocation reaches this keyring when its cache expires...
    let err = keyring
        .grant_for(&cardiologist(), NOW + 60)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Revoked), "{err:?}");
    assert_eq!(
        ApiError::from(err).into_response().status(),
        StatusCode::FORBIDDEN
    );
    // ...and a token with other roles is not re-enrolled either, however late.
    let err = keyring
        .grant_for(&physician(), NOW + 10_000)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Revoked), "{err:?}");
    // Nor by another keyring (another replica, a restart).
    let err = f
        .keyring()
        .grant_for(&cardiologist(), NOW + 10_001)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Revoked), "{err:?}");
    let users = f.users();
    assert_eq!(users.len(), 1, "no new registration");
    assert!(users[0].revoked_at.is_some());
}

/// Warming a key after a restart (another keyring on the same authority): the latest
/// registration's key, then found by the caller's next request without a derivation or any
/// registry change; nothing for an identity never enrolled, revoked, a service identity, or one
/// whose re-issue is unfinished (its next request finishes it).
#[tokio::test]
async fn warming_derives_the_latest_registrations_key_and_changes_nothing() {
    let f = fixture();
    let first = f
        .keyring()
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    let restarted = f.keyring();
    assert!(
        restarted
            .warm("Practitioner/99", NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        restarted
            .warm("service:reindex", NOW)
            .await
            .unwrap()
            .is_none()
    );
    let warmed = restarted
        .warm("Practitioner/7", NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(warmed.registration, first.registration);
    assert_eq!(warmed.period, first.period);
    assert!(warmed.change.is_none());
    assert!(f.opens(&warmed.key, CARDIOLOGY, warmed.period));
    // The caller's next request gets the warmed key itself: nothing derived again.
    let next = restarted
        .grant_for(&cardiologist(), NOW + 2)
        .await
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&next.key, &warmed.key));
    assert!(next.change.is_none());
    assert_eq!(f.users().len(), 1, "no registration made");

    // An unfinished re-issue (a second version registered, the first still active): left to
    // the next request.
    f.authority
        .add_user(
            "Practitioner/7#2",
            &["role:physician".to_string()],
            None,
            NOW + 3,
            &mut OsRng,
        )
        .unwrap();
    assert!(
        f.keyring()
            .warm("Practitioner/7", NOW + 4)
            .await
            .unwrap()
            .is_none()
    );
    // Revoked: nothing.
    for user in ["Practitioner/7", "Practitioner/7#2"] {
        f.authority.revoke(Kind::User, user, NOW + 5).unwrap();
    }
    assert!(
        f.keyring()
            .warm("Practitioner/7", NOW + 6)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.users().len(), 2);
}

#[tokio::test]
async fn forget_makes_a_revocation_immediate() {
    let f = fixture();
    let keyring = f.keyring();
    keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    f.authority
        .revoke(Kind::User, "Practitioner/7", NOW)
        .unwrap();
    // Within the cache's lifetime the keyring does not ask the database (the key cached stays
    // valid until the period ends, as the authority documents)...
    assert!(keyring.grant_for(&cardiologist(), NOW + 1).await.is_ok());
    // ...unless told.
    keyring.forget("Practitioner/7");
    let err = keyring
        .grant_for(&cardiologist(), NOW + 2)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Revoked), "{err:?}");
}

#[tokio::test]
async fn a_revocation_of_a_superseded_version_does_not_stop_the_current_one() {
    // An interrupted re-issue: the new version exists and the old one is still active. The next
    // lookup uses the latest and revokes the older one.
    let f = fixture();
    let attributes = ["role:physician".to_string(), "org:st-mary".to_string()];
    f.authority
        .add_user("Practitioner/7", &attributes[..1], None, NOW, &mut OsRng)
        .unwrap();
    f.authority
        .add_user("Practitioner/7#2", &attributes, None, NOW, &mut OsRng)
        .unwrap();
    let grant = f
        .keyring()
        .grant_for(&physician(), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.registration, "Practitioner/7#2");
    assert_eq!(grant.change, None);
    let old = f.authority.principal(Kind::User, "Practitioner/7").unwrap();
    assert!(
        old.revoked_at.is_some(),
        "the superseded version is revoked"
    );
}

#[tokio::test]
async fn no_attributes_means_no_key_and_no_enrolment() {
    let f = fixture();
    let keyring = f.keyring();
    let service = principal(json!({"sub": "svc", "client_id": "svc", "scope": "system/*.rs"}));
    assert!(keyring.key_for(&service, NOW).await.unwrap().is_none());
    let nobody = principal(json!({"sub": "x", "fhirUser": "Practitioner/9"}));
    assert!(keyring.key_for(&nobody, NOW).await.unwrap().is_none());
    assert!(f.users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_register_once() {
    let f = fixture();
    // One keyring: its per-identity lock makes the 7 others wait and then find the registration.
    let keyring = f.keyring();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ring = keyring.clone();
            tokio::spawn(async move { ring.grant_for(&cardiologist(), NOW).await })
        })
        .collect();
    let mut enrolled = 0;
    for task in tasks {
        let grant = task.await.unwrap().unwrap().unwrap();
        assert_eq!(grant.registration, "Practitioner/7");
        enrolled += usize::from(grant.change.is_some());
    }
    assert_eq!(enrolled, 1, "exactly one call enrolled");
    assert_eq!(f.users().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_on_several_replicas_register_once() {
    // Eight keyrings over one authority: eight replicas whose locks do not see each other, so
    // the authority's refusal of a duplicate name, and the keyring's re-read, keep each
    // registration single. Several identities, so that the race is actually run.
    let f = fixture();
    let rings: Vec<Keyring> = (0..8).map(|_| f.keyring()).collect();
    for n in 0..12 {
        let barrier = Arc::new(tokio::sync::Barrier::new(rings.len()));
        let who = principal(json!({"sub": "dr", "fhirUser": format!("Practitioner/{n}"),
            "practitioner_roles": [{"code": ["doctor"]}]}));
        let tasks: Vec<_> = rings
            .iter()
            .map(|ring| {
                let (ring, who, barrier) = (ring.clone(), who.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    ring.grant_for(&who, NOW).await
                })
            })
            .collect();
        let mut enrolled = 0;
        for task in tasks {
            let grant = task.await.unwrap().unwrap().unwrap();
            enrolled += usize::from(grant.change.is_some());
        }
        assert_eq!(enrolled, 1, "Practitioner/{n}: exactly one call enrolled");
    }
    assert_eq!(f.users().len(), 12);
}

#[tokio::test]
async fn a_new_period_gives_a_key_for_it() {
    let f = fixture();
    let keyring = f.keyring();
    let first = keyring
        .key_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.period(), 0);
    // The clock passes the period's end: the cached period is not trusted past it.
    let next = keyring
        .grant_for(&cardiologist(), NOW + DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.period, 1);
    assert_eq!(next.key.period(), 1);
    assert_eq!(next.change, None);
    assert!(f.opens(&next.key, CARDIOLOGY, 1));
    assert!(
        !f.opens(&first, CARDIOLOGY, 1),
        "a period-0 key opens no period-1 header"
    );
    // An administrator advances the period: seen once the cache expires.
    assert_eq!(f.authority.advance_period(NOW + DAY + 1).unwrap(), 2);
    let advanced = keyring
        .grant_for(&cardiologist(), NOW + DAY + 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(advanced.period, 2);
    assert!(f.opens(&advanced.key, CARDIOLOGY, 2));
    assert_eq!(f.users().len(), 1);
}

#[tokio::test]
async fn short_cache_settings_reread_every_time() {
    let f = fixture();
    let settings = KeyringSettings {
        cache_seconds: 0,
        reissue_interval_seconds: 0,
        capacity: 1,
    };
    let keyring = Keyring::with_settings(f.authority.clone(), f.policy.clone(), settings);
    keyring
        .grant_for(&cardiologist(), NOW)
        .await
        .unwrap()
        .unwrap();
    f.authority
        .revoke(Kind::User, "Practitioner/7", NOW)
        .unwrap();
    let err = keyring.grant_for(&cardiologist(), NOW).await.unwrap_err();
    assert!(matches!(err, KeyError::Revoked), "{err:?}");
}

#[test]
fn identities_follow_fhir_user_then_client_then_issuer_and_subject() {
    let id = |claims: Value| key_identity(&principal(claims));
    assert_eq!(
        id(json!({"sub": "dr", "fhirUser": "Practitioner/7", "client_id": "app"})).unwrap(),
        "Practitioner/7"
    );
    assert_eq!(
        id(json!({"sub": "svc", "client_id": "svc"})).unwrap(),
        "client:svc"
    );
    // A user token without fhirUser is not bound to the app every user shares.
    assert_eq!(
        id(json!({"sub": "u1", "client_id": "app", "iss": "https://as.example"})).unwrap(),
        "sub:https://as.example u1"
    );
    for claims in [
        json!({"sub": "u1", "client_id": "app"}),
        json!({"sub": "u1"}),
        json!({"sub": "u1", "iss": "has space"}),
        json!({"sub": "dr", "fhirUser": "Practitioner/7#2"}),
        json!({"sub": "dr", "fhirUser": "client:x/Practitioner/7"}),
        json!({"sub": "dr", "fhirUser": "sub:x/Practitioner/7"}),
        json!({"sub": "svc#2", "client_id": "svc#2"}),
        json!({"sub": "s".repeat(300), "client_id": "s".repeat(300)}),
    ] {
        let err = id(claims.clone()).unwrap_err();
        assert!(matches!(err, KeyError::Identity), "{claims}: {err:?}");
        assert_eq!(
            ApiError::from(err).into_response().status(),
            StatusCode::FORBIDDEN
        );
    }
}

#[tokio::test]
async fn an_unusable_identity_with_attributes_is_refused_and_nothing_registered() {
    let f = fixture();
    let hr = principal(json!({"sub": "u1", "client_id": "app", "department": "human-resources"}));
    let err = f.keyring().grant_for(&hr, NOW).await.unwrap_err();
    assert!(matches!(err, KeyError::Identity), "{err:?}");
    assert!(f.users().is_empty());
    // With its issuer, the same caller is enrolled under its qualified subject.
    let hr = principal(
        json!({"sub": "u1", "client_id": "app", "iss": "https://as.example", "department": "human-resources"}),
    );
    let grant = f.keyring().grant_for(&hr, NOW).await.unwrap().unwrap();
    assert_eq!(grant.registration, "sub:https://as.example u1");
    assert!(f.opens(&grant.key, "\"org:st-mary/dept:hr\"", 0));
}

#[test]
fn authority_failures_are_503_for_the_store_and_500_otherwise() {
    let io = ApiError::from(KeyError::Authority(fhirseal_authority::Error::Io {
        path: "authority.sqlite3".into(),
        source: std::io::Error::other("disk gone"),
    }));
    assert!(
        !io.to_string().contains("disk"),
        "no internals in the diagnostics"
    );
    let response = io.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let corrupt = ApiError::from(KeyError::Authority(fhirseal_authority::Error::Corrupt {
        what: "master".into(),
        reason: "bad".into(),
    }));
    assert_eq!(
        corrupt.into_response().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        ApiError::from(KeyError::Task { panicked: true })
            .into_response()
            .status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
