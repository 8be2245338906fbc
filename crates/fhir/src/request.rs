//! A FHIR REST request, parsed once into types: from HTTP (method, path under the base, query,
//! headers) and from a Bundle entry's `request` (method, `url`, `ifMatch`, `ifNoneMatch`,
//! `ifNoneExist`), with the same code, so that a batch entry is a [`FhirRequest`] like any other.
//!
//! Parse, don't validate: what comes out names a known R4 resource type ([`ResourceType`]), ids
//! of FHIR's syntax that are safe as path segments ([`Id`]), and search parameters split into
//! name, modifier, chain and values ([`SearchParam`]). Anything else is a [`RequestError`] that
//! says what is wrong, never echoing a value.

use std::fmt;

use serde_json::Value;
use url::form_urlencoded;

use crate::structure::{Kind, r4};

/// One FHIR REST interaction with everything it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct FhirRequest {
    /// What is asked, and of what.
    pub interaction: Interaction,
    /// The search parameters of a search, a history, a conditional update or an operation, in
    /// the order given (the query string of `GET`, and for `POST [type]/_search` the form too).
    pub params: Vec<SearchParam>,
    /// `If-Match`, `If-None-Match`, `If-None-Exist`.
    pub conditions: Conditions,
    /// `Prefer: return=…`.
    pub prefer: Prefer,
    /// The resource (or Bundle, or Parameters) the request carries, if any.
    pub body: Option<Value>,
}

/// The interactions of FHIR R4's RESTful API that the gateway serves, with their targets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interaction {
    /// `GET [type]/[id]`.
    Read(ResourceType, Id),
    /// `GET [type]/[id]/_history/[vid]`.
    Vread(ResourceType, Id, Id),
    /// `PUT [type]/[id]`.
    Update(ResourceType, Id),
    /// `PUT [type]?…`: the parameters select the resource.
    ConditionalUpdate(ResourceType),
    /// `PATCH [type]/[id]`.
    Patch(ResourceType, Id),
    /// `DELETE [type]/[id]`.
    Delete(ResourceType, Id),
    /// `POST [type]`.
    Create(ResourceType),
    /// `GET [type]?…` or `POST [type]/_search`.
    Search(ResourceType),
    /// `GET [type]/[id]/_history`.
    HistoryInstance(ResourceType, Id),
    /// `GET [type]/_history`.
    HistoryType(ResourceType),
    /// `GET [type]/[id]/$[name]` (an instance operation such as `Patient/[id]/$everything`).
    Operation(ResourceType, Id, String),
    /// `POST [base]` with a batch or transaction Bundle.
    BatchOrTransaction,
    /// `GET [base]/metadata`.
    Capabilities,
}

impl Interaction {
    /// The resource type the interaction is on, if any (none for a batch, a transaction or
    /// `metadata`).
    pub fn resource_type(&self) -> Option<&ResourceType> {
        match self {
            Self::Read(t, _)
            | Self::Vread(t, _, _)
            | Self::Update(t, _)
            | Self::ConditionalUpdate(t)
            | Self::Patch(t, _)
            | Self::Delete(t, _)
            | Self::Create(t)
            | Self::Search(t)
            | Self::HistoryInstance(t, _)
            | Self::HistoryType(t)
            | Self::Operation(t, _, _) => Some(t),
            Self::BatchOrTransaction | Self::Capabilities => None,
        }
    }
}

/// A resource type that FHIR R4 defines (`Patient`, `Observation`, …).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(String);

/// A logical id or version id: FHIR's `[A-Za-z0-9\-\.]{1,64}`, and never `.` or `..`, which
/// would change the meaning of the upstream URL it is joined into.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

/// One search parameter: `name[:modifier][.chain…]=value[,value…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchParam {
    /// The parameter's name (`subject`, `_id`, `_count`).
    pub name: String,
    /// The modifier after `:` (`exact`, `missing`, or a resource type for a chain: `Patient`).
    pub modifier: Option<String>,
    /// The chained names after `.` (`subject.name` → `["name"]`); empty when not chained.
    pub chain: Vec<String>,
    /// The value as sent (form-decoded), commas and all: what is forwarded upstream.
    pub value: String,
}

