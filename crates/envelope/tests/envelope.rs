//! Envelopes: round trips, tampering, moving, truncation, header lifetimes and the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::time::{Duration, Instant};

use fhirseal_envelope::{
    ElementContext, Envelope, Error, Granularity, Header, HeaderCache, HeaderKey, Malformed,
    ResourceKey, WrappedKey,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, DecryptionKey, Params, PublicParams, RevocationList, UpdateMode,
};

const CANARY: &[u8] = br#""CANARY-1970-01-01-sealed""#;

struct World {
    pp: PublicParams,
    msk: rshabe::MasterSecret,
    rng: ChaCha20Rng,
}

impl World {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (pp, msk) = rshabe::setup(Params::new(4, 4).unwrap(), &mut rng);
        Self { pp, msk, rng }
    }

    fn dk(&mut self, names: &[&str], period: u64) -> DecryptionKey {
        let attributes: Vec<Attribute> = names.iter().map(|n| Attribute::new(n).unwrap()).collect();
        let sk = rshabe::keygen(&self.pp, &self.msk, 1, &attributes, &mut self.rng).unwrap();
        let ku = rshabe::key_update(
            &self.pp,
            &self.msk,
            period,
            &RevocationList::new(),
            &mut self.rng,
        )
        .unwrap();
        rshabe::decrypt_key(&self.pp, &sk, &ku, &mut self.rng).unwrap()
    }

    fn header(&mut self, policy: &str, granularity: Granularity) -> (Header, HeaderKey) {
        Header::new(&self.pp, &policy_of(policy), 0, granularity, &mut self.rng).unwrap()
    }

    fn seal(
        &mut self,
        header: &Header,
        key: &HeaderKey,
        ctx: &ElementContext<'_>,
        id: &str,
    ) -> (Envelope, WrappedKey) {
        let resource_key = ResourceKey::generate(&mut self.rng);
        let wrapped = resource_key.wrap(key, header.id(), "Patient", id, &mut self.rng);
        (
            fhirseal_envelope::seal(
                ctx,
                header.id(),
                &wrapped,
                &resource_key,
                CANARY,
                &mut self.rng,
            ),
            wrapped,
        )
    }
}

fn policy_of(text: &str) -> AccessStructure {
    AccessStructure::parse(text).unwrap()
}

fn ctx(id: &str, path: &str, policy: &str) -> ElementContext<'static> {
    ElementContext::new("Patient", id, path, &policy_of(policy))
}

#[test]
fn sealed_elements_open_for_the_entitled_and_hide_the_value() {
    let mut w = World::new();
    for granularity in [Granularity::Shared, Granularity::Resource] {
        let (header, key) = w.header("role:physician", granularity);
        let c = ctx("p1", "Patient.birthDate", "role:physician");
        let (envelope, _) = w.seal(&header, &key, &c, "p1");
        let text = envelope.to_base64();
        let bytes = envelope.to_bytes();
        assert!(!bytes.windows(CANARY.len()).any(|x| x == CANARY));
        assert!(!text.contains("CANARY"));
        let header = Header::from_bytes(&header.to_bytes()).unwrap();
        assert_eq!(header.granularity(), granularity);
        let dk = w.dk(&["role:physician"], 0);
        let opened = header.open(&dk).unwrap();
        let envelope = Envelope::from_base64(&text).unwrap();
        assert_eq!(envelope, Envelope::from_bytes(&bytes).unwrap());
        assert_eq!(
            &fhirseal_envelope::open(&c, &envelope, &opened).unwrap()[..],
            CANARY
        );
        let nurse = w.dk(&["role:nurse"], 0);
        assert!(matches!(
            header.open(&nurse),
            Err(Error::Scheme(rshabe::Error::Decryption))
        ));
    }
}

#[test]
fn an_envelope_moved_anywhere_else_does_not_open() {
    let mut w = World::new();
    let (header, key) = w.header("role:physician", Granularity::Shared);
    let c = ctx("p1", "Patient.birthDate", "role:physician");
    let (envelope, _) = w.seal(&header, &key, &c, "p1");
    for other in [
        ctx("p2", "Patient.birthDate", "role:physician"),
        ctx("p1", "Patient.gender", "role:physician"),
        ctx("p1", "Patient.birthDate", "role:physician or role:nurse"),
        ElementContext::new(
            "Person",
            "p1",
            "Patient.birthDate",
            &policy_of("role:physician"),
        ),
        ctx("urn:uuid:6a0b1c", "Patient.birthDate", "role:physician"),
    ] {
        assert_eq!(
            fhirseal_envelope::open(&other, &envelope, &key).err(),
            Some(Error::Open),
            "{other:?}"
        );
    }
    // Another header's key, even for the same structure, opens nothing.
    let (_, other_key) = w.header("role:physician", Granularity::Shared);
    assert_eq!(
        fhirseal_envelope::open(&c, &envelope, &other_key).err(),
        Some(Error::Open)
    );
    assert_eq!(
        fhirseal_envelope::open(&c, &envelope, &key).unwrap()[..],
        *CANARY
    );
}

#[test]
fn every_flipped_byte_is_refused() {
    let mut w = World::new();
    let (header, key) = w.header("a", Granularity::Resource);
    let c = ctx("p1", "Patient.name", "a");
    let (envelope, _) = w.seal(&header, &key, &c, "p1");
    let bytes = envelope.to_bytes();
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x10;
        let result = Envelope::from_bytes(&flipped)
            .and_then(|e| fhirseal_envelope::open(&c, &e, &key).map(|_| ()));
        assert!(result.is_err(), "byte {i}");
    }
}

