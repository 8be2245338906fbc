//! Shared by the tests and the benchmarks: an authority, readers' keys, and the rules used on the
//! R4 examples.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic)]

use fhirseal_envelope::{Granularity, HeaderCache, SealingKey};
use fhirseal_seal::{Displays, ElementRule, Narrative, RuleSet, Rules};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, DecryptionKey, MasterSecret, Params, PublicParams, RevocationList,
};

/// Every attribute the rules below use.
pub const ALL: &[&str] = &[
    "role:physician",
    "role:nurse",
    "role:registrar",
    "dept:cardiology",
    "role:lab",
    "role:pharmacist",
    "role:admin",
];

pub struct Fixture {
    pub pp: PublicParams,
    pub msk: MasterSecret,
    /// The trusted zone's sealing key.
    pub sealing: SealingKey,
    pub rng: ChaCha20Rng,
    next_leaf: u64,
}

impl Fixture {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (pp, msk) = rshabe::setup(Params::new(6, 4).expect("params"), &mut rng);
        let sealing = SealingKey::generate(&mut rng);
        Self {
            pp,
            msk,
            sealing,
            rng,
            next_leaf: 0,
        }
    }

    /// A reader's decryption key for `period`, for a new user holding `attributes`.
    pub fn key(&mut self, attributes: &[&str], period: u64) -> DecryptionKey {
        self.key_with(attributes, period, &RevocationList::new())
    }

    pub fn key_with(
        &mut self,
        attributes: &[&str],
        period: u64,
        revoked: &RevocationList,
    ) -> DecryptionKey {
        let attributes: Vec<Attribute> = attributes
            .iter()
            .map(|a| Attribute::new(a).expect("attribute"))
            .collect();
        let leaf = self.next_leaf;
        self.next_leaf += 1;
        let sk =
            rshabe::keygen(&self.pp, &self.msk, leaf, &attributes, &mut self.rng).expect("keygen");
        let ku = rshabe::key_update(&self.pp, &self.msk, period, revoked, &mut self.rng)
            .expect("key update");
        rshabe::decrypt_key(&self.pp, &sk, &ku, &mut self.rng).expect("decrypt key")
    }
}

pub fn cache() -> HeaderCache {
    HeaderCache::new(1024, std::time::Duration::from_secs(300))
}

fn rule(path: &str, policy: &str, granularity: Granularity) -> ElementRule {
    let policy = AccessStructure::parse(policy).expect("policy");
    ElementRule::new(path, policy, granularity).unwrap_or_else(|e| panic!("{e}"))
}

fn set(resource_type: &str, rules: Vec<ElementRule>) -> RuleSet {
    RuleSet::new(resource_type, rules, Narrative::Seal, Displays::Matching)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The rules applied to the R4 examples: the six types the issue names, several structures,
/// both granularities.
pub fn rules() -> Rules {
    use Granularity::{Resource, Shared};
    let demographics = "role:physician or role:nurse or role:registrar";
    let clinical = "(role:physician and dept:cardiology) or role:nurse or role:lab";
    Rules::new([
        set(
            "Patient",
            vec![
                rule("Patient.name", demographics, Shared),
                rule("Patient.birthDate", "role:physician or role:nurse", Shared),
                rule("Patient.telecom", demographics, Shared),
                rule("Patient.address", demographics, Shared),
                rule("Patient.maritalStatus", "role:physician", Shared),
                rule("Patient.multipleBirth[x]", "role:physician", Shared),
                rule("Patient.photo", demographics, Shared),
                rule("Patient.contact.name", demographics, Shared),
                rule("Patient.contact.telecom", demographics, Shared),
                rule("Patient.contact.address", demographics, Shared),
            ],
        ),
        set(
            "Observation",
            vec![
                rule("Observation.value[x]", clinical, Shared),
                rule("Observation.component.value[x]", clinical, Shared),
                rule("Observation.interpretation", clinical, Shared),
                rule("Observation.bodySite", clinical, Shared),
                rule("Observation.method", clinical, Shared),
            ],
        ),
        set(
            "Condition",
            vec![
                rule("Condition.code", "role:physician", Resource),
                rule("Condition.bodySite", "role:physician", Resource),
                rule("Condition.severity", "role:physician", Resource),
                rule("Condition.onset[x]", "role:physician", Resource),
                rule("Condition.evidence", "role:physician", Resource),
            ],
        ),
        set(
            "Encounter",
            vec![
                rule(
                    "Encounter.reasonCode",
                    "role:physician or role:nurse",
                    Shared,
                ),
                rule(
                    "Encounter.hospitalization",
                    "role:physician or role:nurse",
                    Shared,
                ),
                rule("Encounter.length", "role:physician or role:nurse", Shared),
            ],
        ),
        set(
            "MedicationRequest",
            vec![
                rule(
                    "MedicationRequest.dosageInstruction",
                    "role:physician or role:pharmacist",
                    Shared,
                ),
                rule(
                    "MedicationRequest.reasonCode",
                    "role:physician or role:pharmacist",
                    Shared,
                ),
            ],
        ),
        set(
            "Practitioner",
            vec![
                rule("Practitioner.telecom", "role:admin", Shared),
                rule("Practitioner.address", "role:admin", Shared),
                rule("Practitioner.birthDate", "role:admin", Shared),
                rule("Practitioner.photo", "role:admin", Shared),
            ],
        ),
    ])
    .expect("rules")
}
