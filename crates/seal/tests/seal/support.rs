//! What the tests share: the R4 examples' folder and the authority, keys and rules they seal with.

pub(crate) mod examples;
pub(crate) mod fixture;
