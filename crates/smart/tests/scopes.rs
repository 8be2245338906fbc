//! The scope grammar, what scopes permit, and token claims to a caller.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use fhirseal_fhir::rest::Interaction;
use fhirseal_smart::{
    Allowance, ClaimNames, ContextError, Level, Permission, Permissions, Scope, Scopes,
    TokenContext,
};
use proptest::prelude::*;
use serde_json::json;

#[test]
fn every_form_parses_and_prints_back_as_written() {
    for text in [
        "patient/Observation.read",
        "user/*.write",
        "system/Patient.*",
        "user/*.cruds",
        "patient/Observation.rs",
        "user/Encounter.cu",
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs&code=http://loinc.org|85354-9",
        "launch",
        "launch/patient",
        "launch/encounter",
        "launch/practitioner?role=https://example.org/role",
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "online_access",
        "email",
    ] {
        let scope = Scope::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(scope.to_string(), text);
    }
    let parsed = Scope::parse("patient/Observation.rs?category=a|b").unwrap();
    assert_eq!(
        parsed,
        Scope::Resource {
            level: Level::Patient,
            resource_type: Some("Observation".into()),
            permissions: Permissions::V2(2 | 16),
            query: vec![("category".into(), "a|b".into())],
        }
    );
    assert_eq!(Scope::parse("email").unwrap(), Scope::Other("email".into()));
}

#[test]
fn malformed_scopes_are_refused_with_the_reason() {
    let reason = |text: &str| Scope::parse(text).unwrap_err().reason;
    assert!(reason("patient/Observation.dus").contains("ordered subset"));
    assert!(reason("patient/Observation.rr").contains("ordered subset"));
    assert!(reason("patient/Observation.rx").contains("letters of `cruds`"));
    assert!(
        reason("patient/Observation.").contains("letters of `cruds`")
            || reason("patient/Observation.").contains("no permissions")
    );
    assert!(reason("user/Nothing.rs").contains("not an R4 resource type"));
    assert!(reason("user/Observation").contains("level/Type.permissions"));
    assert!(reason("patient/Observation.read?category=x").contains("only v2 scopes"));
    assert!(reason("patient/Observation.rs?category").contains("param=value"));
    assert!(reason("patient/Observation.rs?=x").contains("param=value"));
    assert!(reason("launch/Patient").contains("lower-case"));
    assert!(reason("launch/patient?x=y").contains("role="));
    assert!(reason("").contains("empty"));
    assert!(reason(&"a".repeat(2000)).contains("too long"));
    let err = Scopes::parse("openid patient/Observation.rs user/Oops.rs").unwrap_err();
    assert_eq!(
        err.to_string(),
        "scope `user/Oops.rs`: not an R4 resource type"
    );
    assert!(Scopes::parse(&"openid ".repeat(300)).is_err());
}

fn scopes(text: &str) -> Scopes {
    Scopes::parse(text).unwrap()
}