/// The conditions of a conditional interaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match` / `ifMatch`: the version the client last saw (`W/"3"`).
    pub if_match: Option<String>,
    /// `If-None-Match` / `ifNoneMatch`.
    pub if_none_match: Option<String>,
    /// `If-None-Exist` / `ifNoneExist`: the search whose match makes a create a no-op.
    pub if_none_exist: Option<Vec<SearchParam>>,
}

/// What the client wants back from a write (`Prefer: return=…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefer {
    /// No preference: the server's default (the resource).
    #[default]
    Unspecified,
    /// `return=minimal`: no body.
    Minimal,
    /// `return=representation`: the resource.
    Representation,
    /// `return=OperationOutcome`.
    OperationOutcome,
}

/// Why a request is not a FHIR interaction the gateway serves. No variant holds a value the
/// client sent (ids and names may be protected data too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The path names no resource type of FHIR R4.
    #[error("the path does not name a FHIR R4 resource type")]
    UnknownType,
    /// The path is not one of the interactions' shapes.
    #[error("the path is not a FHIR interaction this server serves")]
    UnknownPath,
    /// The method is not allowed on this path.
    #[error("the method is not allowed on this path")]
    MethodNotAllowed,
    /// A logical id is not of FHIR's id syntax, or is `.` or `..`.
    #[error("the id is not a FHIR id")]
    InvalidId,
    /// A version id is not of FHIR's id syntax, or is `.` or `..`.
    #[error("the version is not a FHIR id")]
    InvalidVersion,
    /// A search parameter has an empty name, or an empty part between `:` and `.`.
    #[error("a search parameter name is malformed")]
    InvalidParameter,
    /// A Bundle entry has no `request`, or its `method` or `url` is missing or not a string.
    #[error("a Bundle entry's request needs a method and a url")]
    InvalidEntry,
    /// A Bundle entry's `url` is absolute or not relative to the base.
    #[error("a Bundle entry's url must be relative to the base")]
    AbsoluteEntryUrl,
    /// A conditional update (`PUT [type]?…`) without any search parameter.
    #[error("a conditional update needs search parameters")]
    EmptyCondition,
}

// === impl FhirRequest ===

