//! Running the actions of a plan: what every resource's actor shares.

pub mod audit;
pub mod claim;
pub mod executor;
pub(in crate::act) mod intent;
pub(in crate::act) mod liveness;
pub mod outcome;