#[test]
fn scopes_permit_what_they_say_and_nothing_else() {
    let s = scopes("openid fhirUser launch/patient patient/Observation.rs patient/Patient.r");
    let patient_only = Permission::Allowed(vec![Allowance {
        patient_compartment: true,
        query: vec![],
    }]);
    assert_eq!(s.permits(Interaction::Read, "Observation"), patient_only);
    assert_eq!(s.permits(Interaction::Search, "Observation"), patient_only);
    assert_eq!(s.permits(Interaction::Read, "Patient"), patient_only);
    assert_eq!(
        s.permits(Interaction::Search, "Patient"),
        Permission::Denied,
        "r without s"
    );
    assert_eq!(
        s.permits(Interaction::Update, "Observation"),
        Permission::Denied,
        "a scope without the interaction"
    );
    assert_eq!(
        s.permits(Interaction::Read, "Condition"),
        Permission::Denied
    );
    assert!(s.needs_patient());

    // v1 maps as SMART says: read ⇒ rs, write ⇒ cud, * ⇒ cruds.
    let v1 = scopes("user/*.read system/Observation.write");
    assert!(matches!(
        v1.permits(Interaction::Search, "Condition"),
        Permission::Allowed(_)
    ));
    assert_eq!(
        v1.permits(Interaction::Create, "Condition"),
        Permission::Denied
    );
    assert!(matches!(
        v1.permits(Interaction::Patch, "Observation"),
        Permission::Allowed(_)
    ));
    assert!(matches!(
        v1.permits(Interaction::Delete, "Observation"),
        Permission::Allowed(_)
    ));
    assert!(matches!(
        scopes("user/*.*").permits(Interaction::Delete, "Basic"),
        Permission::Allowed(_)
    ));

    // Scopes are a union; an unrestricted one subsumes the others.
    let union = scopes("patient/Observation.rs user/Observation.rs?category=laboratory");
    assert_eq!(
        union.permits(Interaction::Search, "Observation"),
        Permission::Allowed(vec![
            Allowance {
                patient_compartment: false,
                query: vec![("category".into(), "laboratory".into())]
            },
            Allowance {
                patient_compartment: true,
                query: vec![]
            },
        ])
    );
    let free = scopes("patient/Observation.rs user/Observation.rs");
    assert_eq!(
        free.permits(Interaction::Read, "Observation"),
        Permission::Allowed(vec![Allowance {
            patient_compartment: false,
            query: vec![]
        }])
    );

    // A patient/ scope reading another patient's resource is refused (403), its own allowed.
    let p = s.permits(Interaction::Read, "Observation");
    assert!(p.allows_compartment(Some("Patient/123"), Some("Patient/123")));
    assert!(!p.allows_compartment(Some("Patient/456"), Some("Patient/123")));
    assert!(!p.allows_compartment(None, Some("Patient/123")));
    assert!(!p.allows_compartment(Some("Patient/123"), None));
    let u = v1.permits(Interaction::Read, "Observation");
    assert!(u.allows_compartment(Some("Patient/456"), None));
    assert!(!Permission::Denied.allows_compartment(None, None));

    // Other scopes grant nothing.
    assert_eq!(
        scopes("openid email offline_access").permits(Interaction::Read, "Patient"),
        Permission::Denied
    );
}

#[test]
fn token_claims_become_a_caller_with_context() {
    let claims = json!({
        "sub": "u1", "iss": "https://as.example.org", "fhirUser": "Practitioner/7",
        "scope": "openid fhirUser launch/patient patient/Observation.rs",
        "patient": "123", "encounter": "Encounter/9",
        "fhirContext": [{"reference": "Encounter/9"}],
        "practitioner_roles": [{"code": ["doctor"]}]
    });
    let ctx = TokenContext::from_claims(&claims, &ClaimNames::default()).unwrap();
    assert_eq!(ctx.patient.as_deref(), Some("Patient/123"));
    assert_eq!(ctx.encounter.as_deref(), Some("Encounter/9"));
    assert_eq!(ctx.principal.fhir_user.as_deref(), Some("Practitioner/7"));
    assert_eq!(ctx.principal.scopes.len(), 4);
    assert_eq!(ctx.fhir_context.len(), 1);

    // Another issuer's names: `scp` as a list, `context.patient`, `profile_url` for the user.
    let names = ClaimNames {
        fhir_user: vec!["profile_url".into()],
        ..ClaimNames::default()
    };
    let other = json!({"sub": "u2", "scp": ["patient/Patient.r", "openid"], "context": {"patient": "Patient/5"},
        "profile_url": "https://ehr.example.org/fhir/Patient/5"});
    let ctx = TokenContext::from_claims(&other, &names).unwrap();
    assert_eq!(ctx.patient.as_deref(), Some("Patient/5"));
    assert_eq!(ctx.principal.patient().as_deref(), Some("Patient/5"));
    assert_eq!(ctx.scopes.to_string(), "patient/Patient.r openid");

    let err =
        |v: serde_json::Value| TokenContext::from_claims(&v, &ClaimNames::default()).unwrap_err();
    assert_eq!(
        err(json!({"sub": "x", "scope": "patient/Observation.rs"})),
        ContextError::NoPatient
    );
    assert!(matches!(
        err(json!({"sub": "x", "scope": "patient/Observation.dus", "patient": "1"})),
        ContextError::Scope(_)
    ));
    assert!(matches!(
        err(json!({"sub": "x", "scope": 5})),
        ContextError::Claims(_)
    ));
    assert!(matches!(
        err(json!({"sub": "x", "patient": 5})),
        ContextError::Claims(_)
    ));
    assert!(matches!(
        err(json!({"sub": "x", "patient": "Encounter/1"})),
        ContextError::Claims(_)
    ));
    // `.`, `..` and what is not an id at all never become a compartment to narrow to.
    for not_an_id in [
        "..",
        ".",
        "Patient/..",
        "a b",
        "Patient/x?y",
        &"7".repeat(65),
    ] {
        assert!(
            matches!(
                err(json!({"sub": "x", "patient": not_an_id})),
                ContextError::Claims(_)
            ),
            "{not_an_id}"
        );
    }
    assert!(matches!(
        err(json!({"sub": "x", "encounter": "Encounter/.."})),
        ContextError::Claims(_)
    ));
    assert!(matches!(
        err(json!({"scope": "openid"})),
        ContextError::Claims(_)
    ));
    assert!(matches!(err(json!("a string")), ContextError::Claims(_)));
}

