//! The seal crate's tests, one binary: hand-made resources through every transform
//! (`transforms`), writes merged element by element (`merge`), the official R4 examples
//! (`corpus`), the shared headers a reader needs
//! (`headers`), the published profiles against the constants (`profiles`), and the refusal of
//! searches on sealed elements (`search`).

mod corpus;
mod headers;
mod merge;
mod profiles;
mod search;
mod support;
mod transforms;
