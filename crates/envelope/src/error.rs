//! The envelope's errors.

/// What went wrong. Opening failures are deliberately one variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a well-formed envelope or header; nothing was decrypted.
    #[error("malformed sealed element: {0}")]
    Malformed(#[from] Malformed),
    /// The envelope does not open: wrong key, another element's or resource's envelope, another
    /// access structure, or modified bytes. Deliberately opaque.
    #[error("the sealed element does not open")]
    Open,
    /// The envelope or header was not made by FHIRseal's trusted zone: its tag does not verify
    /// under the sealing key (written from the public parameters alone, modified, moved to
    /// another element, resource or header), or it is of version 1, which carries no tag.
    #[error("the sealed element or header is not authentic")]
    Forged,
    /// The RS-HABE header could not be made or opened for this key holder.
    #[error(transparent)]
    Scheme(#[from] rshabe::Error),
}

/// Why bytes are not a well-formed envelope or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The text is not standard base64.
    #[error("not base64")]
    Base64,
    /// Shorter than the smallest envelope.
    #[error("truncated")]
    Truncated,
    /// A format version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// A granularity byte that is neither `resource` nor `shared`.
    #[error("unknown granularity {0}")]
    UnknownGranularity(u8),
    /// The header's RS-HABE ciphertext does not decode.
    #[error("invalid header ciphertext: {0}")]
    Header(rshabe::Error),
}