fn any_scope() -> impl Strategy<Value = Scope> {
    let level = prop_oneof![Just(Level::Patient), Just(Level::User), Just(Level::System)];
    let resource = prop_oneof![
        Just(None),
        Just(Some("Observation".to_string())),
        Just(Some("Patient".to_string()))
    ];
    let permissions = prop_oneof![
        Just(Permissions::Read),
        Just(Permissions::Write),
        Just(Permissions::All),
        (1u8..32).prop_map(Permissions::V2)
    ];
    let query = proptest::collection::vec(("[a-z][a-z-]{0,8}", "[A-Za-z0-9|:/.-]{1,12}"), 0..3);
    let resource_scope = (level, resource, permissions, query).prop_map(
        |(level, resource_type, permissions, query)| {
            let query = if matches!(permissions, Permissions::V2(_)) {
                query
            } else {
                Vec::new()
            };
            Scope::Resource {
                level,
                resource_type,
                permissions,
                query,
            }
        },
    );
    prop_oneof![
        resource_scope,
        Just(Scope::Launch),
        "[a-z]{1,10}".prop_map(|c| Scope::LaunchContext {
            context: c,
            role: None
        }),
        Just(Scope::OpenId),
        Just(Scope::FhirUser),
        Just(Scope::OfflineAccess),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// print ∘ parse is the identity on scopes, and on scope strings.
    #[test]
    fn scopes_round_trip(list in proptest::collection::vec(any_scope(), 0..6)) {
        let text = list.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        let parsed = Scopes::parse(&text).unwrap();
        prop_assert_eq!(parsed.iter().cloned().collect::<Vec<_>>(), list);
        prop_assert_eq!(parsed.to_string(), text);
    }

    /// No input makes the parser panic; whatever it accepts prints back the same.
    #[test]
    fn any_text_parses_or_is_refused(text in "\\PC{0,60}", smartish in "(patient|user|system|launch)/[A-Za-z*]{0,12}[.?]?[a-z*=&|]{0,10}") {
        for input in [text, smartish] {
            if let Ok(scopes) = Scopes::parse(&input) {
                let again = Scopes::parse(&scopes.to_string()).unwrap();
                prop_assert_eq!(again, scopes);
            }
        }
    }

    /// A scope set never permits an interaction that none of its scopes names.
    #[test]
    fn nothing_is_permitted_that_no_scope_names(list in proptest::collection::vec(any_scope(), 0..6)) {
        let scopes = Scopes::parse(&list.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")).unwrap();
        for interaction in [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search] {
            for rtype in ["Observation", "Patient", "Condition"] {
                let named = list.iter().any(|s| match s {
                    Scope::Resource { resource_type, permissions, .. } => {
                        let bit = match interaction {
                            Interaction::Create => 1,
                            Interaction::Read => 2,
                            Interaction::Update => 4,
                            Interaction::Delete => 8,
                            _ => 16,
                        };
                        permissions.bits() & bit != 0 && resource_type.as_deref().is_none_or(|t| t == rtype)
                    }
                    _ => false,
                });
                prop_assert_eq!(named, scopes.permits(interaction, rtype) != Permission::Denied);
            }
        }
    }
}
