//! SMART App Launch scopes: the grammar (v1, v2 and granular), printed back exactly as parsed,
//! and what a set of scopes permits.
//!
//! ```text
//! resource scope := ("patient" | "user" | "system") "/" (ResourceType | "*") "." permissions [ "?" query ]
//! permissions    := "read" | "write" | "*"                       (v1)
//!                 | an ordered, non-empty subset of "cruds"      (v2)
//! query          := param "=" value ( "&" param "=" value )*     (v2 granular only)
//! context scope  := "launch" | "launch/" lowercase-type [ "?role=" uri ]
//! others         := "openid" | "fhirUser" | "profile" | "offline_access" | "online_access"
//! ```
//!
//! Any other scope that does not look like a SMART scope (`email`, a scope of another API) is kept
//! as [`Scope::Other`] and grants nothing here; one that looks like a SMART scope but breaks the
//! grammar (`patient/Observation.dus`, `user/Nothing.rs`, `launch/Patient`) is refused.

use std::fmt;

use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::structure::{Kind, r4};

/// Whose data a resource scope covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// `patient/`: the patient in context only.
    Patient,
    /// `user/`: what the user may see.
    User,
    /// `system/`: a backend service.
    System,
}

/// The permissions of a resource scope, in the form they were written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permissions {
    /// v1 `read`: read and search.
    Read,
    /// v1 `write`: create, update, delete.
    Write,
    /// v1 `*`: everything.
    All,
    /// v2: an ordered subset of `cruds`, as a bit set (c = 1, r = 2, u = 4, d = 8, s = 16).
    V2(u8),
}

/// One scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `patient/Observation.rs?category=…`
    Resource {
        /// `patient`, `user` or `system`.
        level: Level,
        /// The resource type; `None` for `*`.
        resource_type: Option<String>,
        /// What it permits.
        permissions: Permissions,
        /// Granular restrictions (`?category=…&code=…`), as written; empty for none.
        query: Vec<(String, String)>,
    },
    /// `launch` (EHR launch).
    Launch,
    /// `launch/patient`, `launch/encounter`, … with an optional `?role=`.
    LaunchContext {
        /// The lower-case context type.
        context: String,
        /// `role=` when given.
        role: Option<String>,
    },
    /// `openid`
    OpenId,
    /// `fhirUser`
    FhirUser,
    /// `profile` (SMART v1's predecessor of `fhirUser`).
    Profile,
    /// `offline_access`
    OfflineAccess,
    /// `online_access`
    OnlineAccess,
    /// A scope that is not SMART's: kept, grants nothing here.
    Other(String),
}

/// Why a scope is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scope `{scope}`: {reason}")]
pub struct ScopeError {
    /// The scope as written.
    pub scope: String,
    /// What is wrong.
    pub reason: String,
}

/// The longest scope string accepted, in bytes.
pub const MAX_SCOPE_BYTES: usize = 1024;
/// The most scopes in one token.
pub const MAX_SCOPES: usize = 256;

const V2_LETTERS: [(char, u8); 5] = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)];

/// What one action needs, in `cruds` bits.
fn bit(interaction: Interaction) -> u8 {
    match interaction {
        Interaction::Create => 1,
        Interaction::Read | Interaction::Vread => 2,
        Interaction::Update | Interaction::Patch => 4,
        Interaction::Delete => 8,
        // Type- and system-level history are searches (SMART: `s`); instance history is a read,
        // which the caller asks for as `Read`.
        Interaction::Search | Interaction::History => 16,
    }
}

impl Permissions {
    /// The `cruds` bits it grants (v1 mapped as SMART says: read ⇒ rs, write ⇒ cud, * ⇒ cruds).
    pub fn bits(self) -> u8 {
        match self {
            Self::Read => 2 | 16,
            Self::Write => 1 | 4 | 8,
            Self::All => 31,
            Self::V2(bits) => bits,
        }
    }
}

