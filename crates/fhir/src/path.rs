//! Element paths: the subset of FHIRPath with which rules name what to seal.
//!
//! ```text
//! path   := ResourceType ( "." step )+
//! step   := name [ "[x]" ] [ ".where(" name "='" literal "')" ]
//! ```
//!
//! `Patient.birthDate`, `Patient.name`, `Patient.contact.telecom`, `Observation.value[x]`,
//! `Patient.identifier.where(system='urn:oid:1.2.36.146.595.217.0.1')`. Every step is checked
//! against the R4 definitions when the path is parsed; a choice (`[x]`) must be the last step;
//! `where` filters the items of a repeating element on one of their primitive members.

use std::fmt;

use crate::structure::{Element, Max, r4};

/// A parsed, R4-checked element path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementPath {
    text: String,
    resource_type: String,
    steps: Vec<Step>,
    element: &'static Element,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The JSON member's name, or for a choice its base (`value` of `value[x]`).
    pub name: String,
    /// Whether this is a choice (`value[x]`).
    pub choice: bool,
    /// Whether the element repeats (a JSON array).
    pub repeating: bool,
    /// Items of a repeating element kept by `where(member='literal')`.
    pub filter: Option<Filter>,
    /// The definition context of the value (type name or backbone path); empty for a choice.
    pub context: &'static str,
    /// Its R4 definition.
    pub element: &'static Element,
}

/// `where(member='value')`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// A primitive member of the items.
    pub member: String,
    /// The value it must equal.
    pub value: String,
}

/// Why a path is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("element path `{path}`: {reason}")]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ElementPath {
    /// Parses and checks `text` against the R4 definitions.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let fail = |reason: String| PathError {
            path: text.to_string(),
            reason,
        };
        let r4 = r4();
        let Some((resource_type, mut rest)) = text.split_once('.') else {
            return Err(fail("names no element: write `Type.element`".into()));
        };
        if !r4.is_domain_resource(resource_type) {
            return Err(fail(format!(
                "`{resource_type}` is not an R4 resource type whose elements can be sealed"
            )));
        }
        let Some(mut context) = r4.type_name(resource_type) else {
            return Err(fail(format!("`{resource_type}` is not an R4 type")));
        };
        if rest.is_empty() {
            return Err(fail("ends with `.`".into()));
        }
        let mut steps: Vec<Step> = Vec::new();
        while !rest.is_empty() {
            if steps.last().is_some_and(|s| s.choice) {
                return Err(fail(
                    "a choice element (`[x]`) must be the last step".into(),
                ));
            }
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let (name, after) = rest.split_at(name_len);
            if name.is_empty() {
                return Err(fail(format!("expected an element name at `{rest}`")));
            }
            let (choice, after) = match after.strip_prefix("[x]") {
                Some(after) => (true, after),
                None => (false, after),
            };
            let def_path = format!("{context}.{name}{}", if choice { "[x]" } else { "" });
            let Some(element) = r4.element(&def_path) else {
                if !choice && r4.element(&format!("{context}.{name}[x]")).is_some() {
                    return Err(fail(format!("`{name}` is a choice: write `{name}[x]`")));
                }
                return Err(fail(format!("R4 defines no element `{def_path}`")));
            };
            let child = if choice {
                None
            } else {
                r4.child(context, name)
            };
            if let Some(child) = &child
                && child.primitive
                && !after.is_empty()
                && !after.starts_with(".where(")
            {
                return Err(fail(format!(
                    "`{def_path}` is a primitive ({}): it has no members to select",
                    element.types.join("|")
                )));
            }
            let mut step = Step {
                name: name.to_string(),
                choice,
                repeating: element.max == Max::Many,
                filter: None,
                context: child.map_or("", |c| c.context),
                element,
            };
            let mut after = after;
            if let Some(filter_text) = after.strip_prefix(".where(") {
                let (filter, remaining) = parse_filter(filter_text).map_err(fail)?;
                if !step.repeating {
                    return Err(fail(format!(
                        "`where` filters the items of a repeating element; `{def_path}` does not repeat"
                    )));
                }
                let member = r4.child(step.context, &filter.member);
                if !member.is_some_and(|m| m.primitive && m.element.max == Max::One) {
                    return Err(fail(format!(
                        "`where({}=…)`: `{}` is not a single primitive member of `{def_path}`",
                        filter.member, filter.member
                    )));
                }
                step.filter = Some(filter);
                after = remaining;
            }
            context = step.context;
            steps.push(step);
            rest = match after.strip_prefix('.') {
                Some(next) if !next.is_empty() => next,
                Some(_) => return Err(fail("ends with `.`".into())),
                None if after.is_empty() => "",
                None => return Err(fail(format!("unexpected `{after}`"))),
            };
        }
        let Some(element) = steps.last().map(|s| s.element) else {
            return Err(fail("names no element: write `Type.element`".into()));
        };
        Ok(Self {
            text: text.to_string(),
            resource_type: resource_type.to_string(),
            steps,
            element,
        })
    }

    /// The resource type it applies to.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// Its steps, outermost first (never empty).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The definition of the element it ends on.
    pub fn element(&self) -> &'static Element {
        self.element
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path without filters, by member names: `Observation.subject.reference`.
    pub fn plain(&self) -> String {
        let mut out = self.resource_type.clone();
        for step in &self.steps {
            out.push('.');
            out.push_str(&step.name);
            if step.choice {
                out.push_str("[x]");
            }
        }
        out
    }

    /// The definition path without filters (`Patient.identifier`), for comparing paths.
    pub fn definition_path(&self) -> &'static str {
        self.element().path
    }

    /// Whether `self` and `other` can select the same value, or one contains the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        if self.resource_type != other.resource_type {
            return false;
        }
        for (a, b) in self.steps.iter().zip(&other.steps) {
            if a.name != b.name || a.choice != b.choice {
                return false;
            }
            if let (Some(fa), Some(fb)) = (&a.filter, &b.filter)
                && fa.member == fb.member
                && fa.value != fb.value
            {
                return false;
            }
        }
        true
    }
}