#[test]
fn malformed_input_is_a_typed_error() {
    let mut w = World::new();
    let (header, key) = w.header("a", Granularity::Shared);
    let c = ctx("p1", "Patient.name", "a");
    let (envelope, _) = w.seal(&header, &key, &c, "p1");
    let bytes = envelope.to_bytes();
    for len in [0, 1, 50, 88, 104, bytes.len() - CANARY.len() - 1] {
        let e = Envelope::from_bytes(&bytes[..len]).err();
        assert_eq!(e, Some(Error::Malformed(Malformed::Truncated)), "{len}");
    }
    let mut v2 = bytes;
    v2[0] = 2;
    assert_eq!(
        Envelope::from_bytes(&v2).err(),
        Some(Error::Malformed(Malformed::UnknownVersion(2)))
    );
    assert_eq!(
        Envelope::from_base64("not base64!").err(),
        Some(Error::Malformed(Malformed::Base64))
    );
    let header_bytes = header.to_bytes();
    assert!(matches!(
        Header::from_bytes(&header_bytes[..40]),
        Err(Error::Malformed(Malformed::Header(_)))
    ));
    let mut g = header_bytes;
    g[17] = 9;
    assert_eq!(
        Header::from_bytes(&g).err(),
        Some(Error::Malformed(Malformed::UnknownGranularity(9)))
    );
    assert!(Header::from_bytes(&[]).is_err() && Header::from_bytes(&[1, 2]).is_err());
}

#[test]
fn headers_keep_their_id_and_key_across_periods_but_not_for_old_keys() {
    let mut w = World::new();
    let (header, key) = w.header("a", Granularity::Shared);
    let c = ctx("p1", "Patient.name", "a");
    let (envelope, _) = w.seal(&header, &key, &c, "p1");
    let updated = header
        .update(&w.pp, 5, UpdateMode::Rerandomize, &mut w.rng)
        .unwrap();
    assert_eq!(updated.id(), header.id());
    assert_ne!(updated, header);
    let current = w.dk(&["a"], 5);
    let opened = updated.open(&current).unwrap();
    assert_eq!(
        &fhirseal_envelope::open(&c, &envelope, &opened).unwrap()[..],
        CANARY
    );
    let stale = w.dk(&["a"], 4);
    assert!(matches!(
        updated.open(&stale),
        Err(Error::Scheme(rshabe::Error::Decryption))
    ));
}

#[test]
fn the_header_cache_is_bounded_in_size_and_age_and_per_holder() {
    let mut w = World::new();
    let cache = HeaderCache::new(2, Duration::from_secs(60));
    let t0 = Instant::now();
    let headers: Vec<(Header, HeaderKey)> =
        (0..3).map(|_| w.header("a", Granularity::Shared)).collect();
    cache.insert("P/1", headers[0].0.id(), headers[0].1.clone(), t0);
    cache.insert("P/2", headers[0].0.id(), headers[0].1.clone(), t0);
    assert_eq!(
        cache.get("P/1", headers[0].0.id(), t0),
        Some(headers[0].1.clone())
    );
    assert_eq!(
        cache.get("P/3", headers[0].0.id(), t0),
        None,
        "keyed by holder"
    );
    cache.insert("P/1", headers[1].0.id(), headers[1].1.clone(), t0);
    assert_eq!(cache.len(), 2, "bounded");
    assert_eq!(
        cache.get("P/1", headers[0].0.id(), t0),
        None,
        "oldest evicted"
    );
    assert!(
        cache
            .get("P/1", headers[1].0.id(), t0 + Duration::from_secs(61))
            .is_none(),
        "expired"
    );
    cache.insert("P/2", headers[2].0.id(), headers[2].1.clone(), t0);
    cache.forget_holder("P/2");
    assert!(cache.is_empty());
    assert!(!format!("{cache:?} {:?}", headers[0].1).contains("0x"));
}

#[test]
fn peek_reads_what_parsing_reads_and_open_with_matches_open() {
    let mut w = World::new();
    let (header, key) = w.header("a and (b or c)", Granularity::Resource);
    let updated = header
        .update(&w.pp, 3, UpdateMode::Minimal, &mut w.rng)
        .unwrap();
    let bytes = updated.to_bytes();
    let (id, period, policy) = Header::peek(&bytes).unwrap();
    assert_eq!(id, header.id());
    assert_eq!(period, 3);
    assert_eq!(policy, updated.ciphertext().policy().to_string());
    for cut in [0, 1, 17, 18, 40] {
        assert!(Header::peek(&bytes[..cut]).is_err(), "cut at {cut}");
    }

    let c = ElementContext::with_policy_text("Patient", "p1", "Patient.name", policy);
    assert_eq!(c, ctx("p1", "Patient.name", "a and (b or c)"));
    let (envelope, _) = w.seal(&header, &key, &c, "p1");
    let resource_key = envelope
        .wrapped()
        .unwrap(&key, envelope.header(), "Patient", "p1")
        .unwrap();
    assert_eq!(
        &fhirseal_envelope::open_with(&c, &envelope, &resource_key).unwrap()[..],
        CANARY
    );
    assert!(
        envelope
            .wrapped()
            .unwrap(&key, envelope.header(), "Patient", "p2")
            .is_err()
    );
    let other = ctx("p1", "Patient.birthDate", "a and (b or c)");
    assert!(fhirseal_envelope::open_with(&other, &envelope, &resource_key).is_err());
}