impl Scope {
    /// Parses one scope.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let fail = |reason: &str| ScopeError {
            scope: text.chars().take(80).collect(),
            reason: reason.to_string(),
        };
        if text.is_empty() || text.len() > MAX_SCOPE_BYTES {
            return Err(fail("empty or too long"));
        }
        if text
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '"' || c == '\\')
        {
            return Err(fail(
                "contains a character a scope cannot hold (RFC 6749 §3.3)",
            ));
        }
        match text {
            "launch" => return Ok(Self::Launch),
            "openid" => return Ok(Self::OpenId),
            "fhirUser" => return Ok(Self::FhirUser),
            "profile" => return Ok(Self::Profile),
            "offline_access" => return Ok(Self::OfflineAccess),
            "online_access" => return Ok(Self::OnlineAccess),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("launch/") {
            let (context, role) = match rest.split_once('?') {
                Some((context, query)) => {
                    let role = query
                        .strip_prefix("role=")
                        .filter(|r| !r.is_empty() && !r.contains('&'));
                    let Some(role) = role else {
                        return Err(fail("a launch context scope takes only `?role=<uri>`"));
                    };
                    (context, Some(role.to_string()))
                }
                None => (rest, None),
            };
            if context.is_empty() || !context.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(fail(
                    "the launch context is a lower-case resource type (`launch/patient`)",
                ));
            }
            return Ok(Self::LaunchContext {
                context: context.to_string(),
                role,
            });
        }
        let level = if let Some(rest) = text.strip_prefix("patient/") {
            (Level::Patient, rest)
        } else if let Some(rest) = text.strip_prefix("user/") {
            (Level::User, rest)
        } else if let Some(rest) = text.strip_prefix("system/") {
            (Level::System, rest)
        } else {
            return Ok(Self::Other(text.to_string()));
        };
        let (level, rest) = level;
        let (head, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        let Some((resource, permissions)) = head.split_once('.') else {
            return Err(fail("a resource scope is `level/Type.permissions`"));
        };
        let resource_type = if resource == "*" {
            None
        } else if r4().kind(resource) == Some(Kind::Resource)
            && r4().element(&format!("{resource}.id")).is_some()
        {
            Some(resource.to_string())
        } else {
            return Err(fail("not an R4 resource type"));
        };
        let permissions = match permissions {
            "read" => Permissions::Read,
            "write" => Permissions::Write,
            "*" => Permissions::All,
            letters => {
                let mut bits = 0u8;
                let mut last = 0;
                for c in letters.chars() {
                    let Some(position) = V2_LETTERS.iter().position(|(l, _)| *l == c) else {
                        return Err(fail(
                            "permissions are `read`, `write`, `*`, or letters of `cruds`",
                        ));
                    };
                    if position < last || bits & V2_LETTERS[position].1 != 0 {
                        return Err(fail(
                            "v2 permissions are an ordered subset of `cruds` (`rs`, not `sr`)",
                        ));
                    }
                    last = position;
                    bits |= V2_LETTERS[position].1;
                }
                if bits == 0 {
                    return Err(fail("no permissions"));
                }
                Permissions::V2(bits)
            }
        };
        let mut pairs = Vec::new();
        if let Some(query) = query {
            if !matches!(permissions, Permissions::V2(_)) {
                return Err(fail(
                    "only v2 scopes take granular `?param=value` restrictions",
                ));
            }
            for pair in query.split('&') {
                let Some((param, value)) = pair.split_once('=') else {
                    return Err(fail("a restriction is `param=value`"));
                };
                if param.is_empty()
                    || value.is_empty()
                    || !param.chars().all(|c| {
                        c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ':' || c == '.'
                    })
                {
                    return Err(fail(
                        "a restriction is `param=value` with a search parameter name",
                    ));
                }
                pairs.push((param.to_string(), value.to_string()));
            }
        }
        Ok(Self::Resource {
            level,
            resource_type,
            permissions,
            query: pairs,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource {
                level,
                resource_type,
                permissions,
                query,
            } => {
                let level = match level {
                    Level::Patient => "patient",
                    Level::User => "user",
                    Level::System => "system",
                };
                write!(f, "{level}/{}.", resource_type.as_deref().unwrap_or("*"))?;
                match permissions {
                    Permissions::Read => f.write_str("read")?,
                    Permissions::Write => f.write_str("write")?,
                    Permissions::All => f.write_str("*")?,
                    Permissions::V2(bits) => {
                        for (letter, bit) in V2_LETTERS {
                            if bits & bit != 0 {
                                write!(f, "{letter}")?;
                            }
                        }
                    }
                }
                for (i, (param, value)) in query.iter().enumerate() {
                    write!(f, "{}{param}={value}", if i == 0 { '?' } else { '&' })?;
                }
                Ok(())
            }
            Self::Launch => f.write_str("launch"),
            Self::LaunchContext { context, role } => match role {
                Some(role) => write!(f, "launch/{context}?role={role}"),
                None => write!(f, "launch/{context}"),
            },
            Self::OpenId => f.write_str("openid"),
            Self::FhirUser => f.write_str("fhirUser"),
            Self::Profile => f.write_str("profile"),
            Self::OfflineAccess => f.write_str("offline_access"),
            Self::OnlineAccess => f.write_str("online_access"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// The scopes of a token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

/// One way a set of scopes lets a request through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Allowance {
    /// Only the patient in context: reads of that patient's compartment, searches narrowed to it.
    pub patient_compartment: bool,
    /// Granular restrictions every result must meet (search parameters); empty for none.
    pub query: Vec<(String, String)>,
}

/// What a set of scopes says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permission {
    /// No scope covers it: 403.
    Denied,
    /// Covered, in any of these ways (scopes are a union). An allowance with no compartment and
    /// no query means the scopes put no limit on it.
    Allowed(Vec<Allowance>),
}

impl Scopes {
    /// Parses a space-separated scope string (the token's `scope` claim). Refuses malformed
    /// SMART scopes, duplicate white space aside.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let items: Vec<&str> = text.split_whitespace().collect();
        if items.len() > MAX_SCOPES {
            return Err(ScopeError {
                scope: format!("({} scopes)", items.len()),
                reason: format!("more than {MAX_SCOPES} scopes"),
            });
        }
        items
            .into_iter()
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The scopes, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether a scope asks for a patient in context (`patient/` scopes SHALL establish one).
    pub fn needs_patient(&self) -> bool {
        self.0.iter().any(|s| {
            matches!(
                s,
                Scope::Resource {
                    level: Level::Patient,
                    ..
                }
            )
        })
    }

    /// What the scopes permit for `interaction` on `resource_type`. Batch and transaction have
    /// no scope of their own: each entry is asked about on its own (SMART).
    pub fn permits(&self, interaction: Interaction, resource_type: &str) -> Permission {
        let need = bit(interaction);
        let mut allowances: Vec<Allowance> = Vec::new();
        for scope in &self.0 {
            let Scope::Resource {
                level,
                resource_type: scoped,
                permissions,
                query,
            } = scope
            else {
                continue;
            };
            if permissions.bits() & need == 0
                || scoped.as_deref().is_some_and(|t| t != resource_type)
            {
                continue;
            }
            let allowance = Allowance {
                patient_compartment: *level == Level::Patient,
                query: query.clone(),
            };
            if !allowances.contains(&allowance) {
                allowances.push(allowance);
            }
        }
        if allowances.is_empty() {
            return Permission::Denied;
        }
        // An unrestricted allowance subsumes every other.
        let free = Allowance {
            patient_compartment: false,
            query: Vec::new(),
        };
        if allowances.contains(&free) {
            return Permission::Allowed(vec![free]);
        }
        allowances.sort_by(|a, b| {
            (a.patient_compartment, &a.query).cmp(&(b.patient_compartment, &b.query))
        });
        Permission::Allowed(allowances)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

impl Permission {
    /// Whether a resource in `resource_patient`'s compartment (`Patient/123`; `None`: in no
    /// patient's compartment) may be read with `context_patient` in context, as far as the
    /// compartment goes. Granular query restrictions are the search's to apply.
    pub fn allows_compartment(
        &self,
        resource_patient: Option<&str>,
        context_patient: Option<&str>,
    ) -> bool {
        match self {
            Self::Denied => false,
            Self::Allowed(ways) => ways.iter().any(|w| {
                !w.patient_compartment
                    || matches!((resource_patient, context_patient), (Some(r), Some(c)) if r == c)
            }),
        }
    }
}
