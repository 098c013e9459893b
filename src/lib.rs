//! boo-reconciler: a level-triggered reconciliation controller for agent
//! chats, their processes, opencode sessions and git worktrees.
//!
//! The shape of a pass: [`store`] reads the desired state, [`observe`] the
//! actual state, [`plan`] (pure) turns both into ordered actions with
//! reasons, [`act`] carries them out; [`controller`] runs one pass over a
//! scope, and [`service`] runs them on an interval and on demand (its
//! `run_loop`), with [`http`] as its door.

pub mod act;
pub mod archives;
pub mod backoff;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod controller;
pub mod creds;
pub mod failpoint;
pub mod git;
pub mod http;
pub mod launch;
#[cfg(test)]
mod layers_tests;
pub mod metrics;
pub mod model;
pub mod mounts;
pub mod observe;
pub mod opencode;
pub mod plan;
pub mod privilege;
pub mod report;
pub mod risk;
pub mod root;
pub mod root_record;
pub mod scan_lock;
pub mod service;
pub mod status;
pub mod store;
pub mod switches;
#[doc(hidden)]
pub mod testing;
