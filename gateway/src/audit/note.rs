//! What a handler did, for the audit line ([`AuditNote`]): its own module, below everything that
//! counts or logs requests (the metrics read notes too), so that it imports nothing of theirs.

/// What a handler did, for the audit line: references and counts, never content.
#[derive(Clone, Debug, Default)]
pub struct AuditNote {
    /// The FHIR interaction (`read`, `search-type`, `create`, `transaction`…).
    pub interaction: &'static str,
    /// The resources touched, as `Type/id` references (ids are not protected values).
    pub resources: Vec<String>,
    /// Elements opened for the caller.
    pub opened: usize,
    /// Elements left masked for the caller.
    pub masked: usize,
    /// Elements masked and flagged because they are not what FHIRseal sealed there (forged,
    /// modified or moved upstream; `docs/authenticity.md`).
    pub forged: usize,
    /// Elements sealed before the write went upstream.
    pub sealed: usize,
    /// The status answered, where it is not the HTTP response's own (a Bundle entry's).
    pub status: Option<u16>,
    /// Why the compliance policy refused the request, in its words (rules, roles and
    /// attributes; never resource content). The client gets a fixed sentence; this is for the
    /// audit trail.
    pub reason: Option<String>,
    /// A batch's or transaction's entries, each with its own note, in order (for a transaction
    /// refused because of one entry, that entry's).
    pub entries: Vec<Self>,
}
