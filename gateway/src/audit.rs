//! The audit step of the request flow: one structured JSON line per request (who, what, which
//! elements were opened or masked, the outcome), never a protected value.
//!
//! Handlers describe what they did in an [`AuditNote`] put in the response's extensions; the
//! audit middleware (outermost layer) joins it with the request id, the caller and the status.

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
    /// Elements sealed before the write went upstream.
    pub sealed: usize,
}
