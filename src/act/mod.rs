//! Effects.
pub mod remove;
