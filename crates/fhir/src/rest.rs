//! The interactions of FHIR's RESTful API by kind, without their targets: what a policy grants
//! (`interactions = ["read", "search"]`, in kebab-case as R4's `restful-interaction` codes are
//! written) and what a SMART scope permits. [`crate::request::Interaction`] is one parsed from a
//! request, with its resource type and ids.

use serde::Deserialize;

/// What a request does (FHIR RESTful interactions). `search` stands for R4's `search-type`,
/// `history` for `history-instance` and `history-type`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Interaction {
    /// `GET [type]/[id]`
    Read,
    /// `GET [type]/[id]/_history/[vid]`
    Vread,
    /// `GET [type]?…`
    Search,
    /// `GET [type]/[id]/_history`, `GET [type]/_history`
    History,
    /// `POST [type]`
    Create,
    /// `PUT [type]/[id]`
    Update,
    /// `PATCH [type]/[id]`
    Patch,
    /// `DELETE [type]/[id]`
    Delete,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Interaction;

    #[test]
    fn interactions_are_read_by_their_kebab_case_names() {
        let names = json!([
            "read", "vread", "search", "history", "create", "update", "patch", "delete"
        ]);
        let read: Vec<Interaction> = serde_json::from_value(names).unwrap();
        use Interaction as I;
        assert_eq!(
            read,
            [
                I::Read,
                I::Vread,
                I::Search,
                I::History,
                I::Create,
                I::Update,
                I::Patch,
                I::Delete
            ]
        );
        assert!(serde_json::from_value::<Interaction>(json!("search-type")).is_err());
    }
}
