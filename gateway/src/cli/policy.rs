//! `fhirseal policy …`: check a policy, see the attributes a token gives, explain a resource.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use fhirseal_fhir::Principal;
use fhirseal_policy::{Decision, Policy};
use serde_json::{Value, json};

/// The policy commands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate a policy (one or more files): every problem with its file, line and key.
    Check {
        /// The policy's files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The attributes a token's claims give under the policy, and the roles that give them.
    Attributes {
        /// The policy's files [default: the embedded general-hospital policy].
        #[arg(long = "policy")]
        policy: Vec<PathBuf>,
        /// A JSON file with the token's claims (`sub`, `fhirUser`, `scope`, `practitioner_roles`, …).
        #[arg(long)]
        claims: PathBuf,
    },
    /// Per protected element of a resource: open or masked for the caller, and why. With
    /// `--searches` instead: per protected resource type, each search parameter that reads a
    /// protected element and how the gateway answers it.
    Explain {
        /// The policy's files [default: the embedded general-hospital policy].
        #[arg(long = "policy")]
        policy: Vec<PathBuf>,
        /// A JSON file with the token's claims.
        #[arg(long, required_unless_present = "searches")]
        claims: Option<PathBuf>,
        /// A JSON file with the FHIR resource.
        #[arg(long, required_unless_present = "searches")]
        resource: Option<PathBuf>,
        /// Explain the searches on protected elements instead.
        #[arg(long, conflicts_with_all = ["claims", "resource"])]
        searches: bool,
        /// As if the caller broke the glass: which emergency rule opens which element (or why
        /// the caller may not break it).
        #[arg(long, conflicts_with = "searches")]
        break_glass: bool,
        /// A JSON file with a FHIR `Consent` of the record's patient, as if written through the
        /// gateway (repeatable): which Consent opens or masks which element.
        #[arg(long = "consent", conflicts_with_all = ["searches", "break_glass"])]
        consent: Vec<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    match args.command {
        Command::Check { files } => {
            let policy =
                Policy::from_paths(&files).map_err(|e| format!("the policy is invalid:\n{e}"))?;
            let protected: usize = policy.protections().iter().map(|p| p.elements.len()).sum();
            let warnings = warnings(&policy);
            Ok(if args.json {
                json!({"valid": true, "name": policy.name(), "version": policy.version(),
                    "roles": policy.roles().len(), "access": policy.access().len(), "protected_elements": protected,
                    "break_glass": policy.break_glass().iter().map(|r| json!({"name": r.name, "who": r.who.to_string(),
                        "grants": r.grants, "max_minutes": r.max_seconds / 60, "opens": r.opens(policy.protections())})).collect::<Vec<_>>(),
                    "consent": policy.consent_rules().iter().map(|r| json!({"name": r.name, "rules": r.rules,
                        "permit": r.permit.as_ref().map(ToString::to_string), "deny": r.deny})).collect::<Vec<_>>(),
                    "warnings": warnings})
                .to_string()
            } else {
                let mut text = format!(
                    "{} (version {}) is valid: {} roles, {} access rules, {} protected elements in {} rules; everything else is denied",
                    policy.name(),
                    policy.version(),
                    policy.roles().len(),
                    policy.access().len(),
                    protected,
                    policy.protections().len()
                );
                for rule in policy.break_glass() {
                    text.push_str(&format!(
                        "\nbreak-glass `{}`: {} may, for at most {} minutes; grants {}; opens rules {}",
                        rule.name,
                        rule.who,
                        rule.max_seconds / 60,
                        rule.grants.join(", "),
                        rule.opens(policy.protections()).join(", ")
                    ));
                }
                for rule in policy.consent_rules() {
                    text.push_str(&format!(
                        "\nconsent `{}`: a patient's Consent {} rules {}",
                        rule.name,
                        match (&rule.permit, rule.deny) {
                            (Some(permit), true) => format!(
                                "may widen (to named actors who also satisfy {permit}) and narrow"
                            ),
                            (Some(permit), false) =>
                                format!("may widen (to named actors who also satisfy {permit})"),
                            (None, _) => "may narrow".to_string(),
                        },
                        rule.rules.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                for warning in &warnings {
                    text.push_str("\nwarning: ");
                    text.push_str(warning);
                }
                text
            })
        }
        Command::Attributes { policy, claims } => {
            let policy = load(&policy)?;
            let principal = principal(&claims)?;
            let attributes = policy.attributes(&principal);
            Ok(if args.json {
                let list: Vec<Value> = attributes
                    .names()
                    .map(|a| json!({"attribute": a, "roles": attributes.because(a)}))
                    .collect();
                Value::Array(list).to_string()
            } else if attributes.is_empty() {
                "no attributes: no role of the policy matches these claims".to_string()
            } else {
                attributes
                    .names()
                    .map(|a| format!("{a}  (role {})", attributes.because(a).join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Explain {
            policy,
            searches: true,
            ..
        } => {
            let policy = load(&policy)?;
            Ok(explain_searches(&policy, args.json))
        }
        Command::Explain {
            policy,
            claims,
            resource,
            break_glass,
            consent,
            ..
        } => {
            let (Some(claims), Some(resource)) = (claims, resource) else {
                return Err("explain needs --claims and --resource, or --searches".into());
            };
            let policy = load(&policy)?;
            let principal = principal(&claims)?;
            let resource = read_json(&resource)?;
            if resource
                .get("resourceType")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err("the resource file holds no FHIR resource (no resourceType)".into());
            }
            let explanation = if break_glass {
                policy
                    .explain_emergency(&principal, &resource)
                    .map_err(|why| format!("break-glass refused: {why}"))?
            } else if consent.is_empty() {
                policy.explain(&principal, &resource)
            } else {
                let book = consent_book(&consent)?;
                let patient = fhirseal_policy::record_patient(&resource, &[]);
                let view = book.view(
                    patient.as_deref(),
                    fhirseal_authority::unix_now().saturating_mul(1_000_000),
                );
                policy.explain_under(&principal, &resource, &view)
            };
            Ok(if args.json {
                json!({
                    "resource": explanation.resource,
                    "patient": explanation.patient,
                    "attributes": explanation.attributes.names().collect::<Vec<_>>(),
                    "read": match &explanation.access {
                        Decision::Permit(o) => json!({"permitted": true, "access_rule": o.access}),
                        Decision::Deny(why) => json!({"permitted": false, "reason": why}),
                    },
                    "elements": explanation.elements.iter().map(|e| {
                        let mut element = json!({"path": e.path, "open": e.open, "why": e.why});
                        if !e.break_glass.is_empty() {
                            element["break_glass"] = json!(e.break_glass);
                        }
                        if !e.consent.is_empty() {
                            element["consent"] = json!(e.consent);
                        }
                        if let Some((write, words)) = &e.write {
                            element["write"] = json!(write);
                            element["write_why"] = json!(words);
                        }
                        element
                    }).collect::<Vec<_>>(),
                })
                .to_string()
            } else {
                explanation.to_string().trim_end().to_string()
            })
        }
    }
}

/// What a valid policy may still get wrong: blind indexes on low-entropy elements that the
/// policy chose to index alone (`index-alone`).
fn warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for protection in policy.protections() {
        for rule in &protection.elements {
            if rule.blind_index() && rule.index_alone() && fhirseal_policy::low_entropy(rule) {
                out.push(format!(
                    "protect \"{}\": `{}` is indexed alone (index-alone) but has few distinct values: the server sees which resources share one, and how many do (docs/search.md, \"Leakage\"); pair it in `compound-indexes` instead if the searches it serves come with another parameter",
                    protection.name,
                    rule.path()
                ));
            }
        }
    }
    out
}

/// Per protected resource type, the searches that read a protected element and how each is
/// answered.
fn explain_searches(policy: &Policy, json: bool) -> String {
    let rules = policy.rules_for(None);
    let mut types: Vec<&str> = policy
        .protections()
        .iter()
        .map(|p| p.resource_type.as_str())
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut rows = Vec::new();
    for resource_type in types {
        for (code, how) in fhirseal_seal::search::served_searches(resource_type, &rules) {
            rows.push((resource_type, code, how));
        }
    }
    if json {
        Value::Array(
            rows.iter()
                .map(|(t, code, how)| json!({"type": t, "parameter": code, "answered": how}))
                .collect(),
        )
        .to_string()
    } else {
        rows.iter()
            .map(|(t, code, how)| format!("{t}?{code}: {how}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn load(files: &[PathBuf]) -> Result<Policy, String> {
    if files.is_empty() {
        return Policy::embedded_default()
            .map_err(|e| format!("the embedded policy is invalid:\n{e}"));
    }
    Policy::from_paths(files).map_err(|e| format!("the policy is invalid:\n{e}"))
}

fn principal(path: &Path) -> Result<Principal, String> {
    Principal::from_claims(&read_json(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// The Consents in `files`, each read as the gateway reads one written to it (its `id`, or the
/// file's name without its extension); a file that is not an enforceable Consent is an error
/// naming it and the path in it.
fn consent_book(files: &[PathBuf]) -> Result<fhirseal_policy::ConsentBook, String> {
    let mut book = fhirseal_policy::ConsentBook::new();
    for file in files {
        let resource = read_json(file)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let record = fhirseal_policy::ConsentRecord::from_fhir(&resource, &id, &[])
            .map_err(|e| format!("{}: this Consent cannot be enforced: {e}", file.display()))?;
        book.insert(record);
    }
    Ok(book)
}
