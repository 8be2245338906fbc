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
    /// Per protected element of a resource: open or masked for the caller, and why.
    Explain {
        /// The policy's files [default: the embedded general-hospital policy].
        #[arg(long = "policy")]
        policy: Vec<PathBuf>,
        /// A JSON file with the token's claims.
        #[arg(long)]
        claims: PathBuf,
        /// A JSON file with the FHIR resource.
        #[arg(long)]
        resource: PathBuf,
    },
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    match args.command {
        Command::Check { files } => {
            let policy =
                Policy::from_paths(&files).map_err(|e| format!("the policy is invalid:\n{e}"))?;
            let protected: usize = policy.protections().iter().map(|p| p.elements.len()).sum();
            Ok(if args.json {
                json!({"valid": true, "name": policy.name(), "version": policy.version(),
                    "roles": policy.roles().len(), "access": policy.access().len(), "protected_elements": protected})
                .to_string()
            } else {
                format!(
                    "{} (version {}) is valid: {} roles, {} access rules, {} protected elements in {} rules; everything else is denied",
                    policy.name(),
                    policy.version(),
                    policy.roles().len(),
                    policy.access().len(),
                    protected,
                    policy.protections().len()
                )
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
            claims,
            resource,
        } => {
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
            let explanation = policy.explain(&principal, &resource);
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