impl FhirRequest {
    /// The request of an HTTP call: `method`, the `path` below the FHIR base (leading and one
    /// trailing `/` ignored: clients post batches to `{base}/`), the raw `query`, `header` to
    /// look a header up by lower-case name, and the parsed `body`.
    ///
    /// # Errors
    /// [`RequestError`] when the path, method, ids or parameters are not a FHIR interaction.
    pub fn from_http<'h>(
        method: &str,
        path: &str,
        query: Option<&str>,
        header: impl Fn(&str) -> Option<&'h str>,
        body: Option<Value>,
    ) -> Result<Self, RequestError> {
        let conditions = Conditions {
            if_match: header("if-match").map(str::to_string),
            if_none_match: header("if-none-match").map(str::to_string),
            if_none_exist: header("if-none-exist").map(parse_params).transpose()?,
        };
        let prefer = header("prefer").map_or(Prefer::Unspecified, Prefer::parse);
        Self::parse(method, path, query, conditions, prefer, body)
    }

    /// The request of a batch or transaction entry (its `request` and `resource`), parsed by
    /// the same code as [`FhirRequest::from_http`]. `Prefer` is the whole Bundle's, given by the
    /// caller; a `url` under `base` (the server's own base URL) is taken as relative to it.
    ///
    /// # Errors
    /// [`RequestError`] as for HTTP, and [`RequestError::InvalidEntry`] or
    /// [`RequestError::AbsoluteEntryUrl`] for an entry without a usable `request`.
    pub fn from_entry(entry: &Value, prefer: Prefer, base: &str) -> Result<Self, RequestError> {
        let request = entry.get("request").ok_or(RequestError::InvalidEntry)?;
        let field = |name: &str| request.get(name).and_then(Value::as_str);
        let (Some(method), Some(url)) = (field("method"), field("url")) else {
            return Err(RequestError::InvalidEntry);
        };
        let base = base.trim_end_matches('/');
        let url = match url.strip_prefix(base) {
            Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with(['/', '?'])) => {
                rest
            }
            _ => url,
        };
        if url.contains("://") || url.starts_with("//") {
            return Err(RequestError::AbsoluteEntryUrl);
        }
        let (path, query) = match url.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (url, None),
        };
        let conditions = Conditions {
            if_match: field("ifMatch").map(str::to_string),
            if_none_match: field("ifNoneMatch").map(str::to_string),
            if_none_exist: field("ifNoneExist").map(parse_params).transpose()?,
        };
        let body = entry.get("resource").cloned();
        Self::parse(method, path, query, conditions, prefer, body)
    }

    /// The one parser behind both constructors.
    fn parse(
        method: &str,
        path: &str,
        query: Option<&str>,
        conditions: Conditions,
        prefer: Prefer,
        body: Option<Value>,
    ) -> Result<Self, RequestError> {
        let params = query.map(parse_params).transpose()?.unwrap_or_default();
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let interaction = interaction(method, &segments, !params.is_empty())?;
        Ok(Self {
            interaction,
            params,
            conditions,
            prefer,
            body,
        })
    }

    /// The resource type the request is about, if any.
    pub fn resource_type(&self) -> Option<&ResourceType> {
        self.interaction.resource_type()
    }

    /// The `[type]/[id]` the request names, if it names one.
    pub fn reference(&self) -> Option<String> {
        use Interaction as I;
        match &self.interaction {
            I::Read(t, id)
            | I::Vread(t, id, _)
            | I::Update(t, id)
            | I::Patch(t, id)
            | I::Delete(t, id)
            | I::HistoryInstance(t, id)
            | I::Operation(t, id, _) => Some(format!("{t}/{id}")),
            _ => None,
        }
    }

    /// The search parameters as `(key, value)` pairs, keys as sent (`subject:Patient.name`).
    pub fn param_pairs(&self) -> Vec<(String, String)> {
        SearchParam::pairs(&self.params)
    }
}

/// The interaction a method and path segments name.
fn interaction(
    method: &str,
    segments: &[&str],
    has_query: bool,
) -> Result<Interaction, RequestError> {
    use Interaction as I;
    let not_allowed = Err(RequestError::MethodNotAllowed);
    Ok(match (segments, method) {
        ([], "POST") => I::BatchOrTransaction,
        ([], _) => return not_allowed,
        (["metadata"], "GET") => I::Capabilities,
        (["metadata"], _) => return not_allowed,
        ([t], "GET") => I::Search(ResourceType::parse(t)?),
        ([t], "POST") => I::Create(ResourceType::parse(t)?),
        ([t], "PUT") if has_query => I::ConditionalUpdate(ResourceType::parse(t)?),
        ([t], "PUT") => {
            ResourceType::parse(t)?;
            return Err(RequestError::EmptyCondition);
        }
        ([_], _) => return not_allowed,
        ([t, "_search"], "POST") => I::Search(ResourceType::parse(t)?),
        ([t, "_history"], "GET") => I::HistoryType(ResourceType::parse(t)?),
        ([_, "_search" | "_history"], _) => return not_allowed,
        ([t, id], method) => {
            let (t, id) = (ResourceType::parse(t)?, Id::parse(id)?);
            match method {
                "GET" => I::Read(t, id),
                "PUT" => I::Update(t, id),
                "PATCH" => I::Patch(t, id),
                "DELETE" => I::Delete(t, id),
                _ => return not_allowed,
            }
        }
        ([t, id, "_history"], "GET") => I::HistoryInstance(ResourceType::parse(t)?, Id::parse(id)?),
        ([t, id, op], "GET") if op.starts_with('$') && op.len() > 1 => {
            I::Operation(ResourceType::parse(t)?, Id::parse(id)?, op[1..].to_string())
        }
        ([t, id, "_history", version], "GET") => {
            let version = Id::parse(version).map_err(|_| RequestError::InvalidVersion)?;
            I::Vread(ResourceType::parse(t)?, Id::parse(id)?, version)
        }
        ([_, _, "_history", _], _) | ([_, _, "_history"], _) => return not_allowed,
        _ => return Err(RequestError::UnknownPath),
    })
}