impl fmt::Display for ElementPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `member='literal')…` → the filter and what follows the `)`.
fn parse_filter(text: &str) -> Result<(Filter, &str), String> {
    let Some((member, rest)) = text.split_once('=') else {
        return Err("`where` takes `member='value'`".into());
    };
    let member = member.trim();
    if member.is_empty() || !member.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("`where`: `{member}` is not a member name"));
    }
    let Some(mut chars) = rest.trim_start().strip_prefix('\'').map(str::chars) else {
        return Err("`where`: the value must be a quoted literal, `'…'`".into());
    };
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err("`where`: the literal is not closed".into()),
            Some('\\') => match chars.next() {
                Some(c @ ('\'' | '\\')) => value.push(c),
                _ => return Err("`where`: only `\\'` and `\\\\` are escapes".into()),
            },
            Some('\'') => break,
            Some(c) => value.push(c),
        }
    }
    let rest = chars.as_str().trim_start();
    let Some(rest) = rest.strip_prefix(')') else {
        return Err("`where(…)` is not closed".into());
    };
    Ok((
        Filter {
            member: member.to_string(),
            value,
        },
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        ElementPath::parse(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn paths_parse() {
        for text in [
            "Patient.birthDate",
            "Patient.name",
            "Patient.name.given",
            "Patient.telecom",
            "Patient.contact.name",
            "Observation.value[x]",
            "Observation.component.value[x]",
            "Condition.code",
            "Patient.identifier.where(system='urn:oid:1.2.36.146.595.217.0.1')",
            "Questionnaire.item.item.text",
        ] {
            assert!(ElementPath::parse(text).is_ok(), "{text}: {}", reason(text));
        }
        let path = ElementPath::parse("Patient.identifier.where(system='a\\'b')").ok();
        let filter = path.as_ref().and_then(|p| p.steps()[0].filter.clone());
        assert_eq!(
            filter.map(|f| (f.member, f.value)),
            Some(("system".into(), "a'b".into()))
        );
    }

    #[test]
    fn bad_paths_name_the_reason() {
        assert!(reason("Patient").contains("names no element"));
        assert!(reason("Bundle.entry").contains("not an R4 resource type"));
        assert!(reason("Nothing.x").contains("not an R4 resource type"));
        assert!(reason("Patient.nickname").contains("R4 defines no element `Patient.nickname`"));
        assert!(reason("Observation.value").contains("write `value[x]`"));
        assert!(reason("Observation.value[x].code").contains("must be the last step"));
        assert!(reason("Patient.birthDate.year").contains("is a primitive"));
        assert!(reason("Patient.gender.where(x='y')").contains("does not repeat"));
        assert!(reason("Patient.identifier.where(type='x')").contains("not a single primitive"));
        assert!(reason("Patient.identifier.where(system='x'").contains("not closed"));
        assert!(reason("Patient.identifier.where(system=x)").contains("quoted literal"));
        assert!(reason("Patient.name.").contains("ends with"));
        assert!(reason("Patient.name!").contains("unexpected"));
    }

    #[test]
    fn overlap() {
        let p = |t: &str| ElementPath::parse(t).ok();
        let (Some(name), Some(given), Some(birth), Some(id_a), Some(id_b), Some(ids)) = (
            p("Patient.name"),
            p("Patient.name.given"),
            p("Patient.birthDate"),
            p("Patient.identifier.where(system='a')"),
            p("Patient.identifier.where(system='b')"),
            p("Patient.identifier"),
        ) else {
            panic!("paths parse");
        };
        assert!(name.overlaps(&given) && given.overlaps(&name));
        assert!(!name.overlaps(&birth));
        assert!(!id_a.overlaps(&id_b));
        assert!(ids.overlaps(&id_a));
    }
}