/// Form-decoded `key=value` pairs, each split into a [`SearchParam`]. Empty keys are dropped,
/// as servers do for `?&a=b`.
fn parse_params(query: &str) -> Result<Vec<SearchParam>, RequestError> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| SearchParam::parse(&k, v.into_owned()))
        .collect()
}

// === impl ResourceType ===

impl ResourceType {
    /// `name` if FHIR R4 defines a resource of that name.
    ///
    /// # Errors
    /// [`RequestError::UnknownType`] otherwise.
    pub fn parse(name: &str) -> Result<Self, RequestError> {
        if r4().kind(name) != Some(Kind::Resource) {
            return Err(RequestError::UnknownType);
        }
        Ok(Self(name.to_string()))
    }

    /// The type's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Id ===

impl Id {
    /// `id` if it is of FHIR's id syntax and not `.` or `..`.
    ///
    /// # Errors
    /// [`RequestError::InvalidId`] otherwise.
    pub fn parse(id: &str) -> Result<Self, RequestError> {
        if !is_fhir_id(id) {
            return Err(RequestError::InvalidId);
        }
        Ok(Self(id.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FHIR's id syntax, `[A-Za-z0-9\-\.]{1,64}`, less `.` and `..`: as a segment of the upstream
/// URL they would name the type or the base instead of a resource.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

// === impl SearchParam ===

impl SearchParam {
    /// Splits `key` (`name[:modifier][.chain…]`) and keeps `value` as sent.
    ///
    /// # Errors
    /// [`RequestError::InvalidParameter`] for an empty name, modifier or chain link.
    pub fn parse(key: &str, value: String) -> Result<Self, RequestError> {
        let (head, chain) = match key.split_once('.') {
            Some((head, rest)) => (head, rest.split('.').map(str::to_string).collect()),
            None => (key, Vec::new()),
        };
        let (name, modifier) = match head.split_once(':') {
            Some((name, modifier)) => (name, Some(modifier.to_string())),
            None => (head, None),
        };
        let empty_link = |s: &String| s.is_empty();
        if name.is_empty()
            || modifier.as_ref().is_some_and(empty_link)
            || chain.iter().any(empty_link)
        {
            return Err(RequestError::InvalidParameter);
        }
        Ok(Self {
            name: name.to_string(),
            modifier,
            chain,
            value,
        })
    }

    /// The key as sent: `name[:modifier][.chain…]`.
    pub fn key(&self) -> String {
        let mut key = self.name.clone();
        if let Some(modifier) = &self.modifier {
            key.push(':');
            key.push_str(modifier);
        }
        for link in &self.chain {
            key.push('.');
            key.push_str(link);
        }
        key
    }

    /// `params` as `(key, value)` pairs, keys as sent: what goes upstream.
    pub fn pairs(params: &[Self]) -> Vec<(String, String)> {
        params.iter().map(|p| (p.key(), p.value.clone())).collect()
    }

    /// Whether the parameter is chained (`subject.name`, `subject:Patient.name`).
    pub fn is_chained(&self) -> bool {
        !self.chain.is_empty()
    }

    /// The comma-separated values (OR), with `\,` kept inside a value as FHIR escapes it.
    pub fn values(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut chars = self.value.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let (Some(next), Some(last)) = (chars.next(), out.last_mut()) {
                        last.push(next);
                    }
                }
                ',' => out.push(String::new()),
                c => {
                    if let Some(last) = out.last_mut() {
                        last.push(c);
                    }
                }
            }
        }
        out
    }
}

// === impl Prefer ===

impl Prefer {
    /// The `return=` preference of a `Prefer` header (other preferences ignored).
    pub fn parse(header: &str) -> Self {
        header
            .split([',', ';'])
            .filter_map(|part| part.trim().strip_prefix("return="))
            .map(|v| match v.trim().trim_matches('"') {
                "minimal" => Self::Minimal,
                "representation" => Self::Representation,
                "OperationOutcome" => Self::OperationOutcome,
                _ => Self::Unspecified,
            })
            .next()
            .unwrap_or(Self::Unspecified)
    }
}

#[cfg(test)]
mod tests;
